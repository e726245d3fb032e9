"""Start and stop pcscd for tests, the demo and the benchmarks.

pcscd is the real middleware; with vsmartcard-vpcd installed it loads the virtual reader driver
and exposes `Virtual PCD 00 00` and `Virtual PCD 00 01`, whose cards connect over TCP.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from drivers.virtual.proc import terminate
from drivers.virtual.vcard import VPCD_PORTS

COMM_SOCKET = Path("/run/pcscd/pcscd.comm")
PID_FILE = Path("/run/pcscd/pcscd.pid")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def running_pid() -> int | None:
    """PID of a pcscd that is running now (ours or the system's), if any."""
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


class Pcscd:
    """A pcscd we own: started in the foreground, stopped by its PID."""

    def __init__(self, log_path: Path | None = None):
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> "Pcscd":
        exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
        if not Path(exe).exists():
            raise RuntimeError("pcscd is not installed: apt-get install pcscd vsmartcard-vpcd")
        other = running_pid()
        if other is not None:
            # a system pcscd (socket-activated) or another rig's owns the socket: take over. Wait for
            # the process itself to be gone and its vpcd ports to close, not just its PID file,
            # or the new pcscd finds them taken and exits 1.
            os.kill(other, signal.SIGTERM)
            _wait(lambda: not Path(f"/proc/{other}").exists() and not _port_open(VPCD_PORTS[0]), 10.0,
                  "the running pcscd did not stop")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        for attempt in range(3):
            self._proc = subprocess.Popen([exe, "--foreground"], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            proc = self._proc
            _wait(lambda: COMM_SOCKET.exists() and _port_open(VPCD_PORTS[0]) or proc.poll() is not None,
                  timeout, "pcscd did not come up (is vsmartcard-vpcd installed?)")
            if proc.poll() is None:
                return self
            time.sleep(0.5 * (attempt + 1))  # a port still in TIME_WAIT or a socket file being removed
        raise RuntimeError(f"pcscd exited with status {self._proc.returncode} three times; see {self.log_path}")

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None


def _wait(cond, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.02)
