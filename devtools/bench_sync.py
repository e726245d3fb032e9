"""`door-edge bench sync`: the sync protocol's figures through a real mosquitto on loopback.

The daemon's App runs in this process (no card readers; the Modbus door board on a pty); the
central reference runs as `door-edge central serve` in its own process, as on a real server (it
answers list requests, ingests and acknowledges events), and this process publishes list changes
through a second central connection.

- `snapshot_s`: central publishes a 100,000-entry list (too big for a delta, so the gateway asks
  and gets signed chunks) -> the new list decides a swipe on the gateway.
- `delta_ms`: central applies a one-entry change (a new resident) -> that card is granted by the
  gateway's live decision function (`policy.decide` on the serving list), polled every 0.2 ms.
- `journal_append_per_s`: events written to the journal (a WAL commit each) during an outage.
- outage: the broker is stopped, `outage_events` are journaled, the broker is started again;
  `catchup_s` runs from the broker's restart to the last of them acknowledged by central (so it
  includes both sides reconnecting), `drain_per_s` from both being connected again to that moment.
- `lost`: journaled events central does not have; `duplicates`: events central holds twice
  under one seq (insert-or-ignore on the id makes resends harmless).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from pathlib import Path

from edge.access.policy import decide
from edge.privacy import Tokenizer, load_key
from edge.store.outbox import Event
from edge.store.whitelist import Entry
from rigs.proc import terminate
from rigs.rig import Rig, wait_until
from rigs.site import Site


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))], 3)


def _granted(app, token: str) -> bool:
    parts = app.parts
    door = parts.controller.io["lobby"].door
    return decide("ic", parts.whitelist.lookup(token), door, datetime.now(), schedules={}, holidays=frozenset()).granted


def bench_sync(root: Path, *, entries: int = 100_000, deltas: int = 100, outage_events: int = 10_000) -> dict:
    from edge.app import App

    rig = Rig(root / "rig", readers=False, log_level="warning", gw="gw-bench")
    site = Site(root / "site", rig.root / "site.key", gateways=[rig.gw]).start()
    rig.extra_toml = site.gateway_sync_toml(rig.gw)
    rig.start()
    server = site.central_process(chunk=5000, delta_max=5000)  # answers requests, ingests and acks events
    central = site.central(serve=False, client_id="central-publisher", chunk=5000, delta_max=5000)
    app = App(rig.config_path)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete, args=(app.run(),), name="app", daemon=True)
    runner.start()
    try:
        wait_until(lambda: app.parts is not None and app.parts.sync is not None and app.parts.sync.mqtt.connected, 15, "the gateway's connection")
        parts = app.parts
        assert parts is not None and parts.sync is not None
        tok = Tokenizer(load_key(rig.root / "site.key"))
        listed = [Entry(tok.token("ic", f"{i:08X}"), "ic", f"R-{i}", None, None, None) for i in range(entries)]
        probe = listed[-1].token

        # 1. a whole list, as a chunked snapshot
        t0 = time.perf_counter()
        res = central.publish_entries(listed)
        wait_until(lambda: parts.whitelist.version == res.version and _granted(app, probe), 60, "the snapshot serving", step=0.001)
        snapshot_s = time.perf_counter() - t0

        # 2. one new resident at a time, as deltas
        delta_ms: list[float] = []
        for i in range(deltas):
            new = Entry(tok.token("ic", f"D{i:07X}"), "ic", f"N-{i}", None, None, None)
            t0 = time.perf_counter()
            central.apply_changes([new])
            wait_until(lambda: _granted(app, new.token), 10, "the delta deciding", step=0.0002)
            delta_ms.append((time.perf_counter() - t0) * 1000)

        # 3. an outage with events piling up, then the catch-up
        wait_until(lambda: parts.outbox.depth() == 0, 10, "the journal drained before the outage")
        first_seq = parts.outbox.last_seq() + 1
        site.broker.stop()  # type: ignore[union-attr]
        wait_until(lambda: not parts.sync.mqtt.connected, 10, "the gateway to see the outage")  # type: ignore[union-attr]
        journaled: list[str] = []
        t0 = time.perf_counter()
        for i in range(outage_events):
            e = Event("access", "granted", door="lobby", kind="ic", token=listed[i % entries].token[:12], decision="granted", latency_ms=1.0)
            parts.outbox.put(e)
            journaled.append(e.id)
        append_per_s = outage_events / (time.perf_counter() - t0)
        last_seq = parts.outbox.last_seq()
        wait_until(lambda: parts.flusher.durable_seq >= last_seq, 10, "the journal on disk")
        t_restart = time.perf_counter()
        site.broker.start()  # type: ignore[union-attr]
        wait_until(lambda: parts.sync.mqtt.connected and central.gateway(rig.gw).get("state") == "online"  # type: ignore[union-attr]
                   and central.client.is_connected(), 30, "the gateway and central to reconnect", step=0.001)
        t_connected = time.perf_counter()
        wait_until(lambda: parts.sync.drain.acked_seq >= last_seq, 60, "central to acknowledge every event", step=0.001)  # type: ignore[union-attr]
        t_done = time.perf_counter()

        with central.store.use() as db:
            rows = db.execute("SELECT id, seq FROM events WHERE gw=? AND seq >= ?", (rig.gw, first_seq)).fetchall()
        have = {r[0] for r in rows}
        seqs = [r[1] for r in rows]
        return {"bench": "sync", "snapshot_entries": entries, "snapshot_s": round(snapshot_s, 3),
                "delta_ms": {"p50": _pct(delta_ms, 50), "p99": _pct(delta_ms, 99)},
                "journal_append_per_s": round(append_per_s), "drain_per_s": round(outage_events / (t_done - t_connected)),
                "outage_events": outage_events, "catchup_s": round(t_done - t_restart, 3),
                "lost": sum(1 for i in journaled if i not in have), "duplicates": len(seqs) - len(set(seqs))}
    finally:
        loop.call_soon_threadsafe(app.stop)
        runner.join(15)
        central.close()
        terminate(server)
        rig.stop()
        site.stop()
