"""The durable event journal (outbox): every decision and door event, in `seq` order.

`put` commits into the WAL before it returns, so an event survives the process being killed the
moment after; the controller calls it *before* it drives the relay, so every decision that reached
a lock is in the journal. `Flusher` makes events power-loss durable (fsync) in groups, off the card
path; only events up to `durable_seq` are reported upstream. Events leave the journal only through
`ack` (central has committed them).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.store.db import checkpoint, open_db


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
    ts: float = field(default_factory=time.time)
    id: str = field(default_factory=uuid7)
    seq: int | None = None
    mono_ns: int | None = field(default=None, compare=False)  # when its cause was seen; not stored

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("mono_ns")
        return d


_COLS = "seq, id, ts, door, type, kind, token, decision, reason, latency_ms, detail"


def _event(row: tuple) -> Event:
    seq, id_, ts, door, typ, kind, token, decision, reason, latency, detail = row
    return Event(typ, reason, door, kind, token, decision, latency, detail, ts, id_, seq)


class Outbox:
    """put / next_batch / ack over the journal table."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._lock = threading.Lock()
        self.on_put: list = []  # callables(seq) run after each put (the flusher's doorbell)

    def put(self, event: Event) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO journal(id, ts, door, type, kind, token, decision, reason, latency_ms, detail) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (event.id, event.ts, event.door, event.type, event.kind, event.token, event.decision,
                 event.reason, event.latency_ms, event.detail))
            event.seq = cur.lastrowid
        for cb in self.on_put:
            cb(event.seq)
        return event.seq  # type: ignore[return-value]

    def next_batch(self, after_seq: int, limit: int = 500, upto: int | None = None) -> list[Event]:
        sql = f"SELECT {_COLS} FROM journal WHERE seq > ?" + (" AND seq <= ?" if upto is not None else "") + " ORDER BY seq LIMIT ?"
        args = (after_seq, upto, limit) if upto is not None else (after_seq, limit)
        return [_event(r) for r in self._conn.execute(sql, args)]

    def ack(self, upto_seq: int) -> int:
        """Central has committed everything up to `upto_seq`: only now is it deleted."""
        with self._lock:
            return self._conn.execute("DELETE FROM journal WHERE seq <= ?", (upto_seq,)).rowcount

    def drop_oldest(self, n: int) -> tuple[int, int, int]:
        """Delete the `n` oldest events (the journal is over its cap): (count, first seq, last seq)."""
        with self._lock:
            row = self._conn.execute("SELECT min(seq), max(seq), count(*) FROM (SELECT seq FROM journal ORDER BY seq LIMIT ?)", (n,)).fetchone()
            if not row[2]:
                return 0, 0, 0
            self._conn.execute("DELETE FROM journal WHERE seq <= ?", (row[1],))
            return row[2], row[0], row[1]

    def depth(self) -> int:
        return self._conn.execute("SELECT count(*) FROM journal").fetchone()[0]

    def last_seq(self) -> int:
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name='journal'").fetchone()
        return row[0] if row else 0

    def tail(self, n: int = 20) -> list[Event]:
        rows = self._conn.execute(f"SELECT {_COLS} FROM journal ORDER BY seq DESC LIMIT ?", (n,)).fetchall()
        return [_event(r) for r in reversed(rows)]


class Flusher(threading.Thread):
    """Group commit: fsyncs the journal soon after puts, batching those that arrive meanwhile."""

    def __init__(self, state_dir: Path, max_delay_s: float = 0.05):
        super().__init__(name="journal-flusher", daemon=True)
        self._conn = open_db(state_dir)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._max_delay = max_delay_s
        self._pending = 0
        self.durable_seq = 0
        self.flushes = 0
        self.heartbeat = time.monotonic()

    def notify(self, seq: int) -> None:
        self._pending = max(self._pending, seq)
        self._wake.set()

    def run(self) -> None:
        # what an earlier run left (perhaps killed before its fsync) is made durable first
        self._pending = self._conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()[0]
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
        self._wake.clear()
        target = self._pending
        checkpoint(self._conn)
        self.durable_seq = max(self.durable_seq, target)
        self.flushes += 1

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        self.join(5)
