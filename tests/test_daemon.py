"""The card door end to end: pcscd + vpcd card -> daemon -> Modbus board on a pty -> journal."""

from __future__ import annotations

import signal
import sqlite3
import threading

import pytest

from rigs.rig import wait_until
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard

RESIDENT_ID = CardProfile.idcard("0102030405060708")
RESIDENT_IC = CardProfile.mifare("04A1B2C3")
FORMER_TENANT = CardProfile.mifare("04D4E5F6")
STRANGER = CardProfile.mifare("04778899AABBCC")
CONTACT, EXIT, FIRE = 0, 1, 2


def swipe(profile: CardProfile, reader: int = 0) -> VirtualCard:
    card = VirtualCard(profile, port=VPCD_PORTS[reader])
    card.insert()
    return card


def journal(rig) -> list[tuple]:
    """The daemon's journal rows (none before the daemon has created it)."""
    path = rig.root / "state" / "door-edge.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='journal'").fetchone():
            return []
        return conn.execute("SELECT seq, type, decision, reason, kind, token FROM journal ORDER BY seq").fetchall()
    finally:
        conn.close()


def on_writes(board) -> int:
    return sum(1 for w in board.timeline if w.on)


def pulsed(tl) -> bool:
    """An on write followed by an off write: a pulse, then locked again."""
    ons = [w.on for w in tl]
    return True in ons and False in ons[ons.index(True):]


def test_resident_id_card_opens_the_door(app, rig):
    assert rig.board.wait_for(lambda tl: bool(tl), 3) and rig.board.timeline[0].on is False  # locked at start
    card = swipe(RESIDENT_ID)
    app.wait_event("granted")
    assert rig.board.wait_for(pulsed, 3)  # pulse, then locked
    card.remove()
    (row,) = [r for r in journal(rig) if r[1] == "access"]
    assert row[2:5] == ("granted", "granted", "idcard") and len(row[5]) == 12


@pytest.mark.parametrize("profile,reason", [(RESIDENT_IC, "granted"), (STRANGER, "unknown_credential"),
                                            (FORMER_TENANT, "expired")])
def test_decisions_through_the_daemon(app, rig, profile, reason):
    card = swipe(profile, reader=1)
    app.wait_event(reason)
    card.remove()
    granted = reason == "granted"
    if granted:
        assert rig.board.wait_for(lambda tl: any(w.on for w in tl), 3)
    else:
        assert rig.board.coils[0] is False and on_writes(rig.board) == 0


def test_door_inputs_drive_the_door_machine(app, rig):
    board = rig.board
    board.set_input(CONTACT, True)
    app.wait_event("forced_open")
    app.wait_event("held_open", timeout=5)
    board.set_input(CONTACT, False)
    app.wait_event("closed")
    board.set_input(EXIT, True)
    app.wait_event("exit_button")
    board.set_input(EXIT, False)
    assert board.wait_for(lambda tl: any(w.on for w in tl), 3)
    board.set_input(CONTACT, True)
    app.wait_event("opened")
    board.set_input(CONTACT, False)
    app.wait_event("closed", count=2)


def test_fire_alarm_releases_and_holds_until_cleared(app, rig):
    board = rig.board
    board.set_input(FIRE, True)
    app.wait_event("fire_release")
    wait_until(lambda: board.coils[0], 2, "lock released")
    card = swipe(STRANGER)
    app.wait_event("fire_release", count=2)  # decisions are still recorded
    card.remove()
    assert board.coils[0] is True
    board.set_input(FIRE, False)
    app.wait_event("fire_cleared")
    wait_until(lambda: not board.coils[0], 2, "locked again")


def test_whitelist_change_takes_effect_without_restart(app, rig, tmp_path):
    from edge.__main__ import main as cli

    card = swipe(STRANGER)
    app.wait_event("unknown_credential")
    card.remove()
    wait_until(lambda: not any(app.app.parts.watcher.readers.values()), 3, "reader empty")
    csv = tmp_path / "new.csv"
    csv.write_text("person,kind,value,doors,valid_from,valid_to\nR-0909 new tenant,ic,04778899AABBCC,lobby,,\n")
    assert cli(["whitelist", "import", "--config", str(rig.config_path), str(csv)]) == 0
    wait_until(lambda: app.app.parts.whitelist.version == 2, 5, "the daemon to load v2")
    card = swipe(STRANGER)
    app.wait_event("granted")
    card.remove()


def test_relay_port_lost_and_back(app, rig):
    rig.pty.cut()
    app.wait_event("relay_link_lost")
    rig.pty.start()
    app.wait_event("relay_link_restored", timeout=10)
    card = swipe(RESIDENT_IC)
    app.wait_event("granted")
    card.remove()
    assert rig.board.wait_for(lambda tl: any(w.on for w in tl), 3)


def test_pcscd_restart_while_running(app, rig, pcscd):
    pcscd.restart()
    watcher = app.app.parts.watcher
    wait_until(lambda: watcher.counters["context_lost"] >= 1 and watcher.service_up and len(watcher.readers) == 2,
               15, "the daemon to reconnect to pcscd")
    card = swipe(RESIDENT_ID)
    app.wait_event("granted")
    card.remove()


def test_no_uid_in_database_or_log(rig, daemon_factory):
    d = daemon_factory()
    card = swipe(RESIDENT_ID)
    wait_until(lambda: any(r[3] == "granted" for r in journal(rig)), 10, "a grant in the journal")
    card.remove()
    card = swipe(STRANGER)
    wait_until(lambda: any(r[3] == "unknown_credential" for r in journal(rig)), 5, "a denial in the journal")
    card.remove()
    assert d.stop() == 0
    stored = b"".join(p.read_bytes() for p in (rig.root / "state").iterdir())
    text = d.log()
    for uid in ("0102030405060708", "04778899AABBCC", "04A1B2C3"):
        assert uid.encode() not in stored and uid.lower().encode() not in stored
        assert uid not in text and uid.lower() not in text
    assert "R-0101" not in text  # nor a person


def test_kill9_mid_burst_loses_no_decision_that_reached_the_relay(rig, daemon_factory):
    """Kill the daemon the instant the board has a relay frame, mid-burst; restart; audit."""
    board = rig.board
    d = daemon_factory()
    wait_until(lambda: board.requests > 2, 10, "the daemon polling the board")
    killed = threading.Event()
    writes_at_kill: list[int] = []

    def kill_on_fifth(w) -> None:
        if w.on and on_writes(board) >= 5 and not killed.is_set():
            d.proc.send_signal(signal.SIGKILL)
            writes_at_kill.append(on_writes(board))
            killed.set()

    board.on_write = kill_on_fifth
    cards = [None, None]
    profiles = [RESIDENT_ID, RESIDENT_IC, STRANGER]
    i = 0
    while not killed.is_set() and i < 40:
        r = i % 2
        if cards[r] is not None:
            cards[r].remove()
        wait_until(lambda: killed.is_set() or sum(1 for row in journal(rig) if row[1] == "access") >= i - 1, 5,
                   "the daemon keeping up")
        cards[r] = swipe(profiles[i % 3], r)
        i += 1
    for c in cards:
        if c is not None:
            c.remove()
    assert killed.wait(10)
    d.proc.wait(10)
    board.on_write = None
    rows = journal(rig)
    granted = [r for r in rows if r[1] == "access" and r[2] == "granted"]
    assert len(granted) >= writes_at_kill[0]  # every relay frame has its decision in the journal
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # no gaps
    # the restarted daemon continues the sequence and works
    daemon_factory()
    wait_until(lambda: board.requests > 2, 10, "the new daemon polling the board")
    before = len(rows)
    card = swipe(RESIDENT_IC)
    wait_until(lambda: len(journal(rig)) > before and journal(rig)[-1][3] == "granted", 10, "a grant after restart")
    card.remove()
    seqs = [r[0] for r in journal(rig)]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("fail_mode,left_released", [("safe", True), ("secure", False)])
def test_sigterm_leaves_the_door_in_its_fail_mode(rig, daemon_factory, fail_mode, left_released):
    rig.config_path.write_text(rig.config_path.read_text().replace('fail_mode = "secure"', f'fail_mode = "{fail_mode}"'))
    d = daemon_factory()
    wait_until(lambda: rig.board.requests > 2, 10, "the daemon polling the board")
    rig.board.coils[0] = not left_released
    d.signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
    assert rig.board.coils[0] is left_released
    assert "stopped" in d.log()


def test_sighup_with_a_broken_config_keeps_running(rig, daemon_factory):
    d = daemon_factory()
    wait_until(lambda: rig.board.requests > 2, 10, "the daemon polling the board")
    good = rig.config_path.read_text()
    rig.config_path.write_text(good.replace("pulse_ms", "pulse_msec"))
    d.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in d.log(), 5, "the refusal in the log")
    assert d.proc.poll() is None
    rig.config_path.write_text(good.replace("pulse_ms = 300", "pulse_ms = 700"))
    d.signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in d.log(), 10, "the reload")
    n = len(rig.board.timeline)
    card = swipe(RESIDENT_IC)
    assert rig.board.wait_for(lambda tl: pulsed(tl[n:]), 5)
    card.remove()
    after = rig.board.timeline[n:]
    on = next(w for w in after if w.on)
    off = next(w for w in after if not w.on and w.t_ns > on.t_ns)
    assert (off.t_ns - on.t_ns) / 1e9 >= 0.65  # the new pulse length
