"""The gateway's sync thread: one MQTT connection, and the whitelist, event and command handlers.

Everything the network delivers is queued by the MQTT thread and handled here, one message at a
time, with this thread's own database connections; the card path on the event loop never waits
for any of it. The thread also drives the periodic work: the event drain, whitelist re-requests,
the staleness alarm, the journal cap and telemetry.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from edge.config import GatewayConfig, SyncSection
from edge.errors import SetupError
from edge.store.db import StorageUnavailable, get_meta, open_db, open_whitelist_db, set_meta, storage_fault
from edge.store.outbox import Event, Flusher, Outbox
from edge.store.whitelist import Whitelist
from edge.sync.events import EventDrain
from edge.sync.mqtt import Connection, tls_context
from edge.sync.rpc import Op, Rpc
from edge.sync.whitelist import WhitelistSync
from protocol import Keyring, Rejected, Telemetry

log = logging.getLogger(__name__)

POLL_S = 0.02
CAP_CHECK_S = 5.0


class SyncSetupError(SetupError):
    """Sync cannot start: a key or certificate file is missing or unusable (the message names it)."""


def check_credentials(s: SyncSection) -> Keyring:
    """Central's public keys and our TLS files, loaded once to see that they work (SyncSetupError if not)."""
    try:
        keyring = Keyring.from_files(s.trusted_keys)
    except (OSError, ValueError) as exc:
        raise SyncSetupError(f"sync.trusted_keys: {exc}",
                             "copy central's signing.pub (from `door-edge central keygen`) to the path given") from None
    if s.tls:
        try:
            tls_context(s)
        except (OSError, ssl.SSLError) as exc:
            raise SyncSetupError(f"sync TLS files (ca_file {s.ca_file}, cert_file {s.cert_file}, key_file {s.key_file}): {exc}",
                                 "install the CA, this gateway's certificate (CN = gateway.id) and its key, "
                                 "readable by the service user") from None
    return keyring


class SyncService(threading.Thread):
    def __init__(self, cfg: GatewayConfig, whitelist: Whitelist, flusher: Flusher, *,
                 health: Callable[[], dict[str, Any]] = dict, ops: dict[str, Op] | None = None,
                 on_event: Callable[[Event], object] | None = None, stale: threading.Event | None = None):
        """`stale`: set while central has not been heard from for `stale_after_s` (the controller
        reads it on every decision; doors may refuse on a stale list, see policy)."""
        super().__init__(name="sync", daemon=True)
        assert cfg.sync is not None  # noqa: S101 - narrows the type; the caller has checked
        self.cfg = cfg
        self.settings = s = cfg.sync
        gw = cfg.gateway.id
        state = cfg.state_dir()
        self._conn = open_db(state)
        self._wconn = open_whitelist_db(state)
        self.outbox = Outbox(self._conn)
        self.outbox.on_put.append(flusher.notify)
        self._on_event = on_event
        self._health = health
        self._q: queue.SimpleQueue[tuple[str, bytes, bool]] = queue.SimpleQueue()
        self._halt = threading.Event()
        self.keyring, self.mqtt = self._credentials(gw, s, whitelist)
        self.wl = WhitelistSync(gw, whitelist, self._wconn, self.keyring, self._send)
        self.drain = EventDrain(self.outbox, lambda: flusher.durable_seq, self._send, batch_max=s.batch_max,
                                ack_timeout_s=s.ack_timeout_s, cap=s.journal_max_events)
        self.rpc = Rpc(gw, self.keyring, {
            "ping": Op(lambda a: {"pong": time.time()}, help="liveness"),
            "journal_stats": Op(lambda a: self.drain.stats(), help="journal depth, seqs, resends, drops"),
            "whitelist_status": Op(lambda a: self._wl_status(), help="version, hash, count, age"),
            "whitelist_resync": Op(lambda a: {"req_id": self.wl.request(snapshot=True)}, help="ask central for a full list"),
            **(ops or {})})
        self.rejected: Counter[str] = Counter()
        self.storage_failures = 0
        self._conn_no = 0
        self.stale = stale if stale is not None else threading.Event()
        self.heartbeat = time.monotonic()

    def _credentials(self, gw: str, s: SyncSection, whitelist: Whitelist) -> tuple[Keyring, Connection]:
        """Central's public keys and our TLS identity, or a SyncSetupError saying which file and what to do."""
        keyring = check_credentials(s)
        conn = Connection(gw, s, next_conn=self._next_conn, on_message=lambda n, p, r: self._q.put((n, p, r)),
                          on_up=lambda: self._q.put(("_up", b"", False)),
                          status_extra=lambda: {"whitelist_version": whitelist.version}, base_s=self.cfg.reconnect.base_s)
        return keyring, conn

    # -- plumbing -------------------------------------------------------------------------------
    def _send(self, name: str, payload: bytes) -> bool:
        return self.mqtt.publish(name, payload) is not None

    def _next_conn(self) -> int:
        """The connection counter, kept across restarts; in memory while the disk refuses writes."""
        n = max(self._conn_no, int(get_meta(self._conn, "mqtt_conn", "0") or 0)) + 1
        self._conn_no = n
        try:
            set_meta(self._conn, "mqtt_conn", str(n))
        except sqlite3.OperationalError as exc:
            if not storage_fault(exc):
                raise
            self.storage_failures += 1
        return n

    def _record(self, event: Event) -> None:
        self.outbox.put(event)
        if self._on_event is not None:
            self._on_event(event)

    # -- the thread -----------------------------------------------------------------------------
    def run(self) -> None:
        self.mqtt.start()
        now = time.monotonic()
        next_sec, next_cap, next_tel = now, now + CAP_CHECK_S, now + 1.0
        while not self._halt.is_set():
            self.heartbeat = now = time.monotonic()
            try:
                name, payload, retain = self._q.get(timeout=POLL_S)
            except queue.Empty:
                pass
            else:
                self._storage_guarded(self._handle, name, payload, retain)
            if self.mqtt.connected:
                self.drain.step(now)
            if now >= next_sec:
                next_sec = now + 1.0
                self._storage_guarded(self.wl.tick)
                self._check_stale()
            if now >= next_cap:
                next_cap = now + CAP_CHECK_S
                ev = self._storage_guarded(self.drain.enforce_cap)
                if ev is not None and self._on_event is not None:
                    self._on_event(ev)
            if now >= next_tel and self.mqtt.connected:
                next_tel = now + self.settings.telemetry_s
                self._send("telemetry", self.telemetry().dumps())
        self.mqtt.stop()
        self._conn.close()
        self._wconn.close()

    def _storage_guarded(self, fn, *args):
        """Run one step; a state directory that refuses writes (disk full, read-only) is counted and
        the step is simply tried again later (central resends, heads come again). Other errors are ours."""
        try:
            return fn(*args)
        except StorageUnavailable as exc:
            self._storage_refused(exc)
        except sqlite3.OperationalError as exc:
            if not storage_fault(exc):
                raise
            self._storage_refused(exc)
        return None

    def _storage_refused(self, exc: Exception) -> None:
        if not self.storage_failures:
            log.error("sync: the state directory cannot be written (%s); retrying as messages come", exc)
        self.storage_failures += 1

    def _handle(self, name: str, payload: bytes, retain: bool) -> None:
        try:
            if name == "_up":
                self.wl.reconnected()
                self.drain.reconnected()
                self.wl.tick(force=True)
            elif name == "evt/ack":
                self.drain.on_ack(payload, time.monotonic())
            elif name.startswith("wl/"):
                self.wl.on_message(name, payload)
            elif name == "cmd/req":
                resp = self.rpc.on_req(payload, retain)
                if resp is not None:
                    self._send("cmd/resp", resp)
        except Rejected as r:
            # everything the network can send that does not fit ends here, counted by reason; any
            # other exception is a bug of ours: it ends this thread, and the daemon restarts
            self.rejected[f"{name}:{r.reason}"] += 1
            log.warning("message on %s rejected: %s", name, r)

    @property
    def is_stale(self) -> bool:
        return self.stale.is_set()

    def _check_stale(self) -> None:
        limit = self.settings.stale_after_s
        stale = limit > 0 and self.wl.age_s() > limit
        if stale != self.is_stale:
            (self.stale.set if stale else self.stale.clear)()
            reason = "whitelist_stale" if stale else "whitelist_fresh"
            self._record(Event("system", reason, detail=f"central last heard {self.wl.age_s():.0f}s ago (limit {limit:.0f}s)"))
            (log.error if stale else log.info)("%s: central last heard %.0fs ago", reason, self.wl.age_s())

    # -- reporting ------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        out = {f"rejected.{k}": v for k, v in self.rejected.items()}
        out.update({f"wl.rejected.{k}": v for k, v in self.wl.rejected.items()})
        out.update({f"wl.applied.{k}": v for k, v in self.wl.applied.items()})
        out.update({f"cmd.{k}": v for k, v in self.rpc.counters.items()})
        c = self.mqtt.counters
        out.update({"mqtt.connects": c.connects, "mqtt.connect_failures": c.connect_failures, "mqtt.disconnects": c.disconnects,
                    "sync.storage_failures": self.storage_failures, "evt.acks": self.drain.acks,
                    "evt.stale_acks": self.drain.stale_acks, "evt.bad_acks": self.drain.bad_acks,
                    "wl.heads": self.wl.heads})
        return out

    def malformed_total(self) -> int:
        """Every downlink message that was not acted on, whatever the handler that refused it."""
        return sum(self.rejected.values()) + sum(self.wl.rejected.values())

    def _wl_status(self) -> dict[str, Any]:
        wl = self.wl.list
        return {"version": wl.version, "sha256": wl.sha256, "count": len(wl), "age_s": round(self.wl.age_s(), 1),
                "stale": self.is_stale, "head": None if self.wl.head is None else self.wl.head.version}

    def telemetry(self) -> Telemetry:
        h = self._health()
        return Telemetry(ts=time.time(), conn=self.mqtt.conn_no, readers=h.get("readers", {}), relays=h.get("relays", {}),
                         journal=self.drain.stats(), whitelist=self._wl_status(), counters=self.counters(),
                         parts=h.get("parts", {}), storage=h.get("storage", {}))

    def stop(self, timeout: float = 15.0) -> None:
        """`stopped` on the status topic, a clean disconnect, then the thread ends."""
        self._halt.set()
        self.join(timeout)
