"""Virtual devices on the far side of the real parts: a vpcd card, relay and I/O boards on a pty,
a broker with its PKI, camera scenes, a central site. For tests, bench and demo; never installed.
"""
