"""SQLite state: one file under the state directory, WAL mode, schema migrations by user_version.

WAL with synchronous=NORMAL makes a commit a write() into the WAL file: it survives the process
being killed (the kernel holds it), which keeps the card path fast. Power-loss durability comes
from `sync_wal()`, the fsync of the WAL that synchronous=FULL would do at every commit, done by the
journal's flusher off the hot path (group commit). Checkpoints (copying the WAL into the database)
are the flusher's too, and rare: the commit after one restarts the WAL, which costs the card path
a millisecond, so the card path's own connection never checkpoints (`autocheckpoint=False`).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import TracebackType

DB_NAME = "door-edge.db"

# SQLite's primary result codes for a state directory that cannot take writes right now: the disk
# is full, the file system went read-only (an SD card remounted after an error), or I/O failed.
_STORAGE_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN})


class StorageUnavailable(Exception):
    """The state directory cannot be written now (disk full, read-only, I/O error). Callers keep
    deciding and count it; the write is retried when space returns."""


def storage_fault(exc: sqlite3.Error) -> bool:
    """Whether an SQLite error means the storage itself, not our SQL, failed."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _STORAGE_CODES
    text = str(exc).lower()
    return any(w in text for w in ("disk is full", "readonly", "read-only", "disk i/o", "unable to open"))
WHITELIST_DB = "whitelist.db"

# The journal and the whitelist live in two files: SQLite has one writer per file, and a
# 100,000-entry snapshot swap must never make the card path's journal write wait for the lock.
_MIGRATIONS: list[str] = [
    # 1: meta, journal
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE journal (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,   -- UUIDv7
        ts         REAL NOT NULL,          -- unix time
        door       TEXT,
        type       TEXT NOT NULL,          -- access | door | system
        kind       TEXT,                   -- credential kind for access events
        token      TEXT,                   -- shortened token, never the credential
        decision   TEXT,                   -- granted | denied | NULL
        reason     TEXT NOT NULL,
        latency_ms REAL,
        detail     TEXT
    );
    """,
    # 2: a registration's identity, sealed to central's key (base64); where each credential last passed
    """
    ALTER TABLE journal ADD COLUMN sealed TEXT;
    CREATE TABLE passback (
        area      TEXT NOT NULL,           -- doors[].area, or the door's id
        token     TEXT NOT NULL,           -- the credential's token (keyed hash), never the credential
        direction TEXT NOT NULL,           -- in | out
        ts        REAL NOT NULL,           -- unix time of the passage
        PRIMARY KEY (area, token)
    );
    """,
    # 3: an alarm's severity (critical | major | minor, or cleared); how often each visitor pass opened a door
    """
    ALTER TABLE journal ADD COLUMN severity TEXT;
    CREATE TABLE pass_uses (
        id        TEXT PRIMARY KEY,        -- the pass's own id (16 hex), not personal
        used      INTEGER NOT NULL,
        until     REAL NOT NULL            -- the pass's window end: purged after it
    );
    """,
]

_WHITELIST_MIGRATIONS: list[str] = [
    # 1: meta (whitelist_version), credentials, snapshot chunks staged until a list is complete
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE credentials (
        token      TEXT PRIMARY KEY,
        kind       TEXT NOT NULL,
        person     TEXT NOT NULL,
        doors      TEXT NOT NULL,          -- JSON list of door ids, or "*" for every door
        valid_from TEXT,                   -- ISO local datetime, NULL = no start
        valid_to   TEXT,                   -- ISO local datetime, NULL = no end
        schedule   TEXT                    -- name of a schedule in the config, NULL = always
    );
    CREATE TABLE wl_stage (
        snapshot TEXT NOT NULL,
        idx      INTEGER NOT NULL,
        version  INTEGER NOT NULL,
        total    INTEGER NOT NULL,
        sha256   TEXT NOT NULL,
        rows     TEXT NOT NULL,            -- the chunk as received: a signed envelope
        PRIMARY KEY (snapshot, idx)
    );
    """,
]


def open_db(state_dir: Path, *, name: str = DB_NAME, migrations: list[str] | None = None,
            autocheckpoint: bool = True) -> sqlite3.Connection:
    """Open (creating and migrating) a database; autocommit off, WAL on. Default: the journal's schema.
    `autocheckpoint=False`: this connection's commits never run a checkpoint (the card path)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state_dir / name, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    if not autocheckpoint:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    migrate(conn, _MIGRATIONS if migrations is None else migrations)
    return conn


def open_whitelist_db(state_dir: Path) -> sqlite3.Connection:
    return open_db(state_dir, name=WHITELIST_DB, migrations=_WHITELIST_MIGRATIONS)


def migrate(conn: sqlite3.Connection, migrations: list[str]) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for i, script in enumerate(migrations[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-check under the write lock: another process may have migrated meanwhile
            if conn.execute("PRAGMA user_version").fetchone()[0] >= i:
                conn.execute("ROLLBACK")
                continue
            for stmt in script.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={i}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database and fsync both (what has been committed is then on disk)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def sync_wal(state_dir: Path, name: str = DB_NAME) -> int:
    """fsync the WAL: every transaction committed before the call is then on disk (recovery replays
    the WAL up to its last valid commit). Returns the WAL's size in bytes (0: none, all checkpointed).
    OSError when the storage fails."""
    try:
        fd = os.open(state_dir / f"{name}-wal", os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    """fsync a directory, so that files created in it survive a power cut (OSError on failure)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Transaction:
    """`with Transaction(conn):` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return row[0] if row else default


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))
