"""One family for everything that stops the gateway from starting (or a reload from applying) as
configured: a config problem, a key or certificate file, the face template key, a model file.

Each carries its fix in its message. `door-edge run` prints it and exits 2 (systemd then shows the
message in `systemctl status`); a reload that meets one keeps the running parts. Faults of the
hardware at run time (a reader, a relay port, a camera, the broker, the vision worker) are never
SetupErrors: those parts are retried in the background and reported.
"""

from __future__ import annotations


class SetupError(Exception):
    """The configuration cannot be used as it is; the message names what and how to fix it."""
