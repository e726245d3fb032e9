"""Visitor passes at the door: what a pass shown to a camera decides, from the gateway's own state.

Pure: the verified pass (protocol.passes.read checked its signature and site), the door, the time,
how often it has opened a door already and whether central revoked it go in; a reason comes out.
`Sightings` turns a code held in front of a camera for many frames into one presentation, so that
one visit costs one use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.access.policy import Reason
from protocol.passes import VisitorPass

GONE_S = 2.0  # a code not seen for this long has been taken away: showing it again is a new presentation


def check(p: VisitorPass, door: str, now: float, *, used: int, revoked: bool) -> Reason:
    """In this order: revoked (central said so), the door, the window, then the uses left."""
    if revoked:
        return Reason.PASS_REVOKED
    if door not in p.doors:
        return Reason.PASS_WRONG_DOOR
    if now < p.not_before:
        return Reason.PASS_NOT_YET_VALID
    if now >= p.not_after:
        return Reason.PASS_EXPIRED
    if used >= p.uses:
        return Reason.PASS_USED_UP
    return Reason.VISITOR_GRANTED


@dataclass
class Sightings:
    """Per camera: the code last seen and when; `new()` says whether this sighting is a presentation."""

    gone_s: float = GONE_S
    _last: dict[str, tuple[str, float]] = field(default_factory=dict)

    def new(self, camera: str, text: str, now: float) -> bool:
        last = self._last.get(camera)
        self._last[camera] = (text, now)
        return last is None or last[0] != text or now - last[1] > self.gone_s
