"""Alarms: the gateway's alarm book as a table; a forced door's alarm reaching the office's webhook
through a broker outage, once per alarm after dedup, past a receiver that fails at first; and the
care rule for residents living alone, computed on central from the events it already receives."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from central.office import Office
from central.webhook import ALARM_ID, SIGNATURE, verify
from edge.access.alarms import AlarmBook
from edge.store.outbox import Event
from rigs.rig import wait_until
from rigs.site import WEBHOOK_SECRET
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard
from tests.conftest import AppThread

CENTRAL_BACKENDS = ("sqlite", "postgres")  # central's storage: each test here runs on both


def alarms(events: list[Event]) -> list[tuple[str, str | None, str | None, str | None]]:
    return [(e.reason, e.door, e.detail, e.severity) for e in events]


def door(reason: str) -> Event:
    return Event("door", reason, door="lobby")


def denied(cred: str | None = "abc", at: str = "lobby") -> Event:
    return Event("access", "unknown_credential", door=at, token=cred, decision="denied")


# -- the alarm book ----------------------------------------------------------------------------
def test_a_forced_door_raises_once_and_closing_it_clears():
    book = AlarmBook()
    assert alarms(book.observe(door("forced_open"), 0)) == [("forced_open", "lobby", None, "critical")]
    assert book.observe(door("forced_open"), 1) == []                   # the same incident
    assert alarms(book.observe(door("held_open"), 30)) == [("held_open", "lobby", None, "major")]
    assert alarms(book.observe(door("closed"), 40)) == [("forced_open", "lobby", None, "cleared"), ("held_open", "lobby", None, "cleared")]
    assert book.observe(door("closed"), 41) == []                       # nothing stands: nothing to clear
    assert book.observe(door("opened"), 50) == []                       # a granted opening is no alarm


def test_tamper_fire_and_parts():
    book = AlarmBook()
    assert alarms(book.observe(door("tamper"), 0)) == [("tamper", "lobby", None, "critical")]
    assert alarms(book.observe(door("tamper_cleared"), 1)) == [("tamper", "lobby", None, "cleared")]
    assert alarms(book.observe(door("fire_release"), 2)) == [("fire", "lobby", None, "critical")]
    assert alarms(book.observe(door("fire_cleared"), 3)) == [("fire", "lobby", None, "cleared")]
    assert alarms(book.part("camera", "lobby-cam", up=False, door="lobby")) == [("camera_down", "lobby", "lobby-cam", "major")]
    assert book.part("camera", "lobby-cam", up=False, door="lobby") == []
    assert alarms(book.part("camera", "lobby-cam", up=True, door="lobby")) == [("camera_down", "lobby", "lobby-cam", "cleared")]
    assert alarms(book.set("disk_nearly_full", True, subject="/var/lib/door-edge")) == [
        ("disk_nearly_full", None, "/var/lib/door-edge", "major")]


def test_repeated_denials_at_a_door_and_of_one_credential():
    book = AlarmBook(denials=5, credential_denials=3, window_s=120)
    out = [a for i in range(4) for a in book.observe(denied(f"t{i}"), i)]
    assert out == []                                                     # four strangers' cards: not yet
    assert alarms(book.observe(denied("t4"), 10)) == [("repeated_denials", "lobby", None, "major")]
    assert book.observe(denied("t5"), 11) == []                         # raised once while it stands
    assert book.tick(100) == []                                          # still six in the window
    assert alarms(book.tick(200)) == [("repeated_denials", "lobby", None, "cleared")]  # the window went by quietly
    book2 = AlarmBook(denials=50, credential_denials=3, window_s=60)
    assert book2.observe(denied("card"), 0) == [] and book2.observe(denied("card", at="garage"), 1) == []
    assert alarms(book2.observe(denied("card"), 2)) == [("credential_denied", None, "card", "minor")]  # one card, three doors' worth
    assert book2.observe(Event("access", "granted", door="lobby", token="card", decision="granted"), 3) == []
    assert alarms(book2.tick(70)) == [("credential_denied", None, "card", "cleared")]


# -- a forced door, a broker outage, the webhook -------------------------------------------------
class Receiver:
    """The office's own system: an HTTP endpoint on 127.0.0.1 that fails its first `fail` POSTs."""

    def __init__(self, fail: int = 2):
        self.posts: list[tuple[str, dict]] = []
        self.refused = 0
        self.fail = fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused < receiver.fail:
                    receiver.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                assert verify(WEBHOOK_SECRET.encode(), body, self.headers[SIGNATURE])
                receiver.posts.append((self.headers[ALARM_ID], json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alarms"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    def unique(self) -> dict[str, dict]:
        """After dedup by the alarm id, as the receiver keeps them."""
        return dict(self.posts)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_a_forced_door_reaches_the_webhook_through_a_broker_outage_once(synced_factory, broker, receiver):
    s = synced_factory(webhook_url=receiver.url, sync_extra="ack_timeout_s = 2\n")
    central = s.connect_central()
    app = AppThread(s.rig.config_path).start()
    try:
        wait_until(lambda: central.gateway(s.gw).get("state") == "online", 15, "the gateway online")
        broker.stop()
        s.rig.board.set_input(0, True)        # the door opens with no grant: forced
        app.wait_event("forced_open")
        s.rig.board.set_input(0, False)
        app.wait_event("closed")
        wait_until(lambda: [e.severity for e in app.events if e.type == "alarm"] == ["critical", "cleared"], 5, "raised, then cleared")
        broker.start()
        wait_until(lambda: len(receiver.unique()) == 1, 60, "the alarm at the webhook")
        office = Office(central)
        wait_until(lambda: office.alarms() == [], 15, "the clear at central too")  # it may come in the next batch
        (alarm,) = office.alarms(open_only=False)
        assert (alarm["gw"], alarm["name"], alarm["door"], alarm["severity"]) == (s.gw, "forced_open", "lobby", "critical")
        assert receiver.refused == 2                                     # retried past the receiver's failures
        posted = receiver.unique()[str(alarm["id"])]
        assert (posted["name"], posted["gateway"], posted["door"], posted["site"]) == ("forced_open", s.gw, "lobby", "rig")

        def queued() -> int:
            with central.store.use() as db:
                return db.execute("SELECT count(*) FROM webhook_queue").fetchone()[0]

        wait_until(lambda: queued() == 0, 10, "the delivered alarm off the webhook queue")  # it leaves once the 204 is read
        # the gateway's batch again (a resend after a lost ack): no second incident, no second POST
        batch = json.loads(json.dumps({"first": 1, "last": 10**6, "events": central.events(s.gw)}))
        from protocol import EventBatch

        central._ingest(s.gw, EventBatch.model_validate(batch))
        assert len(office.alarms(open_only=False)) == 1
        assert queued() == 0  # nothing new to send: the resend was no new incident
        assert len(receiver.posts) == 1 and central.forwarder is not None and central.forwarder.sent == 1

        assert office.acknowledge(alarm["id"], "office-a") and not office.acknowledge(alarm["id"], "office-b")
        assert office.alarms(open_only=False)[0]["acked_by"] == "office-a"
    finally:
        app.stop()


# -- care for residents living alone -------------------------------------------------------------
def test_a_quiet_cared_for_resident_raises_one_alarm_and_a_door_event_clears_it(synced_factory, receiver):
    s = synced_factory(webhook_url=receiver.url, sync_extra="ack_timeout_s = 2\n")
    receiver.fail = 0
    central = s.connect_central()
    central.publish_csv(s.rig.residents_path)
    office = Office(central)
    zhang = s.rig.person_ref("R-0102 Zhang Min")
    with pytest.raises(ValueError, match="no resident"):
        office.set_care("p-0000000000000000", quiet_h=24, consent_by="self", who="office-a")
    office.set_care(zhang, quiet_h=24, consent_by="Zhang Min herself", who="office-a")
    start = time.time()
    assert central.check_care(start + 23.9 * 3600) == []               # inside the quiet period
    (raised,) = central.check_care(start + 24.1 * 3600)
    assert central.check_care(start + 30 * 3600) == []                 # one alarm while she stays quiet
    wait_until(lambda: str(raised) in receiver.unique(), 15, "the care alarm at the webhook")
    assert receiver.unique()[str(raised)]["name"] == "care_quiet" and receiver.unique()[str(raised)]["subject"] == zhang

    app = AppThread(s.rig.config_path).start()
    try:
        wait_until(lambda: app.app.parts.whitelist.version == central.version, 15, "the list")
        card = VirtualCard(CardProfile.mifare("04A1B2C3"), port=VPCD_PORTS[0])  # her card at the lobby
        card.insert()
        app.wait_event("granted")
        card.remove()
        wait_until(lambda: office.alarms() == [], 15, "the care alarm cleared by her door event")
    finally:
        app.stop()
    (row,) = office.alarms(open_only=False)
    assert row["clear_note"] == "seen at a door"
    assert central.check_care(time.time() + 23 * 3600) == []          # her clock restarted at the swipe
