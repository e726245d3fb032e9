"""One family for everything that stops the gateway from starting (or a reload from applying) as
configured: a config problem, a key or certificate file, the face template key, a model file.

Each carries its fix in its message. `door-edge run` prints it and exits 2 (systemd then shows the
message in `systemctl status`); a reload that meets one keeps the running parts. Faults of the
hardware at run time (a reader, a relay port, a camera, the broker, the vision worker) are never
SetupErrors: those parts are retried in the background and reported.
"""

from __future__ import annotations


class SetupError(Exception):
    """The configuration cannot be used as it is: `problem` says what, `fix` what to do about it.

    `str()` gives both, so a log line or `systemctl status` shows the fix with the problem."""

    def __init__(self, problem: str, fix: str = ""):
        super().__init__(problem, fix)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem}. Fix: {self.fix}" if self.fix else self.problem
