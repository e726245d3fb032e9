"""The access decision: a pure function of the read, the local list entry, the door and the time.

No I/O, no clock reads, no threads: tests call it directly with any time they like, and the
controller calls it on the card path in microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from edge.config import DAYS, Door, Schedule
from edge.store.whitelist import CARD_KINDS, Entry

_CARDS = frozenset(CARD_KINDS)
# Face is never the only way in: every mode that takes a face takes a card too.
MODE_KINDS: dict[str, frozenset[str]] = {"card": _CARDS, "face": _CARDS | {"face"}, "card_or_face": _CARDS | {"face"},
                                         "card_and_face": _CARDS | {"face"}, "plate": frozenset({"plate"}),
                                         "plate_or_card": _CARDS | {"plate"}}


class Reason(StrEnum):
    GRANTED = "granted"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    WRONG_DOOR = "wrong_door"
    OUTSIDE_SCHEDULE = "outside_schedule"
    MODE_NOT_ALLOWED = "mode_not_allowed"
    FIRE_RELEASE = "fire_release"
    WHITELIST_STALE = "whitelist_stale"
    UNKNOWN_FACE = "unknown_face"
    LIVENESS_FAILED = "liveness_failed"
    LOW_QUALITY = "low_quality"
    SECOND_FACTOR_TIMEOUT = "second_factor_timeout"
    UNKNOWN_PLATE = "unknown_plate"
    PLATE_UNREADABLE = "plate_unreadable"
    ID_CARD_EXPIRED = "id_card_expired"    # the ID card itself is past its validity date
    ANTIPASSBACK = "antipassback"          # in again without having gone out (hard anti-passback)
    VISITOR_GRANTED = "visitor_granted"    # a visitor pass opened the door
    PASS_NOT_YET_VALID = "pass_not_yet_valid"
    PASS_EXPIRED = "pass_expired"
    PASS_USED_UP = "pass_used_up"
    PASS_REVOKED = "pass_revoked"
    PASS_WRONG_DOOR = "pass_wrong_door"
    PASS_OTHER_SITE = "pass_other_site"
    PASS_BAD_SIGNATURE = "pass_bad_signature"  # forged, tampered, or signed by a key this gateway does not trust
    PASS_MALFORMED = "pass_malformed"


# Reasons that come from the camera paths before `decide` (edge.access.walkup, second_factor, platevote).
FACE_PATH_REASONS = frozenset({Reason.UNKNOWN_FACE, Reason.LIVENESS_FAILED, Reason.LOW_QUALITY, Reason.SECOND_FACTOR_TIMEOUT})
PLATE_PATH_REASONS = frozenset({Reason.UNKNOWN_PLATE, Reason.PLATE_UNREADABLE})
# Reasons the controller gives around `decide`: the ID card's own validity date, anti-passback.
CONTROLLER_REASONS = frozenset({Reason.ID_CARD_EXPIRED, Reason.ANTIPASSBACK})
# Reasons of a visitor pass shown to a door camera (edge.access.passes).
PASS_REASONS = frozenset({Reason.VISITOR_GRANTED, Reason.PASS_NOT_YET_VALID, Reason.PASS_EXPIRED, Reason.PASS_USED_UP,
                          Reason.PASS_REVOKED, Reason.PASS_WRONG_DOOR, Reason.PASS_OTHER_SITE, Reason.PASS_BAD_SIGNATURE,
                          Reason.PASS_MALFORMED})


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: Reason
    person: str | None = None  # for the controller only; never logged or journaled


def in_schedule(schedule: Schedule | None, holidays: frozenset[date], now: datetime) -> bool:
    """True when `now` falls in one of the schedule's ranges for that day (holidays use `holiday`)."""
    if schedule is None:
        return True
    day = "holiday" if now.date() in holidays else DAYS[now.weekday()]
    t = now.time()
    return any(start <= t and (end is None or t < end) for start, end in schedule.windows(day))


def decide(kind: str, entry: Entry | None, door: Door, now: datetime, *,
           schedules: Mapping[str, Schedule], holidays: frozenset[date], fire_active: bool = False,
           stale: bool = False) -> Decision:
    """Decide one credential presentation at one door.

    The order matters: fire release first (the door is open anyway, the read is still recorded),
    then what the credential is, then where, then when. `stale`: central has been silent for longer
    than allowed; doors marked `when_stale = "deny"` then refuse everyone.
    """
    if fire_active:
        return Decision(True, Reason.FIRE_RELEASE, entry.person if entry else None)
    if stale and door.when_stale == "deny":
        return Decision(False, Reason.WHITELIST_STALE)
    if kind not in MODE_KINDS.get(door.mode, frozenset()):
        return Decision(False, Reason.MODE_NOT_ALLOWED)
    if entry is None or entry.kind != kind:
        return Decision(False, Reason.UNKNOWN_CREDENTIAL)
    if not entry.allows_door(door.id):
        return Decision(False, Reason.WRONG_DOOR, entry.person)
    if entry.valid_from is not None and now < entry.valid_from:
        return Decision(False, Reason.NOT_YET_VALID, entry.person)
    if entry.valid_to is not None and now >= entry.valid_to:
        return Decision(False, Reason.EXPIRED, entry.person)
    if not in_schedule(schedules.get(door.schedule) if door.schedule else None, holidays, now):
        return Decision(False, Reason.OUTSIDE_SCHEDULE, entry.person)
    if entry.schedule is not None:
        person_schedule = schedules.get(entry.schedule)
        # a person's schedule the config does not define admits nobody: fail closed
        if person_schedule is None or not in_schedule(person_schedule, holidays, now):
            return Decision(False, Reason.OUTSIDE_SCHEDULE, entry.person)
    return Decision(True, Reason.GRANTED, entry.person)
