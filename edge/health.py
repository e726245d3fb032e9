"""systemd integration: sd_notify READY/STATUS/WATCHDOG, and heartbeats that gate the watchdog.

The watchdog is fed only while every vital part has reported recently: the event loop, the reader
thread, each relay link thread, the journal flusher, the sync and MQTT threads and the vision
service's thread. A ping from a thread that runs free would hide a stuck loop, which is exactly
what the watchdog is there to catch; a part that stalls stops the pings within `max_age_s` plus
one ping interval, inside WatchdogSec, and systemd restarts the daemon.

Cameras and the vision worker are watched too, but by their owner (edge.vision.service,
edge.vision.worker), which replaces a stuck camera or kills a hung worker itself: restarting the
whole daemon for them would take every card door down with one bad camera.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import ClassVar

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send one datagram to $NOTIFY_SOCKET; False when not run by systemd (or it failed)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
        return False


def watchdog_interval_s() -> float | None:
    """Half of WatchdogSec, if systemd asked for pings (and they are meant for this process)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def heartbeat_max_age_s() -> float:
    """A third of WatchdogSec (at least 5 s): a stalled part is seen well before systemd gives up."""
    interval = watchdog_interval_s()
    return max(5.0, interval * 2 / 3) if interval else 10.0


class Heartbeats:
    """Named probes returning the monotonic time of each part's last sign of life."""

    def __init__(self, max_age_s: float = 10.0):
        self.max_age_s = max_age_s
        self._probes: dict[str, Callable[[], float]] = {}

    def add(self, name: str, probe: Callable[[], float]) -> None:
        self._probes[name] = probe

    def ages(self) -> dict[str, float]:
        now = time.monotonic()
        return {n: round(now - p(), 3) for n, p in self._probes.items()}

    def stale(self) -> list[str]:
        return [n for n, age in self.ages().items() if age > self.max_age_s]


def setup_logging(level: str) -> None:
    """stderr; under systemd, `<N>` priority prefixes and no timestamps (journald adds them)."""
    journald = bool(os.environ.get("JOURNAL_STREAM"))

    class _Fmt(logging.Formatter):
        PRI: ClassVar[dict[int, int]] = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

        def format(self, record: logging.LogRecord) -> str:
            text = super().format(record)
            return f"<{self.PRI.get(record.levelno, 6)}>{text}" if journald else text

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Fmt("%(name)s: %(message)s" if journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
