"""systemd's side of the watchdog, and stalls of a part's own thread: for the tests and the bench
that check that every vital part, when it stalls, stops the daemon's WATCHDOG=1 pings."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path


class NotifySocket:
    """The datagram socket systemd gives a Type=notify service ($NOTIFY_SOCKET): counts WATCHDOG=1."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.pings = 0
        self.messages: list[str] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._halt.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            self.messages.append(text)
            if "WATCHDOG=1" in text:
                self.pings += 1

    def close(self) -> None:
        self._halt.set()
        self._thread.join(2)
        self.sock.close()
        self.path.unlink(missing_ok=True)


def stall(obj: object, attr: str, release: threading.Event) -> Callable[[], None]:
    """Make the part's own thread block inside `obj.attr` (a method, or a callback the part holds)
    until `release` is set, as a driver call that never returns would. Returns what undoes it."""
    own = obj.__dict__.get(attr)  # a callback held by the instance, or None for a method
    inner = getattr(obj, attr)

    def blocked(*args, **kwargs):
        release.wait()
        return inner(*args, **kwargs)

    setattr(obj, attr, blocked)
    return lambda: delattr(obj, attr) if own is None else setattr(obj, attr, own)


def vital_stalls(parts, present_card: Callable[[], None]) -> dict[str, tuple[object, str, Callable[[], None] | None]]:
    """For each vital part of a running App (edge.app.Parts): the object and attribute whose
    stall blocks that part's own thread, and what makes the thread reach it (None: it runs anyway)."""
    port = next(iter(parts.links))
    return {
        "journal": (parts.flusher, "_flush", lambda: parts.flusher.notify(parts.outbox.last_seq())),
        f"relay:{port}": (parts.links[port], "_poll", None),
        "readers": (parts.watcher, "_on_read", present_card),  # blocks in the read's callback
        "sync": (parts.sync.drain, "step", None),
        "mqtt": (parts.sync.mqtt.client, "loop", None),
        "vision": (parts.vision, "_refresh_gallery", None),
    }
