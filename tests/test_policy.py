"""The decision function, table-driven: every reason code it can give."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from edge.access.policy import CONTROLLER_REASONS, FACE_PATH_REASONS, PASS_REASONS, PLATE_PATH_REASONS, Reason, decide, in_schedule
from edge.config import Door, Schedule
from edge.store.whitelist import Entry

RELAY = {"type": "modbus", "port": "/dev/ttyUSB0"}
LOBBY = Door(id="lobby", relay=RELAY)
NIGHT_DOOR = Door(id="lobby", relay=RELAY, schedule="day")
STRICT = Door(id="lobby", relay=RELAY, when_stale="deny")
FACE_DOOR = Door(id="lobby", relay=RELAY, mode="card_or_face")
GATE = Door(id="gate", relay=RELAY, mode="plate")
GATE_OR_CARD = Door(id="gate", relay=RELAY, mode="plate_or_card")
SCHEDULES = {"day": Schedule(mon=["07:00-22:00"], sat=["09:00-12:00", "14:00-24:00"], holiday=["10:00-11:00"]),
             "cleaners": Schedule(mon=["09:00-12:00"])}
HOLIDAYS = frozenset({date(2026, 10, 1)})
MON_NOON = datetime(2026, 11, 30, 12, 0)  # a Monday


def entry(kind="ic", doors=None, vf=None, vt=None, schedule=None) -> Entry:
    return Entry("t" * 64, kind, "R-1", doors, vf, vt, schedule)


CASES = [
    # (name, kind, entry, door, now, fire (True) or central silent too long ("stale"), granted, reason)
    ("known card", "ic", entry(), LOBBY, MON_NOON, False, True, Reason.GRANTED),
    ("ID card", "idcard", entry("idcard"), LOBBY, MON_NOON, False, True, Reason.GRANTED),
    ("unknown card", "ic", None, LOBBY, MON_NOON, False, False, Reason.UNKNOWN_CREDENTIAL),
    ("kind mismatch", "idcard", entry("ic"), LOBBY, MON_NOON, False, False, Reason.UNKNOWN_CREDENTIAL),
    ("wrong door", "ic", entry(doors=frozenset({"garage"})), LOBBY, MON_NOON, False, False, Reason.WRONG_DOOR),
    ("listed door", "ic", entry(doors=frozenset({"lobby"})), LOBBY, MON_NOON, False, True, Reason.GRANTED),
    ("lease ended", "ic", entry(vt=datetime(2026, 11, 1)), LOBBY, MON_NOON, False, False, Reason.EXPIRED),
    ("lease ends at that instant", "ic", entry(vt=MON_NOON), LOBBY, MON_NOON, False, False, Reason.EXPIRED),
    ("lease not started", "ic", entry(vf=datetime(2026, 12, 1)), LOBBY, MON_NOON, False, False, Reason.NOT_YET_VALID),
    ("inside validity", "ic", entry(vf=datetime(2026, 1, 1), vt=datetime(2027, 1, 1)), LOBBY, MON_NOON, False, True, Reason.GRANTED),
    ("door schedule open", "ic", entry(), NIGHT_DOOR, MON_NOON, False, True, Reason.GRANTED),
    ("door schedule closed", "ic", entry(), NIGHT_DOOR, datetime(2026, 11, 30, 23, 0), False, False, Reason.OUTSIDE_SCHEDULE),
    ("empty day", "ic", entry(), NIGHT_DOOR, datetime(2026, 12, 1, 12, 0), False, False, Reason.OUTSIDE_SCHEDULE),
    ("person schedule", "ic", entry(schedule="cleaners"), LOBBY, datetime(2026, 11, 30, 13, 0), False, False, Reason.OUTSIDE_SCHEDULE),
    ("person schedule open", "ic", entry(schedule="cleaners"), LOBBY, datetime(2026, 11, 30, 10, 0), False, True, Reason.GRANTED),
    ("undefined person schedule fails closed", "ic", entry(schedule="gone"), LOBBY, MON_NOON, False, False, Reason.OUTSIDE_SCHEDULE),
    ("holiday uses holiday ranges", "ic", entry(), NIGHT_DOOR, datetime(2026, 10, 1, 12, 0), False, False, Reason.OUTSIDE_SCHEDULE),
    ("holiday open", "ic", entry(), NIGHT_DOOR, datetime(2026, 10, 1, 10, 30), False, True, Reason.GRANTED),
    ("plate at a card door", "plate", entry("plate"), LOBBY, MON_NOON, False, False, Reason.MODE_NOT_ALLOWED),
    ("plate at a plate gate", "plate", entry("plate"), GATE, MON_NOON, False, True, Reason.GRANTED),
    ("card at a plate-only gate", "ic", entry(), GATE, MON_NOON, False, False, Reason.MODE_NOT_ALLOWED),
    ("card at a plate_or_card gate", "ic", entry(), GATE_OR_CARD, MON_NOON, False, True, Reason.GRANTED),
    ("face at a card door", "face", entry("face"), LOBBY, MON_NOON, False, False, Reason.MODE_NOT_ALLOWED),
    ("face at a face door", "face", entry("face"), FACE_DOOR, MON_NOON, False, True, Reason.GRANTED),
    ("card at a face door: never the only way in", "ic", entry(), FACE_DOOR, MON_NOON, False, True, Reason.GRANTED),
    ("face without consent on the list", "face", None, FACE_DOOR, MON_NOON, False, False, Reason.UNKNOWN_CREDENTIAL),
    ("fire: unknown card still logged", "ic", None, LOBBY, MON_NOON, True, True, Reason.FIRE_RELEASE),
    ("fire beats expiry", "ic", entry(vt=datetime(2020, 1, 1)), LOBBY, MON_NOON, True, True, Reason.FIRE_RELEASE),
    ("stale list, door denies when stale", "ic", entry(), STRICT, MON_NOON, "stale", False, Reason.WHITELIST_STALE),
    ("stale list, door keeps serving", "ic", entry(), LOBBY, MON_NOON, "stale", True, Reason.GRANTED),
    ("stale list, fire still releases", "ic", None, STRICT, MON_NOON, True, True, Reason.FIRE_RELEASE),
]


@pytest.mark.parametrize("name,kind,ent,door,now,fire,granted,reason", CASES, ids=[c[0] for c in CASES])
def test_decide(name, kind, ent, door, now, fire, granted, reason):
    d = decide(kind, ent, door, now, schedules=SCHEDULES, holidays=HOLIDAYS, fire_active=fire is True, stale=fire == "stale")
    assert (d.granted, d.reason) == (granted, reason)


def test_every_reason_is_covered_by_the_table():
    # those: test_walkup.py, test_plate.py, test_id_door.py and test_passes.py
    assert {c[-1] for c in CASES} == set(Reason) - FACE_PATH_REASONS - PLATE_PATH_REASONS - CONTROLLER_REASONS - PASS_REASONS


@pytest.mark.parametrize("hhmm,inside", [("08:59", False), ("09:00", True), ("11:59", True), ("12:00", False),
                                         ("14:00", True), ("23:59", True)])
def test_schedule_edges_and_24h_end(hhmm, inside):
    h, m = map(int, hhmm.split(":"))
    assert in_schedule(SCHEDULES["day"], frozenset(), datetime(2026, 11, 28, h, m)) is inside  # a Saturday
