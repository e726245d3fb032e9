"""Jittered exponential backoff shared by every reconnecting driver.

Full jitter (uniform between 0 and the capped exponential) so that a site's gateways, all cut off
by the same outage, do not come back in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.2
    cap_s: float = 10.0
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next(self) -> float:
        delay = self._rng.uniform(self.base_s / 2, min(self.cap_s, self.base_s * 2 ** self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
