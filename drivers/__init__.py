"""Hardware drivers: PC/SC readers, serial relay boards, and virtual devices for tests and the demo."""
