"""Anti-passback: a credential that went in must go out before it goes in again.

Pure functions of the last passage, the direction of this one, the door's rule and the time; the
controller keeps the passages (edge.store.passback) and calls `check` before a grant opens the door
and `passed` after. A lent card is the case this exists for: a tenant goes in and hands the card
back out through a window to the next person, whose "in" comes before any "out".

Only passages through readers count: the exit button and a fire release open the door without a
credential, and decisions made while the fire alarm is on are not passages. At the daily reset
time every credential counts as out again, so that one forgotten "out" (a door held for a group,
a tailgate) does not lock a resident out for longer than a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum


class Verdict(StrEnum):
    CLEAR = "clear"          # no objection
    VIOLATION = "violation"  # in after in: `hard` refuses, `soft` opens and journals it


@dataclass(frozen=True, slots=True)
class Passage:
    direction: str  # in | out
    ts: float       # unix time


def last_reset(now: datetime, reset: time) -> datetime:
    """The most recent moment at or before `now` when the area's state was reset."""
    today = now.replace(hour=reset.hour, minute=reset.minute, second=0, microsecond=0)
    return today if today <= now else today - timedelta(days=1)


def check(mode: str, last: Passage | None, direction: str, now: datetime, reset: time) -> Verdict:
    """Whether a passage in `direction` now breaks the rule. `mode` off never objects."""
    if mode == "off" or direction != "in" or last is None or last.direction != "in":
        return Verdict.CLEAR
    if datetime.fromtimestamp(last.ts) < last_reset(now, reset):
        return Verdict.CLEAR  # the previous "in" was before the last reset
    return Verdict.VIOLATION
