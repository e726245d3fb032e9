"""Alarms forwarded to the office's own systems: an HTTP POST per new alarm, signed, retried.

Each alarm central records is queued in the same transaction (central.alarms), so a crash between
the commit and the POST loses nothing: the queue is read again at start. A POST that fails (no
answer, a refusal, a 5xx) is retried with jittered backoff for as long as it takes; a 2xx removes
the row. Delivery is at least once; every POST carries the alarm's id (`X-DoorEdge-Alarm`) so the
receiver keeps exactly one per alarm, and an HMAC-SHA256 of the body under the shared secret
(`X-DoorEdge-Signature: sha256=<hex>`) so it knows the POST came from central.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from drivers.backoff import Backoff

log = logging.getLogger(__name__)

SIGNATURE = "X-DoorEdge-Signature"
ALARM_ID = "X-DoorEdge-Alarm"


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """For the receiver (and the tests): is this POST central's?"""
    return hmac.compare_digest(signature(secret, body), header)


class Forwarder(threading.Thread):
    """`pending()` returns the queued alarms, oldest first (id, body dict); `delivered(id)` removes
    one from the queue (both are central's, and take its lock)."""

    def __init__(self, url: str, secret: bytes, *, pending: Callable[[], list[tuple[int, dict[str, Any]]]],
                 delivered: Callable[[int], None], timeout_s: float = 5.0, base_s: float = 0.5, cap_s: float = 60.0):
        super().__init__(name="central-webhook", daemon=True)
        self.url, self._secret, self._timeout = url, secret, timeout_s
        self._pending, self._delivered = pending, delivered
        self._backoff = Backoff(base_s, cap_s)
        self._halt = threading.Event()
        self._wake = threading.Event()
        self.sent = 0
        self.failures = 0
        self.last_error = ""

    def wake(self) -> None:
        """A new alarm was queued: try at once."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self._wake.set()
        self.join(timeout)

    def run(self) -> None:
        delay = 0.0
        while not self._halt.is_set():
            self._wake.wait(delay or 5.0)
            self._wake.clear()
            if self._halt.is_set():
                return
            if self._flush():
                self._backoff.reset()
                delay = 0.0
            else:
                delay = self._backoff.next()

    def _flush(self) -> bool:
        """Send what is queued, oldest first; False at the first failure (the rest wait their turn)."""
        for alarm_id, body in self._pending():
            if not self._post(alarm_id, body):
                return False
            self._delivered(alarm_id)
            self.sent += 1
        return True

    def _post(self, alarm_id: int, body: dict[str, Any]) -> bool:
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        req = urllib.request.Request(self.url, data=raw, method="POST",  # noqa: S310 - the installer's URL, http(s) checked in config
                                     headers={"Content-Type": "application/json", SIGNATURE: signature(self._secret, raw),
                                              ALARM_ID: str(alarm_id)})
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:  # noqa: S310
                ok = 200 <= resp.status < 300
                if not ok:
                    self.last_error = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            ok, self.last_error = False, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            ok, self.last_error = False, str(getattr(exc, "reason", exc))
        if not ok:
            self.failures += 1
            log.warning("webhook: alarm %d not delivered (%s): retried with backoff", alarm_id, self.last_error)
        return ok
