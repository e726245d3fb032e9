"""The durable event journal (outbox): every decision and door event, in `seq` order.

`put` commits into the WAL before it returns, so an event survives the process being killed the
moment after; the controller calls it *before* it drives the relay, so every decision that reached
a lock is in the journal. `Flusher` makes events power-loss durable (fsync) in groups, off the card
path; only events up to `durable_seq` are reported upstream. Events leave the journal only through
`ack` (central has committed them) or a retention purge (no central).

When the state directory refuses writes (disk full, a file system gone read-only), decisions go on:
`put` keeps the event in memory, in order (up to `PENDING_MAX`), counts the failure, and writes the
kept events first at the next `put` or `retry()` once space returns. Only a kill while the disk is
still full can lose those, and the count of them is in telemetry and diag.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from edge.store.db import StorageUnavailable, checkpoint, open_db, storage_fault, sync_dir, sync_wal

log = logging.getLogger(__name__)

PENDING_MAX = 50_000


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit ms timestamp, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)       # version
    value = (value & ~(0x3 << 62)) | (0x2 << 62)       # variant
    return str(uuid.UUID(int=value))


@dataclass(slots=True)
class Event:
    type: str                      # access | door | system
    reason: str
    door: str | None = None
    kind: str | None = None
    token: str | None = None       # shortened token only
    decision: str | None = None    # granted | denied
    latency_ms: float | None = None
    detail: str | None = None
    sealed: str | None = field(default=None, repr=False)  # registrations: the identity sealed to central (base64)
    severity: str | None = None    # alarms: critical | major | minor, or cleared (edge.access.alarms)
    ts: float = field(default_factory=time.time)
    id: str = field(default_factory=uuid7)
    seq: int | None = None
    mono_ns: int | None = field(default=None, compare=False)  # when its cause was seen; not stored

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("mono_ns")
        if d["sealed"] is None:
            d.pop("sealed")  # only registrations carry one: the others' batches stay as they were
        if d["severity"] is None:
            d.pop("severity")  # only alarms
        return d

    def line(self) -> str:
        """One journal line for a technician's terminal: tokens only, never a name."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.ts))
        cred = f" {self.kind} {self.token}" if self.kind else ""
        lat = f" {self.latency_ms:.2f}ms" if self.latency_ms is not None else ""
        what = (self.decision if self.reason == self.decision else f"{self.decision} ({self.reason})") if self.decision else self.reason
        if self.severity:
            what = f"alarm {self.reason} {self.severity}"
        return f"{self.seq:>7} {when} {self.door or '-':10} {what}{cred}{lat}"


_COLS = "seq, id, ts, door, type, kind, token, decision, reason, latency_ms, detail, sealed, severity"


def _event(row: tuple[Any, ...]) -> Event:
    seq, id_, ts, door, typ, kind, token, decision, reason, latency, detail, sealed, severity = row
    return Event(typ, reason, door, kind, token, decision, latency, detail, sealed, severity, ts, id_, seq)


class Outbox:
    """put / next_batch / ack over the journal table."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._lock = threading.Lock()
        self.on_put: list[Callable[[int], None]] = []  # callables(seq) run after each put (the flusher's doorbell)
        self._pending: deque[Event] = deque()
        self.write_failures = 0     # puts the storage refused
        self.pending_dropped = 0    # kept events dropped because more than PENDING_MAX waited
        self.last_error = ""

    def put(self, event: Event) -> int | None:
        """Commit `event` and return its seq; None when the storage refused it and it waits in memory."""
        with self._lock:
            written = self._write_pending()
            if self._pending:
                self._keep(event)  # behind the ones still waiting: the journal stays in order
            else:
                try:
                    written.append(self._insert(event))
                except sqlite3.OperationalError as exc:
                    if not storage_fault(exc):
                        raise
                    self._refused(exc)
                    self._keep(event)
        for seq in written:
            for cb in self.on_put:
                cb(seq)
        return event.seq

    def retry(self) -> int:
        """Write the events kept while the storage refused them; how many went in."""
        if not self._pending:
            return 0
        with self._lock:
            written = self._write_pending()
        for seq in written:
            for cb in self.on_put:
                cb(seq)
        if written and not self._pending:
            log.warning("journal writable again: %d kept event(s) written", len(written))
        return len(written)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _insert(self, event: Event) -> int:
        cur = self._conn.execute(
            "INSERT INTO journal(id, ts, door, type, kind, token, decision, reason, latency_ms, detail, sealed, severity) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (event.id, event.ts, event.door, event.type, event.kind, event.token, event.decision,
             event.reason, event.latency_ms, event.detail, event.sealed, event.severity))
        event.seq = cur.lastrowid
        return event.seq  # type: ignore[return-value]

    def _write_pending(self) -> list[int]:
        written: list[int] = []
        while self._pending:
            try:
                written.append(self._insert(self._pending[0]))
            except sqlite3.OperationalError as exc:
                if not storage_fault(exc):
                    raise
                self.last_error = str(exc)
                break
            self._pending.popleft()
        return written

    def _refused(self, exc: sqlite3.OperationalError) -> None:
        if not self._pending:  # the first refusal of an outage; the rest are counted
            log.error("journal cannot be written (%s): events kept in memory until it can", exc)
        self.write_failures += 1
        self.last_error = str(exc)

    def _keep(self, event: Event) -> None:
        event.seq = None
        if len(self._pending) >= PENDING_MAX:
            self._pending.popleft()
            self.pending_dropped += 1
        self._pending.append(event)

    def storage(self) -> dict[str, object]:
        """What telemetry and diag show of the journal's storage."""
        return {"write_failures": self.write_failures, "pending": len(self._pending),
                "pending_dropped": self.pending_dropped, "last_error": self.last_error}

    def next_batch(self, after_seq: int, limit: int = 500, upto: int | None = None) -> list[Event]:
        sql = f"SELECT {_COLS} FROM journal WHERE seq > ?" + (" AND seq <= ?" if upto is not None else "") + " ORDER BY seq LIMIT ?"  # noqa: S608 - constant columns
        args = (after_seq, upto, limit) if upto is not None else (after_seq, limit)
        return [_event(r) for r in self._conn.execute(sql, args)]

    def ack(self, upto_seq: int) -> int:
        """Central has committed everything up to `upto_seq`: only now is it deleted.
        StorageUnavailable when the deletion cannot be written (central resends; no harm)."""
        with self._lock, _StorageGuard():
            return self._conn.execute("DELETE FROM journal WHERE seq <= ?", (upto_seq,)).rowcount

    def drop_oldest(self, n: int) -> tuple[int, int, int]:
        """Delete the `n` oldest events (the journal is over its cap): (count, first seq, last seq)."""
        with self._lock, _StorageGuard():
            row = self._conn.execute("SELECT min(seq), max(seq), count(*) FROM (SELECT seq FROM journal ORDER BY seq LIMIT ?)", (n,)).fetchone()
            if not row[2]:
                return 0, 0, 0
            self._conn.execute("DELETE FROM journal WHERE seq <= ?", (row[1],))
            return row[2], row[0], row[1]

    def purge_older(self, before_ts: float, batch: int = 1000) -> int:
        """Delete events older than `before_ts` (retention without central), a batch per
        transaction so that a card's journal write never waits long for the lock."""
        return self._purge("DELETE FROM journal WHERE seq IN (SELECT seq FROM journal WHERE ts < ? ORDER BY seq LIMIT ?)",
                           (before_ts,), batch)

    def purge_beyond(self, keep: int, batch: int = 1000) -> int:
        """Delete the oldest events beyond the newest `keep` (retention without central)."""
        excess = self.depth() - keep
        if excess <= 0:
            return 0
        done = 0
        while done < excess:
            n = min(batch, excess - done)
            with self._lock, _StorageGuard():
                got = self._conn.execute("DELETE FROM journal WHERE seq IN (SELECT seq FROM journal ORDER BY seq LIMIT ?)", (n,)).rowcount
            if not got:
                break
            done += got
        return done

    def _purge(self, sql: str, args: tuple[Any, ...], batch: int) -> int:
        done = 0
        while True:
            with self._lock, _StorageGuard():
                got = self._conn.execute(sql, (*args, batch)).rowcount
            done += got
            if got < batch:
                return done

    def depth(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM journal").fetchone()[0])

    def oldest_ts(self) -> float | None:
        """When the oldest event still in the journal happened (with central: the oldest not yet acknowledged)."""
        row = self._conn.execute("SELECT ts FROM journal ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def last_seq(self) -> int:
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name='journal'").fetchone()
        return row[0] if row else 0

    def tail(self, n: int = 20) -> list[Event]:
        rows = self._conn.execute(f"SELECT {_COLS} FROM journal ORDER BY seq DESC LIMIT ?", (n,)).fetchall()  # noqa: S608 - constant columns
        return [_event(r) for r in reversed(rows)]


class _StorageGuard:
    """`with _StorageGuard():` turns SQLite's storage faults into StorageUnavailable; other errors are ours."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, sqlite3.OperationalError) and storage_fault(exc):
            raise StorageUnavailable(str(exc)) from exc


CHECKPOINT_S = 60.0              # the WAL copied into the database this often...
CHECKPOINT_BYTES = 4 * 1024 * 1024  # ...or once it has grown this big


class Flusher(threading.Thread):
    """Group commit: fsyncs the journal's WAL soon after puts, batching those that arrive meanwhile;
    checkpoints now and then (see edge.store.db)."""

    def __init__(self, state_dir: Path, max_delay_s: float = 0.05, *, checkpoint_s: float = CHECKPOINT_S,
                 checkpoint_bytes: int = CHECKPOINT_BYTES):
        super().__init__(name="journal-flusher", daemon=True)
        self._state_dir = state_dir
        self._conn = open_db(state_dir)
        self._checkpoint_s = checkpoint_s
        self._checkpoint_bytes = checkpoint_bytes
        self._next_checkpoint = 0.0  # the first flush checkpoints, and makes the WAL's directory entry durable
        self.checkpoints = 0
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._max_delay = max_delay_s
        self._pending = 0  # the highest seq notified; under _lock (notify runs on the card path's thread)
        self._lock = threading.Lock()
        self.durable_seq = 0
        self.flushes = 0
        self.failures = 0
        self.heartbeat = time.monotonic()

    def notify(self, seq: int) -> None:
        with self._lock:
            self._pending = max(self._pending, seq)
        self._wake.set()

    def run(self) -> None:
        # what an earlier run left (perhaps killed before its fsync) is made durable first; merged with,
        # not written over, a put notified meanwhile (its wake-up is cleared by this first flush)
        last = self._conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]
        with self._lock:
            self._pending = max(self._pending, last)
        self._flush()
        while not self._halt.is_set():
            self._wake.wait(1.0)
            self.heartbeat = time.monotonic()
            if not self._wake.is_set():
                continue
            self._halt.wait(self._max_delay)  # let a burst gather into one fsync
            self._flush()
        self._flush()
        self._conn.close()

    def _flush(self) -> None:
        with self._lock:
            self._wake.clear()
            target = self._pending
        try:
            wal_bytes = sync_wal(self._state_dir)
            now = time.monotonic()
            if now >= self._next_checkpoint or wal_bytes >= self._checkpoint_bytes or self._halt.is_set():
                checkpoint(self._conn)
                if self._next_checkpoint == 0.0:
                    sync_dir(self._state_dir)
                self._next_checkpoint = now + self._checkpoint_s
                self.checkpoints += 1
        except (sqlite3.OperationalError, OSError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and not storage_fault(exc):
                raise
            self.failures += 1
            self._halt.wait(0.5)
            self._wake.set()  # try again: events are not reported upstream until they are on disk
            return
        self.durable_seq = max(self.durable_seq, target)
        self.flushes += 1

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self._wake.set()
        self.join(timeout)
