"""How many times each visitor pass has opened a door here: kept in the journal's database so that
a restart, a kill or a power cut does not give a used-up pass its uses back.

The count is written (its own commit) before the relay moves, like the journal's event. A state
directory that refuses the write keeps the count in memory, counted; the pass is then still
limited until the next restart.
"""

from __future__ import annotations

import logging
import sqlite3

from edge.store.db import storage_fault

log = logging.getLogger(__name__)


class PassUses:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._used: dict[str, int] = dict(conn.execute("SELECT id, used FROM pass_uses"))
        self.write_failures = 0

    def used(self, pass_id: str) -> int:
        return self._used.get(pass_id, 0)

    def use(self, pass_id: str, until: float) -> int:
        """One more use of `pass_id` (kept until its window ends, `until`); the new count."""
        n = self._used[pass_id] = self._used.get(pass_id, 0) + 1
        try:
            self._conn.execute("INSERT INTO pass_uses VALUES (?,?,?) ON CONFLICT(id) DO UPDATE SET used=excluded.used",
                               (pass_id, n, until))
        except sqlite3.OperationalError as exc:
            if not storage_fault(exc):
                raise
            self.write_failures += 1
            log.warning("pass use not stored (%s): kept in memory until the next restart", exc)
        return n

    def purge_before(self, ts: float) -> int:
        """Forget passes whose window ended before `ts` (they are refused as expired anyway)."""
        gone = [pid for (pid,) in self._conn.execute("SELECT id FROM pass_uses WHERE until < ?", (ts,))]
        self._conn.execute("DELETE FROM pass_uses WHERE until < ?", (ts,))
        for pid in gone:
            self._used.pop(pid, None)
        return len(gone)

    def close(self) -> None:
        self._conn.close()
