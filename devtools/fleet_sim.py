"""Hundreds of simulated gateways in one process, for `door-edge bench fleet`.

Each simulated gateway runs the gateway's own sync code with no readers: its MQTT session
(`edge.sync.mqtt.Connection`: the will, the status, the jittered reconnect backoff), the list
state machine with its signature checks (`edge.sync.whitelist.WhitelistSync` over a real SQLite
whitelist) and the outbox drain (`edge.sync.events.EventDrain` over a real SQLite journal).
What it does not run is a thread per gateway: one selector drives every paho client, so a few
hundred gateways fit in one process on a small machine.

The parent talks to it over stdin/stdout, one JSON object per line:
`{"op": "hold"}` / `{"op": "go"}` stop and start the drains; `{"op": "events", "n": N}` journals N
events at every gateway; `{"op": "stats", "since": T}`
answers with counts and the connect times after T; `{"op": "stop"}` ends it.
"""

from __future__ import annotations

import json
import os
import selectors
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from edge.config import SyncSection
from edge.store.db import open_db, open_whitelist_db
from edge.store.outbox import Event, Outbox
from edge.store.whitelist import Whitelist
from edge.sync.events import EventDrain
from edge.sync.mqtt import Connection
from edge.sync.whitelist import WhitelistSync
from protocol import Keyring, Rejected

TICK_S = 0.1
SHORT_TOKEN = "0123456789ab"  # a card's short token, as the gateway journals it  # noqa: S105 - not a secret


@dataclass
class SimGateway:
    gw: str
    conn: Connection
    wl: WhitelistSync
    drain: EventDrain
    outbox: Outbox
    whitelist: Whitelist
    next_attempt: float = 0.0
    fd: int | None = None
    connects: list[float] = field(default_factory=list)   # wall-clock time of each CONNACK
    version_at: float = 0.0                               # when the list reached its current version
    version: int = 0
    sent_at: float | None = None
    ack_ms: list[float] = field(default_factory=list)


def make_gateway(gw: str, root: Path, settings: SyncSection, keyring: Keyring, batch_max: int) -> SimGateway:
    state = root / gw
    jconn, wconn = open_db(state), open_whitelist_db(state)
    outbox, whitelist = Outbox(jconn), Whitelist(wconn)
    counter = [0]

    def next_conn() -> int:
        counter[0] += 1
        return counter[0]

    sim: SimGateway

    def on_message(name: str, payload: bytes, retain: bool) -> None:
        try:
            if name == "evt/ack":
                if sim.sent_at is not None:
                    sim.ack_ms.append((time.perf_counter() - sim.sent_at) * 1000)
                    sim.sent_at = None
                sim.drain.on_ack(payload, time.monotonic())
            elif name.startswith("wl/"):
                sim.wl.on_message(name, payload)
                if whitelist.version != sim.version:
                    sim.version, sim.version_at = whitelist.version, time.time()
        except Rejected:
            pass  # counted by the handlers, as on a gateway

    def on_up() -> None:
        sim.connects.append(time.time())
        sim.wl.reconnected()
        sim.drain.reconnected()
        sim.wl.tick(force=True)

    conn = Connection(gw, settings, next_conn=next_conn, on_message=on_message, on_up=on_up,
                      status_extra=lambda: {"whitelist_version": whitelist.version}, base_s=0.5)

    def send(name: str, payload: bytes) -> bool:
        ok = conn.publish(name, payload) is not None
        if ok and name == "evt/access":
            sim.sent_at = time.perf_counter()
        return ok

    wl = WhitelistSync(gw, whitelist, wconn, keyring, send)
    drain = EventDrain(outbox, outbox.last_seq, send, batch_max=batch_max, ack_timeout_s=settings.ack_timeout_s,
                       cap=settings.journal_max_events)
    sim = SimGateway(gw, conn, wl, drain, outbox, whitelist, version=whitelist.version)
    return sim


class Fleet:
    def __init__(self, sims: list[SimGateway]):
        self.sims = sims
        self.sel = selectors.DefaultSelector()
        self.by_fd: dict[int, SimGateway] = {}
        self.held = False  # events are journaled but not sent (the bench fills every journal, then lets go)

    def _open(self, s: SimGateway, now: float) -> None:
        wait = s.conn.attempt()
        if wait is not None:
            s.next_attempt = now + wait
            return
        sock = s.conn.client.socket()
        if sock is None:
            s.next_attempt = now + s.conn.lost("no socket")
            return
        s.fd = sock.fileno()
        self.by_fd[s.fd] = s
        self.sel.register(s.fd, selectors.EVENT_READ)

    def _lost(self, s: SimGateway, why: str, now: float) -> None:
        if s.fd is not None:
            self.by_fd.pop(s.fd, None)
            try:
                self.sel.unregister(s.fd)
            except (KeyError, ValueError):
                pass
            s.fd = None
        s.next_attempt = now + s.conn.lost(why)

    def step(self, now: float, tick: bool) -> None:
        for s in self.sims:
            if s.fd is None and now >= s.next_attempt:
                self._open(s, now)
        for key, _ in self.sel.select(timeout=0.02):  # stdin is registered too: never a busy loop
            s = self.by_fd.get(int(key.fd))  # type: ignore[arg-type]
            if s is None:
                continue
            rc = s.conn.client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost(s, f"connection lost ({rc.name})", now)
        for s in self.sims:
            if s.fd is None:
                continue
            if tick:
                if s.conn.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._lost(s, "keepalive", now)
                    continue
                if s.conn.connected and not self.held:
                    s.drain.step(time.monotonic())
            if s.conn.client.want_write() and s.conn.client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost(s, "write failed", now)

    def stats(self, since: float) -> dict[str, Any]:
        return {"n": len(self.sims), "connected": sum(s.conn.connected for s in self.sims),
                "connects": [t for s in self.sims for t in s.connects if t >= since],
                "last_connect": {s.gw: (s.connects[-1] if s.connects else None) for s in self.sims},
                "versions": {s.gw: [s.version, s.version_at] for s in self.sims},
                "depth": sum(s.outbox.depth() for s in self.sims), "last_seq": {s.gw: s.outbox.last_seq() for s in self.sims},
                "ack_ms": [x for s in self.sims for x in s.ack_ms], "resends": sum(s.drain.resends for s in self.sims),
                "rejected": sum(sum(s.wl.rejected.values()) for s in self.sims)}


def main() -> int:
    spec = json.loads(sys.argv[1])
    root = Path(spec["root"])
    settings = SyncSection(host="127.0.0.1", port=spec["port"], tls=False, trusted_keys=[Path(spec["pub"])],
                           reconnect_max_s=spec.get("reconnect_max_s", 60), keepalive_s=60, ack_timeout_s=15)
    keyring = Keyring.from_files(settings.trusted_keys)
    sims = [make_gateway(gw, root, settings, keyring, spec.get("batch_max", 500)) for gw in spec["gateways"]]
    fleet = Fleet(sims)
    os.set_blocking(sys.stdin.fileno(), False)
    fleet.sel.register(sys.stdin.fileno(), selectors.EVENT_READ)  # commands wake the loop too
    fleet.by_fd.pop(sys.stdin.fileno(), None)
    buf = b""
    print(json.dumps({"ready": len(sims)}), flush=True)
    next_tick = 0.0
    while True:
        now = time.monotonic()
        tick = now >= next_tick
        if tick:
            next_tick = now + TICK_S
        fleet.step(now, tick)
        try:
            chunk = os.read(sys.stdin.fileno(), 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd = json.loads(line)
            if cmd["op"] == "stop":
                return 0
            if cmd["op"] in ("hold", "go"):
                fleet.held = cmd["op"] == "hold"
                print(json.dumps({"ok": True}), flush=True)
            elif cmd["op"] == "events":
                for s in sims:
                    for _ in range(cmd["n"]):
                        s.outbox.put(Event("access", "granted", door="lobby", kind="ic", token=SHORT_TOKEN, decision="granted"))
                print(json.dumps({"ok": True}), flush=True)
            elif cmd["op"] == "stats":
                print(json.dumps(fleet.stats(cmd.get("since", 0.0))), flush=True)


if __name__ == "__main__":
    sys.exit(main())
