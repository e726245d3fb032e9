"""The sync protocol's pieces without a network: envelopes, the whitelist state machine, the
event drain and remote commands, each fed what central (or an attacker) could send."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import protocol
from edge.privacy import Tokenizer
from edge.store import whitelist as store
from edge.store.db import open_db, open_whitelist_db
from edge.store.outbox import Event, Outbox
from edge.store.whitelist import Entry, Whitelist, to_row
from edge.sync.events import EventDrain
from edge.sync.rpc import Op, Rpc
from edge.sync.whitelist import WhitelistSync
from protocol import CmdReq, EvtAck, Keyring, Rejected, Signer, WlChunk, WlDelta, WlHead

GW = "gw-1"
TOK = Tokenizer(b"k" * 32)


def entry(uid: str, person: str = "R-1", doors=None) -> Entry:
    return Entry(TOK.token("ic", uid), "ic", person, doors, None, datetime(2030, 1, 1), None)


@pytest.fixture
def signer():
    return Signer(Ed25519PrivateKey.generate())


class Sent(list):
    def __call__(self, name: str, payload: bytes) -> bool:
        self.append((name, json.loads(payload)))
        return True

    def named(self, name: str) -> list[dict]:
        return [p for n, p in self if n == name]


@pytest.fixture
def wl_sync(tmp_path, signer):
    conn = open_whitelist_db(tmp_path)
    sent = Sent()
    sync = WhitelistSync(GW, Whitelist(open_whitelist_db(tmp_path)), conn, Keyring([signer._key.public_key()]), sent)
    return sync, sent


def delta(signer, frm: int, to: int, upserts: list[Entry], deletes=(), *, gw=GW, base: list[Entry] = ()) -> bytes:
    final = {e.token: e for e in base}
    for t in deletes:
        final.pop(t, None)
    final.update({e.token: e for e in upserts})
    return signer.seal(WlDelta(gw=gw, **{"from": frm}, to=to, upserts=[to_row(e) for e in upserts], deletes=list(deletes),
                               sha256=store.state_hash(to_row(e) for e in final.values()), count=len(final), ts=time.time()))


def head(signer, version: int, entries: list[Entry], *, ts: float | None = None) -> bytes:
    return signer.seal(WlHead(gw=GW, version=version, sha256=store.state_hash(to_row(e) for e in entries),
                              count=len(entries), ts=ts or time.time()))


def chunks(signer, version: int, entries: list[Entry], per: int) -> list[bytes]:
    rows = sorted(to_row(e) for e in entries)
    sha = store.state_hash(rows)
    total = -(-len(rows) // per)
    return [signer.seal(WlChunk(gw=GW, version=version, snapshot=f"v{version}", index=i, total=total, sha256=sha,
                                count=len(rows), rows=rows[i * per:(i + 1) * per], ts=time.time())) for i in range(total)]


# -- envelope ------------------------------------------------------------------------------------
def test_envelope_rejects_forgery_unknown_keys_and_other_gateways(signer):
    ring = Keyring([signer._key.public_key()])
    sealed = signer.seal({"gw": GW, "x": 1})
    assert ring.open(sealed, GW) == {"gw": GW, "x": 1}
    env = json.loads(sealed)
    body = json.loads(base64.b64decode(env["body"]))
    body["x"] = 2  # tampered body, original signature
    env["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    with pytest.raises(Rejected) as e:
        ring.open(json.dumps(env).encode(), GW)
    assert e.value.reason == "bad_signature"
    with pytest.raises(Rejected) as e:
        Keyring([Ed25519PrivateKey.generate().public_key()]).open(sealed, GW)
    assert e.value.reason == "unknown_key"
    with pytest.raises(Rejected) as e:
        ring.open(sealed, "gw-2")
    assert e.value.reason == "wrong_gateway"
    for junk in (b"", b"[]", b"{}", b'{"v":1,"alg":"Ed25519","kid":"x","body":"%%%","sig":""}', b"\xff\xfe"):
        with pytest.raises(Rejected) as e:
            ring.open(junk, GW)
        assert e.value.reason == "malformed"


def test_topics_round_trip_and_refuse_strangers():
    assert protocol.parse_topic(protocol.topic("gw-1", "wl/head")) == ("gw-1", "wl/head")
    for bad in ("dg/v1/gw/gw-1/nope", "dg/v2/gw/gw-1/wl/head", "dg/v1/gw//wl/head", "x"):
        with pytest.raises(Rejected):
            protocol.parse_topic(bad)


# -- whitelist state machine ---------------------------------------------------------------------
def test_delta_applies_only_on_its_base_and_a_gap_asks_for_the_rest(wl_sync, signer):
    sync, sent = wl_sync
    a, b = entry("04A1"), entry("04B2")
    sync.on_message("wl/delta", delta(signer, 0, 1, [a]))
    assert sync.list.version == 1 and sync.list.lookup(a.token) == a
    sync.on_message("wl/delta", delta(signer, 2, 3, [b], base=[a]))  # v2 never arrived
    assert sync.list.version == 1 and sync.list.lookup(b.token) is None
    (req,) = sent.named("wl/req")
    assert req["have"] == 1
    assert sent.named("wl/ack")[-1] == {**sent.named("wl/ack")[-1], "ok": True, "version": 1}


def test_rollback_replay_and_wrong_gateway_are_rejected_counted_and_reported(wl_sync, signer):
    sync, sent = wl_sync
    a = entry("04A1")
    sync.on_message("wl/delta", delta(signer, 0, 1, [a]))
    sync.on_message("wl/delta", delta(signer, 1, 2, [entry("04B2")], base=[a]))
    sync.on_message("wl/head", head(signer, 1, [a]))                         # rolled back
    sync.on_message("wl/delta", delta(signer, 0, 1, [a]))                    # an old delta again
    sync.on_message("wl/delta", delta(signer, 2, 3, [a], gw="gw-2"))         # meant for another gateway
    forged = Signer(Ed25519PrivateKey.generate())
    sync.on_message("wl/delta", delta(forged, 2, 3, [a]))
    assert sync.list.version == 2
    assert dict(sync.rejected) == {"rolled_back": 1, "stale": 1, "wrong_gateway": 1, "unknown_key": 1}
    reasons = [(p["reason"], p["rejected"]) for p in sent.named("wl/ack") if not p["ok"]]
    assert reasons == [("rolled_back", 1), ("stale", 1), ("wrong_gateway", None), ("unknown_key", None)]


def test_a_delta_that_would_not_give_centrals_list_is_refused(wl_sync, signer):
    sync, sent = wl_sync
    a = entry("04A1")
    bad = signer.seal(WlDelta(gw=GW, **{"from": 0}, to=1, upserts=[to_row(a)], sha256="0" * 64, count=1, ts=time.time()))
    sync.on_message("wl/delta", bad)
    assert sync.list.version == 0 and len(sync.list) == 0
    assert sync.rejected["hash_mismatch"] == 1 and sent.named("wl/req")[-1]["snapshot"] is True


def test_interrupted_snapshot_keeps_the_old_list_and_resumes_after_a_restart(tmp_path, wl_sync, signer):
    sync, sent = wl_sync
    old = entry("04A1", "R-old")
    sync.on_message("wl/delta", delta(signer, 0, 1, [old]))
    new = [entry(f"{i:08X}", f"R-{i}") for i in range(250)]
    parts = chunks(signer, 5, new, 100)
    sync.on_message("wl/head", head(signer, 5, new))
    sync.on_message("wl/resp", parts[0])
    sync.on_message("wl/resp", parts[1])
    assert sync.list.version == 1 and sync.list.lookup(old.token) == old  # the old list still serves
    # the gateway restarts: the staged chunks are on disk; it asks to resume from chunk 2
    again = WhitelistSync(GW, Whitelist(open_whitelist_db(tmp_path)), open_whitelist_db(tmp_path), sync.keyring, sent)
    again.on_message("wl/head", head(signer, 5, new))
    req = sent.named("wl/req")[-1]
    assert (req["resume"], req["next_chunk"]) == ("v5", 2)
    again.on_message("wl/resp", parts[2])
    assert again.list.version == 5 and len(again.list) == 250 and again.list.lookup(old.token) is None
    assert store.staged(open_whitelist_db(tmp_path)) is None
    assert Whitelist(open_whitelist_db(tmp_path)).sha256 == again.list.sha256  # what was stored is what serves


def test_a_snapshot_whose_chunks_do_not_hash_to_the_head_is_not_swapped_in(wl_sync, signer):
    sync, _sent = wl_sync
    new = [entry(f"{i:08X}") for i in range(10)]
    rows = [to_row(e) for e in new]
    body = WlChunk(gw=GW, version=2, snapshot="v2", index=0, total=1, sha256="1" * 64, count=10, rows=rows, ts=time.time())
    sync.on_message("wl/resp", signer.seal(body))
    assert sync.list.version == 0 and sync.rejected["hash_mismatch"] == 1


# -- events --------------------------------------------------------------------------------------
def test_drain_sends_durable_events_in_order_one_batch_at_a_time_and_deletes_only_on_ack(tmp_path):
    ob = Outbox(open_db(tmp_path))
    for i in range(12):
        ob.put(Event("system", "test", detail=str(i)))
    durable = [10]
    sent = Sent()
    drain = EventDrain(ob, lambda: durable[0], sent, batch_max=4, ack_timeout_s=5, cap=1000)
    drain.step(0.0)
    drain.step(0.1)  # nothing new while a batch is in flight
    assert [(p["first"], p["last"]) for p in sent.named("evt/access")] == [(1, 4)]
    assert ob.depth() == 12  # the broker's PUBACK is not enough
    drain.on_ack(EvtAck(upto=4).dumps(), 0.2)  # the next batch goes at once
    drain.on_ack(EvtAck(upto=8).dumps(), 0.3)
    drain.on_ack(EvtAck(upto=10).dumps(), 0.4)
    assert [(p["first"], p["last"]) for p in sent.named("evt/access")] == [(1, 4), (5, 8), (9, 10)]  # 11, 12 not durable yet
    assert ob.depth() == 2
    with pytest.raises(Rejected):
        drain.on_ack(EvtAck(upto=12).dumps(), 0.5)  # central cannot acknowledge what it was never sent
    assert ob.depth() == 2
    durable[0] = 12
    drain.step(1.0)
    drain.step(7.0)  # no ack within the timeout: sent again
    assert [(p["first"], p["last"]) for p in sent.named("evt/access")][-2:] == [(11, 12), (11, 12)]
    assert drain.resends == 1


def test_a_full_journal_drops_the_oldest_and_says_so(tmp_path):
    ob = Outbox(open_db(tmp_path))
    for i in range(1100):
        ob.put(Event("system", "test", detail=str(i)))
    drain = EventDrain(ob, lambda: 0, Sent(), batch_max=10, ack_timeout_s=5, cap=1000)
    ev = drain.enforce_cap()
    assert ev is not None and ev.reason == "journal_overflow" and "seq 1..110" in ev.detail
    assert drain.dropped == 110 and ob.depth() == 991
    assert ob.tail(1)[0].reason == "journal_overflow"


# -- commands ------------------------------------------------------------------------------------
def test_commands_expiry_duplicates_retained_and_signing(signer):
    pulses = []
    rpc = Rpc(GW, Keyring([signer._key.public_key()]),
              {"ping": Op(lambda a: {"pong": 1}), "relay_pulse": Op(lambda a: pulses.append(a["door"]) or {}, acting=True)})
    now = time.time()

    def req(op: str, rid: str, **kw) -> CmdReq:
        return CmdReq(req_id=rid, op=op, args=kw.pop("args", {}), expires=kw.pop("expires", now + 30), gw=GW)

    assert json.loads(rpc.on_req(req("ping", "a").dumps(), False))["ok"] is True
    assert rpc.on_req(req("ping", "a").dumps(), False) is None  # a duplicate is answered once
    assert rpc.on_req(req("ping", "b").dumps(), True) is None   # retained: never acted on
    assert json.loads(rpc.on_req(req("ping", "c", expires=now - 1).dumps(), False))["error"] == "expired"
    assert "must be signed" in json.loads(rpc.on_req(req("relay_pulse", "d", args={"door": "lobby"}).dumps(), False))["error"]
    assert "unknown op" in json.loads(rpc.on_req(req("reboot", "e").dumps(), False))["error"]
    assert pulses == []
    assert json.loads(rpc.on_req(signer.seal(req("relay_pulse", "f", args={"door": "lobby"})), False))["ok"] is True
    expired = signer.seal(req("relay_pulse", "g", args={"door": "lobby"}, expires=now - 1))
    assert json.loads(rpc.on_req(expired, False))["error"] == "expired"
    assert pulses == ["lobby"]


# -- garbage on every downlink topic -------------------------------------------------------------
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import config

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6).map(lambda k: "k" + k), kids, max_size=4),
                     max_leaves=12)
GARBAGE = st.one_of(st.binary(max_size=300), _json.map(lambda v: json.dumps(v).encode()),
                    st.dictionaries(st.sampled_from(["v", "kid", "alg", "body", "sig", "k"]), _json, max_size=5).map(lambda v: json.dumps(v).encode()))


@pytest.fixture
def service(tmp_path, signer):
    from edge.sync.service import SyncService

    pem = signer._key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "central.pub").write_bytes(pem)
    cfg = config.parse({"gateway": {"id": GW, "site": "t", "state_dir": str(tmp_path / "state")},
                        "doors": [{"id": "lobby", "relay": {"type": "lcus", "port": "/dev/null"}}],
                        "sync": {"host": "127.0.0.1", "tls": False, "trusted_keys": [str(tmp_path / "central.pub")]}})

    class Flusher:
        durable_seq = 0

        def notify(self, seq: int) -> None:
            pass

    return SyncService(cfg, Whitelist(open_whitelist_db(cfg.state_dir())), Flusher())  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(protocol.DOWN), payload=GARBAGE)
def test_garbage_on_any_downlink_topic_is_counted_and_survived(service, name, payload):
    before = service.malformed_total()
    service._handle(name, payload, False)
    assert service.malformed_total() == before + 1
    assert service.wl.list.version == 0 and service.drain.acked_seq == 0


@pytest.mark.parametrize("event", [{"seq": 1, "ts": 1.0}, {"id": "a", "seq": "1", "ts": 1.0}, {"id": "a", "seq": 1, "ts": "x"},
                                   {"id": "a", "seq": 1, "ts": 1.0, "door": {"x": 1}}, {"id": 5, "seq": 1, "ts": 1}])
def test_an_event_batch_without_what_central_files_it_by_is_rejected(event):
    with pytest.raises(protocol.Rejected, match="malformed"):
        protocol.load(protocol.EventBatch, {"first": 1, "last": 1, "events": [event]})
    good = {"id": "a", "seq": 1, "ts": 1, "door": None, "reason": "granted", "future_field": [1]}
    assert protocol.load(protocol.EventBatch, {"first": 1, "last": 1, "events": [good]}).events == [good]  # kept whole
