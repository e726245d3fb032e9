"""ID cards at the door: anti-passback as a table, then the daemon with in and out GA 467 readers
(hard and soft), through a restart, central's count of violations per credential; and an ID card
past its own validity date refused."""

from __future__ import annotations

from datetime import datetime, time

import pytest

from edge.access.antipassback import Passage, Verdict, check, last_reset
from rigs.ga467 import WANG_FANG
from rigs.rig import IdReaderSpec, Rig, wait_until
from tests.conftest import AppThread

RESET = time(4, 0)
NOON = datetime(2026, 12, 2, 12, 0)
IN_AT_10 = Passage("in", datetime(2026, 12, 2, 10, 0).timestamp())
OUT_AT_11 = Passage("out", datetime(2026, 12, 2, 11, 0).timestamp())
IN_YESTERDAY = Passage("in", datetime(2026, 12, 1, 22, 0).timestamp())
IN_AT_3 = Passage("in", datetime(2026, 12, 2, 3, 59).timestamp())

CASES = [
    # what, mode, last passage, this direction, now, verdict
    ("first in", "hard", None, "in", NOON, Verdict.CLEAR),
    ("in after in", "hard", IN_AT_10, "in", NOON, Verdict.VIOLATION),
    ("in after in, soft", "soft", IN_AT_10, "in", NOON, Verdict.VIOLATION),
    ("in after in, off", "off", IN_AT_10, "in", NOON, Verdict.CLEAR),
    ("out after in", "hard", IN_AT_10, "out", NOON, Verdict.CLEAR),
    ("in after out", "hard", OUT_AT_11, "in", NOON, Verdict.CLEAR),
    ("out without in", "hard", None, "out", NOON, Verdict.CLEAR),
    ("in after yesterday's in: reset at 04:00", "hard", IN_YESTERDAY, "in", NOON, Verdict.CLEAR),
    ("in at 03:59 then at 04:01: reset between", "hard", IN_AT_3, "in", datetime(2026, 12, 2, 4, 1), Verdict.CLEAR),
    ("in at 22:00 then at 03:00: no reset between", "hard", IN_YESTERDAY, "in", datetime(2026, 12, 2, 3, 0), Verdict.VIOLATION),
]


@pytest.mark.parametrize("what,mode,last,direction,now,verdict", CASES, ids=[c[0] for c in CASES])
def test_rule(what, mode, last, direction, now, verdict):
    assert check(mode, last, direction, now, RESET) is verdict


def test_last_reset():
    assert last_reset(datetime(2026, 12, 2, 4, 0), RESET) == datetime(2026, 12, 2, 4, 0)
    assert last_reset(datetime(2026, 12, 2, 3, 59), RESET) == datetime(2026, 12, 1, 4, 0)


# -- the daemon -------------------------------------------------------------------------------
IN, OUT = 0, 1


def door_rig(root, mode: str) -> Rig:
    rig = Rig(root, own_pcscd=False, readers=False, pulse_ms=300, held_open_s=2.0, antipassback=mode,
              id_readers=(IdReaderSpec("in"), IdReaderSpec("out"))).start()
    rig.import_residents()
    return rig


def present(app: AppThread, rig: Rig, reader: int, reason: str) -> None:
    before = app.reasons().count(reason)
    rig.ga467[reader].present(WANG_FANG)
    app.wait_event(reason, count=before + 1)
    rig.ga467[reader].take_away()


def access(app: AppThread) -> list[tuple[str, str]]:
    return [(e.decision, e.reason) for e in app.events if e.type == "access"]


def test_hard_antipassback_refuses_a_second_in_and_remembers_through_a_restart(tmp_path):
    rig = door_rig(tmp_path / "rig", "hard")
    app = AppThread(rig.config_path).start(readers=0)
    try:
        present(app, rig, IN, "granted")
        present(app, rig, IN, "antipassback")          # the card handed back out through the window
        rig.board.set_input(1, True)                    # the exit button is not a passage ...
        app.wait_event("exit_button")
        rig.board.set_input(1, False)
        present(app, rig, IN, "antipassback")          # ... so she still counts as inside
        present(app, rig, OUT, "granted")
        present(app, rig, IN, "granted")
        assert access(app) == [("granted", "granted"), ("denied", "antipassback"), ("denied", "antipassback"),
                               ("granted", "granted"), ("granted", "granted")]
        app.stop()
        app = AppThread(rig.config_path).start(readers=0)
        present(app, rig, IN, "antipassback")          # the restart forgot nothing: she is still in
        assert access(app) == [("denied", "antipassback")]
    finally:
        app.stop()
        rig.stop()


def test_soft_antipassback_opens_journals_and_central_counts_it(synced_factory):
    s = synced_factory(antipassback="soft", id_readers=(IdReaderSpec("in"), IdReaderSpec("out")))
    central = s.connect_central()
    app = AppThread(s.rig.config_path).start()
    try:
        v1 = central.publish_csv(s.rig.residents_path)
        wait_until(lambda: app.app.parts.whitelist.version == v1.version, 10, "the list")
        present(app, s.rig, IN, "granted")
        present(app, s.rig, IN, "antipassback_violation")
        assert access(app) == [("granted", "granted"), ("granted", "granted"), (None, "antipassback_violation")]
        assert s.rig.board.wait_for(lambda tl: sum(w.on for w in tl) >= 2, 3)  # both opened the door
        token = app.events[-1].token
        wait_until(lambda: central.passback_violations() == {token: 1}, 10, "central to count the violation")
    finally:
        app.stop()


def test_an_id_card_past_its_own_validity_is_refused_at_the_door(tmp_path):
    from rigs.ga467 import ZHAO_LEI

    rig = door_rig(tmp_path / "rig", "off")
    app = AppThread(rig.config_path).start(readers=0)
    try:
        rig.ga467[IN].present(ZHAO_LEI)  # expired 2024-01-01
        app.wait_event("id_card_expired")
        rig.ga467[IN].take_away()
        present(app, rig, IN, "granted")  # a valid card on the same reader
        assert access(app) == [("denied", "id_card_expired"), ("granted", "granted")]
        assert [e.kind for e in app.events if e.type == "access"] == ["idno", "idno"]
        assert rig.board.wait_for(lambda tl: sum(w.on for w in tl) == 1, 3)  # only the valid card opened
    finally:
        app.stop()
        rig.stop()
