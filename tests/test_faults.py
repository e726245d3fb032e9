"""Faults as they happen in the field, on the real parts: a crash mid-pulse, a camera missing at
start or stuck in its driver, a reload naming a camera that is not there, a stalled part and the
watchdog, a part that dies of a bug, a full or read-only state directory, retention."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge.privacy import generate_key
from rigs import scene
from rigs.disk import fill, mount_tmpfs, unmount
from rigs.rig import Rig, wait_until
from rigs.watchdog import NotifySocket, stall, vital_stalls

from .conftest import AppThread
from .test_daemon import RESIDENT_IC, RESIDENT_ID, journal, swipe
from .test_face_door import RESIDENT, photo, templates  # a fixture, used by name
from .test_face_door import RESIDENT_ID as FACE_RESIDENT

FAST_RECONNECT = "\n[reconnect]\nbase_s = 0.05\ncap_s = 0.2\n"


def camera_toml(source: Path, *, door: str = "lobby", loop: bool = True) -> str:
    return (f'\n[[cameras]]\nid = "cam"\nsource = "{source}"\ndoor = "{door}"\nmax_fps = 15\nloop = {str(loop).lower()}\n'
            "\n[face]\ngone_s = 0.6\nliveness_window_s = 1.5\n")


def face_door_rig(tmp_path, templates, source: Path, **kw) -> Rig:
    from edge.store.faces import FaceStore, load_template_key

    rig = Rig(tmp_path / "rig", own_pcscd=False, pulse_ms=300, mode="card_or_face",
              extra_toml=camera_toml(source) + FAST_RECONNECT, **kw).start()
    rig.residents_path.write_text(rig.residents_path.read_text() + f"{FACE_RESIDENT},face,,lobby,,\n")
    rig.import_residents()
    generate_key(rig.root / "face.key")
    store = FaceStore(rig.root / "state", load_template_key(rig.root / "face.key"))
    store.enroll(rig.person_ref(FACE_RESIDENT), templates[FACE_RESIDENT])
    store.close()
    return rig


def walk_up_scene(folder: Path) -> Path:
    """The resident's live face, over and over (written aside, then moved into place at once)."""
    staging = scene.write(folder.with_name(folder.name + ".staging"),
                          scene.live_looped([photo(f"{RESIDENT}_000{i}") for i in (4, 1, 2, 3)]))
    os.rename(staging, folder)
    return folder


# -- a crash mid-pulse -----------------------------------------------------------------------------
def test_a_kill_mid_pulse_is_over_at_restart(rig, daemon_factory):
    """SIGKILL while a grant holds the lock released: the restarted daemon relocks before it has
    even loaded its config, and journals that the previous run did not end cleanly."""
    rig.config_path.write_text(rig.config_path.read_text().replace("pulse_ms = 300", "pulse_ms = 20000"))
    board = rig.board
    d = daemon_factory()
    wait_until(lambda: board.requests > 2, 10, "the daemon polling the board")
    card = swipe(RESIDENT_IC)
    wait_until(lambda: board.coils[0], 5, "the lock released by the grant")
    card.remove()
    d.kill9()
    assert board.coils[0] is True  # nothing on the board will end the pulse
    daemon_factory()
    wait_until(lambda: not board.coils[0], 5, "the lock relocked by the restarted daemon")  # its figure: `bench faults`
    wait_until(lambda: sum(r[3] == "started" for r in journal(rig)) == 2, 10, "the second start journaled")
    conn = sqlite3.connect(rig.root / "state" / "door-edge.db")
    details = [d for (d,) in conn.execute("SELECT detail FROM journal WHERE reason='started' ORDER BY seq")]
    conn.close()
    assert details[0].startswith("first start")
    assert details[1].startswith("previous run ended without a clean stop") and "relocked" in details[1]


# -- cameras ---------------------------------------------------------------------------------------
def test_a_camera_missing_at_start_takes_nothing_down(tmp_path, pcscd, templates):
    source = tmp_path / "cam"
    rig = face_door_rig(tmp_path, templates, source)
    app = AppThread(rig.config_path).start()
    try:
        app.wait_event("camera_down", timeout=30)
        card = swipe(RESIDENT_IC, reader=1)
        app.wait_event("granted")  # the card door works while the camera is away
        card.remove()
        walk_up_scene(source)  # the camera is plugged in
        app.wait_event("camera_up", timeout=10)
        wait_until(lambda: any(e.kind == "face" and e.reason == "granted" for e in app.events), 20, "a face decision")
        cam = app.app.parts.vision.cameras["cam"].reconnects.snapshot()
        assert cam.up and cam.outages == 1
    finally:
        app.stop()
        rig.stop()


def test_a_camera_stuck_in_its_driver_is_replaced(tmp_path, pcscd, templates, monkeypatch):
    import edge.vision.service as service

    monkeypatch.setattr(service, "CAMERA_STALL_S", 2.0)  # 15 s in the field
    source = walk_up_scene(tmp_path / "cam")
    rig = face_door_rig(tmp_path, templates, source)
    app = AppThread(rig.config_path).start()
    try:
        vision = app.app.parts.vision
        wait_until(lambda: vision.cameras["cam"].frames > 3, 30, "frames")
        stuck = threading.Event()
        old = vision.cameras["cam"]
        old._src.read = lambda: stuck.wait()  # an RTSP read that never returns
        wait_until(lambda: vision.replaced == 1, 10, "the camera replaced")
        app.wait_event("camera_down")
        fresh = vision.cameras["cam"]
        wait_until(lambda: fresh.frames > 3, 10, "frames from the fresh camera")
        app.wait_event("camera_up")
        stuck.set()
    finally:
        app.stop()
        rig.stop()


def test_a_reload_naming_a_camera_that_cannot_open_keeps_every_door(rig, daemon_factory, tmp_path):
    d = daemon_factory()
    wait_until(lambda: rig.board.requests > 2, 10, "the daemon polling the board")
    generate_key(rig.root / "face.key")
    text = rig.config_path.read_text().replace('mode = "card"', 'mode = "card_or_face"')
    rig.config_path.write_text(text.replace("[gateway]", "[gateway]\nface_key_file = \"face.key\"")
                               + camera_toml(Path("/dev/video93")))
    d.signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in d.log(), 20, "the reload")
    wait_until(lambda: any(r[3] == "camera_down" for r in journal(rig)), 20, "the camera reported down")
    n = len(rig.board.timeline)
    card = swipe(RESIDENT_ID)
    wait_until(lambda: any(r[3] == "granted" for r in journal(rig)), 10, "a grant after the reload")
    card.remove()
    assert rig.board.wait_for(lambda tl: any(w.on for w in tl[n:]), 5)
    assert d.proc.poll() is None


# -- the watchdog ----------------------------------------------------------------------------------
def test_every_vital_part_that_stalls_stops_the_watchdog(synced_factory, tmp_path, monkeypatch):
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")  # pings every 1.5 s; a part silent 5 s is stalled
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    frames = scene.write(tmp_path / "road", [scene.blank(1)[0]] * 3)
    s = synced_factory(mode="plate_or_card")
    s.rig.config_path.write_text(s.rig.config_path.read_text() + camera_toml(frames))
    s.connect_central().publish_csv(s.rig.residents_path)
    app = AppThread(s.rig.config_path).start()
    try:
        parts = app.app.parts
        wait_until(lambda: parts.sync.mqtt.connected and parts.vision.worker.ready, 60, "sync and vision up")
        wait_until(lambda: notify.pings >= 2, 10, "watchdog pings")
        cases = vital_stalls(parts, lambda: swipe(RESIDENT_IC))
        for name, (obj, attr, trigger) in cases.items():
            release = threading.Event()
            restore = stall(obj, attr, release)
            card = None
            try:
                card = trigger() if trigger is not None else None
                wait_until(lambda: name in parts.heartbeats.stale(), 15, f"{name} seen stalled")
                # from the watchdog's first withheld ping on, the last ping it did send is a whole
                # interval old and delivered: counting from the stall alone raced a ping in flight
                withheld = app.app.watchdog["withheld"]
                wait_until(lambda: app.app.watchdog["withheld"] > withheld, 5, f"the watchdog to see {name} stalled")
                before = notify.pings
                time.sleep(3.2)  # two ping intervals with no ping: systemd would restart us after WatchdogSec
                assert notify.pings == before, f"pings went on while {name} was stalled"
            finally:  # a failed case must not leave a part blocked or a card on the reader for the next test
                restore()
                release.set()
                if card is not None and hasattr(card, "remove"):
                    card.remove()
            wait_until(lambda: not parts.heartbeats.stale(), 15, f"{name} beating again")
            wait_until(lambda: notify.pings > before, 10, f"pings again after {name}")
        assert set(app.app.watchdog["stalled"]) == set(cases)
        # the loop itself: nothing on it can ping. Counted from when the loop is blocked and every
        # ping it sent before has reached the socket
        release = threading.Event()
        blocked = threading.Event()
        app.loop.call_soon_threadsafe(lambda: (blocked.set(), release.wait(10.0)))
        try:
            wait_until(blocked.is_set, 5, "the loop blocked")
            wait_until(lambda: notify.pings == app.app.watchdog["pings"], 2, "the pings sent before delivered")
            before = notify.pings
            time.sleep(3.2)
            assert notify.pings == before
        finally:
            release.set()
        wait_until(lambda: notify.pings > before, 10, "pings after the loop came back")
    finally:
        app.stop()
        notify.close()


# -- our own bugs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["loop task", "thread"])
def test_a_part_that_dies_of_a_bug_stops_the_daemon_in_order(app, rig, where):
    parts = app.app.parts
    if where == "loop task":
        parts.controller.tick = lambda: 1 / 0
    else:
        link = next(iter(parts.links.values()))
        link._poll = lambda: 1 / 0
    app.thread.join(20)
    assert not app.thread.is_alive() and app.result == 1
    assert rig.board.coils[0] is False  # the doors went to their fail mode (secure: locked)
    (_stopped,) = [r for r in journal(rig) if r[3] == "stopped"]
    conn = sqlite3.connect(rig.root / "state" / "door-edge.db")
    (detail,) = conn.execute("SELECT detail FROM journal WHERE reason='stopped'").fetchone()
    conn.close()
    assert where in detail and "ZeroDivisionError" in detail


# -- storage ---------------------------------------------------------------------------------------
def alarms(app: AppThread) -> list[tuple[str, str | None]]:
    return [(e.reason, e.severity) for e in list(app.events) if e.type == "alarm"]


@pytest.fixture
def small_state(tmp_path):
    """A 4 MB tmpfs as the state directory: a real file system that fills up."""
    state = tmp_path / "rig" / "state"
    why = mount_tmpfs(state)
    if why is not None:
        pytest.skip(f"mounting a tmpfs needs CAP_SYS_ADMIN, which this machine does not give: {why}")
    yield state
    unmount(state)


def test_decisions_go_on_when_the_state_directory_is_full(tmp_path, pcscd, small_state, monkeypatch):
    from edge import app as app_mod

    monkeypatch.setattr(app_mod, "SPACE_CHECK_S", 0.2)  # the daemon looks at its disk every 30 s; here five times a second
    rig = Rig(tmp_path / "rig", own_pcscd=False, pulse_ms=300).start()
    rig.import_residents()
    app = AppThread(rig.config_path).start()
    try:
        outbox = app.app.parts.outbox
        # the WAL as a restart leaves it (none): the next write needs new space, as on a card full for good
        with sqlite3.connect(small_state / "door-edge.db") as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(small_state)
        for i, card in enumerate([RESIDENT_ID, RESIDENT_IC, RESIDENT_ID]):
            n = len(rig.board.timeline)
            c = swipe(card, reader=i % 2)
            app.wait_event("granted", count=i + 1)
            assert rig.board.wait_for(lambda tl: any(w.on for w in tl[n:]), 5)  # the door opened
            c.remove()
            wait_until(lambda: not any(app.app.parts.watcher.readers.values()), 5, "the card gone")
        assert outbox.pending >= 3 and outbox.write_failures >= 1
        assert app.app.status()["storage"]["pending"] >= 3
        assert app.thread.is_alive()
        wait_until(lambda: ("journal_overflow", "critical") in alarms(app), 5, "the journal_overflow alarm")
        assert ("disk_nearly_full", "major") in alarms(app)  # a 4 MB state directory is under the 200 MB floor
        assert {"alarm": "disk_nearly_full", "door": "", "subject": str(small_state)} in app.app.status()["alarms"]  # what diag shows
        assert "ALARMS: disk_nearly_full, journal_overflow" in app.app.status_line()  # systemctl status
        filler.unlink()
        wait_until(lambda: outbox.pending == 0, 10, "the kept events written once space returned")
        wait_until(lambda: ("journal_overflow", "cleared") in alarms(app), 5, "the journal_overflow alarm cleared")
        granted = [r for r in journal(rig) if r[3] == "granted"]
        assert len(granted) == 3
        seqs = [r[0] for r in journal(rig)]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        app.stop()
        rig.stop()


def test_a_read_only_journal_keeps_the_events_in_memory_and_counts_them(tmp_path):
    """What an SD card remounted read-only after an error gives SQLite: SQLITE_READONLY on write."""
    from edge.store.db import open_db
    from edge.store.outbox import Event, Outbox

    open_db(tmp_path).close()
    ro = sqlite3.connect(f"file:{tmp_path / 'door-edge.db'}?mode=ro", uri=True, isolation_level=None)
    ob = Outbox(ro)
    seqs = [ob.put(Event("access", "granted", door="lobby")) for _ in range(3)]
    assert seqs == [None, None, None] and ob.pending == 3 and ob.write_failures == 1
    assert "readonly" in ob.storage()["last_error"]
    assert ob.retry() == 0 and ob.pending == 3
    ro.close()


# -- retention -------------------------------------------------------------------------------------
def test_retention_purges_old_events_and_snapshots_and_journals_it(tmp_path):
    from edge import config
    from edge.store.db import open_db
    from edge.store.outbox import Event, Outbox
    from edge.store.retention import Retention

    rig = Rig(tmp_path / "rig", extra_toml="\n[retention]\njournal_days = 30\njournal_max_events = 1000\nsnapshot_days = 7\n")
    rig.write_files()
    cfg = config.load(rig.config_path)
    conn = open_db(cfg.state_dir())
    ob = Outbox(conn)
    now = time.time()
    for i in range(1500):
        ob.put(Event("access", "granted", door="lobby", ts=now - 40 * 86400 if i < 200 else now - i))
    snaps = cfg.state_dir() / "diag"
    snaps.mkdir()
    old, new = snaps / "snapshot-cam-old.png", snaps / "snapshot-cam-new.png"
    old.write_bytes(b"png")
    new.write_bytes(b"png")
    os.utime(old, (now - 8 * 86400, now - 8 * 86400))
    told = []
    r = Retention(cfg, on_put=lambda seq: None, record=told.append)
    purged = r.purge_once()
    r._conn.close()
    assert (purged.events_old, purged.events_excess, purged.snapshots) == (200, 300, 1)
    assert not old.exists() and new.exists()
    assert ob.depth() == 1001  # 1000 kept, and the purge's own event
    (event,) = told
    assert event.reason == "retention_purge" and "200 event(s) older than 30 day(s)" in event.detail
    conn.close()


def test_central_purges_events_older_than_its_retention(tmp_path, broker):
    from protocol import EventBatch
    from rigs.site import Site

    site = Site(tmp_path / "site", tmp_path / "site.key", gateways=["gw-1"]).start(broker)
    central = site.central(serve=False)
    try:
        now = time.time()
        events = [{"id": f"e{i}", "seq": i + 1, "ts": now, "type": "access", "reason": "granted"} for i in range(10)]
        central._ingest("gw-1", EventBatch(first=1, last=10, events=events))
        with central.store.use() as db:
            db.execute("UPDATE events SET received = ? WHERE seq <= 4", (now - 400 * 86400,))
        assert central.purge_events(batch=3) == 4
        assert central.event_count("gw-1") == 6 and central.counters["purged_events"] == 4
    finally:
        central.close()
