"""Virtual devices on the far side of the real parts: a vpcd card, relay/IO boards on a pty."""
