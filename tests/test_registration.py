"""A new tenant registers end to end on the real broker: a GA 467 reader in register mode, the
identity sealed on the gateway, central opening it, the office approving it, the delta, and the
tenant's next presentation granted; a kill -9 between the read and the send; and the identity
nowhere on the gateway."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import pytest

from central import registrations as regs
from rigs.ga467 import CHEN_JING, ZHAO_LEI, FakeId, idno
from rigs.rig import IdReaderSpec, wait_until
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard
from tests.conftest import AppThread, Daemon

CENTRAL_BACKENDS = ("sqlite", "postgres")  # central's storage: each test here runs on both

DESK, DOOR = 0, 1
LI_NA = FakeId("李娜", idno("51010719880808004"), birth="19880808", sex="2", valid_to="20300101")
RESIDENT_NAMES = ("Li Wei", "Zhang Min", "Wang Fang", "former tenant")
IDENTITIES = (CHEN_JING, LI_NA, ZHAO_LEI)


def readers():
    return (IdReaderSpec("in", "register"), IdReaderSpec("in"))


def present(app: AppThread, rig, reader: int, card: FakeId, reason: str) -> None:
    before = app.reasons().count(reason)
    rig.ga467[reader].present(card)
    app.wait_event(reason, count=before + 1)
    rig.ga467[reader].take_away()


def personal(data: bytes) -> list[str]:
    """Which names or ID numbers appear in `data`, in UTF-8 or UCS-2 (as the card holds them)."""
    wanted = [*RESIDENT_NAMES, "110101199003074514", *(c.name for c in IDENTITIES), *(c.idno for c in IDENTITIES),
              *(c.address for c in IDENTITIES)]
    return [w for w in wanted if w.encode() in data or w.encode("utf-16-le") in data]


def state_files(root: Path) -> dict[str, list[str]]:
    return {f.name: found for f in sorted(root.rglob("*")) if f.is_file() and (found := personal(f.read_bytes()))}


def test_registration_end_to_end_and_nothing_personal_on_the_gateway(synced_factory, tmp_path):
    s = synced_factory(id_readers=readers())
    central = s.connect_central()
    app = AppThread(s.rig.config_path).start()
    try:
        v1 = central.publish_csv(s.rig.residents_path)
        wait_until(lambda: app.app.parts.whitelist.version == v1.version, 10, "the list")
        present(app, s.rig, DESK, CHEN_JING, "registration_sent")
        present(app, s.rig, DOOR, CHEN_JING, "unknown_credential")  # not approved yet
        present(app, s.rig, DESK, LI_NA, "registration_sent")
        present(app, s.rig, DESK, ZHAO_LEI, "registration_refused")  # an expired ID card is not registered
        wait_until(lambda: len(central.registrations("test")) == 2, 10, "both registrations at central")
        pending = {r.identity.name: r for r in central.registrations("office-a")}
        assert set(pending) == {CHEN_JING.name, LI_NA.name}
        assert pending[CHEN_JING.name].identity.idno == CHEN_JING.idno and pending[CHEN_JING.name].door == "lobby"

        lease_end = date(date.today().year + 1, 6, 30)
        result = central.approve(pending[CHEN_JING.name].id, doors=frozenset({"lobby"}), until=lease_end, who="office-a",
                                 room="1203", ic="04ABCDEF")
        assert result.mode == "delta" and result.upserts == 2
        central.reject(pending[LI_NA.name].id, who="office-a", note="no lease shown")
        with pytest.raises(regs.RegistrationError, match="already rejected"):
            central.reject(pending[LI_NA.name].id, who="office-b")
        wait_until(lambda: app.app.parts.whitelist.version == result.version, 10, "the approval's delta")
        present(app, s.rig, DOOR, CHEN_JING, "granted")  # no restart
        card = VirtualCard(CardProfile.mifare("04ABCDEF"), port=VPCD_PORTS[0])
        card.insert()
        app.wait_event("granted", count=2)
        card.remove()
        present(app, s.rig, DOOR, LI_NA, "unknown_credential")  # rejected: not listed
        entry = app.app.parts.whitelist.lookup(app.app.parts.controller.tokenizer.token("ic", "04ABCDEF"))
        assert entry.valid_to.date() == date(lease_end.year, 7, 1) and entry.doors == frozenset({"lobby"})  # through the lease's last day
        assert entry.person.startswith("p-") and entry.person == app.app.parts.whitelist.lookup(
            app.app.parts.controller.tokenizer.token("idno", CHEN_JING.idno)).person  # one opaque person, two credentials

        # the office's export for the police station: approved tenants only, and it is audited
        out = tmp_path / "registrations.csv"
        assert central.export_registrations(out, "office-a") == 1
        rows = list(__import__("csv").DictReader(out.open(encoding="utf-8")))
        assert [(r["name"], r["idno"], r["room"], r["lease_end"], r["approved_by"]) for r in rows] == [
            (CHEN_JING.name, CHEN_JING.idno, "1203", lease_end.isoformat(), "office-a")]
        with central.store.use() as db:
            audit = [a for (a,) in db.execute("SELECT action FROM audit ORDER BY rowid")]
            details = [r for (r,) in db.execute("SELECT detail FROM audit")]
        assert audit.count("registrations_viewed") >= 2 and {"registration_approved", "registration_rejected",
                                                               "registrations_exported"} <= set(audit)
        assert not personal(json.dumps(details).encode())

        # what the gateway sent, kept and logged: tokens and sealed bytes only
        wait_until(lambda: app.app.parts.outbox.depth() == 0, 10, "every event acknowledged")
        events = [e.as_dict() for e in app.events]
        assert {"registration_sent", "registration_refused", "granted"} <= {e["reason"] for e in events}
        assert not personal(json.dumps(events, ensure_ascii=False).encode())
        assert not personal(json.dumps(central.events(s.gw), ensure_ascii=False).encode())
        assert all("sealed" not in e for e in central.events(s.gw))  # opened into `registrations`, not kept in the events
    finally:
        app.stop()
    assert state_files(s.rig.root / "state") == {}  # the WAL and every database file included


def test_kill9_between_the_read_and_the_send_loses_no_registration(synced_factory, broker, tmp_path):
    s = synced_factory(id_readers=readers())
    central = s.connect_central()
    central.publish_csv(s.rig.residents_path)
    d = Daemon(s.rig.config_path, tmp_path / "daemon.log").start()
    d2 = None
    try:
        wait_until(lambda: central.gateway(s.gw).get("applied_version") == 1, 30, "the gateway to apply its list")
        broker.stop()  # the network is down: the registration can only be journaled
        s.rig.ga467[DESK].present(CHEN_JING)
        journal = s.rig.root / "state" / "door-edge.db"

        def journaled() -> bool:
            conn = sqlite3.connect(journal)
            try:
                return conn.execute("SELECT count(*) FROM journal WHERE reason='registration_sent'").fetchone()[0] == 1
            finally:
                conn.close()

        wait_until(journaled, 10, "the registration in the journal")
        # the log line follows the journal's commit; wait for it too, so the privacy check below reads it
        wait_until(lambda: "registration_sent" in d.log(), 10, "the registration in the log")
        d.kill9()  # before anything could be sent
        s.rig.ga467[DESK].take_away()
        broker.start()
        d2 = Daemon(s.rig.config_path, tmp_path / "daemon2.log").start()
        wait_until(lambda: len(central.registrations("test")) == 1, 30, "the registration at central after the restart")
        (reg,) = central.registrations("test")
        assert reg.identity.idno == CHEN_JING.idno and reg.gw == s.gw
        assert d2.stop() == 0
    finally:
        d.stop()
        if d2 is not None:
            d2.stop()
    logs = d.log() + (d2.log() if d2 else "")
    assert "registration_sent" in logs and not personal(logs.encode())
    assert state_files(s.rig.root / "state") == {}
