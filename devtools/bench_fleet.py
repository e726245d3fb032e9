"""`door-edge bench fleet --gateways 1000 --json`: central as a county runs it, measured.

Starts a real mosquitto on loopback, a temporary PostgreSQL cluster (rigs.postgres), one
`central serve --role lists` and two `--role ingest` workers (shared subscriptions), and the
simulated gateways (devtools.fleet_sim, a few hundred per process, each running the gateway's
own sync code). Then, in order:

1. connect: every gateway connects and takes its site's list (a snapshot);
2. a one-row list change, until every gateway has applied it;
3. an ingest wave: every journal filled while the drains are held, then let go at once;
4. a second wave, during which one ingest worker is killed (SIGKILL) once a third is in;
5. a broker restart (down for OUTAGE_S): until every gateway is connected again;
6. the store against what the gateways journaled: `lost` and `duplicates`.

The metrics endpoint of the lists process is scraped during the run; its gateway lines go to
stderr. Figures: `ack_ms` is what a gateway waits from sending a batch to its `evt/ack`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rigs.broker import Mosquitto, free_port
from rigs.postgres import Postgres
from rigs.proc import terminate

PER_PROCESS = 250
OUTAGE_S = 5.0
WAVE1, WAVE2 = 40, 40  # events per gateway in each wave
LIST_ROWS = 100

CENTRAL_TOML = """\
[central]
state_dir = "{root}/central"
site = "fleet"
site_key_file = "{root}/site.key"
signing_key_file = "{root}/signing.key"
registration_key_file = "{root}/registration.key"
head_interval_s = 300

[database]
url = "{url}"
pool_max = 4

[broker]
host = "127.0.0.1"
port = {port}
tls = false

[metrics]
port = {metrics}
"""


def log(msg: str) -> None:
    print(f"bench fleet: {msg}", file=sys.stderr, flush=True)


def wait_for(what: str, cond, timeout: float, every: float = 0.05) -> float:
    """Poll `cond` until true; the time it became true (monotonic). RuntimeError past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


class Sims:
    """The simulator processes, spoken to one JSON line at a time."""

    def __init__(self, root: Path, port: int, pub: Path, gateways: list[str]):
        self.procs: list[subprocess.Popen[str]] = []
        for i in range(0, len(gateways), PER_PROCESS):
            spec = {"root": str(root / "gw"), "port": port, "pub": str(pub), "gateways": gateways[i:i + PER_PROCESS]}
            p = subprocess.Popen([sys.executable, "-m", "devtools.fleet_sim", json.dumps(spec)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=open(root / f"sim{i // PER_PROCESS}.log", "ab"), text=True)
            self.procs.append(p)
        for p in self.procs:
            self._read(p)  # {"ready": n}

    @staticmethod
    def _read(p: subprocess.Popen[str]) -> dict[str, Any]:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"a simulator exited ({p.poll()}); see its log")
        return json.loads(line)

    def ask(self, op: str, **kw: Any) -> list[dict[str, Any]]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
            p.stdin.flush()
        return [self._read(p) for p in self.procs]

    def stats(self, since: float = 0.0) -> dict[str, Any]:
        out: dict[str, Any] = {"connected": 0, "connects": [], "last_connect": {}, "versions": {}, "depth": 0, "ack_ms": [],
                               "resends": 0, "rejected": 0}
        for s in self.ask("stats", since=since):
            for k in ("connected", "depth", "resends", "rejected"):
                out[k] += s[k]
            out["connects"] += s["connects"]
            out["ack_ms"] += s["ack_ms"]
            out["last_connect"].update(s["last_connect"])
            out["versions"].update(s["versions"])
        return out

    def stop(self) -> None:
        for p in self.procs:
            try:
                assert p.stdin is not None
                p.stdin.write('{"op": "stop"}\n')
                p.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            terminate(p, 10)


def _serve(root: Path, name: str, role: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "edge", "central", "serve", "--config", str(root / f"{name}.toml"), "--role", role,
                          "--no-web"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(root / f"{name}.log", "ab"),
                         text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if "serving" not in line:
        terminate(p)
        raise RuntimeError(f"central {name} did not start: {line!r}; see {root / (name + '.log')}")
    return p


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def bench_fleet(gateways: int, pct: Callable[[list[float], float], float | None], *, outage_s: float = OUTAGE_S) -> dict[str, Any]:
    """The figures of one run; RuntimeError when a step does not finish in its time (the message says which)."""
    from central.config import load_config
    from central.server import Central
    from central.sites import ensure, join
    from edge.privacy import generate_key
    from edge.store.whitelist import Entry
    from protocol import generate_registration_key, generate_signing_key

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker holds a socket per gateway; a simulator, 3 files each
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and shutil.disk_usage(shm).free > 2 << 30 else None
    root = Path(tempfile.mkdtemp(prefix="door-edge-fleet-", dir=base))
    pg = broker = sims = None
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        pg = Postgres().start()
        url = pg.database("fleet")
        broker = Mosquitto(root / "broker", tls=False).start()
        generate_key(root / "site.key")
        generate_signing_key(root / "signing.key", root / "signing.pub")
        generate_registration_key(root / "registration.key", root / "registration.pub")
        metrics_port = free_port()
        for name, mport in (("lists", metrics_port), ("ingest-1", 0), ("ingest-2", 0)):
            (root / f"{name}.toml").write_text(CENTRAL_TOML.format(root=root, url=url, port=broker.port, metrics=mport))
        names = [f"fleet-{i:04d}" for i in range(gateways)]

        # provisioning and the first list, before anyone is up (the heads wait, retained)
        tool = Central(load_config(root / "lists.toml"), client_id="central-bench")
        with tool.store.tx() as db:
            ensure(db, "fleet")
            for gw in names:
                join(db, gw, "fleet")
        tool.connect(serve=False)
        tok = tool.tokenizer
        tool.publish_entries([Entry(tok.token("ic", f"{i:08X}"), "ic", f"p-{i:016x}", None, None, None) for i in range(LIST_ROWS)])
        procs["lists"] = _serve(root, "lists", "lists")
        procs["ingest-1"] = _serve(root, "ingest-1", "ingest")
        procs["ingest-2"] = _serve(root, "ingest-2", "ingest")
        log(f"central up (lists + 2 ingest workers on PostgreSQL {pg.port}); starting {gateways} gateways")

        # 1. connect, and take the list
        t0 = time.time()
        sims = Sims(root, broker.port, root / "signing.pub", names)
        t_ready = time.time()
        wait_for("every gateway connected", lambda: sims.stats()["connected"] == gateways, 120, 0.25)
        st = sims.stats()
        connect_s = max(v for v in st["last_connect"].values() if v is not None) - t_ready
        v1 = tool.version
        wait_for("every gateway on the first list", lambda: all(v[0] == v1 for v in sims.stats()["versions"].values()), 120, 0.25)
        log(f"{gateways} connected {connect_s:.1f}s after the simulators were up ({t_ready - t0:.1f}s to build them); all on list v{v1}")
        online = f'doorgw_gateways{{site="fleet",state="online"}} {float(gateways)}'
        wait_for("the metrics to count them online", lambda: online in scrape(metrics_port), 60, 0.5)
        for line in scrape(metrics_port).splitlines():
            if line.startswith(("doorgw_gateways", "doorgw_events_ingested")):
                log(f"metrics: {line}")

        # 2. a one-row change, to all of them
        t_change = time.time()
        v2 = tool.apply_changes([Entry(tok.token("ic", "FFFFFFFF"), "ic", "p-ffffffffffffffff", None, None, None)]).version
        wait_for("every gateway on the changed list", lambda: all(v[0] == v2 for v in sims.stats()["versions"].values()), 60, 0.1)
        list_change_all_s = max(v[1] for v in sims.stats()["versions"].values()) - t_change
        log(f"one-row change applied by all {gateways} in {list_change_all_s:.2f}s")

        def stored() -> int:
            with tool.store.use() as db:
                return int(db.execute("SELECT count(*) FROM events").fetchone()[0])

        # 3. the ingest wave
        sims.ask("hold")
        sims.ask("events", n=WAVE1)
        expected = gateways * WAVE1
        t_go = time.monotonic()
        sims.ask("go")
        t_done = wait_for("the first wave stored", lambda: stored() >= expected, 180, 0.05)
        ingest_per_s = expected / (t_done - t_go)
        ack = sims.stats()["ack_ms"]
        log(f"wave 1: {expected} events in {t_done - t_go:.2f}s = {ingest_per_s:.0f}/s")

        # 4. the second wave, one worker killed a third of the way
        sims.ask("hold")
        sims.ask("events", n=WAVE2)
        before, expected2 = stored(), gateways * WAVE2
        sims.ask("go")
        wait_for("a third of the second wave", lambda: stored() >= before + expected2 // 3, 120, 0.02)
        procs["ingest-1"].send_signal(signal.SIGKILL)
        procs["ingest-1"].wait(10)
        log(f"ingest-1 killed with {stored() - before} of {expected2} stored")
        try:
            wait_for("the second wave stored", lambda: stored() >= before + expected2, 120, 0.1)
        except RuntimeError:
            pass
        worker_killed_lost = before + expected2 - stored()
        procs["ingest-1"] = _serve(root, "ingest-1", "ingest")  # its supervisor would restart it

        # 5. the broker restarts
        broker.stop()
        t_down = time.time()
        time.sleep(outage_s)  # the outage itself: how long the gateways are cut off
        broker.start()
        t_up = time.time()
        def all_back() -> bool:
            st = sims.stats()
            return st["connected"] == gateways and all(v is not None and v > t_down for v in st["last_connect"].values())

        wait_for("every gateway back", all_back, 120, 0.25)
        st = sims.stats(since=t_down)
        reconnect_s = max(st["last_connect"].values()) - t_up
        per_second = Counter(int(t - t_up) for t in st["connects"])
        log(f"broker restart: all back {reconnect_s:.1f}s after it was up; peak {max(per_second.values())} connects in one second")

        # 6. the store against the journals
        wait_for("every journal drained", lambda: sims.stats()["depth"] == 0, 120, 0.25)
        per_gw = WAVE1 + WAVE2
        with tool.store.use() as db:
            rows = db.execute("SELECT gw, count(*), count(DISTINCT seq) FROM events GROUP BY gw").fetchall()
        got = {gw: (n, distinct) for gw, n, distinct in rows}
        lost = sum(per_gw - got.get(gw, (0, 0))[1] for gw in names)
        duplicates = sum(n - distinct for n, distinct in got.values())
        tool.close()
        return {"bench": "fleet", "gateways": gateways, "connect_s": round(connect_s, 2), "list_change_all_s": round(list_change_all_s, 2),
                "events": gateways * per_gw, "ingest_per_s": round(ingest_per_s), "ack_ms": {"p50": pct(ack, 50), "p99": pct(ack, 99)},
                "worker_killed_lost": worker_killed_lost, "broker_restart_reconnect_s": round(reconnect_s, 1),
                "reconnect_peak_per_s": max(per_second.values()), "lost": lost, "duplicates": duplicates}
    finally:
        if sims is not None:
            sims.stop()
        for p in procs.values():
            terminate(p)
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
        if os.environ.get("DOOR_EDGE_KEEP") is None:
            shutil.rmtree(root, ignore_errors=True)
