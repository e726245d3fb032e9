"""A site's whitelist on central: versions, the changelog that deltas are cut from, and snapshots.

Pure database work on one connection (the caller holds the transaction); `Central` signs and
publishes what these return. Every version of a site is made inside one write transaction that
first locks the site's row, so two publishers at once (two processes, two hosts) serialise: the
second diffs against what the first committed, and the list hash stays the hash of the rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from central import sites
from central.store import Db
from edge.store.whitelist import HASH_MOD, Row, row_hash


@dataclass
class Published:
    version: int
    upserts: int
    deletes: int
    mode: str  # delta | snapshot | unchanged
    site: str = ""
    base: int = 0  # the version it was made from: the delta gateways get goes from here


def as_json(row: Row) -> str:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False)


def commit(db: Db, site: str, rows: dict[str, Row], *, deletes: list[str] | None = None, whole: bool = False,
           delta_max_ops: int, changelog_versions: int) -> Published:
    """One new version of `site`: `rows` upserted and `deletes` deleted, or with `whole`, `rows` as
    the whole list. Call inside a transaction."""
    st = sites.state(db, site, lock=True)  # SQLite: BEGIN IMMEDIATE already serialises; PostgreSQL: the row lock
    if whole:
        old = dict(db.execute("SELECT token, row FROM entries WHERE site=?", (site,)).fetchall())
        deletes = [t for t in old if t not in rows]
    else:
        deletes = deletes or []
        old = {t: r for t in [*rows, *deletes] for (r,) in db.execute("SELECT row FROM entries WHERE site=? AND token=?", (site, t))}
    upserts = [(t, r, j) for t, r in rows.items() if old.get(t) != (j := as_json(r))]
    deletes = [t for t in deletes if t in old]
    if not upserts and not deletes:
        return Published(st.version, 0, 0, "unchanged", site, st.version)
    version = st.version + 1
    h = st.hash
    for t, row, _ in upserts:
        if t in old:
            h -= row_hash(tuple(json.loads(old[t])))
        h += row_hash(row)
    for t in deletes:
        h -= row_hash(tuple(json.loads(old[t])))
    db.executemany("DELETE FROM entries WHERE site=? AND token=?", [(site, t) for t in deletes])
    db.executemany("INSERT INTO entries(site, token, row) VALUES (?,?,?) ON CONFLICT(site, token) DO UPDATE SET row=excluded.row",
                   [(site, t, j) for t, _, j in upserts])
    small = len(upserts) + len(deletes) <= delta_max_ops
    keep_from = version - changelog_versions
    if small:
        db.executemany("INSERT INTO changes(site, version, token, row) VALUES (?,?,?,?)",
                       [(site, version, t, j) for t, _, j in upserts] + [(site, version, t, None) for t in deletes])
    else:
        keep_from = version  # too big for a delta: every gateway behind it gets a snapshot
    db.execute("DELETE FROM changes WHERE site=? AND version <= ?", (site, keep_from))
    sites.save_state(db, sites.SiteState(site, version, h % HASH_MOD, max(st.changelog_from, keep_from)))
    return Published(version, len(upserts), len(deletes), "delta" if small else "snapshot", site, st.version)


def count(db: Db, site: str) -> int:
    return int(db.execute("SELECT count(*) FROM entries WHERE site=?", (site,)).fetchone()[0])


def delta_ops(db: Db, site: str, since: int) -> tuple[list[Row], list[str]]:
    """Upserts and deletes from `since` to now (the last change of each token wins: a dict built in
    version order keeps exactly that)."""
    ops: dict[str, str | None] = dict(db.execute("SELECT token, row FROM changes WHERE site=? AND version > ? ORDER BY version",
                                                 (site, since)).fetchall())
    return [tuple(json.loads(r)) for r in ops.values() if r is not None], [t for t, r in ops.items() if r is None]


def changes_since(db: Db, site: str, have: int) -> int | None:
    """How many tokens changed since `have`, or None when the changelog no longer reaches back to it."""
    st = sites.state(db, site)
    if not st.changelog_from <= have < st.version:
        return None
    return int(db.execute("SELECT count(DISTINCT token) FROM changes WHERE site=? AND version > ?", (site, have)).fetchone()[0])


def chunks(db: Db, site: str, n: int, first: int) -> Iterator[list[Row]]:
    """The site's rows in token order, `n` at a time, from chunk `first` (call in a read snapshot)."""
    cur = db.execute("SELECT row FROM entries WHERE site=? ORDER BY token LIMIT ? OFFSET ?", (site, 2**62, first * n))
    while rows := cur.fetchmany(n):
        yield [tuple(json.loads(r)) for (r,) in rows]
