"""The server half, as a reference: what the tests, the demo and small sites run.

- Lists: `publish` tokenises a residents list with the site key (the same HMAC as the gateways),
  diffs it against the current version, records the change in a changelog window, and publishes
  to each gateway a signed delta (small changes) and the signed retained head. A gateway that
  asks (`wl/req`) gets a delta from its version when the changelog still covers it, otherwise the
  whole list in signed chunks (resumable from a chunk index).
- Events: ingested with insert-or-ignore on (gateway, event id), committed, then acknowledged
  with `evt/ack` (so a gateway deletes only what is on central's disk).
- Gateways: each one's last status, connection counter and applied whitelist version.
- Heads are republished every `head_interval_s` with a fresh signed time: that is how a gateway
  tells a silent central from a quiet one (`sync.stale_after_s`).

A big fleet runs its own backend on a clustered broker with the same topics and payloads; see
the README ("Fleets").
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

import protocol
from central import alarms as alarms_mod
from central import passes as passes_mod
from central import registrations as regs
from central.config import CentralConfig
from central.metrics import Latency
from central.webhook import Forwarder
from edge.privacy import Tokenizer, load_key
from edge.store.db import Transaction, get_meta, open_db, set_meta
from edge.store.whitelist import HASH_MOD, Entry, Row, read_csv, row_hash, to_row
from edge.sync.mqtt import connect_properties, new_client, no_delay
from protocol import CmdReq, CmdResp, EventBatch, EvtAck, Rejected, Signer, Status, Telemetry, WlAck, WlChunk, WlDelta, WlHead, WlReq

log = logging.getLogger(__name__)


_MIGRATIONS = ["""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE entries (token TEXT PRIMARY KEY, row TEXT NOT NULL);
    CREATE TABLE changes (version INTEGER NOT NULL, token TEXT NOT NULL, row TEXT);  -- row NULL: deleted
    CREATE INDEX changes_version ON changes(version);
    CREATE TABLE events (gw TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
                         body TEXT NOT NULL, received REAL NOT NULL, PRIMARY KEY (gw, id));
    CREATE TABLE gateways (gw TEXT PRIMARY KEY, state TEXT, conn INTEGER, status_ts REAL, applied_version INTEGER,
                           applied_sha256 TEXT, last_reject TEXT, last_seen REAL);
""", """
    CREATE INDEX events_received ON events(received);  -- the retention purge
""", """
    -- new tenants: the identity as the gateway sealed it, opened here, decided by the office (no semicolons in these comments)
    CREATE TABLE registrations (id TEXT PRIMARY KEY, gw TEXT NOT NULL, event_id TEXT NOT NULL, door TEXT,
                                token TEXT NOT NULL,            -- the idno token (site key HMAC)
                                identity TEXT NOT NULL,         -- JSON (protocol.RegisteredIdentity)
                                received REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending',  -- pending | approved | rejected
                                building TEXT, room TEXT, lease_end TEXT, person TEXT, entries TEXT,  -- what approval listed
                                decided_by TEXT, decided_at REAL, note TEXT);
    CREATE INDEX registrations_state ON registrations(state);
    CREATE TABLE persons (ref TEXT PRIMARY KEY, name TEXT NOT NULL);  -- the gateways' opaque references, mapped back
    CREATE TABLE audit (ts REAL NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, subject TEXT, detail TEXT);
""", """
    -- the office: visitor passes issued (never their text), alarms and their webhook queue, care, staff
    CREATE TABLE passes (id TEXT PRIMARY KEY, host TEXT NOT NULL, doors TEXT NOT NULL, not_before REAL NOT NULL, not_after REAL NOT NULL,
                         uses INTEGER NOT NULL, issued_by TEXT NOT NULL, issued_at REAL NOT NULL, revoked_by TEXT, revoked_at REAL);
    CREATE TABLE alarms (id INTEGER PRIMARY KEY AUTOINCREMENT, gw TEXT NOT NULL, name TEXT NOT NULL, door TEXT NOT NULL DEFAULT '',
                         subject TEXT NOT NULL DEFAULT '', severity TEXT NOT NULL, raised REAL NOT NULL, raised_event TEXT,
                         cleared REAL, clear_note TEXT, acked_by TEXT, acked_at REAL);
    CREATE UNIQUE INDEX alarms_open ON alarms(gw, name, door, subject) WHERE cleared IS NULL;  -- one open incident per alarm
    CREATE INDEX alarms_raised ON alarms(raised);
    CREATE TABLE webhook_queue (alarm INTEGER PRIMARY KEY);  -- alarms not yet delivered to [webhook] url
    CREATE TABLE care (person TEXT PRIMARY KEY, quiet_s REAL NOT NULL, consent_by TEXT NOT NULL, consent_at REAL NOT NULL, last_seen REAL);
    CREATE TABLE staff (name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL);
    CREATE INDEX events_ts ON events(ts);
    CREATE INDEX events_gw_seq ON events(gw, seq);  -- a gateway's newest events
"""]


@dataclass
class Published:
    version: int
    upserts: int
    deletes: int
    mode: str  # delta | snapshot | unchanged


def _json(row: Row) -> str:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


class Central:
    def __init__(self, cfg: CentralConfig, *, client_id: str = "central"):
        self.cfg = cfg
        c = cfg.central
        self.db = open_db(c.state_dir, name="central.db", migrations=_MIGRATIONS)
        self.signer = Signer.from_file(c.signing_key_file)
        self.tokenizer = Tokenizer(load_key(c.site_key_file))
        self.registration_key = self._registration_key(c.registration_key_file)
        self._lock = threading.RLock()
        self.client = new_client(client_id, cfg.broker, clean_start=True)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.connected = threading.Event()
        self.counters: Counter[str] = Counter()
        self._responses: dict[str, CmdResp] = {}
        self.telemetry: dict[str, Telemetry] = {}  # the last one from each gateway
        self.telemetry_at: dict[str, float] = {}   # when it came
        self.ack_latency = Latency()
        self._resp_cond = threading.Condition()
        self._halt = threading.Event()
        self._head_thread: threading.Thread | None = None
        self._purge_thread: threading.Thread | None = None
        self._care_thread: threading.Thread | None = None
        self.forwarder: Forwarder | None = None
        self._serve = False
        self._listen: tuple[str, ...] = ()

    @staticmethod
    def _registration_key(path: Path) -> bytes | None:
        """Without it, registrations stay sealed in the events (counted) until it is installed."""
        try:
            return protocol.read_registration_key(path)
        except FileNotFoundError:
            log.warning("central: no registration key %s: registrations cannot be opened (`door-edge central keygen` makes one)", path)
        except (OSError, ValueError) as exc:
            log.error("central: registration key unusable: %s", exc)
        return None

    # -- connection -----------------------------------------------------------------------------
    def connect(self, *, serve: bool = True, listen: tuple[str, ...] | None = None, timeout: float = 10.0) -> Central:
        """`serve`: the server (every uplink topic, a kept session, republished heads); otherwise a
        tool's connection that listens only to `listen` (e.g. `cmd/resp` for `central cmd`)."""
        self._serve = serve
        self._listen = listen if listen is not None else (protocol.UP if serve else ())
        b = self.cfg.broker
        # serving: a session the broker keeps through our restarts, so events sent meanwhile wait for us
        self.client.reconnect_delay_set(0.5, 2)  # type: ignore[arg-type]  # one central: no herd to spread
        self.client.connect(b.host, b.port, keepalive=b.keepalive_s,
                            clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY if serve else True,
                            properties=connect_properties(3600 if serve else 0))
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise ConnectionError(f"central: no CONNACK from {b.host}:{b.port} in {timeout}s")
        if serve:
            self._head_thread = threading.Thread(target=self._heads, name="central-heads", daemon=True)
            self._head_thread.start()
            self._purge_thread = threading.Thread(target=self._purges, name="central-retention", daemon=True)
            self._purge_thread.start()
            self._care_thread = threading.Thread(target=self._care, name="central-care", daemon=True)
            self._care_thread.start()
            self.start_webhook()
        return self

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("central: broker refused: %s", reason_code)
            return
        no_delay(client)
        if self._listen:
            client.subscribe([(f"{protocol.PREFIX}/+/{n}", protocol.QOS[n]) for n in self._listen])
        if self._serve and not flags.session_present:
            self._nudge()
        self.connected.set()

    def close(self) -> None:
        self._halt.set()
        for t in (self._head_thread, self._purge_thread, self._care_thread):
            if t is not None:
                t.join(5)
        if self.forwarder is not None:
            self.forwarder.stop()
        self.client.disconnect()
        self.client.loop_stop()
        self.db.close()

    def _publish(self, gw: str, name: str, payload: bytes, retain: bool = False) -> paho.MQTTMessageInfo:
        return self.client.publish(protocol.topic(gw, name), payload, qos=protocol.QOS[name], retain=retain)

    def _heads(self) -> None:
        while not self._halt.wait(self.cfg.central.head_interval_s):
            for gw in self.cfg.central.gateways:
                self._publish(gw, "wl/head", self.head(gw), retain=True)

    def _purges(self) -> None:
        """Retention: soon after start, then daily."""
        wait = 60.0
        while not self._halt.wait(wait):
            self.purge_events()
            wait = 86400.0

    def _care(self) -> None:
        while not self._halt.wait(self.cfg.care.check_s):
            self.check_care()

    def check_care(self, now: float | None = None) -> list[int]:
        """Cared-for residents quiet for longer than their period: one alarm each (central.alarms)."""
        with self._lock:
            raised = alarms_mod.check_care(self.db, now)
        if raised:
            log.warning("central: %d cared-for resident(s) quiet past their period", len(raised))
            self._forward()
        return raised

    # -- the webhook ----------------------------------------------------------------------------
    def start_webhook(self) -> None:
        """Forward queued and new alarms to [webhook] url (nothing without one)."""
        hook = self.cfg.webhook
        if hook is None or self.forwarder is not None:
            return
        secret = hook.secret_file.read_bytes().strip()
        self.forwarder = Forwarder(hook.url, secret, pending=self._webhook_pending, delivered=self._webhook_delivered,
                                   timeout_s=hook.timeout_s)
        self.forwarder.start()
        self.forwarder.wake()

    def _webhook_pending(self) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            rows = self.db.execute("SELECT a.id, a.gw, a.name, a.door, a.subject, a.severity, a.raised FROM webhook_queue q "
                                   "JOIN alarms a ON a.id = q.alarm ORDER BY q.alarm LIMIT 100").fetchall()
        site = self.cfg.central.site
        return [(r[0], {"alarm": r[0], "site": site, "gateway": r[1], "name": r[2], "door": r[3] or None, "subject": r[4] or None,
                        "severity": r[5], "raised": r[6]}) for r in rows]

    def _webhook_delivered(self, alarm_id: int) -> None:
        with self._lock:
            self.db.execute("DELETE FROM webhook_queue WHERE alarm=?", (alarm_id,))

    def _forward(self) -> None:
        if self.forwarder is not None:
            self.forwarder.wake()

    def purge_events(self, now: float | None = None, batch: int = 5000) -> int:
        """Delete the events received more than `retention.event_days` ago, a batch per transaction
        so that ingest never waits long behind a purge; logged and counted."""
        days = self.cfg.retention.event_days
        cutoff = (time.time() if now is None else now) - days * 86400
        total = 0
        while True:
            with self._lock, Transaction(self.db) as db:
                n = db.execute("DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE received < ? LIMIT ?)",
                               (cutoff, batch)).rowcount
            total += n
            if n < batch:
                break
        self.counters["purged_events"] += total
        log.info("central: retention purge: %d event(s) received more than %g day(s) ago deleted", total, days)
        return total

    # -- the list -------------------------------------------------------------------------------
    # Every use of the connection holds the lock, reads too: a read on it from the MQTT thread while
    # another thread begins a write on it would make SQLite refuse that write at once ("database is
    # locked") when a second central process has committed meanwhile.
    @property
    def version(self) -> int:
        with self._lock:
            return int(get_meta(self.db, "version", "0") or 0)

    def _sha(self) -> str:
        with self._lock:
            return format(int(get_meta(self.db, "hash", "0") or 0), "064x")

    def count(self) -> int:
        with self._lock:
            return self.db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def head(self, gw: str) -> bytes:
        with self._lock:
            return self.signer.seal(WlHead(gw=gw, version=self.version, sha256=self._sha(), count=self.count(), ts=time.time()))

    def publish_csv(self, path: Path) -> Published:
        """The residents file plus the tenants the office approved (who are not in the file); the
        file's person names stay here, mapped from the references the gateways get."""
        names: dict[str, str] = {}
        entries = read_csv(path, self.tokenizer, names)
        with self._lock, Transaction(self.db) as db:
            db.executemany("INSERT OR REPLACE INTO persons VALUES (?,?)", names.items())
            kept = [*regs.listed_entries(db), *passes_mod.revocations(db, self.tokenizer)]  # the office's own rows
        filed = {e.token for e in entries}
        return self.publish_entries([*entries, *(e for e in kept if e.token not in filed)])

    def publish_entries(self, entries: Iterable[Entry]) -> Published:
        """Make `entries` the whole new list (what `publish --residents` does)."""
        return self._commit({e.token: to_row(e) for e in entries}, whole=True)

    def apply_changes(self, upserts: Iterable[Entry] = (), deletes: Iterable[str] = ()) -> Published:
        """Change some entries (a backend's "resident added / moved out"): a new version, pushed at once."""
        return self._commit({e.token: to_row(e) for e in upserts}, deletes=list(deletes))

    def _commit(self, rows: dict[str, Row], *, deletes: list[str] | None = None, whole: bool = False) -> Published:
        """One new version: `rows` upserted and `deletes` deleted, or with `whole`, `rows` as the whole
        list. The current rows are read inside the same write transaction as the change, so two
        publishers at once (two processes on one database) serialise: the second diffs against what
        the first committed, and the list hash stays the hash of the rows."""
        with self._lock, Transaction(self.db) as db:
            base = self.version
            if whole:
                old = dict(db.execute("SELECT token, row FROM entries"))
                deletes = [t for t in old if t not in rows]
            else:
                deletes = deletes or []
                old = {t: r for t in [*rows, *deletes] for (r,) in db.execute("SELECT row FROM entries WHERE token=?", (t,))}
            upserts = [(t, r, j) for t, r in rows.items() if old.get(t) != (j := _json(r))]
            deletes = [t for t in deletes if t in old]
            if not upserts and not deletes:
                result = Published(base, 0, 0, "unchanged")
            else:
                version = base + 1
                h = int(get_meta(db, "hash", "0") or 0)
                for t, row, _ in upserts:
                    if t in old:
                        h -= row_hash(tuple(json.loads(old[t])))
                    h += row_hash(row)
                for t in deletes:
                    h -= row_hash(tuple(json.loads(old[t])))
                db.executemany("DELETE FROM entries WHERE token=?", [(t,) for t in deletes])
                db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?)", [(t, j) for t, _, j in upserts])
                small = len(upserts) + len(deletes) <= self.cfg.central.delta_max_ops
                keep_from = version - self.cfg.central.changelog_versions
                if small:
                    db.executemany("INSERT INTO changes VALUES (?,?,?)", [(version, t, j) for t, _, j in upserts] + [(version, t, None) for t in deletes])
                else:
                    keep_from = version  # too big for a delta: every gateway behind it gets a snapshot
                db.execute("DELETE FROM changes WHERE version <= ?", (keep_from,))
                set_meta(db, "changelog_from", str(max(int(get_meta(db, "changelog_from", "0") or 0), keep_from)))
                set_meta(db, "version", str(version))
                set_meta(db, "hash", str(h % HASH_MOD))
                result = Published(version, len(upserts), len(deletes), "delta" if small else "snapshot")
        if result.mode != "unchanged":
            for gw in self.cfg.central.gateways:
                if result.mode == "delta":
                    self._publish(gw, "wl/delta", self._delta(gw, base))
                self._publish(gw, "wl/head", self.head(gw), retain=True)
        log.info("central: list v%d (%s: %d upserted, %d deleted)", result.version, result.mode, result.upserts, result.deletes)
        return result

    def _delta(self, gw: str, since: int) -> bytes:
        """Signed delta from `since` to the current version (the last change of each token wins)."""
        with self._lock:
            # the last change of each token wins: a dict built in version order keeps exactly that
            ops: dict[str, str | None] = dict(self.db.execute("SELECT token, row FROM changes WHERE version > ? ORDER BY version", (since,)))
            body = WlDelta.model_validate({"gw": gw, "from": since, "to": self.version,  # `from` is a keyword: by alias
                                           "upserts": [tuple(json.loads(r)) for r in ops.values() if r is not None],
                                           "deletes": [t for t, r in ops.items() if r is None], "sha256": self._sha(),
                                           "count": self.count(), "ts": time.time()})
        return self.signer.seal(body)

    def send_snapshot(self, gw: str, start: int = 0, resume: str | None = None) -> int:
        """The whole list in signed chunks; returns how many chunks were sent."""
        n = self.cfg.central.chunk_entries
        sent = 0
        with self._lock:
            self.db.execute("BEGIN")  # one read snapshot of the list, however long the chunks take
            try:
                version, sha, count = self.version, self._sha(), self.count()
                total = max(1, -(-count // n))
                snapshot = f"v{version}-{sha[:12]}"
                first = start if resume == snapshot else 0
                cur = self.db.execute("SELECT row FROM entries ORDER BY token LIMIT -1 OFFSET ?", (first * n,))
                now = time.time()
                for i in range(first, total):  # streamed: the gateway works on chunk i while we build i+1
                    rows = [tuple(json.loads(r)) for (r,) in cur.fetchmany(n)]
                    body = WlChunk.model_construct(gw=gw, version=version, snapshot=snapshot, index=i, total=total, sha256=sha,
                                                   count=count, rows=rows, ts=now)  # our own rows: no re-validation
                    self._publish(gw, "wl/resp", self.signer.seal(body))
                    sent += 1
            finally:
                self.db.execute("COMMIT")
        self.counters["snapshots"] += 1
        return sent

    def answer(self, gw: str, req: WlReq) -> str:
        with self._lock:
            return self._answer(gw, req)

    def _answer(self, gw: str, req: WlReq) -> str:
        current = self.version
        if req.have == current and not req.snapshot:
            self._publish(gw, "wl/head", self.head(gw), retain=True)
            return "head"
        with self._lock:
            covered = int(get_meta(self.db, "changelog_from", "0") or 0) <= req.have < current
            ops = self.db.execute("SELECT count(DISTINCT token) FROM changes WHERE version > ?", (req.have,)).fetchone()[0] if covered else 0
        if covered and not req.snapshot and ops <= self.cfg.central.delta_max_ops:
            self._publish(gw, "wl/resp", self._delta(gw, req.have))
            return "delta"
        self.send_snapshot(gw, req.next_chunk, req.resume)
        return "snapshot"

    # -- inbound --------------------------------------------------------------------------------
    def _message(self, client, userdata, msg) -> None:
        try:
            gw, name = protocol.parse_topic(msg.topic)
            if name == "evt/access":
                self._ingest(gw, protocol.load(EventBatch, msg.payload))
            elif name == "wl/req":
                t0 = time.perf_counter()
                how = self.answer(gw, protocol.load(WlReq, msg.payload))
                self.counters[f"wl_req.{how}"] += 1
                log.info("central: %s asked for a list; sent a %s in %.0f ms", gw, how, (time.perf_counter() - t0) * 1000)
            elif name == "wl/ack":
                self._wl_ack(gw, protocol.load(WlAck, msg.payload))
            elif name == "status" and msg.payload:
                st = protocol.load(Status, msg.payload)
                self._gateway(gw, state=st.state, conn=st.conn, status_ts=st.ts)
            elif name == "cmd/resp":
                resp = protocol.load(CmdResp, msg.payload)
                with self._resp_cond:
                    self._responses[resp.req_id] = resp
                    self._resp_cond.notify_all()
            elif name == "telemetry":
                self.telemetry[gw] = protocol.load(Telemetry, msg.payload)
                self.telemetry_at[gw] = time.time()
                self._gateway(gw)
        except Rejected as r:  # what came off the network and does not fit: counted; anything else is our bug
            self.counters[f"rejected.{r.reason}"] += 1
            log.warning("central: %s rejected: %s", msg.topic, r)

    def _nudge(self) -> None:
        """A fresh session: batches sent to the old one are lost. Ask every gateway to resend now
        (the ack names what is already on disk, so nothing is deleted that is not)."""
        with self._lock:
            last = dict(self.db.execute("SELECT gw, max(seq) FROM events GROUP BY gw"))
        for gw in set(self.cfg.central.gateways) | set(last):
            self._publish(gw, "evt/ack", EvtAck(upto=last.get(gw) or 0, resend=True).dumps())

    def _ingest(self, gw: str, batch: EventBatch) -> None:
        """One transaction: the events, what the fresh ones mean to the office (a registration, an
        alarm, a cared-for resident seen), then the ack; a resent batch means nothing twice."""
        now, t0 = time.time(), time.perf_counter()
        raised = fresh = 0
        with self._lock, Transaction(self.db) as db:
            for e in batch.events:
                if e.get("reason") == "registration_sent" and db.execute("SELECT 1 FROM events WHERE gw=? AND id=?",
                                                                         (gw, e["id"])).fetchone() is None:
                    self._registration(db, gw, e)  # opened before it is stored: the stored event keeps no sealed bytes
                if not db.execute("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?)",
                                  (gw, e["id"], e["seq"], e["ts"], json.dumps(e), now)).rowcount:
                    continue  # a resend: it meant what it meant the first time
                fresh += 1
                raised += alarms_mod.ingest(db, gw, e) is not None
                if e.get("type") == "access" and isinstance(e.get("token"), str):
                    alarms_mod.seen(db, e["token"], e["ts"])
        self.counters["events"] += fresh
        self.counters["duplicates_ignored"] += len(batch.events) - fresh
        self._publish(gw, "evt/ack", EvtAck(upto=batch.last).dumps())  # only after the commit
        self.ack_latency.observe(time.perf_counter() - t0)
        if raised:
            self.counters["alarms"] += raised
            self._forward()

    def _registration(self, db, gw: str, event: dict[str, Any]) -> None:
        """A new tenant's sealed identity, opened in the ingest transaction (the ack comes after the commit)."""
        try:
            reg_id = regs.ingest(db, gw, event, self.registration_key, self.tokenizer)
        except Rejected as r:
            reg_id = None
            log.error("central: a registration from %s could not be opened: %s", gw, r.reason)
        if reg_id is None:
            self.counters["registrations.unopened"] += 1
        else:
            self.counters["registrations"] += 1
            log.info("central: registration %s from %s (%s) waits for the office", reg_id, gw, event.get("door"))

    # -- the office: registrations -----------------------------------------------------------------
    def approve(self, reg_id: str, *, doors: frozenset[str] | None, until: date, who: str, building: str | None = None,
                room: str | None = None, ic: str | None = None) -> Published:
        """List the tenant (idno, and a desk IC card) to the lease end; pushed to the gateways at once."""
        with self._lock:
            reg = regs.get(self.db, reg_id)
            person = regs.new_person_ref()
            entries = regs.approval_entries(self.tokenizer, reg, person, doors=doors, until=until, ic=ic)
            regs.decide(self.db, reg, approved=True, who=who, building=building or self.cfg.central.site or None, room=room,
                        lease_end=until, person=person, entries=entries)
            return self.apply_changes(entries)

    def registrations(self, who: str, *, states: tuple[str, ...] = ("pending",)) -> list[regs.Registration]:
        """The office's list (audited); under the lock, as ingest writes on the same connection."""
        with self._lock:
            return regs.listing(self.db, who, states=states)

    def export_registrations(self, path: Path, who: str) -> int:
        with self._lock:
            return regs.export_csv(self.db, path, who, self.cfg.central.site)

    def reject(self, reg_id: str, *, who: str, note: str = "") -> None:
        with self._lock:
            regs.decide(self.db, regs.get(self.db, reg_id), approved=False, who=who, note=note)

    def passback_violations(self) -> dict[str, int]:
        """Anti-passback violations per credential token (short), most first: a card lent around a flat."""
        with self._lock:
            rows = self.db.execute("SELECT json_extract(body, '$.token') t, count(*) n FROM events "
                                   "WHERE json_extract(body, '$.reason') IN ('antipassback', 'antipassback_violation') "
                                   "GROUP BY t ORDER BY n DESC, t").fetchall()
        return {t: n for t, n in rows if t}

    def _wl_ack(self, gw: str, ack: WlAck) -> None:
        if ack.ok:
            self._gateway(gw, applied_version=ack.version, applied_sha256=ack.sha256)
        else:
            self._gateway(gw, last_reject=f"{ack.reason} (v{ack.rejected})")

    def _gateway(self, gw: str, **fields: Any) -> None:
        fields["last_seen"] = time.time()
        with self._lock:
            self.db.execute("INSERT OR IGNORE INTO gateways(gw) VALUES (?)", (gw,))
            self.db.execute(f"UPDATE gateways SET {', '.join(f'{k}=?' for k in fields)} WHERE gw=?", (*fields.values(), gw))  # noqa: S608 - our own column names

    # -- queries and commands -------------------------------------------------------------------
    def gateways(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.db.execute("SELECT * FROM gateways ORDER BY gw")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=False)) for r in cur.fetchall()]

    def gateway(self, gw: str) -> dict[str, Any]:
        """What central knows about one gateway (empty if nothing yet)."""
        return next((g for g in self.gateways() if g["gw"] == gw), {})

    def event_count(self, gw: str) -> int:
        with self._lock:
            return self.db.execute("SELECT count(*) FROM events WHERE gw=?", (gw,)).fetchone()[0]

    def events(self, gw: str, last: int | None = None) -> list[dict[str, Any]]:
        """A gateway's events in seq order; `last`: only the newest that many (read as such, not sliced
        from all of them)."""
        with self._lock:
            if last is None:
                rows = self.db.execute("SELECT body FROM events WHERE gw=? ORDER BY seq", (gw,))
            else:
                rows = self.db.execute("SELECT body FROM (SELECT body, seq FROM events WHERE gw=? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                                       (gw, last))
            return [json.loads(b) for (b,) in rows]

    def call(self, gw: str, op: str, args: dict | None = None, *, signed: bool = False, timeout: float = 10.0,
             expires_in: float = 30.0) -> CmdResp | None:
        """Send a command and wait for its answer (None: no answer in time)."""
        req = CmdReq(req_id=uuid.uuid4().hex[:16], op=op, args=args or {}, expires=time.time() + expires_in, gw=gw)
        self._publish(gw, "cmd/req", self.signer.seal(req) if signed else req.dumps())
        with self._resp_cond:
            self._resp_cond.wait_for(lambda: req.req_id in self._responses, timeout)
            return self._responses.pop(req.req_id, None)
