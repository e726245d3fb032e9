"""One decision per vehicle: per-frame plate readings in, at most one verdict out.

Pure: every call gets the monotonic time. A vehicle is "present" while frames show a plate; it has
gone after `gone_s` without one. Each frame's best plate contributes its top-k readings, weighted by
probability; a reading that has been the best one on `frames` frames decides, and the verdict
carries the top readings in vote order (each is hashed and looked up: fuzzy tolerance without
storing plates in clear). A plate seen for `unreadable_s` without any reading reaching that count
is `plate_unreadable`. A car waiting at the barrier is one decision, not one per frame.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

READ, UNREADABLE = "read", "plate_unreadable"
TOP_K = 5


@dataclass(frozen=True)
class PlateVerdict:
    reason: str                  # "read" | "plate_unreadable"
    candidates: tuple[str, ...]  # most voted first; empty when unreadable


@dataclass
class VehicleVote:
    frames: int = 3
    gone_s: float = 2.0
    unreadable_s: float = 4.0
    started: float | None = None
    last_seen: float = 0.0
    decided: set[str] = field(default_factory=set)
    _weight: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    _best: Counter[str] = field(default_factory=Counter)

    def observe(self, now: float, readings: list[tuple[str, float]] | None) -> PlateVerdict | None:
        """`readings`: the frame's best plate as (text, probability), most likely first; [] = a plate
        that could not be read; None = no plate in the frame."""
        if readings is None:
            if self.started is not None and now - self.last_seen >= self.gone_s:
                self.reset()
            return None
        if self.started is None or now - self.last_seen >= self.gone_s:
            self.reset()
            self.started = now
        self.last_seen = now
        for text, p in readings:
            self._weight[text] += p
        if readings:
            text = readings[0][0]
            self._best[text] += 1
            if self._best[text] >= self.frames and text not in self.decided:
                self.decided.add(text)
                order = sorted(self._weight, key=lambda t: -self._weight[t])
                order.remove(text)
                return PlateVerdict(READ, (text, *order[: TOP_K - 1]))
        if not self.decided and now - self.started >= self.unreadable_s:
            self.decided.add(UNREADABLE)
            return PlateVerdict(UNREADABLE, ())
        return None

    def reset(self) -> None:
        self.started = None
        self.decided.clear()
        self._weight.clear()
        self._best.clear()
