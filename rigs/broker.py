"""A real mosquitto on 127.0.0.1 for tests, the demo and the benchmarks.

Two listeners on free ports: a plain one (anonymous, no ACL) for most tests, and a mutual-TLS one
(`require_certificate`, `use_identity_as_username`) with the per-gateway ACL from
`protocol.mosquitto_acl`, for the security tests. Persistence is on, so sessions and
retained heads survive `restart()` like on a real broker. Stopped by its PID.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from protocol import mosquitto_acl
from rigs.pki import Pki
from rigs.proc import terminate


def free_port() -> int:
    """A free port below the kernel's ephemeral range. A port inside it can be taken while the
    broker is stopped by a client's own source port: thousands of quick reconnects to 127.0.0.1
    end in a TCP self-connect on the broker's port, and the restarted broker cannot bind it."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    def __init__(self, root: Path, *, tls: bool = True):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.pki = Pki(root / "pki") if tls else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = ["per_listener_settings true", "persistence true", f"persistence_location {self.root}/",
                 f"log_dest file {self.root}/mosquitto.log", "log_type error", "log_type warning", "log_type notice",
                 "max_queued_messages 100000", "set_tcp_nodelay true", "",
                 f"listener {self.port} 127.0.0.1", "allow_anonymous true", ""]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else it drops to `mosquitto`, which cannot read our 0600 keys
        if self.pki is not None:
            server = self.pki.issue("localhost", server=True)
            (self.root / "acl").write_text(mosquitto_acl())
            lines += [f"listener {self.tls_port} 127.0.0.1", "allow_anonymous false", f"cafile {self.pki.ca_file}",
                      f"certfile {server.cert}", f"keyfile {server.key}", "require_certificate true",
                      "use_identity_as_username true", f"acl_file {self.root / 'acl'}", ""]
        (self.root / "mosquitto.conf").write_text("\n".join(lines))

    def start(self, timeout: float = 10.0) -> Mosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed: apt-get install mosquitto")
        self._proc = subprocess.Popen([exe, "-c", str(self.root / "mosquitto.conf")], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=open(self.root / "stderr.log", "ab"))
        deadline = time.monotonic() + timeout
        while not (_port_open(self.port) and (self.tls_port is None or _port_open(self.tls_port))):
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self._proc.returncode}): {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not open its ports")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        text = ""
        for name in ("stderr.log", "mosquitto.log"):
            p = self.root / name
            if p.exists():
                text += p.read_text(errors="replace")
        return text
