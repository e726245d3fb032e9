"""Who may enter where: credential tokens -> person, doors, validity window, schedule.

Decisions read an in-memory dict that is replaced as a whole (one reference assignment) when a
new version lands, so a swipe never sees half a list and never waits on the database.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from edge.privacy import Tokenizer
from edge.store.db import Transaction, get_meta, set_meta

CSV_COLUMNS = ("person", "kind", "value", "doors", "valid_from", "valid_to")
CARD_KINDS = ("idcard", "ic", "idno")
LIST_KINDS = (*CARD_KINDS, "plate", "face")  # face: the person may use their face (value = person id)
# from central only: a visitor pass it revoked (token = HMAC of "pass:" + the pass id; person = the host)
WIRE_KINDS = (*LIST_KINDS, "pass_revoked")
_TOKEN = re.compile(r"^[0-9a-f]{64}$")
HASH_MOD = 1 << 256  # list hashes are sums of row hashes modulo this


@dataclass(frozen=True, slots=True)
class Entry:
    token: str
    kind: str
    person: str
    doors: frozenset[str] | None  # None: every door
    valid_from: datetime | None
    valid_to: datetime | None
    schedule: str | None = None

    def allows_door(self, door: str) -> bool:
        return self.doors is None or door in self.doors


class ResidentsCsvError(Exception):
    """A residents file that cannot be imported; names the line and the column."""


def _parse_when(text: str, *, end: bool) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    if len(text) == 10:
        d = date.fromisoformat(text)
        # a bare end date means "through that day"
        return datetime.combine(d + timedelta(days=1), time()) if end else datetime.combine(d, time())
    return datetime.fromisoformat(text)


Row = tuple[str, str, str, str, str | None, str | None, str | None]


def to_row(entry: Entry) -> Row:
    """The canonical row of an entry: the database row, the wire row and what the state hash covers."""
    return (entry.token, entry.kind, entry.person,
            "*" if entry.doors is None else json.dumps(sorted(entry.doors)),
            entry.valid_from.isoformat() if entry.valid_from else None,
            entry.valid_to.isoformat() if entry.valid_to else None,
            entry.schedule)


def from_row(row: tuple[Any, ...]) -> Entry:
    token, kind, person, doors, vf, vt, sched = row
    return Entry(token, kind, person, None if doors == "*" else frozenset(json.loads(doors)),
                 datetime.fromisoformat(vf) if vf else None, datetime.fromisoformat(vt) if vt else None, sched)


def checked_entry(row: Row) -> Entry:
    """`from_row` for rows from the network: ValueError naming what is wrong (never the values)."""
    token, kind, person = row[0], row[1], row[2]
    if not _TOKEN.match(token):
        raise ValueError("token is not 64 lower-case hex digits")
    if kind not in WIRE_KINDS:
        raise ValueError(f"kind {kind[:16]!r} is not one of {', '.join(WIRE_KINDS)}")
    if not person.strip():
        raise ValueError("person is empty")
    try:
        entry = from_row(row)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ValueError("doors or validity dates do not parse") from None
    if entry.doors is not None and not all(isinstance(d, str) for d in entry.doors):
        raise ValueError("doors must be a list of door ids")
    return entry


def row_hash(row: Row) -> int:
    """SHA-256 of a row's canonical bytes: fields joined by NUL, each present field marked by SOH
    (so None and "" differ). Integrity only: the signature on what carries the hash is the security."""
    canon = "\x00".join("" if f is None else "\x01" + f for f in row)
    return int.from_bytes(hashlib.sha256(canon.encode()).digest(), "big")


def hash_sum(rows: Iterable[Row]) -> int:
    return sum(row_hash(r) for r in rows) % HASH_MOD


def state_hash(rows: Iterable[Row]) -> str:
    """Order-independent hash of a whole list (the sum of the rows' SHA-256 mod 2^256).

    Additive, so a delta updates it in O(changes) on both sides; both sides hash `to_row(entry)`.
    """
    return format(hash_sum(rows), "064x")


def read_csv(path: Path, tokenizer: Tokenizer, names: dict[str, str] | None = None) -> list[Entry]:
    """Parse a residents CSV (person, kind, value, doors, valid_from, valid_to[, schedule]).

    Values are hashed as they are read; the clear values are not kept anywhere. The person column
    becomes an opaque reference (`Tokenizer.person_ref`): the list holds no names. `names`, where
    given (central), is filled with reference -> person, the map only central keeps.
    `doors` is `*` or door ids separated by `;` or spaces. A `face` row grants the person's enrolled
    face (value: the id they were enrolled under; blank = the person column): central records the
    consent, the gateway holds the template.
    """
    try:
        return _read_csv(path, tokenizer, names)
    except UnicodeDecodeError as exc:
        raise ResidentsCsvError(f"{path}: not UTF-8 text (byte {exc.start}); save the list as CSV in UTF-8") from None
    except csv.Error as exc:
        raise ResidentsCsvError(f"{path}: not a CSV file the importer can read ({exc})") from None


def _read_csv(path: Path, tokenizer: Tokenizer, names: dict[str, str] | None) -> list[Entry]:
    entries: dict[str, Entry] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ResidentsCsvError(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                               f"{','.join(CSV_COLUMNS)}[,schedule]")
        for lineno, rec in enumerate(reader, start=2):
            try:
                kind = (rec["kind"] or "").strip()
                if kind not in LIST_KINDS:
                    raise ValueError(f"kind {kind!r} is not one of {', '.join(LIST_KINDS)}")
                value = rec["value"] or ""
                if kind == "face":  # the person may use the face enrolled under their id (blank: this row's person)
                    value = tokenizer.person_ref(value if value.strip() else rec["person"] or "")
                token = tokenizer.token(kind, value)
                doors_text = (rec["doors"] or "").strip()
                if not doors_text:
                    raise ValueError("doors is empty; use * for every door")
                doors = None if doors_text == "*" else frozenset(d for d in doors_text.replace(";", " ").split() if d)
                person = (rec["person"] or "").strip()
                if not person:
                    raise ValueError("person is empty")
                ref = tokenizer.person_ref(person)
                if names is not None:
                    names[ref] = person
                entry = Entry(token, kind, ref, doors,
                              _parse_when(rec["valid_from"] or "", end=False),
                              _parse_when(rec["valid_to"] or "", end=True),
                              (rec.get("schedule") or "").strip() or None)
            except ValueError as exc:
                # the message never repeats the value itself: it may be an ID number
                raise ResidentsCsvError(f"{path}, line {lineno}: {exc}") from None
            entries[token] = entry
    return list(entries.values())


class Whitelist:
    """The local list. `lookup` is the hot path; `replace` swaps in a whole new version."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._index: dict[str, Entry] = {}
        self._hash = 0
        self.version = 0
        self.reload()

    def reload(self) -> None:
        rows = self._conn.execute("SELECT token, kind, person, doors, valid_from, valid_to, schedule FROM credentials").fetchall()
        index = {r[0]: from_row(r) for r in rows}
        self._hash = hash_sum(tuple(r) for r in rows)
        self.version = int(get_meta(self._conn, "whitelist_version", "0") or 0)
        self._index = index

    @property
    def sha256(self) -> str:
        return format(self._hash, "064x")

    def stored_version(self) -> int:
        """The version in the database, which another process (the CLI) may have changed."""
        return int(get_meta(self._conn, "whitelist_version", "0") or 0)

    def lookup(self, token: str) -> Entry | None:
        return self._index.get(token)

    def __len__(self) -> int:
        return len(self._index)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self._index.values():
            out[e.kind] = out.get(e.kind, 0) + 1
        return out

    def entries(self) -> Iterable[Entry]:
        return self._index.values()

    def replace(self, entries: Iterable[Entry], version: int | None = None,
                conn: sqlite3.Connection | None = None, *, known_hash: int | None = None) -> int:
        """Store a complete new list in one transaction, then swap the in-memory index.

        `conn`: the caller's own connection (the sync thread has one, so a long write never sits
        inside a transaction of the loop thread's connection).
        """
        new = {e.token: e for e in entries}
        rows = [to_row(e) for e in new.values()]
        with Transaction(conn or self._conn) as c:
            current = int(get_meta(c, "whitelist_version", "0") or 0)
            version = current + 1 if version is None else version
            c.execute("DELETE FROM credentials")
            c.executemany("INSERT INTO credentials VALUES (?,?,?,?,?,?,?)", rows)
            set_meta(c, "whitelist_version", str(version))
        self._hash = hash_sum(rows) if known_hash is None else known_hash
        self._index = new
        self.version = version
        return version

    def apply_delta(self, upserts: list[Entry], deletes: list[str], version: int,
                    conn: sqlite3.Connection | None = None, *, expect_sha256: str | None = None) -> None:
        """Apply changes as one transaction, then swap in a patched copy of the index.

        With `expect_sha256`, nothing is written unless the result hashes to it (HashMismatch).
        """
        index = dict(self._index)
        h = self._hash
        for token in deletes:
            old = index.pop(token, None)
            if old is not None:
                h -= row_hash(to_row(old))
        for e in upserts:
            old = index.get(e.token)
            if old is not None:
                h -= row_hash(to_row(old))
            index[e.token] = e
            h += row_hash(to_row(e))
        h %= HASH_MOD
        if expect_sha256 is not None and format(h, "064x") != expect_sha256:
            raise HashMismatch(f"the result would hash to {format(h, '064x')[:12]}, not {expect_sha256[:12]}")
        with Transaction(conn or self._conn) as c:
            c.executemany("DELETE FROM credentials WHERE token=?", [(t,) for t in deletes])
            c.executemany("INSERT OR REPLACE INTO credentials VALUES (?,?,?,?,?,?,?)", [to_row(e) for e in upserts])
            set_meta(c, "whitelist_version", str(version))
        self._hash = h
        self._index = index
        self.version = version

    def close(self) -> None:
        self._conn.close()


class HashMismatch(ValueError):
    """A change that would not produce the list its sender signed."""


# -- snapshot staging ------------------------------------------------------------------------------
def stage_chunk(conn: sqlite3.Connection, *, snapshot: str, index: int, version: int, total: int, sha256: str, blob: str) -> int:
    """Keep one chunk on disk (idempotent; other snapshots are dropped); return how many are staged."""
    with Transaction(conn) as c:
        c.execute("DELETE FROM wl_stage WHERE snapshot != ?", (snapshot,))
        c.execute("INSERT OR REPLACE INTO wl_stage VALUES (?,?,?,?,?,?)", (snapshot, index, version, total, sha256, blob))
        return int(c.execute("SELECT count(*) FROM wl_stage WHERE snapshot=?", (snapshot,)).fetchone()[0])


def staged(conn: sqlite3.Connection) -> tuple[str, int, int, int] | None:
    """The partly staged snapshot, if any: (snapshot id, version, total, next missing chunk)."""
    row = conn.execute("SELECT snapshot, version, total FROM wl_stage LIMIT 1").fetchone()
    if row is None:
        return None
    have = {r[0] for r in conn.execute("SELECT idx FROM wl_stage WHERE snapshot=?", (row[0],))}
    nxt = next(i for i in range(row[2] + 1) if i not in have)
    return row[0], row[1], row[2], nxt


def staged_chunk(conn: sqlite3.Connection, snapshot: str, index: int) -> str:
    """The chunk as it was received (a signed envelope)."""
    row = conn.execute("SELECT rows FROM wl_stage WHERE snapshot=? AND idx=?", (snapshot, index)).fetchone()
    return row[0] if row else ""


def clear_stage(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM wl_stage")
