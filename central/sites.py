"""Sites: a community (or a rental building) with its own site key, its own list and its gateways.

A site's list version, hash and changelog window live in its `sites` row; its gateways are the
`gateways` rows that name it. A gateway joins a site (`central gateway add`) or leaves it (`central
gateway remove`) in the database, so every central process sees it at once and no file is edited;
one that is in no site gets no list and is refused (`unknown_gateway`).

The site key is the HMAC key the site's gateways tokenise credentials with (edge.privacy); central
keeps each site's here so that any central process, on any host, computes the same tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from central.store import Db
from edge.privacy import Tokenizer


class SiteError(ValueError):
    """A site or gateway named that is not there, or a name that cannot be one (the message says which)."""


@dataclass(frozen=True)
class SiteState:
    site: str
    version: int
    hash: int
    changelog_from: int

    @property
    def sha256(self) -> str:
        return format(self.hash, "064x")


def state(db: Db, site: str, *, lock: bool = False) -> SiteState:
    """The site's list state; `lock`: hold its row until the transaction ends (publishers serialise on it)."""
    sql = "SELECT version, hash, changelog_from FROM sites WHERE site=?"
    row = db.execute(sql + " FOR UPDATE" if lock and db.dialect == "postgres" else sql, (site,)).fetchone()
    if row is None:
        raise SiteError(f"no site {site!r} (`door-edge central site add NAME` makes one)")
    return SiteState(site, int(row[0]), int(row[1]), int(row[2]))


def save_state(db: Db, st: SiteState) -> None:
    db.execute("UPDATE sites SET version=?, hash=?, changelog_from=? WHERE site=?", (st.version, str(st.hash), st.changelog_from, st.site))


def ensure(db: Db, site: str, key: bytes | None = None) -> bool:
    """The site's row, made if missing (with `key`, or a new random one); True if it was made. A row
    without a key (a database migrated from one site) gets `key`."""
    if db.execute("SELECT 1 FROM sites WHERE site=?", (site,)).fetchone() is not None:
        if key is not None:
            db.execute("UPDATE sites SET key=? WHERE site=? AND key=''", (key.hex(), site))
        return False
    import secrets

    db.execute("INSERT INTO sites(site, key, created) VALUES (?,?,?) ON CONFLICT DO NOTHING",
               (site, (key or secrets.token_bytes(32)).hex(), time.time()))
    return True


def adopt(db: Db, site: str) -> None:
    """A database from before sites holds its list under the empty name: it becomes `site`'s."""
    if not site or db.execute("SELECT 1 FROM sites WHERE site=''").fetchone() is None:
        return
    if db.execute("SELECT 1 FROM sites WHERE site=?", (site,)).fetchone() is not None:
        return
    for table in ("sites", "entries", "changes"):
        db.execute(f"UPDATE {table} SET site=? WHERE site=''", (site,))  # noqa: S608 - our own table names
    db.execute("UPDATE gateways SET site=? WHERE site=''", (site,))


def key(db: Db, site: str) -> bytes:
    row = db.execute("SELECT key FROM sites WHERE site=?", (site,)).fetchone()
    if row is None or not row[0]:
        raise SiteError(f"no site {site!r} (`door-edge central site add NAME` makes one)")
    return bytes.fromhex(row[0])


def names(db: Db) -> list[str]:
    return [s for (s,) in db.execute("SELECT site FROM sites ORDER BY site")]


def join(db: Db, gw: str, site: str) -> None:
    """`gw` is now one of `site`'s gateways (moved from any other)."""
    if not gw or "/" in gw or "+" in gw or "#" in gw:
        raise SiteError(f"gateway id {gw!r}: use letters, digits and dashes (it is the certificate CN and a topic level)")
    state(db, site)  # the site exists
    db.execute("INSERT INTO gateways(gw, site) VALUES (?,?) ON CONFLICT(gw) DO UPDATE SET site=excluded.site", (gw, site))


def seed(db: Db, gateways: list[str], site: str) -> None:
    """The gateways named in central.toml join the configured site unless they are in one already."""
    for gw in gateways:
        db.execute("INSERT INTO gateways(gw, site) VALUES (?,?) ON CONFLICT(gw) DO UPDATE SET site=excluded.site "
                   "WHERE gateways.site IS NULL", (gw, site))


def leave(db: Db, gw: str) -> str | None:
    """`gw` leaves its site (its history stays); the site it left, or None if it was in none."""
    row = db.execute("SELECT site FROM gateways WHERE gw=?", (gw,)).fetchone()
    if row is None or row[0] is None:
        return None
    db.execute("UPDATE gateways SET site=NULL WHERE gw=?", (gw,))
    return str(row[0])


def site_of(db: Db, gw: str) -> str | None:
    row = db.execute("SELECT site FROM gateways WHERE gw=?", (gw,)).fetchone()
    return None if row is None else row[0]


def gateways(db: Db, site: str | None = None) -> dict[str, str]:
    """gw -> site, for one site or all."""
    if site is None:
        return dict(db.execute("SELECT gw, site FROM gateways WHERE site IS NOT NULL ORDER BY gw").fetchall())
    return dict(db.execute("SELECT gw, site FROM gateways WHERE site=? ORDER BY gw", (site,)).fetchall())


class Tokenizers:
    """Each site's Tokenizer, made once from its key."""

    def __init__(self) -> None:
        self._by_site: dict[str, Tokenizer] = {}

    def get(self, db: Db, site: str) -> Tokenizer:
        tok = self._by_site.get(site)
        if tok is None:
            tok = self._by_site[site] = Tokenizer(key(db, site))
        return tok
