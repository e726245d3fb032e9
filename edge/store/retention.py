"""Retention: what the gateway writes is not kept forever. Purges run soon after start and then
daily, in their own thread, and each one is journaled (`retention_purge`, with what it removed).

- Journal: with central, events leave when central acknowledges them (and `sync.journal_max_events`
  caps what waits); without central, events older than `retention.journal_days`, and the oldest
  beyond `retention.journal_max_events`, are deleted in small batches so that a card's journal
  write never waits long behind a purge.
- Diagnostic snapshots (`door-edge diag` camera images under the state directory) older than
  `retention.snapshot_days` are removed.
A purge the storage refuses (disk full, read-only) is counted and tried again at the next run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.config import GatewayConfig
from edge.store.db import StorageUnavailable, open_db
from edge.store.outbox import Event, Outbox

log = logging.getLogger(__name__)

DAY_S = 86400.0
SNAPSHOT_DIR = "diag"


@dataclass(frozen=True)
class Purged:
    events_old: int
    events_excess: int
    snapshots: int

    def describe(self, cfg: GatewayConfig) -> str:
        r = cfg.retention
        journal = ("journal: events leave on central's acknowledgement" if cfg.sync is not None else
                   f"{self.events_old} event(s) older than {r.journal_days:g} day(s), "
                   f"{self.events_excess} beyond {r.journal_max_events}")
        return f"{journal}; {self.snapshots} snapshot(s) older than {r.snapshot_days:g} day(s)"


def purge_snapshots(folder: Path, before_ts: float) -> int:
    removed = 0
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        try:
            if p.is_file() and p.stat().st_mtime < before_ts:
                p.unlink()
                removed += 1
        except OSError:
            continue
    return removed


class Retention(threading.Thread):
    """`record(event)` is told of each purge's journal event (the app re-delivers it on its loop)."""

    def __init__(self, cfg: GatewayConfig, *, on_put: Callable[[int], None], record: Callable[[Event], None],
                 first_after_s: float = 60.0, every_s: float = DAY_S, clock: Callable[[], float] = time.time):
        super().__init__(name="retention", daemon=True)
        self.cfg = cfg
        self._state = cfg.state_dir()
        self._conn = open_db(self._state)
        self.outbox = Outbox(self._conn)
        self.outbox.on_put.append(on_put)
        self._record = record
        self._first_after_s = first_after_s
        self._every_s = every_s
        self._clock = clock
        self._halt = threading.Event()
        self.runs = 0
        self.failures = 0

    def run(self) -> None:
        wait = self._first_after_s
        while not self._halt.wait(wait):
            try:
                self.purge_once()
            except StorageUnavailable as exc:
                self.failures += 1
                log.error("retention purge could not write (%s); trying again in an hour", exc)
                wait = min(self._every_s, 3600.0)
                continue
            wait = self._every_s
        self._conn.close()

    def purge_once(self) -> Purged:
        r, now = self.cfg.retention, self._clock()
        old = excess = 0
        if self.cfg.sync is None:
            old = self.outbox.purge_older(now - r.journal_days * DAY_S)
            excess = self.outbox.purge_beyond(r.journal_max_events)
        snaps = purge_snapshots(self._state / SNAPSHOT_DIR, now - r.snapshot_days * DAY_S)
        purged = Purged(old, excess, snaps)
        event = Event("system", "retention_purge", detail=purged.describe(self.cfg))
        self.outbox.put(event)
        self._record(event)
        self.runs += 1
        log.info("retention purge: %s", event.detail)
        return purged

    def stop(self, timeout: float = 2.0) -> None:
        self._halt.set()
        self.join(timeout)
