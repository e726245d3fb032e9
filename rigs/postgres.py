"""A real PostgreSQL on 127.0.0.1 in a temporary cluster, for tests and the fleet bench.

Debian's `postgresql` package gives the server binaries (/usr/lib/postgresql/N/bin); this rig
runs `initdb` into its own directory and `pg_ctl start` on a free port, with trust
authentication on loopback only and fsync off (a throwaway cluster: its durability is not what is
measured). PostgreSQL refuses to run as root: as root (CI, a container) the cluster is made and
run as the `postgres` user the package creates, through `runuser`.

`database()` makes a fresh database per test, so tests never see each other's rows.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rigs.broker import free_port

_seq = itertools.count(1)


def pg_bin() -> Path | None:
    """The newest installed server's bin directory, or None without the package."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class Postgres:
    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt install postgresql; `make dev` does)")
        self.bin = bindir
        # its own directory under /tmp: a test's tmp_path (0700, root's) is not reachable by the postgres user
        self.root = Path(tempfile.mkdtemp(prefix="door-edge-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else (os.environ.get("USER") or "postgres")
        self._as_root = os.geteuid() == 0

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / cmd[0]), *cmd[1:]]
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> Postgres:
        if self._as_root:
            shutil.chown(self.root, "postgres")
            self.root.chmod(0o755)
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "--auth=trust", "--username", self.user, "--encoding=UTF8", "--locale=C",
                      "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", opts, "-w", "-t", "60", "start")
        return self

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def database(self, name: str | None = None) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = name or f"t{os.getpid()}_{next(_seq)}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
