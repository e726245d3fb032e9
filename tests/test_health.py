"""systemd notify protocol: READY after start-up, WATCHDOG only with fresh heartbeats, STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from edge.health import Heartbeats, notify
from rigs.rig import wait_until
from tests.conftest import REPO


def test_heartbeats_name_the_stale_part():
    hb = Heartbeats(max_age_s=5)
    now = time.monotonic()
    hb.add("loop", lambda: now)
    hb.add("readers", lambda: now - 60)
    assert hb.stale() == ["readers"]


def test_notify_without_systemd_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_daemon_speaks_sd_notify(rig, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain() -> None:
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            pass

    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(rig.config_path)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def count(prefix: str) -> int:
            drain()
            return sum(m.startswith(prefix) for m in messages)

        wait_until(lambda: count("READY=1") >= 1, 15, "READY=1")
        ready = next(m for m in messages if m.startswith("READY=1"))
        assert "STATUS=" in ready and "whitelist v1" in ready
        wait_until(lambda: count("WATCHDOG=1") >= 2, 10, "two watchdog pings")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_until(lambda: count("STOPPING=1") >= 1, 5, "STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
