"""Who may enter where: credential tokens -> person, doors, validity window, schedule.

Decisions read an in-memory dict that is replaced as a whole (one reference assignment) when a
new version lands, so a swipe never sees half a list and never waits on the database.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Iterable

from edge.privacy import Tokenizer
from edge.store.db import get_meta, set_meta

CSV_COLUMNS = ("person", "kind", "value", "doors", "valid_from", "valid_to")
CARD_KINDS = ("idcard", "ic", "idno")


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


class ImportError_(Exception):
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


def _row(entry: Entry) -> tuple[str, str, str, str, str | None, str | None, str | None]:
    return (entry.token, entry.kind, entry.person,
            "*" if entry.doors is None else json.dumps(sorted(entry.doors)),
            entry.valid_from.isoformat() if entry.valid_from else None,
            entry.valid_to.isoformat() if entry.valid_to else None,
            entry.schedule)


def _entry(row: tuple) -> Entry:
    token, kind, person, doors, vf, vt, sched = row
    return Entry(token, kind, person, None if doors == "*" else frozenset(json.loads(doors)),
                 datetime.fromisoformat(vf) if vf else None, datetime.fromisoformat(vt) if vt else None, sched)


def read_csv(path: Path, tokenizer: Tokenizer) -> list[Entry]:
    """Parse a residents CSV (person, kind, value, doors, valid_from, valid_to[, schedule]).

    Values are hashed as they are read; the clear values are not kept anywhere.
    `doors` is `*` or door ids separated by `;` or spaces.
    """
    entries: dict[str, Entry] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ImportError_(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                               f"{','.join(CSV_COLUMNS)}[,schedule]")
        for lineno, rec in enumerate(reader, start=2):
            try:
                kind = (rec["kind"] or "").strip()
                if kind not in CARD_KINDS + ("plate",):
                    raise ValueError(f"kind {kind!r} is not one of {', '.join(CARD_KINDS + ('plate',))}")
                token = tokenizer.token(kind, rec["value"] or "")
                doors_text = (rec["doors"] or "").strip()
                if not doors_text:
                    raise ValueError("doors is empty; use * for every door")
                doors = None if doors_text == "*" else frozenset(d for d in doors_text.replace(";", " ").split() if d)
                person = (rec["person"] or "").strip()
                if not person:
                    raise ValueError("person is empty")
                entry = Entry(token, kind, person, doors,
                              _parse_when(rec["valid_from"] or "", end=False),
                              _parse_when(rec["valid_to"] or "", end=True),
                              (rec.get("schedule") or "").strip() or None)
            except ValueError as exc:
                # the message never repeats the value itself: it may be an ID number
                raise ImportError_(f"{path}, line {lineno}: {exc}") from None
            entries[token] = entry
    return list(entries.values())


class Whitelist:
    """The local list. `lookup` is the hot path; `replace` swaps in a whole new version."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._index: dict[str, Entry] = {}
        self.version = 0
        self.reload()

    def reload(self) -> None:
        rows = self._conn.execute("SELECT token, kind, person, doors, valid_from, valid_to, schedule FROM credentials").fetchall()
        index = {r[0]: _entry(r) for r in rows}
        self.version = int(get_meta(self._conn, "whitelist_version", "0") or 0)
        self._index = index

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

    def replace(self, entries: Iterable[Entry], version: int | None = None) -> int:
        """Store a complete new list in one transaction, then swap the in-memory index."""
        new = {e.token: e for e in entries}
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(get_meta(conn, "whitelist_version", "0") or 0)
            version = current + 1 if version is None else version
            conn.execute("DELETE FROM credentials")
            conn.executemany("INSERT INTO credentials VALUES (?,?,?,?,?,?,?)", (_row(e) for e in new.values()))
            set_meta(conn, "whitelist_version", str(version))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._index = new
        self.version = version
        return version
