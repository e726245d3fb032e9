"""Sync end to end: the daemon's App (real pcscd, virtual cards, the board on a pty) talking to the
central reference through a real mosquitto on 127.0.0.1."""

from __future__ import annotations

import json
import signal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

import protocol
from edge.privacy import Tokenizer, load_key
from edge.store.db import open_db
from edge.store.outbox import Event, Outbox
from edge.store.whitelist import Entry
from rigs.rig import wait_until
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard
from tests.conftest import AppThread, Daemon

CENTRAL_BACKENDS = ("sqlite", "postgres")  # central's storage: each test here runs on both

RESIDENT_IC = CardProfile.mifare("04A1B2C3")
STRANGER = CardProfile.mifare("04778899AABBCC")
FAST = "ack_timeout_s = 2\ntelemetry_s = 1\n"


def swipe(app: AppThread, profile: CardProfile, reason: str, count: int = 1) -> None:
    """Present a card until the `count`th `reason` event, take it away, wait for the reader to see that."""
    card = VirtualCard(profile, port=VPCD_PORTS[0])
    card.insert()
    try:
        app.wait_event(reason, 5, count)
    finally:
        card.remove()
    watcher = app.app.parts.watcher
    wait_until(lambda: not any(watcher.readers.values()), 3, "the reader to see the card gone")


def test_a_list_change_decides_the_next_swipe_and_events_reach_central(synced_factory):
    s = synced_factory(sync_extra=FAST)
    central = s.connect_central()
    app = AppThread(s.rig.config_path).start()
    try:
        v1 = central.publish_csv(s.rig.residents_path)
        wait_until(lambda: app.app.parts.whitelist.version == v1.version, 5, "the first list")
        swipe(app, RESIDENT_IC, "granted")
        # Zhang Min moves out: central drops her line; the gateway is not restarted
        lines = s.rig.residents_path.read_text().splitlines()
        s.rig.residents_path.write_text("\n".join(line for line in lines if "Zhang Min" not in line) + "\n")
        v2 = central.publish_csv(s.rig.residents_path)
        assert (v2.version, v2.mode, v2.deletes) == (2, "delta", 1)
        wait_until(lambda: app.app.parts.whitelist.version == 2, 5, "the delta")
        swipe(app, RESIDENT_IC, "unknown_credential")
        wait_until(lambda: [e["reason"] for e in central.events(s.gw) if e["type"] == "access"] == ["granted", "unknown_credential"],
                   10, "both decisions at central")
        wait_until(lambda: app.app.parts.outbox.depth() == 0, 5, "the journal emptied by central's acks")
        assert central.gateway(s.gw)["applied_version"] == 2
        # a telemetry message sent between the last swipe and central's ack still counts it: wait for a later one
        wait_until(lambda: s.gw in central.telemetry and central.telemetry[s.gw].whitelist["version"] == 2
                   and central.telemetry[s.gw].journal["depth"] == 0, 10, "telemetry after the acks")
        tel = central.telemetry[s.gw]
        assert tel.relays == {str(s.rig.root / "ttyGW"): {"up": True, "corrections": 0}} and tel.readers["service_up"] is True
        assert tel.parts["mqtt"]["up"] is True and tel.parts["pcscd"]["up"] is True
        assert tel.journal["depth"] == 0 and tel.whitelist["stale"] is False and tel.counters["mqtt.connects"] == 1
        # remote diagnostics: read-only ops unsigned, a relay pulse only signed
        assert central.call(s.gw, "journal_stats").result["depth"] == 0  # type: ignore[union-attr]
        refused = central.call(s.gw, "relay_pulse", {"door": "lobby"})
        assert refused is not None and not refused.ok and "signed" in (refused.error or "")
        before = sum(1 for w in s.rig.board.timeline if w.on)
        done = central.call(s.gw, "relay_pulse", {"door": "lobby"}, signed=True)
        assert done is not None and done.ok
        assert s.rig.board.wait_for(lambda tl: sum(1 for w in tl if w.on) == before + 1, 3)
        app.wait_event("remote_pulse")
    finally:
        app.stop()


def test_broker_outage_with_swipes_every_event_arrives_once_in_order(synced_factory, broker):
    s = synced_factory(sync_extra=FAST)
    central = s.connect_central()
    app = AppThread(s.rig.config_path).start()
    try:
        central.publish_csv(s.rig.residents_path)
        wait_until(lambda: app.app.parts.whitelist.version == 1, 5, "the list")
        broker.stop()
        sync = app.app.parts.sync
        wait_until(lambda: not sync.mqtt.connected, 5, "the gateway to notice")
        for i in range(3):
            swipe(app, RESIDENT_IC, "granted", i + 1)
            swipe(app, STRANGER, "unknown_credential", i + 1)
        local = app.app.parts.outbox.last_seq()
        assert local >= 6 and not central.events(s.gw)[6:]
        broker.start()
        wait_until(lambda: central.event_count(s.gw) >= local, 20, "every event at central")
        got = central.events(s.gw)
        assert [e["seq"] for e in got] == list(range(1, local + 1))  # in order, none missing
        assert len({e["id"] for e in got}) == len(got) == local
        assert central.events(s.gw, last=3) == got[-3:]  # `central events -n 3`: the newest, read as such
        wait_until(lambda: app.app.parts.outbox.depth() == 0, 10, "the journal emptied")
        assert sync.mqtt.counters.connects >= 2
    finally:
        app.stop()


def test_kill9_while_draining_loses_nothing_and_status_tells_the_story(synced_factory, tmp_path):
    s = synced_factory(sync_extra="batch_max = 50\n")
    state = s.rig.root / "state"
    ob = Outbox(open_db(state))
    backlog = [Event("access", "granted", door="lobby", kind="ic", token="t" * 12, decision="granted") for _ in range(20000)]
    for e in backlog:
        ob.put(e)
    central = s.connect_central()
    d = Daemon(s.rig.config_path, tmp_path / "daemon.log").start()
    try:
        wait_until(lambda: central.event_count(s.gw) >= 1000, 30, "the drain to be under way")
        d.kill9()
        part = central.event_count(s.gw)
        assert part < 20000, "the drain finished before the kill: nothing was tested"
        wait_until(lambda: central.gateway(s.gw).get("state") == "offline", 5, "the will (offline)")
        conn_before = central.gateway(s.gw)["conn"]
        d2 = Daemon(s.rig.config_path, tmp_path / "daemon2.log").start()
        wait_until(lambda: central.event_count(s.gw) >= 20000, 60, "the whole backlog at central")
        got = central.events(s.gw)
        assert {e.id for e in backlog} <= {e["id"] for e in got}
        assert len({e["id"] for e in got}) == len(got)
        wait_until(lambda: central.gateway(s.gw)["state"] == "online" and central.gateway(s.gw)["conn"] > conn_before, 5,
                   "online again, with the connection counter carried across the restart")
        assert d2.stop() == 0
        wait_until(lambda: central.gateway(s.gw)["state"] == "stopped", 5, "stopped before the clean disconnect")
    finally:
        d.stop()


def test_a_100k_snapshot_arrives_in_chunks_and_swaps_in_whole(synced_factory):
    s = synced_factory()
    central = s.connect_central()
    app = AppThread(s.rig.config_path).start()
    try:
        tok = Tokenizer(load_key(s.rig.root / "site.key"))
        entries = [Entry(tok.token("ic", f"{i:08X}"), "ic", f"R-{i}", None, None, None) for i in range(100_000)]
        res = central.publish_entries(entries)
        assert res.mode == "snapshot"
        wl = app.app.parts.whitelist
        wait_until(lambda: app.app.parts.sync.wl.applied["snapshot"] == 1, 30, "the snapshot swapped in")
        assert len(wl) == 100_000 and wl.lookup(entries[77_777].token) == entries[77_777]
        assert wl.version == res.version and wl.sha256 == central.sha256()
    finally:
        app.stop()


def test_garbage_from_the_broker_is_counted_and_the_gateway_keeps_syncing(synced_factory, broker):
    s = synced_factory()
    app = AppThread(s.rig.config_path).start()
    try:
        sync = app.app.parts.sync
        wait_until(lambda: sync.mqtt.connected, 5, "the connection")
        pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        junk = [b"", b"\x00\xff", b"{", b"[]", b'{"v": 2}', json.dumps({"v": 1, "kid": "x", "alg": "Ed25519", "body": "", "sig": ""}).encode()]
        for name in protocol.DOWN:
            for j in junk:
                pub.publish(protocol.topic(s.gw, name), j, qos=1).wait_for_publish(5)
        wait_until(lambda: sync.malformed_total() >= len(junk) * len(protocol.DOWN), 10, "every bad message counted")
        assert sync.malformed_total() == len(junk) * len(protocol.DOWN)
        pub.loop_stop()
        pub.disconnect()
        central = s.connect_central()
        central.publish_csv(s.rig.residents_path)
        wait_until(lambda: app.app.parts.whitelist.version == 1, 5, "a good list after the garbage")
    finally:
        app.stop()


def test_silent_central_makes_the_list_stale_and_strict_doors_deny_over_mutual_tls(synced_factory):
    s = synced_factory(tls=True, when_stale="deny", sync_extra="stale_after_s = 2\n")
    central = s.connect_central()
    central.publish_csv(s.rig.residents_path)  # before the gateway is up: it asks for what it lacks
    app = AppThread(s.rig.config_path).start()
    try:
        wait_until(lambda: app.app.parts.whitelist.version == 1, 10, "the list over mTLS")
        swipe(app, RESIDENT_IC, "granted")
        app.wait_event("whitelist_stale", 6)
        swipe(app, RESIDENT_IC, "whitelist_stale")
        central._publish(s.gw, "wl/head", central.head(s.gw), retain=True)  # central speaks again
        app.wait_event("whitelist_fresh", 5)
        swipe(app, RESIDENT_IC, "granted", 2)
    finally:
        app.stop()


def test_a_reload_with_a_missing_central_key_keeps_the_running_config(synced_factory, tmp_path):
    s = synced_factory()
    central = s.connect_central()
    d = Daemon(s.rig.config_path, tmp_path / "daemon.log").start()
    try:
        central.publish_csv(s.rig.residents_path)
        wait_until(lambda: central.gateway(s.gw).get("applied_version") == 1, 10, "the list applied")
        s.site.public_key.rename(s.site.public_key.with_suffix(".moved"))
        d.signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in d.log(), 10, "the refusal")
        assert "sync.trusted_keys" in d.log() and d.proc.poll() is None
        assert central.gateway(s.gw).get("state") == "online"  # still connected, never torn down
    finally:
        assert d.stop() == 0
