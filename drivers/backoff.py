"""Jittered exponential backoff shared by every reconnecting part, and the outage record it keeps.

Full jitter (uniform between half the base and the capped exponential) so that a site's gateways,
all cut off by the same outage, do not come back in step. The exponent stops growing once the
delay has reached the cap, so the millionth attempt costs what the twentieth did: an unbounded
`2 ** attempt` overflows a float at attempt 1,024 and used to kill the thread that reconnects.

`Reconnects` is what telemetry and `door-edge diag` show of a part that reconnects: whether it is
up, since when (wall clock), how many attempts the current outage has taken, and how many outages
there have been. Parts update it from their own thread; readers take a `snapshot()`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.2
    cap_s: float = 10.0
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.cap_s >= self.base_s):
            raise ValueError(f"backoff needs 0 < base_s <= cap_s (got {self.base_s}, {self.cap_s})")
        # the attempt from which base * 2**n is at the cap; beyond it the exponent is not computed
        self._top = max(0, math.ceil(math.log2(self.cap_s / self.base_s)))

    def next(self) -> float:
        """The delay before the next attempt; call once per failed attempt."""
        ceiling = self.cap_s if self.attempt >= self._top else min(self.cap_s, self.base_s * 2 ** self.attempt)
        self.attempt += 1
        return self._rng.uniform(min(self.base_s / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.attempt = 0


def pause(halt: threading.Event, seconds: float, beat: Callable[[], None]) -> bool:
    """Wait out a backoff delay in steps of at most a second, calling `beat()` after each: a part
    that waits for a lost device is not a hung part. True when `halt` was set."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        if halt.wait(min(left, 1.0)):
            return True
        beat()
    return halt.is_set()


@dataclass(frozen=True, slots=True)
class Availability:
    """A snapshot of one reconnecting part, as telemetry and diag report it."""

    up: bool | None          # None: not tried yet
    since: float             # wall-clock time of the last change of `up`
    attempts: int            # failed attempts in the current outage (0 while up)
    outages: int             # times it went down since the daemon started
    detail: str              # the last reason given

    def as_dict(self) -> dict[str, object]:
        return {"up": self.up, "since": round(self.since, 3), "attempts": self.attempts, "outages": self.outages,
                "detail": self.detail}


class Reconnects:
    """The outage record of one part: `failed()` per failed attempt, `up()` when it works again.

    `on_change(up, detail)` is called (from the part's thread, so it must not block) only when the
    part goes down or comes back, never per attempt: ten thousand attempts are one outage."""

    def __init__(self, on_change: Callable[[bool, str], None] | None = None):
        self._lock = threading.Lock()
        self._up: bool | None = None
        self._since = time.time()
        self._attempts = 0
        self._outages = 0
        self._detail = ""
        self.on_change = on_change

    def up(self, detail: str = "up") -> None:
        with self._lock:
            changed = self._up is not True
            self._up, self._attempts, self._detail = True, 0, detail
            if changed:
                self._since = time.time()
        if changed and self.on_change is not None:
            self.on_change(True, detail)

    def failed(self, detail: str) -> None:
        """One failed attempt (or the loss of a part that was up)."""
        with self._lock:
            changed = self._up is not False
            self._attempts += 1
            self._detail = detail
            if changed:
                self._up, self._since = False, time.time()
                self._outages += 1
        if changed and self.on_change is not None:
            self.on_change(False, detail)

    @property
    def is_up(self) -> bool:
        return self._up is True

    def snapshot(self) -> Availability:
        with self._lock:
            return Availability(self._up, self._since, self._attempts, self._outages, self._detail)
