"""`card_and_face` doors: two credentials of the same person, the second within a window.

Pure: fed the monotonic time. The first factor a door sees (a card or a face, each already granted
on its own by the policy) waits here; the other factor of the same person within `window_s`
completes it; anything left when the window closes expires as `second_factor_timeout`. One pending
first factor per door: a newer one replaces the older (which expires at once, so it is recorded).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pending:
    door: str
    factor: str      # "card" | "face"
    person: str
    kind: str        # the credential kind of the first factor (idcard, ic, idno, face)
    token: str       # its short token, for the event
    since: float


class SecondFactor:
    def __init__(self, window_s: float):
        self.window_s = window_s
        self._pending: dict[str, Pending] = {}

    def offer(self, door: str, *, factor: str, person: str, kind: str, token: str, now: float) -> tuple[Pending | None, list[Pending]]:
        """Returns (the first factor this one completes, or None; first factors that expired)."""
        expired = self.expire(now)
        first = self._pending.get(door)
        if first is not None and first.factor != factor and first.person == person:
            del self._pending[door]
            return first, expired
        if first is not None and first.factor == factor and first.person == person:
            return None, expired  # the same card twice, the same face again: still waiting for the other
        if first is not None:
            expired.append(first)  # someone else's first factor: replaced, and recorded
        self._pending[door] = Pending(door, factor, person, kind, token, now)
        return None, expired

    def expire(self, now: float) -> list[Pending]:
        gone = [p for p in self._pending.values() if now - p.since >= self.window_s]
        for p in gone:
            del self._pending[p.door]
        return gone

    def pending(self, door: str) -> Pending | None:
        return self._pending.get(door)
