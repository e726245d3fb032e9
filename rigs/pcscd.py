"""Start and stop pcscd for tests, the demo and the benchmarks.

pcscd is the real middleware; with vsmartcard-vpcd installed it loads the virtual reader driver
and exposes `Virtual PCD 00 00` and `Virtual PCD 00 01`, whose cards connect over TCP.

pcscd is the one part that needs root: pcsc-lite 1.9 puts its socket and PID file in /run/pcscd,
fixed at build time (only the client library reads PCSCLITE_CSOCK_NAME). As a normal user the rig
runs it, and stops the system's, through `sudo -n`; everything else runs as the user.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from rigs.proc import terminate
from rigs.vcard import VPCD_PORTS

COMM_SOCKET = Path("/run/pcscd/pcscd.comm")
PID_FILE = Path("/run/pcscd/pcscd.pid")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _as_root(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() == 0 else ["sudo", "-n", *cmd]


def _stop_pid(pid: int) -> None:
    if os.geteuid() == 0:
        os.kill(pid, signal.SIGTERM)
        return
    res = subprocess.run(_as_root(["kill", "-TERM", str(pid)]), capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"cannot stop the running pcscd (pid {pid}) as {getpass.getuser()}: "
                           f"{res.stderr.strip()}; allow `sudo -n` for pcscd and kill, or run as root (see rigs/pcscd.py)")


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

    def start(self, timeout: float = 10.0) -> Pcscd:
        exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
        if not Path(exe).exists():
            raise RuntimeError("pcscd is not installed: apt-get install pcscd vsmartcard-vpcd")
        other = running_pid()
        if other is not None:
            # a system pcscd (socket-activated) or another rig's owns the socket: take over. Wait for
            # the process itself to be gone and its vpcd ports to close, not just its PID file,
            # or the new pcscd finds them taken and exits 1.
            _stop_pid(other)
            _wait(lambda: not Path(f"/proc/{other}").exists() and not _port_open(VPCD_PORTS[0]), 10.0,
                  "the running pcscd did not stop")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        for attempt in range(3):
            self._proc = subprocess.Popen(_as_root([exe, "--foreground"]), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            proc = self._proc
            _wait(lambda: (COMM_SOCKET.exists() and _port_open(VPCD_PORTS[0])) or proc.poll() is not None,
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
