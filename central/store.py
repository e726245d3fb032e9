"""Central's storage: one interface, two backends.

- SQLite (the default): one file under `state_dir`, for a small site, the demo and the tests. One
  connection, used under a lock by every thread of the process; other processes wait on SQLite's
  write lock (`BEGIN IMMEDIATE`).
- PostgreSQL (`[database] url = "postgresql://..."`): for a county. A psycopg 3 connection pool;
  each use borrows a connection, so the console, the ingest thread and the list publisher work at
  once, and any number of central processes on any number of hosts share one database.

Central's SQL is written once, in the dialect both understand (`?` placeholders, `INSERT ... ON
CONFLICT`, `RETURNING`); `PgDb` turns `?` into psycopg's `%s`. What differs (JSON access) is a
method of the connection. Each backend has its own migrations, numbered alike.

Failure behaviour: a database that cannot be reached or refuses (PostgreSQL down, the pool
exhausted, SQLite's lock held past its timeout) raises `Unavailable` from `use()`/`tx()` or from
`execute()`; a transaction is rolled back on any exception. Callers on the MQTT path count it and
do not acknowledge, so the gateway sends again.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from central.schema import PG_MIGRATIONS, SQLITE_MIGRATIONS
from edge.store.db import open_db


class Unavailable(Exception):
    """The database cannot be used now (down, refusing, locked): try again later."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int = ...) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """One connection, in a transaction or not; what central's modules are given."""

    dialect: str  # "sqlite" | "postgres"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Cursor: ...
    def json_text(self, column: str, key: str | int) -> str: ...

    def tx(self) -> Any:
        """`with db.tx() as c:` a transaction on this connection (joining one already open)."""


class Store(Protocol):
    dialect: str

    def use(self) -> Any:
        """`with store.use() as db:` a connection outside any transaction (each statement commits)."""

    def tx(self) -> Any:
        """`with store.tx() as db:` one transaction: committed at the end, rolled back on an exception.
        Nested in the same thread, it joins the outer one."""

    def snapshot(self) -> Any:
        """`with store.snapshot() as db:` a read-only transaction with one consistent view."""

    def close(self) -> None: ...


# -- SQLite --------------------------------------------------------------------------------------
class SqliteDb:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, store: SqliteStore):
        self.conn = conn
        self._store = store

    def tx(self) -> Any:
        return self._store.tx()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise Unavailable(str(exc)) from exc
            raise

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Cursor:
        return self.conn.executemany(sql, params)

    def json_text(self, column: str, key: str | int) -> str:
        return f"json_extract({column}, '$[{key}]')" if isinstance(key, int) else f"json_extract({column}, '$.{key}')"


class SqliteStore:
    """Every use of the one connection holds the lock, reads too: a read on it from the MQTT thread
    while another thread begins a write would make SQLite refuse that write at once ("database is
    locked") when a second central process has committed meanwhile."""

    dialect = "sqlite"

    def __init__(self, state_dir: Path, name: str = "central.db"):
        self.conn = open_db(state_dir, name=name, migrations=SQLITE_MIGRATIONS)
        self.lock = threading.RLock()
        self._db = SqliteDb(self.conn, self)

    @contextmanager
    def use(self) -> Iterator[SqliteDb]:
        with self.lock:
            yield self._db

    @contextmanager
    def tx(self) -> Iterator[SqliteDb]:
        with self.lock:
            if self.conn.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            done = False
            try:
                yield self._db
                done = True
            finally:  # whatever ended the block early (an error, a thread stopping) leaves nothing half-written
                self.conn.execute("COMMIT" if done else "ROLLBACK")

    @contextmanager
    def snapshot(self) -> Iterator[SqliteDb]:
        """A read transaction: one consistent view however long the caller takes (a snapshot's chunks)."""
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                yield self._db
            finally:
                self.conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.conn.close()


# -- PostgreSQL ----------------------------------------------------------------------------------
_MARK = re.compile(r"\?")


def to_pg(sql: str) -> str:
    """`?` placeholders to psycopg's `%s` (a literal `%` doubled). Central's SQL has no `?` in a literal."""
    return _MARK.sub("%s", sql.replace("%", "%%"))


class PgDb:
    dialect = "postgres"

    def __init__(self, conn: Any):
        self.conn = conn
        self._sql: dict[str, str] = {}

    @contextmanager
    def tx(self) -> Iterator[PgDb]:
        with self.conn.transaction():  # a savepoint inside one already open
            yield self

    def _pg(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = to_pg(sql)
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        import psycopg

        try:
            return self.conn.execute(self._pg(sql), params or None)
        except psycopg.OperationalError as exc:
            raise Unavailable(str(exc)) from exc

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Cursor:
        cur = self.conn.cursor()
        cur.executemany(self._pg(sql), list(params))
        return cur

    def json_text(self, column: str, key: str | int) -> str:
        return f"({column}::jsonb ->> {key})" if isinstance(key, int) else f"({column}::jsonb ->> '{key}')"


class PgStore:
    dialect = "postgres"

    def __init__(self, url: str, *, pool_min: int = 1, pool_max: int = 8, timeout_s: float = 10.0):
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        self._errors: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)
        self.pool = ConnectionPool(url, min_size=pool_min, max_size=pool_max, timeout=timeout_s, open=False,
                                   kwargs={"autocommit": True}, name="central")
        try:
            self.pool.open(wait=True, timeout=timeout_s)
        except self._errors as exc:
            raise Unavailable(f"PostgreSQL at {redact(url)}: {exc}") from exc
        self._local = threading.local()
        with self.tx() as db:
            migrate_pg(db)

    @contextmanager
    def _borrow(self) -> Iterator[Any]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except self._errors as exc:
            raise Unavailable(str(exc)) from exc

    @contextmanager
    def use(self) -> Iterator[PgDb]:
        held = getattr(self._local, "db", None)
        if held is not None:  # inside this thread's transaction: see what it wrote
            yield held
            return
        with self._borrow() as conn:
            yield PgDb(conn)

    @contextmanager
    def tx(self) -> Iterator[PgDb]:
        held = getattr(self._local, "db", None)
        if held is not None:
            yield held
            return
        with self._borrow() as conn, conn.transaction():
            self._local.db = db = PgDb(conn)
            try:
                yield db
            finally:
                self._local.db = None

    @contextmanager
    def snapshot(self) -> Iterator[PgDb]:
        with self._borrow() as conn, conn.transaction():
            db = PgDb(conn)
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield db

    def close(self) -> None:
        self.pool.close()


def redact(url: str) -> str:
    """A database URL without its password, for logs and errors."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def migrate_pg(db: PgDb) -> None:
    """Numbered like SQLite's; one process migrates while the others wait on the advisory lock."""
    db.execute("SELECT pg_advisory_xact_lock(4242001)")
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    have = int(row[0] or 0)
    for i, script in enumerate(PG_MIGRATIONS[have:], start=have + 1):
        for stmt in script.split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.execute("INSERT INTO schema_version VALUES (?)", (i,))


def open_store(state_dir: Path, url: str | None, *, pool_max: int = 8) -> Store:
    if url:
        return PgStore(url, pool_max=pool_max)
    return SqliteStore(state_dir)
