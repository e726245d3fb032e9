"""A serial cable made of two ptys (socat), with stable link paths on both ends.

socat rather than os.openpty because the pair can then be cut (kill socat: both paths vanish,
both ends see the port die) and restored under the same paths, which is what an unplugged USB
adapter looks like to the daemon.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


class PtyPair:
    def __init__(self, gateway_end: Path, device_end: Path):
        self.gateway_end = Path(gateway_end)
        self.device_end = Path(device_end)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> PtyPair:
        self.gateway_end.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.gateway_end}", f"pty,raw,echo=0,link={self.device_end}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not (self.gateway_end.exists() and self.device_end.exists()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair (is socat installed?)")
            time.sleep(0.01)
        return self

    def cut(self) -> None:
        """Kill socat: both ends vanish, as when a USB adapter is unplugged."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
            self._proc = None
        for p in (self.gateway_end, self.device_end):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    stop = cut

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None
