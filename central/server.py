"""The server half: what the tests, the demo, a small site and a county's cluster run.

- Lists, per site (central.sites, central.lists): `publish` tokenises a residents list with the
  site's key (the same HMAC as its gateways), diffs it against the site's current version inside
  the write transaction, and publishes to each of that site's gateways a signed delta (small
  changes) and the signed retained head. A gateway that asks (`wl/req`) gets a delta from its
  version when the changelog still covers it, otherwise its site's list in signed chunks
  (resumable from a chunk index).
- Events: ingested with insert-or-ignore on (gateway, event id), committed, then acknowledged
  with `evt/ack` (so a gateway deletes only what is on central's disk).
- Gateways: each one's site, last status, connection counter, applied version and telemetry.
- Heads are republished every `head_interval_s` with a fresh signed time: that is how a gateway
  tells a silent central from a quiet one (`sync.stale_after_s`).

Roles (`central serve --role`): `all` (the default) is one process that does everything, on a
kept broker session. A cluster runs `ingest` and `lists` processes, as many of each as it likes,
on any hosts, against one PostgreSQL: each role subscribes with an MQTT 5 shared subscription
(`$share/ingest/...`, `$share/lists/...`), so the broker hands each message to one member of the
group, and a member that dies loses nothing (see README, "Central on a cluster").
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho

import protocol
from central import alarms as alarms_mod
from central import lists, sites
from central import passes as passes_mod
from central import registrations as regs
from central.config import CentralConfig
from central.lists import Published
from central.metrics import Latency
from central.store import Db, Unavailable, open_store
from central.webhook import Forwarder
from edge.privacy import Tokenizer, load_key
from edge.store.whitelist import Entry, read_csv, to_row
from edge.sync.mqtt import connect_properties, new_client, no_delay
from protocol import CmdReq, CmdResp, EventBatch, EvtAck, Rejected, Signer, Status, Telemetry, WlAck, WlChunk, WlDelta, WlHead, WlReq

log = logging.getLogger(__name__)

Role = Literal["all", "ingest", "lists"]
ROLES: tuple[Role, ...] = ("all", "ingest", "lists")
TOPICS: dict[Role, tuple[str, ...]] = {"all": protocol.UP, "ingest": ("evt/access",),
                                       "lists": ("status", "telemetry", "wl/req", "wl/ack")}
INSERT_ROWS = 200  # events per INSERT statement

__all__ = ["ROLES", "Central", "Published", "Role"]


class Central:
    def __init__(self, cfg: CentralConfig, *, client_id: str = "central"):
        self.cfg = cfg
        c = cfg.central
        db_cfg = cfg.database
        self.store = open_store(c.state_dir, db_cfg.url if db_cfg else None, pool_max=db_cfg.pool_max if db_cfg else 8)
        self.signer = Signer.from_file(c.signing_key_file)
        self.site = c.site
        self.registration_key = self._registration_key(c.registration_key_file)
        self._tokenizers = sites.Tokenizers()
        with self.store.tx() as db:
            sites.adopt(db, self.site)
            sites.ensure(db, self.site, load_key(c.site_key_file) if c.site_key_file.exists() else None)
            sites.seed(db, c.gateways, self.site)
            self.tokenizer = self._tokenizers.get(db, self.site)  # the configured site's: registrations, passes
        self.client = new_client(client_id, cfg.broker, clean_start=True)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.connected = threading.Event()
        self.counters: Counter[str] = Counter()
        self._responses: dict[str, CmdResp] = {}
        self.telemetry: dict[str, Telemetry] = {}  # the last one from each gateway this process heard
        self.ack_latency = Latency()
        self._resp_cond = threading.Condition()
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self.forwarder: Forwarder | None = None
        self.role: Role = "all"
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
    def connect(self, *, serve: bool = True, role: Role = "all", listen: tuple[str, ...] | None = None,
                timeout: float = 10.0) -> Central:
        """`serve`: the server in `role`; otherwise a tool's connection that listens only to `listen`
        (e.g. `cmd/resp` for `central cmd`)."""
        self._serve, self.role = serve, role
        self._listen = listen if listen is not None else (TOPICS[role] if serve else ())
        b = self.cfg.broker
        kept = serve and role == "all"  # one central: a session the broker keeps through our restarts
        # a cluster's members: clean sessions, as a member that is gone is not waited for (gateways resend)
        self.client.reconnect_delay_set(0.5, 2)  # type: ignore[arg-type]  # a handful of centrals: no herd to spread
        self.client.connect(b.host, b.port, keepalive=b.keepalive_s,
                            clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY if kept else True,
                            properties=connect_properties(3600 if kept else 0))
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise ConnectionError(f"central: no CONNACK from {b.host}:{b.port} in {timeout}s")
        if serve and role != "ingest":
            for name, target in (("heads", self._heads), ("retention", self._purges), ("care", self._care)):
                t = threading.Thread(target=target, name=f"central-{name}", daemon=True)
                t.start()
                self._threads.append(t)
            self.start_webhook()
        return self

    def _subscriptions(self) -> list[tuple[str, int]]:
        share = "" if self.role == "all" or not self._serve else f"$share/{self.role}/"
        return [(f"{share}{protocol.PREFIX}/+/{n}", protocol.QOS[n]) for n in self._listen]

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("central: broker refused: %s", reason_code)
            return
        no_delay(client)
        if self._listen:
            client.subscribe(self._subscriptions())
        if self._serve and self.role == "all" and not flags.session_present:
            self._nudge()
        self.connected.set()

    def close(self) -> None:
        self._halt.set()
        for t in self._threads:
            t.join(5)
        if self.forwarder is not None:
            self.forwarder.stop()
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()

    def _publish(self, gw: str, name: str, payload: bytes, retain: bool = False) -> paho.MQTTMessageInfo:
        return self.client.publish(protocol.topic(gw, name), payload, qos=protocol.QOS[name], retain=retain)

    def _heads(self) -> None:
        while not self._halt.wait(self.cfg.central.head_interval_s):
            try:
                with self.store.snapshot() as db:
                    members = sites.gateways(db)
                    views = {site: self._view(db, site) for site in set(members.values())}
                for gw, site in members.items():
                    self._publish(gw, "wl/head", self._seal_head(gw, *views[site]), retain=True)
            except Unavailable as exc:
                self._unavailable(exc)

    def _purges(self) -> None:
        """Retention: soon after start, then daily."""
        wait = 60.0
        while not self._halt.wait(wait):
            try:
                self.purge_events()
                wait = 86400.0
            except Unavailable as exc:
                self._unavailable(exc)

    def _care(self) -> None:
        while not self._halt.wait(self.cfg.care.check_s):
            try:
                self.check_care()
            except Unavailable as exc:
                self._unavailable(exc)

    def _unavailable(self, exc: Exception) -> None:
        if not self.counters["db_unavailable"]:
            log.error("central: the database is unavailable (%s); nothing is acknowledged until it is back", exc)
        self.counters["db_unavailable"] += 1

    def check_care(self, now: float | None = None) -> list[int]:
        """Cared-for residents quiet for longer than their period: one alarm each (central.alarms)."""
        with self.store.use() as db:
            raised = alarms_mod.check_care(db, now)
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
        with self.store.use() as db:
            rows = db.execute("SELECT a.id, a.gw, a.name, a.door, a.subject, a.severity, a.raised FROM webhook_queue q "
                              "JOIN alarms a ON a.id = q.alarm ORDER BY q.alarm LIMIT 100").fetchall()
        site = self.site
        return [(r[0], {"alarm": r[0], "site": site, "gateway": r[1], "name": r[2], "door": r[3] or None, "subject": r[4] or None,
                        "severity": r[5], "raised": r[6]}) for r in rows]

    def _webhook_delivered(self, alarm_id: int) -> None:
        with self.store.use() as db:
            db.execute("DELETE FROM webhook_queue WHERE alarm=?", (alarm_id,))

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
            with self.store.tx() as db:
                n = db.execute("DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE received < ? LIMIT ?)",
                               (cutoff, batch)).rowcount
            total += n
            if n < batch:
                break
        self.counters["purged_events"] += total
        log.info("central: retention purge: %d event(s) received more than %g day(s) ago deleted", total, days)
        return total

    # -- the list -------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The configured site's list version."""
        return self.version_of(self.site)

    def version_of(self, site: str) -> int:
        with self.store.use() as db:
            return sites.state(db, site).version

    def sha256(self, site: str | None = None) -> str:
        """The hash of the site's list (the configured site by default), as heads carry it."""
        with self.store.use() as db:
            return sites.state(db, self.site if site is None else site).sha256

    def count(self, site: str | None = None) -> int:
        with self.store.use() as db:
            return lists.count(db, self.site if site is None else site)

    def tokenizer_of(self, site: str) -> Tokenizer:
        with self.store.use() as db:
            return self._tokenizers.get(db, site)

    def head(self, gw: str, site: str | None = None) -> bytes:
        with self.store.use() as db:
            view = self._view(db, site if site is not None else self._site_of(db, gw))
        return self._seal_head(gw, *view)

    @staticmethod
    def _view(db: Db, site: str) -> tuple[sites.SiteState, int]:
        """What every head and delta of a site carries: its state and its row count (read once per
        fan-out, not once per gateway)."""
        return sites.state(db, site), lists.count(db, site)

    def _seal_head(self, gw: str, st: sites.SiteState, count: int) -> bytes:
        return self.signer.seal(WlHead(gw=gw, version=st.version, sha256=st.sha256, count=count, ts=time.time()))

    def _seal_delta(self, gw: str, since: int, st: sites.SiteState, count: int, ops: tuple[list, list[str]]) -> bytes:
        upserts, deletes = ops
        body = WlDelta.model_validate({"gw": gw, "from": since, "to": st.version,  # `from` is a keyword: by alias
                                       "upserts": upserts, "deletes": deletes, "sha256": st.sha256, "count": count, "ts": time.time()})
        return self.signer.seal(body)

    def _site_of(self, db: Db, gw: str) -> str:
        site = sites.site_of(db, gw)
        if site is None:
            raise Rejected("unknown_gateway", f"{gw} is in no site (`door-edge central gateway add {gw} --site NAME`)")
        return site

    def publish_csv(self, path: Path, site: str | None = None) -> Published:
        """The residents file plus (for the configured site) the tenants the office approved, who are
        not in the file; the file's person names stay here, mapped from the references the gateways get."""
        site = self.site if site is None else site
        names: dict[str, str] = {}
        entries = read_csv(path, self.tokenizer_of(site), names)
        kept: list[Entry] = []
        with self.store.tx() as db:
            db.executemany("INSERT INTO persons VALUES (?,?) ON CONFLICT(ref) DO UPDATE SET name=excluded.name", names.items())
            if site == self.site:
                kept = [*regs.listed_entries(db), *passes_mod.revocations(db, self.tokenizer)]  # the office's own rows
        filed = {e.token for e in entries}
        return self.publish_entries([*entries, *(e for e in kept if e.token not in filed)], site)

    def publish_entries(self, entries: Iterable[Entry], site: str | None = None) -> Published:
        """Make `entries` the whole new list of `site` (what `publish --residents` does)."""
        return self._commit({e.token: to_row(e) for e in entries}, whole=True, site=site)

    def apply_changes(self, upserts: Iterable[Entry] = (), deletes: Iterable[str] = (), site: str | None = None) -> Published:
        """Change some entries (a backend's "resident added / moved out"): a new version, pushed at once."""
        return self._commit({e.token: to_row(e) for e in upserts}, deletes=list(deletes), site=site)

    def _commit(self, rows: dict, *, deletes: list[str] | None = None, whole: bool = False, site: str | None = None) -> Published:
        c = self.cfg.central
        with self.store.tx() as db:
            result = lists.commit(db, self.site if site is None else site, rows, deletes=deletes, whole=whole,
                                  delta_max_ops=c.delta_max_ops, changelog_versions=c.changelog_versions)
        if result.mode != "unchanged":
            self._fan_out(result)
        log.info("central: site %r list v%d (%s: %d upserted, %d deleted)", result.site, result.version, result.mode, result.upserts,
                 result.deletes)
        return result

    def _fan_out(self, result: Published) -> None:
        """The new version to the site's gateways only: the delta (when small), then the head."""
        with self.store.snapshot() as db:  # the site's view and the delta read once; only the signed `gw` differs
            members = list(sites.gateways(db, result.site))
            st, count = self._view(db, result.site)
            ops = lists.delta_ops(db, result.site, result.base) if result.mode == "delta" else None
        for gw in members:
            if ops is not None:
                self._publish(gw, "wl/delta", self._seal_delta(gw, result.base, st, count, ops))
            self._publish(gw, "wl/head", self._seal_head(gw, st, count), retain=True)

    def _delta(self, gw: str, site: str, since: int) -> bytes:
        """Signed delta from `since` to the site's current version."""
        with self.store.snapshot() as db:
            st, count = self._view(db, site)
            ops = lists.delta_ops(db, site, since)
        return self._seal_delta(gw, since, st, count, ops)

    def send_snapshot(self, gw: str, start: int = 0, resume: str | None = None) -> int:
        """The gateway's site's whole list in signed chunks; returns how many chunks were sent."""
        n = self.cfg.central.chunk_entries
        sent = 0
        with self.store.snapshot() as db:  # one view of the list, however long the chunks take
            site = self._site_of(db, gw)
            st = sites.state(db, site)
            count = lists.count(db, site)
            total = max(1, -(-count // n))
            snapshot = f"v{st.version}-{st.sha256[:12]}"
            first = start if resume == snapshot else 0
            now = time.time()
            for i, rows in enumerate(lists.chunks(db, site, n, first), start=first):  # streamed: the gateway works on i while we build i+1
                body = WlChunk.model_construct(gw=gw, version=st.version, snapshot=snapshot, index=i, total=total, sha256=st.sha256,
                                               count=count, rows=rows, ts=now)  # our own rows: no re-validation
                self._publish(gw, "wl/resp", self.signer.seal(body))
                sent += 1
            if count == 0 and first == 0:  # an empty list is one empty chunk
                self._publish(gw, "wl/resp", self.signer.seal(WlChunk.model_construct(
                    gw=gw, version=st.version, snapshot=snapshot, index=0, total=1, sha256=st.sha256, count=0, rows=[], ts=now)))
                sent = 1
        self.counters["snapshots"] += 1
        return sent

    def answer(self, gw: str, req: WlReq) -> str:
        with self.store.use() as db:
            site = self._site_of(db, gw)
            current = sites.state(db, site).version
            ops = None if req.snapshot else lists.changes_since(db, site, req.have)
        if req.have == current and not req.snapshot:
            self._publish(gw, "wl/head", self.head(gw, site), retain=True)
            return "head"
        if ops is not None and ops <= self.cfg.central.delta_max_ops:
            self._publish(gw, "wl/resp", self._delta(gw, site, req.have))
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
                tel = protocol.load(Telemetry, msg.payload)
                self.telemetry[gw] = tel
                self._gateway(gw, telemetry=tel.dumps().decode(), telemetry_at=time.time())
        except Rejected as r:  # what came off the network and does not fit: counted; anything else is our bug
            self.counters[f"rejected.{r.reason}"] += 1
            log.warning("central: %s rejected: %s", msg.topic, r)
        except Unavailable as exc:  # nothing acknowledged: the gateway sends again
            self._unavailable(exc)

    def _nudge(self) -> None:
        """A fresh session: batches sent to the old one are lost. Ask every gateway to resend now
        (the ack names what is already on disk, so nothing is deleted that is not)."""
        with self.store.use() as db:
            last = dict(db.execute("SELECT gw, max(seq) FROM events GROUP BY gw").fetchall())
            members = sites.gateways(db)
        for gw in set(members) | set(last):
            self._publish(gw, "evt/ack", EvtAck(upto=last.get(gw) or 0, resend=True).dumps())

    def _ingest(self, gw: str, batch: EventBatch) -> None:
        """One transaction: the events, what the fresh ones mean to the office (a registration, an
        alarm, a cared-for resident seen), then the ack; a resent batch means nothing twice.

        A gateway has one batch in flight and sends the next only after this ack, so its batches
        reach the store in order whichever worker takes each; a resend (after a worker died) is
        ignored row by row on the key (gw, id)."""
        now, t0 = time.time(), time.perf_counter()
        raised = fresh = 0
        with self.store.tx() as db:
            for e in batch.events:
                if e.get("reason") == "registration_sent" and db.execute("SELECT 1 FROM events WHERE gw=? AND id=?",
                                                                         (gw, e["id"])).fetchone() is None:
                    self._registration(db, gw, e)  # opened before it is stored: the stored event keeps no sealed bytes
            new: set[str] = set()
            for i in range(0, len(batch.events), INSERT_ROWS):
                part = batch.events[i:i + INSERT_ROWS]
                rows = [v for e in part for v in (gw, e["id"], e["seq"], e["ts"], json.dumps(e), now, e.get("door"))]
                marks = ",".join(["(?,?,?,?,?,?,?)"] * len(part))
                new.update(r[0] for r in db.execute(f"INSERT INTO events(gw, id, seq, ts, body, received, door) VALUES {marks} "  # noqa: S608 - placeholders only
                                                    "ON CONFLICT DO NOTHING RETURNING id", rows).fetchall())
            care = db.execute("SELECT 1 FROM care LIMIT 1").fetchone() is not None
            for e in batch.events:
                if e["id"] not in new:
                    continue  # a resend: it meant what it meant the first time
                fresh += 1
                raised += alarms_mod.ingest(db, gw, e) is not None
                if care and e.get("type") == "access" and isinstance(e.get("token"), str):
                    alarms_mod.seen(db, e["token"], e["ts"])
        self.counters["events"] += fresh
        self.counters["duplicates_ignored"] += len(batch.events) - fresh
        self._publish(gw, "evt/ack", EvtAck(upto=batch.last).dumps())  # only after the commit
        self.ack_latency.observe(time.perf_counter() - t0)
        if raised:
            self.counters["alarms"] += raised
            self._forward()

    def _registration(self, db: Db, gw: str, event: dict[str, Any]) -> None:
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
        with self.store.use() as db:
            reg = regs.get(db, reg_id)
            person = regs.new_person_ref()
            entries = regs.approval_entries(self.tokenizer, reg, person, doors=doors, until=until, ic=ic)
            regs.decide(db, reg, approved=True, who=who, building=building or self.site or None, room=room,
                        lease_end=until, person=person, entries=entries)
        return self.apply_changes(entries)

    def registrations(self, who: str, *, states: tuple[str, ...] = ("pending",)) -> list[regs.Registration]:
        """The office's list (audited)."""
        with self.store.use() as db:
            return regs.listing(db, who, states=states)

    def export_registrations(self, path: Path, who: str) -> int:
        with self.store.use() as db:
            return regs.export_csv(db, path, who, self.site)

    def reject(self, reg_id: str, *, who: str, note: str = "") -> None:
        with self.store.use() as db:
            regs.decide(db, regs.get(db, reg_id), approved=False, who=who, note=note)

    def passback_violations(self) -> dict[str, int]:
        """Anti-passback violations per credential token (short), most first: a card lent around a flat."""
        with self.store.use() as db:
            t, r = db.json_text("body", "token"), db.json_text("body", "reason")
            rows = db.execute(f"SELECT {t} AS t, count(*) AS n FROM events WHERE {r} IN ('antipassback', 'antipassback_violation') "  # noqa: S608
                              f"GROUP BY {t} ORDER BY n DESC, t").fetchall()
        return {t: n for t, n in rows if t}

    def _wl_ack(self, gw: str, ack: WlAck) -> None:
        if ack.ok:
            self._gateway(gw, applied_version=ack.version, applied_sha256=ack.sha256)
        else:
            self._gateway(gw, last_reject=f"{ack.reason} (v{ack.rejected})")

    def _gateway(self, gw: str, **fields: Any) -> None:
        fields["last_seen"] = time.time()
        cols = ", ".join(fields)
        sets = ", ".join(f"{k}=excluded.{k}" for k in fields)
        with self.store.use() as db:
            db.execute(f"INSERT INTO gateways(gw, {cols}) VALUES (?{',?' * len(fields)}) ON CONFLICT(gw) DO UPDATE SET {sets}",  # noqa: S608 - our own column names
                       (gw, *fields.values()))

    # -- queries and commands -------------------------------------------------------------------
    def gateways(self) -> list[dict[str, Any]]:
        with self.store.use() as db:
            cur = db.execute("SELECT * FROM gateways ORDER BY gw")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=False)) for r in cur.fetchall()]

    def gateway(self, gw: str) -> dict[str, Any]:
        """What central knows about one gateway (empty if nothing yet)."""
        return next((g for g in self.gateways() if g["gw"] == gw), {})

    def event_count(self, gw: str) -> int:
        with self.store.use() as db:
            return int(db.execute("SELECT count(*) FROM events WHERE gw=?", (gw,)).fetchone()[0])

    def events(self, gw: str, last: int | None = None) -> list[dict[str, Any]]:
        """A gateway's events in seq order; `last`: only the newest that many (read as such, not sliced
        from all of them)."""
        with self.store.use() as db:
            if last is None:
                rows = db.execute("SELECT body FROM events WHERE gw=? ORDER BY seq", (gw,)).fetchall()
            else:
                rows = db.execute("SELECT body FROM (SELECT body, seq FROM events WHERE gw=? ORDER BY seq DESC LIMIT ?) AS newest "
                                  "ORDER BY seq", (gw, last)).fetchall()
            return [json.loads(b) for (b,) in rows]

    def call(self, gw: str, op: str, args: dict | None = None, *, signed: bool = False, timeout: float = 10.0,
             expires_in: float = 30.0) -> CmdResp | None:
        """Send a command and wait for its answer (None: no answer in time)."""
        req = CmdReq(req_id=uuid.uuid4().hex[:16], op=op, args=args or {}, expires=time.time() + expires_in, gw=gw)
        self._publish(gw, "cmd/req", self.signer.seal(req) if signed else req.dumps())
        with self._resp_cond:
            self._resp_cond.wait_for(lambda: req.req_id in self._responses, timeout)
            return self._responses.pop(req.req_id, None)
