"""Where each credential last passed, per anti-passback area: kept in the journal's database so that
a restart (or a kill) does not forget who is inside.

Read once at start into a dict (the card path looks up in memory); each passage is written through
at once with its own commit. A state directory that refuses the write (disk full) keeps the passage
in memory, counted; anti-passback then still works until the next restart.
"""

from __future__ import annotations

import logging
import sqlite3

from edge.access.antipassback import Passage
from edge.store.db import storage_fault

log = logging.getLogger(__name__)


class Passages:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._last: dict[tuple[str, str], Passage] = {
            (area, token): Passage(direction, ts) for area, token, direction, ts in conn.execute("SELECT area, token, direction, ts FROM passback")}
        self.write_failures = 0

    def last(self, area: str, token: str) -> Passage | None:
        return self._last.get((area, token))

    def record(self, area: str, token: str, passage: Passage) -> None:
        self._last[(area, token)] = passage
        try:
            self._conn.execute("INSERT OR REPLACE INTO passback VALUES (?,?,?,?)", (area, token, passage.direction, passage.ts))
        except sqlite3.OperationalError as exc:
            if not storage_fault(exc):
                raise
            self.write_failures += 1
            log.warning("passage not stored (%s): kept in memory until the next restart", exc)

    def purge_before(self, ts: float) -> int:
        """Forget passages older than `ts` (any reset since has cleared them anyway)."""
        n = self._conn.execute("DELETE FROM passback WHERE ts < ?", (ts,)).rowcount
        self._last = {k: p for k, p in self._last.items() if p.ts >= ts}
        return n

    def __len__(self) -> int:
        return len(self._last)

    def close(self) -> None:
        self._conn.close()
