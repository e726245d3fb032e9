"""Fixtures that start the real parts (pcscd with vpcd, socat ptys, board emulators, the daemon)
and stop them by PID. Waits are conditions with deadlines (`wait_until`), never fixed sleeps."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from rigs.broker import Mosquitto
from rigs.pcscd import Pcscd
from rigs.rig import Rig, wait_until
from rigs.site import Site
from rigs.vcard import VirtualCard

REPO = Path(__file__).resolve().parent.parent


def after_start(timeline: list) -> list:
    """A board's writes without the resting-state (off) writes each link makes when it opens."""
    i = 0
    while i < len(timeline) and not timeline[i].on:
        i += 1
    return timeline[i:]


@pytest.fixture(autouse=True)
def no_card_left_on_a_reader():
    """Take off every virtual card a test left on a reader, passed or failed: vpcd serves one card
    per reader, so a card left there (a test that failed before its `remove`) would be read at the
    start of every later daemon and keep every later card off that reader."""
    yield
    VirtualCard.remove_all()


@pytest.fixture(scope="session")
def pcscd_service(tmp_path_factory):
    """One pcscd for the session; tests that restart it use `.restart()`."""
    svc = Pcscd(tmp_path_factory.mktemp("pcscd") / "pcscd.log").start()
    yield svc
    svc.stop()


@pytest.fixture
def pcscd(pcscd_service):
    """pcscd running at the start of the test (restarted if an earlier test stopped it)."""
    if pcscd_service.pid is None or not Path(f"/proc/{pcscd_service.pid}").exists():
        pcscd_service.start()
    return pcscd_service


@pytest.fixture
def rig(tmp_path, pcscd):
    r = Rig(tmp_path / "rig", own_pcscd=False, pulse_ms=300, held_open_s=2.0).start()
    r.import_residents()
    yield r
    r.stop()


class AppThread:
    """The daemon's App in a thread of the test process (no signals; stopped with .stop())."""

    def __init__(self, config_path: Path):
        from edge.app import App

        self.app = App(config_path)
        self.events: list = []
        self.app.event_hooks.append(self.events.append)
        self.loop = asyncio.new_event_loop()
        self.result: int | None = None  # what App.run returned: 0 clean stop, 1 a part died
        self.thread = threading.Thread(target=self._run, name="app", daemon=True)

    def _run(self) -> None:
        self.result = self.loop.run_until_complete(self.app.run())

    def start(self, readers: int = 2) -> AppThread:
        self.thread.start()
        wait_until(lambda: self.app.parts is not None, 10, "the app to build")
        parts = self.app.parts
        assert parts is not None
        if readers:
            wait_until(lambda: parts.watcher is not None and len(parts.watcher.readers) >= readers, 10, "the readers")
        wait_until(lambda: all(link.up for link in parts.links.values()), 10, "the relay link")
        return self

    def reasons(self) -> list[str]:
        return [e.reason for e in list(self.events)]

    def wait_event(self, reason: str, timeout: float = 5.0, count: int = 1) -> None:
        wait_until(lambda: self.reasons().count(reason) >= count, timeout, f"{count} '{reason}' event(s)")

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.app.stop)
            self.thread.join(15)


@pytest.fixture
def app(rig):
    a = AppThread(rig.config_path).start()
    yield a
    a.stop()


class Daemon:
    """`door-edge run` as a real process."""

    def __init__(self, config_path: Path, log_path: Path):
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 25) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def daemon_factory(rig, tmp_path):
    started: list[Daemon] = []

    def make() -> Daemon:
        d = Daemon(rig.config_path, tmp_path / f"daemon{len(started)}.log").start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture(scope="session")
def broker_service(tmp_path_factory):
    """One mosquitto for the session (plain and mutual-TLS listeners on free ports)."""
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"), tls=True).start()
    yield b
    b.stop()


@pytest.fixture
def broker(broker_service):
    """The broker, running at the start of the test (restarted if an earlier test stopped it)."""
    if not broker_service.running:
        broker_service.start()
    return broker_service


@pytest.fixture(scope="session")
def postgres_service():
    """One PostgreSQL for the session (a temporary cluster); each test that asks gets its own database."""
    from rigs.postgres import Postgres

    pg = Postgres().start()
    yield pg
    pg.stop()


def pytest_generate_tests(metafunc):
    """A module that sets CENTRAL_BACKENDS = ("sqlite", "postgres") runs each of its tests that use
    central (through `central_db`) on both backends; the others run on SQLite."""
    if "central_db" in metafunc.fixturenames:
        metafunc.parametrize("central_db", getattr(metafunc.module, "CENTRAL_BACKENDS", ("sqlite",)), indirect=True)


@pytest.fixture
def central_db(request):
    """None (central on SQLite) or the URL of a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    return request.getfixturevalue("postgres_service").database()


class SyncedRig:
    """A rig whose gateway (own id per test) syncs with the central reference on the broker."""

    def __init__(self, root: Path, broker: Mosquitto, *, tls: bool = False, sync_extra: str = "", extra_toml: str = "",
                 webhook_url: str | None = None, database: str | None = None, **rig_kw):
        """`extra_toml`: appended after the [sync] section (cameras, say)."""
        gw = f"gw-{uuid.uuid4().hex[:8]}"
        self.rig = Rig(root / "rig", own_pcscd=False, pulse_ms=300, held_open_s=2.0, gw=gw, **rig_kw)
        self.site = Site(root / "site", self.rig.root / "site.key", gateways=[gw], tls=tls, webhook_url=webhook_url,
                         database=database)
        self.site.start(broker)
        self.rig.extra_toml = self.site.gateway_sync_toml(gw, extra=sync_extra) + extra_toml
        self.gw = gw
        self.central = None

    def start(self, *, board: bool = True) -> SyncedRig:
        self.rig.start(board=board)
        return self

    def connect_central(self, **kw):
        self.central = self.site.central(**kw)
        return self.central

    def stop(self) -> None:
        if self.central is not None:
            self.central.close()
        self.rig.stop()


@pytest.fixture
def synced_factory(tmp_path, pcscd, broker, central_db):
    made: list[SyncedRig] = []

    def make(**kw) -> SyncedRig:
        kw.setdefault("database", central_db)
        s = SyncedRig(tmp_path / f"s{len(made)}", broker, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
