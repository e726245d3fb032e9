"""The gateway's side of whitelist sync: signed head, deltas and snapshots -> the local list.

Runs on the sync thread with its own connection to the whitelist database; the card path keeps
reading the in-memory index, which is swapped in one assignment when a change lands.

Rules (DESIGN.md section 5):
- every message is a signed envelope naming this gateway; anything else is rejected, counted and
  reported in `wl/ack` with the reason;
- a head older than the newest we have seen is a replay (`stale`); a head below our version is a
  rollback (`rolled_back`); a head above it makes us ask (`wl/req`) for what we lack;
- a delta applies only on top of the version it names and only if the resulting state hash is the
  one central signed; otherwise we ask again;
- snapshot chunks are staged on disk (a restart resumes them) and swapped in one transaction when
  all are there and the hash matches; until then the old list serves.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable

import protocol
from edge.store import whitelist as store
from edge.store.db import get_meta, set_meta
from edge.store.whitelist import Whitelist, checked_entry
from protocol import Keyring, Rejected, WlAck, WlChunk, WlDelta, WlHead, WlReq

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0


class WhitelistSync:
    def __init__(self, gw: str, whitelist: Whitelist, conn, keyring: Keyring,
                 send: Callable[[str, bytes], bool], *, clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic):
        self.gw = gw
        self.list = whitelist
        self._conn = conn
        self.keyring = keyring
        self._send = send
        self._clock = clock
        self._mono = mono
        self.rejected: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        self.heads = 0  # signed heads taken (central speaking), whatever they led to
        self.head: WlHead | None = None
        self._pending: tuple[str, float] | None = None
        self._parsed: tuple[str, dict[int, tuple[list, int]]] = ("", {})  # this snapshot's chunks: entries, hash
        heard = get_meta(conn, "central_heard_ts")
        if heard is None:  # first start with sync: the staleness clock starts now
            heard = str(clock())
            set_meta(conn, "central_heard_ts", heard)
        self.heard_ts = float(heard)
        st = store.staged(conn)
        if st is not None and st[1] <= whitelist.version:
            store.clear_stage(conn)

    # -- inbound --------------------------------------------------------------------------------
    def on_message(self, name: str, payload: bytes) -> None:
        named: int | None = None
        try:
            body = self.keyring.open(payload, self.gw)
            kind = body.get("kind")
            v = body.get("version", body.get("to"))
            named = v if isinstance(v, int) else None
            if name == "wl/head" and kind == "head":
                self._on_head(protocol.load(WlHead, body))
            elif name in ("wl/delta", "wl/resp") and kind == "delta":
                self._on_delta(protocol.load(WlDelta, body))
            elif name == "wl/resp" and kind == "snapshot":
                self._on_chunk(protocol.load(WlChunk, body), payload)
            else:
                raise Rejected("malformed", f"{str(kind)[:16]!r} on {name}")
        except Rejected as r:
            self.rejected[r.reason] += 1
            log.warning("whitelist message on %s rejected: %s", name, r)
            self._ack(ok=False, reason=r.reason, rejected=named)

    def _heard(self, ts: float) -> None:
        if ts > self.heard_ts:
            self.heard_ts = ts
            set_meta(self._conn, "central_heard_ts", repr(ts))

    def _on_head(self, head: WlHead) -> None:
        if self.head is not None and head.ts < self.head.ts:
            raise Rejected("stale", f"head v{head.version} is older than v{self.head.version} seen before")
        if head.version < self.list.version:
            raise Rejected("rolled_back", f"head v{head.version} is below the local v{self.list.version}")
        self.head = head
        self.heads += 1
        self._heard(head.ts)
        if head.version == self.list.version:
            if head.sha256 != self.list.sha256:
                log.warning("whitelist v%d differs from central's; asking for a snapshot", head.version)
                self.request(snapshot=True)
            else:
                self._pending = None
            return
        self.tick(force=True)

    def _on_delta(self, d: WlDelta) -> None:
        local = self.list.version
        if d.to <= local:
            raise Rejected("stale", f"delta to v{d.to}, local v{local}")
        self._heard(d.ts)
        if d.from_ != local:
            self.applied["gap"] += 1
            log.info("delta v%d->v%d does not follow the local v%d; asking for what is missing", d.from_, d.to, local)
            self.request()
            return
        try:
            upserts = [checked_entry(r) for r in d.upserts]
        except ValueError as exc:
            raise Rejected("malformed", str(exc)) from None
        try:
            self.list.apply_delta(upserts, d.deletes, d.to, conn=self._conn, expect_sha256=d.sha256)
        except store.HashMismatch as exc:
            self.request(snapshot=True)
            raise Rejected("hash_mismatch", f"delta v{d.from_}->v{d.to}: {exc}; asked for a snapshot") from None
        self.applied["delta"] += 1
        log.info("whitelist v%d applied (delta: %d upserted, %d deleted)", d.to, len(upserts), len(d.deletes))
        self._done()

    def _on_chunk(self, c: WlChunk, envelope: bytes) -> None:
        if c.version <= self.list.version:
            raise Rejected("stale", f"snapshot v{c.version}, local v{self.list.version}")
        st = store.staged(self._conn)
        if st is not None and st[0] != c.snapshot and st[1] > c.version:
            raise Rejected("stale", f"snapshot v{c.version} while v{st[1]} is being staged")
        if c.index >= c.total:
            raise Rejected("malformed", f"chunk {c.index} of {c.total}")
        self._heard(c.ts)
        try:
            parsed = [checked_entry(r) for r in c.rows]
        except ValueError as exc:
            raise Rejected("malformed", str(exc)) from None
        if self._pending is not None:
            self._pending = (self._pending[0], self._mono())  # progress: not timed out
        # staged as received: still signed on disk, re-verified if a restart has to read it back
        have = store.stage_chunk(self._conn, snapshot=c.snapshot, index=c.index, version=c.version, total=c.total, sha256=c.sha256,
                                 blob=envelope.decode())
        if self._parsed[0] != c.snapshot:
            self._parsed = (c.snapshot, {})
        # hashed as it arrives, so the last chunk does not pay for the whole list
        self._parsed[1][c.index] = (parsed, store.hash_sum(store.to_row(e) for e in parsed))
        if have < c.total:
            return
        done = [self._parsed[1].get(i) or self._read_staged(c.snapshot, i) for i in range(c.total)]
        self._parsed = ("", {})
        entries = [e for chunk, _ in done for e in chunk]
        h = sum(ch for _, ch in done) % store.HASH_MOD
        if format(h, "064x") != c.sha256 or len(entries) != c.count:
            store.clear_stage(self._conn)
            raise Rejected("hash_mismatch", f"snapshot v{c.version}: {len(entries)} entries do not hash to central's list")
        self.list.replace(entries, c.version, conn=self._conn, known_hash=h)
        store.clear_stage(self._conn)
        self.applied["snapshot"] += 1
        log.info("whitelist v%d swapped in (snapshot of %d entries in %d chunk(s))", c.version, len(entries), c.total)
        self._done()

    def _read_staged(self, snapshot: str, index: int) -> tuple[list, int]:
        blob = store.staged_chunk(self._conn, snapshot, index)
        chunk = protocol.load(WlChunk, self.keyring.open(blob.encode(), self.gw))
        entries = [checked_entry(r) for r in chunk.rows]
        return entries, store.hash_sum(store.to_row(e) for e in entries)

    def _done(self) -> None:
        if self.head is None or self.list.version >= self.head.version:
            self._pending = None
        self._ack(ok=True)
        if self.head is not None and self.list.version < self.head.version:
            self.tick(force=True)

    # -- outbound -------------------------------------------------------------------------------
    def _ack(self, *, ok: bool, reason: str | None = None, rejected: int | None = None) -> None:
        self._send("wl/ack", WlAck(ok=ok, version=self.list.version, sha256=self.list.sha256, count=len(self.list),
                                   reason=reason, rejected=rejected).dumps())

    def request(self, *, snapshot: bool = False) -> str:
        st = store.staged(self._conn)
        req = WlReq(req_id=uuid.uuid4().hex[:16], have=self.list.version, want=self.head.version if self.head else None,
                    snapshot=snapshot, resume=st[0] if st else None, next_chunk=st[3] if st else 0)
        if self._send("wl/req", req.dumps()):
            self._pending = (req.req_id, self._mono())
        return req.req_id

    def tick(self, *, force: bool = False) -> None:
        """Ask again when behind the head and no answer came in time (or right now with `force`)."""
        if self.head is None or self.list.version >= self.head.version:
            return
        if self._pending is not None and not force and self._mono() - self._pending[1] < REQUEST_TIMEOUT_S:
            return
        if self._pending is not None and force and self._mono() - self._pending[1] < 1.0:
            return  # one request in flight is enough
        self.request()

    def reconnected(self) -> None:
        self._pending = None

    def age_s(self) -> float:
        return max(0.0, self._clock() - self.heard_ts)
