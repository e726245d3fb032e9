"""Benchmarks: each prints one JSON line of figures.

`card`: swipes through the real parts. pcscd with the vpcd virtual readers, virtual cards on its
TCP port, the daemon's App (reader thread, event loop, journal, relay thread) in this process, and
the Modbus door board in a separate process on the far end of a pty, which timestamps each whole
relay frame on the monotonic clock. `software_ms` runs from the reader thread seeing PRESENT to
the board holding the complete frame; `present_to_relay_ms` adds pcscd's card polling (the card
connecting to vpcd marks "present"), which real interrupt-driven readers do not have.
`floor_ms` is the same hardware path with none of our software: the card's own exchange and one
relay frame, sampled after every grant in the same run (`_Floor`), so `software_ms - floor_ms`
is our share on any machine. `rss_mb` is this whole process: the daemon's parts plus the bench's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from smartcard import scard

from devtools import TEST_DATA
from drivers import modbus
from drivers.pcsc import APDU_GET_UID, APDU_IDCARD_UID
from rigs.proc import terminate
from rigs.pty import PtyPair
from rigs.rig import Rig, wait_until
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k], 3)


class _BoardProcess:
    """The door board in its own process, so its timestamps do not queue behind our GIL."""

    def __init__(self, port: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "rigs.boards", "modbus", "--port", str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.on_times: list[int] = []
        self.cond = threading.Condition()
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())
        assert first.get("ready")
        self._reader = threading.Thread(target=self._read, name="board-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            rec = json.loads(line)
            if rec.get("on"):
                with self.cond:
                    self.on_times.append(rec["t_ns"])
                    self.cond.notify_all()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class _Floor:
    """What the parts cost with no software of ours between them, measured in the same run.

    One sample: the reader's own exchange with the card (connect, the UID APDU, disconnect, through
    pcscd and vpcd as the daemon does it), then one Modbus write-coil frame across a pty of its own
    to a second board process, which timestamps the whole frame as the daemon's board does. The
    daemon's `software_ms` is this plus the decision, the journal commit and the thread hand-offs."""

    def __init__(self, root: Path):
        from drivers.relay import open_port

        self.pty = PtyPair(root / "ttyFLOOR-GW", root / "ttyFLOOR-BOARD").start()
        self.board = _BoardProcess(root / "ttyFLOOR-BOARD")
        self.port = open_port(str(root / "ttyFLOOR-GW"), 9600)
        hr, self.ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr != scard.SCARD_S_SUCCESS:
            raise RuntimeError(f"bench floor: no PC/SC context ({hr:08X})")

    def sample(self, reader: str, kind: str) -> float | None:
        apdu = APDU_IDCARD_UID if kind == "idcard" else APDU_GET_UID
        n_on = len(self.board.on_times)
        t0 = time.monotonic_ns()
        hr, card, proto = scard.SCardConnect(self.ctx, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        if hr != scard.SCARD_S_SUCCESS:
            return None
        try:
            hr, _ = scard.SCardTransmit(card, proto, apdu)
        finally:
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
        if hr != scard.SCARD_S_SUCCESS:
            return None
        self.port.write(modbus.write_coil(1, 0, True))
        with self.board.cond:
            ok = self.board.cond.wait_for(lambda: len(self.board.on_times) > n_on, 3.0)
        self.port.write(modbus.write_coil(1, 0, False))
        self.port.reset_input_buffer()  # the board's echoes: not part of the floor
        return (self.board.on_times[n_on] - t0) / 1e6 if ok else None

    def stop(self) -> None:
        scard.SCardReleaseContext(self.ctx)
        self.port.close()
        self.board.stop()
        self.pty.stop()


class _SyncLoad:
    """`--sync`: a broker, `central serve` in its own process, and a thread pushing a one-entry
    delta every 0.5 s while the swipes go on (every event is drained to central live)."""

    def __init__(self, rig: Rig, root: Path):
        from rigs.site import Site

        self.site = Site(root / "site", rig.root / "site.key", gateways=[rig.gw]).start()
        rig.extra_toml = self.site.gateway_sync_toml(rig.gw)
        self.rig = rig
        self.server = None
        self.central = None
        self.deltas = 0
        self._halt = threading.Event()

    def start(self) -> None:
        self.server = self.site.central_process()
        self.central = self.site.central(serve=False, client_id="central-publisher")
        self.central.publish_csv(self.rig.residents_path)
        threading.Thread(target=self._push, name="bench-deltas", daemon=True).start()

    def _push(self) -> None:
        from edge.store.whitelist import Entry

        assert self.central is not None
        while not self._halt.wait(0.5):
            token = self.central.tokenizer.token("ic", f"{self.deltas:08X}")
            self.central.apply_changes([Entry(token, "ic", f"V-{self.deltas}", None, None, None)])
            self.deltas += 1

    def stop(self) -> int:
        self._halt.set()
        if self.central is not None:
            self.central.close()
        if self.server is not None:
            terminate(self.server)
        self.site.stop()
        return self.deltas


class _FaceLoad:
    """`--load face`: the vision worker process fed frames flat out (a walk-up, over and over)."""

    def __init__(self) -> None:
        from devtools.bench_face import walk_up
        from edge.vision.enrol import read_rgb
        from edge.vision.worker import FaceWorker

        photo = read_rgb(TEST_DATA / "faces" / "Emma_Watson_0004.jpg")
        assert photo is not None
        self.frames = walk_up(photo)
        self.done = threading.Event()
        self.worker = FaceWorker(lambda r: self.done.set())
        self._halt = threading.Event()
        self.t0 = 0.0

    def start(self) -> None:
        self.worker.wait_ready(60)
        self.t0 = time.monotonic()
        threading.Thread(target=self._feed, name="bench-face-feed", daemon=True).start()

    def _feed(self) -> None:
        i = 0
        while not self._halt.is_set():
            if self.worker.submit(self.frames[i % len(self.frames)], i + 1, time.monotonic_ns()):
                i += 1
            else:
                self.done.wait(0.005)
                self.done.clear()

    def stop(self) -> str:
        self._halt.set()
        st = self.worker.stats
        secs = time.monotonic() - self.t0
        self.worker.stop()
        return f"{st.results} frames analysed in {secs:.0f} s ({st.results / secs:.1f} fps), {st.restarts} restart(s)"


def bench_card(swipes: int, *, root: Path, sync: bool = False, load: str | None = None) -> dict:
    from edge.app import App

    rig = Rig(root / "rig", pulse_ms=200, held_open_s=30, log_level="warning")
    face = _FaceLoad() if load == "face" else None
    if face is not None:
        face.start()
    load = _SyncLoad(rig, root) if sync else None
    rig.start(board=False)
    board = _BoardProcess(rig.root / "ttyBOARD")
    if load is not None:
        load.start()
    else:
        rig.import_residents()
    app = App(rig.config_path)
    events: list = []
    got = threading.Condition()

    def tell() -> None:
        with got:
            got.notify_all()

    def on_event(e) -> None:
        # on the daemon's loop, inside the decision: the bench's own thread is woken 20 ms later, so
        # that it does not compete with the relay thread for the GIL while the frame goes out
        if e.type == "access":
            events.append(e)
            asyncio.get_running_loop().call_later(0.02, tell)

    app.event_hooks.append(on_event)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete, args=(app.run(),), name="app", daemon=True)
    runner.start()
    wait_until(lambda: app.parts is not None and app.parts.watcher is not None and len(app.parts.watcher.readers) == 2
               and all(link.up for link in app.parts.links.values()), 15, "the daemon to see both readers and the board")
    if load is not None:
        wait_until(lambda: app.parts.whitelist.version >= 1, 15, "the list from central")  # type: ignore[union-attr]
    watcher = app.parts.watcher  # type: ignore[union-attr]
    assert watcher is not None
    names = sorted(watcher.readers)
    profiles = [CardProfile.idcard("0102030405060708"), CardProfile.mifare("04A1B2C3"),
                CardProfile.mifare("04A1B2C3"), CardProfile.mifare("04998877665544")]  # last: unknown -> denied
    software: list[float] = []
    present: list[float] = []
    floor_ms: list[float] = []
    floor = _Floor(rig.root)
    granted = denied = missed = 0
    cards: list[VirtualCard | None] = [None, None]
    try:
        for i in range(swipes):
            r = i % 2
            if cards[r] is not None:
                cards[r].remove()  # type: ignore[union-attr]
                wait_until(lambda: not watcher.readers.get(names[r]), 3, "the reader to see the card leave")
            card = VirtualCard(profiles[i % len(profiles)], port=VPCD_PORTS[r])
            n_events, n_on = len(events), len(board.on_times)
            t_insert = time.monotonic_ns()
            card.insert()
            cards[r] = card
            with got:
                ok = got.wait_for(lambda: len(events) > n_events, 3.0)
            if not ok:
                missed += 1
                continue
            ev = events[n_events]
            if ev.decision != "granted":
                denied += 1
                continue
            with board.cond:
                ok = board.cond.wait_for(lambda: len(board.on_times) > n_on, 3.0)
            if not ok:
                missed += 1
                continue
            granted += 1
            t_frame = board.on_times[n_on]
            software.append((t_frame - ev.mono_ns) / 1e6)
            present.append((t_frame - t_insert) / 1e6)
            f = floor.sample(names[r], ev.kind or "ic")  # interleaved: the same card, still on the reader
            if f is not None:
                floor_ms.append(f)
    finally:
        for c in cards:
            if c is not None:
                c.remove()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        drained = None
        if load is not None:
            wait_until(lambda: app.parts.outbox.depth() == 0, 15, "the events drained to central")  # type: ignore[union-attr]
            drained = load.central.event_count(rig.gw)  # type: ignore[union-attr]
        loop.call_soon_threadsafe(app.stop)
        runner.join(10)
        board.stop()
        floor.stop()
        if face is not None:
            print(f"with the face worker flat out: {face.stop()}", file=sys.stderr)
        if load is not None:  # on stderr: the JSON line keeps the fields issue 2 defined
            print(f"with sync: {load.stop()} deltas applied meanwhile, {drained} events drained to central", file=sys.stderr)
        rig.clean()
    return {"bench": "card", "swipes": swipes, "granted": granted, "denied": denied, "missed": missed,
            "software_ms": {"p50": _pct(software, 50), "p99": _pct(software, 99)},
            "floor_ms": {"p50": _pct(floor_ms, 50), "p99": _pct(floor_ms, 99)},
            "present_to_relay_ms": {"p50": _pct(present, 50), "p99": _pct(present, 99)},
            "rss_mb": round(rss_mb, 1)}


def build_parser(prog: str = "door-edge bench") -> argparse.ArgumentParser:
    bn = argparse.ArgumentParser(prog=prog, description="Benchmarks; one JSON line of figures.")
    bn.add_argument("name", choices=["card", "sync", "face", "plate", "faults", "pass", "fleet"])
    bn.add_argument("--gateways", type=int, default=1000, help="fleet: simulated gateways")
    bn.add_argument("--data", type=Path, default=None, help="face, plate: a folder of images with labels.csv")
    bn.add_argument("--swipes", type=int, default=200)
    bn.add_argument("--frames", type=int, default=300, help="pass: frames with a visitor pass's QR code")
    bn.add_argument("--load", choices=["face"], default=None, help="card: with the face worker running flat out")
    bn.add_argument("--sync", action="store_true", help="card: with sync running (broker, central, live deltas, events drained)")
    bn.add_argument("--reader", choices=["pcsc", "ga467"], default="pcsc",
                    help="card: ga467 adds the GA 467 ID-card reader's find/select/read exchange (ga467_read_ms, ga467_line_ms)")
    bn.add_argument("--rounds", type=int, default=100, help="faults: kill -9 rounds")
    bn.add_argument("--attempts", type=int, default=10_000, help="faults: reconnect attempts each part is kept away for")
    bn.add_argument("--fuzz", type=int, default=1_000_000, help="faults: fuzzed inputs in all")
    bn.add_argument("--json", action="store_true")
    return bn



def main(argv: list[str] | None = None, prog: str = "door-edge bench") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.name == "card":
        with tempfile.TemporaryDirectory(prefix="door-edge-bench-") as tmp:
            result = bench_card(args.swipes, root=Path(tmp), sync=args.sync, load=args.load)
            if args.reader == "ga467":
                from devtools.bench_ga467 import bench_ga467

                result.update(bench_ga467(Path(tmp), min(args.swipes, 200), _pct))
    elif args.name in ("face", "plate"):
        if args.data is None or not (args.data / "labels.csv").exists():
            print(f"bench {args.name} needs --data DIR with labels.csv (e.g. ../shared/data/{args.name}s)", file=sys.stderr)
            return 2
        if args.name == "face":
            from devtools.bench_face import bench_face

            result = bench_face(args.data)
        else:
            from devtools.bench_plate import bench_plate
            from edge.vision.models import ModelError

            try:
                result = bench_plate(args.data)
            except ModelError as exc:
                print(f"bench plate: {exc}", file=sys.stderr)
                return 2
    elif args.name == "faults":
        from devtools.bench_faults import main_bench

        with tempfile.TemporaryDirectory(prefix="door-edge-faults-") as tmp:
            result = main_bench(Path(tmp), rounds=args.rounds, attempts=args.attempts, fuzz=args.fuzz)
    elif args.name == "pass":
        from devtools.bench_pass import bench_pass

        result = bench_pass(args.frames, _pct)
    elif args.name == "fleet":
        from devtools.bench_fleet import bench_fleet

        result = bench_fleet(args.gateways, _pct)
    elif args.name == "sync":
        from devtools.bench_sync import bench_sync

        with tempfile.TemporaryDirectory(prefix="door-edge-bench-") as tmp:
            result = bench_sync(Path(tmp))
    else:  # pragma: no cover - argparse restricts the names
        raise SystemExit(2)
    if args.json:
        print(json.dumps(result, allow_nan=False))  # a figure that is NaN is a bug of the bench: JSON has no NaN
    else:
        for k, v in result.items():
            print(f"{k:22} {v}")
    return 0 if result.get("missed", 0) == 0 and result.get("lost", 0) == 0 and not result.get("worker_killed_lost") \
        and not result.get("duplicates") and not _faults_failed(result) else 1


def _faults_failed(result: dict) -> bool:
    """`bench faults`: a figure the issue bounds is outside its bound."""
    if result.get("bench") != "faults":
        return False
    relock = result["relock_ms"]["max"]
    fuzz = result["fuzz"]
    return bool(result["kill9_lost"] or result["kill9_seq_gaps"] or result["unlocked_after_restart"]
                or relock is None or relock > 1000 or any(o["recover_s"] is None or o["recover_s"] > 2 for o in result["outages"].values())
                or not result["camera_missing_card_ok"] or not result["reload_bad_config_kept"]
                or result["disk_full_decisions_ok"] is False or fuzz["crashes"] or fuzz["uncounted"])


