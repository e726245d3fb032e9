"""`door-edge bench faults`: the field's faults on the real parts, counted.

The rig: pcscd with the vpcd virtual readers, a Modbus door board on a socat pty pair, mosquitto,
`door-edge central serve` in its own process, and the real `door-edge run` process (a lobby door
for cards and faces, a vehicle gate for plates, a camera at each). The reconnect delays are
shortened through the config (`[reconnect]`, `sync.reconnect_max_s`), never the algorithm.

- kill9: rounds of SIGKILL at random moments of a burst of swipes (mid-pulse, mid-drain to
  central, anywhere), each followed at once by a restart. `relock_ms`: from the restart to the
  board's lock coil written off; `unlocked_after_restart`: restarts after which the coil was still
  on 1 s later; `kill9_lost`: lock pulses the board saw beyond the grants central received;
  `kill9_seq_gaps`: seqs missing from what central received.
- outages: each part away for at least `attempts` reconnect attempts (as the daemon counts them),
  then back; `recover_s` from its return to the daemon reporting it up; then it is shown to work.
- camera missing at start, a reload naming a camera that cannot open, a full disk (a tmpfs state
  directory), a stall of each watched part (in-process, with systemd's notify socket), and fuzzed
  input for every parser that meets the outside world (devtools.bench_fuzz).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from devtools import REPO
from edge import status as status_mod
from rigs.disk import fill, mount_tmpfs, unmount
from rigs.rig import Rig, wait_until
from rigs.site import Site
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard

FACES = REPO / "tests" / "data" / "faces"
PLATES = REPO / "tests" / "data" / "plates"
GW = "gw-faults"
RESIDENTS = [CardProfile.idcard("0102030405060708"), CardProfile.mifare("04A1B2C3")]
STRANGER = CardProfile.mifare("04778899AABBCC")
LOCK, BARRIER = 0, 1

CONFIG = """\
holidays = []

[gateway]
id = "{gw}"
site = "bench"
state_dir = "{state}"
site_key_file = "{root}/site.key"
face_key_file = "{root}/face.key"
log_level = "info"

[[readers]]
type = "pcsc"
match = "Virtual PCD 00 00"
door = "lobby"

[[readers]]
type = "pcsc"
match = "Virtual PCD 00 01"
door = "lobby"

[[doors]]
id = "lobby"
mode = "{lobby_mode}"
pulse_ms = 1500
held_open_s = 60
fail_mode = "secure"

[doors.relay]
type = "modbus"
port = "{root}/ttyGW"
unit = 1
coil = 0

[doors.inputs]
contact = 0
exit_button = 1
fire_alarm = 2
{gate}{cameras}
[reconnect]
base_s = 0.0005
cap_s = 0.001

[face]
gone_s = 0.6
liveness_window_s = 1.5

[plate]
gone_s = 1.0
unreadable_s = 3.0
"""

GATE = """
[[doors]]
id = "gate"
mode = "plate_or_card"
pulse_ms = 1500
held_open_s = 60
fail_mode = "secure"

[doors.relay]
type = "modbus"
port = "{root}/ttyGW"
unit = 1
coil = 1
"""

CAMERA = """
[[cameras]]
id = "{id}"
source = "{source}"
door = "{door}"
max_fps = 10
loop = true
"""


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))], 1)


def say(text: str) -> None:
    print(f"bench faults: {text}", file=sys.stderr, flush=True)


class FaultRig:
    """The parts, the daemon process, and what the bench looks at."""

    def __init__(self, root: Path):
        self.root = root
        self.rig = Rig(root / "rig", gw=GW, readers=True)
        self.rig.start()  # pcscd of our own, the pty pair, the board in this process
        self.board = self.rig.board
        assert self.board is not None
        self.site = Site(root / "site", self.rig.root / "site.key", gateways=[GW]).start()
        self.server = self.site.central_process()
        self.state = self.rig.root / "state"
        self.models = root / "models"
        self._models()
        self._faces()
        self._scenes()
        publisher = self.site.central(serve=False, client_id="bench-publisher")
        self.rig.residents_path.write_text(self.rig.residents_path.read_text() + "R-0101 Li Wei,face,,lobby,,\n"
                                           "R-0101 Li Wei,plate,皖AYL375,gate,,\n")
        publisher.publish_csv(self.rig.residents_path)
        publisher.close()
        self.proc: subprocess.Popen | None = None
        self.log = root / "daemon.log"
        self.write_config(cameras=False)

    # -- setup ----------------------------------------------------------------------------------
    def _models(self) -> None:
        """A models folder of our own (DOOR_EDGE_MODELS): the worker outage takes a file away."""
        from edge.vision.models import MODELS_DIR

        self.models.mkdir()
        for p in MODELS_DIR.iterdir():
            if p.is_file():
                (self.models / p.name).symlink_to(p)

    def _faces(self) -> None:
        from edge.privacy import generate_key
        from edge.store.faces import FaceStore, load_template_key
        from edge.vision.enrol import read_rgb, templates_from
        from edge.vision.face import FacePipeline

        generate_key(self.rig.root / "face.key")
        templates, _ = templates_from(FacePipeline(), [(n, read_rgb(FACES / f"Emma_Watson_000{n}.jpg")) for n in (1, 2, 3)])
        store = FaceStore(self.state, load_template_key(self.rig.root / "face.key"))
        store.enroll(self.rig.person_ref("R-0101 Li Wei"), templates)
        store.close()

    def _scenes(self) -> None:
        import numpy as np

        from rigs import scene

        her = [scene.read_rgb(FACES / f"Emma_Watson_000{i}.jpg") for i in (4, 1, 2, 3)]
        scene.write(self.root / "scenes" / "camera" / "empty", scene.blank(5))
        scene.write(self.root / "scenes" / "camera" / "resident", scene.live_looped(her))
        scene.write(self.root / "scenes" / "gate-camera" / "road", [np.full((1160, 720, 3), 110, np.uint8)] * 5)
        scene.write(self.root / "scenes" / "gate-camera" / "known-car", [scene.read_rgb(PLATES / "car_known.jpg")] * 10)
        self.show("camera", "empty")
        self.show("gate-camera", "road")

    def show(self, camera: str, name: str | None) -> None:
        """Put a scene in front of a camera, or (None) unplug it."""
        link = self.root / camera
        if name is None:
            link.unlink(missing_ok=True)
            return
        tmp = link.with_name(link.name + ".next")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.root / "scenes" / camera / name)
        os.replace(tmp, link)

    def write_config(self, *, cameras: bool, extra_camera: str = "", state: Path | None = None) -> None:
        cams = ""
        if cameras:
            cams = (CAMERA.format(id="lobby-cam", source=self.root / "camera", door="lobby")
                    + CAMERA.format(id="gate-cam", source=self.root / "gate-camera", door="gate") + extra_camera)
        text = CONFIG.format(gw=GW, root=self.rig.root, state=state or self.state, lobby_mode="card_or_face" if cameras else "card",
                             gate=GATE.format(root=self.rig.root) if cameras else "", cameras=cams)
        sync = self.site.gateway_sync_toml(GW).replace("reconnect_max_s = 2", "reconnect_max_s = 0.001")
        self.rig.config_path.write_text(text + sync)

    # -- the daemon -----------------------------------------------------------------------------
    def start(self) -> int:
        """Start `door-edge run`; the monotonic ns at which it was started."""
        env = dict(self.rig.env(), DOOR_EDGE_MODELS=str(self.models), PYTHONPATH=str(REPO))
        t0 = time.monotonic_ns()
        self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(self.rig.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env)
        return t0

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(25)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def status(self, state: Path | None = None) -> dict:
        snap = status_mod.read(status_mod.socket_path(state or self.state), timeout=1.0)
        return snap if snap is not None and snap.get("state") == "running" else {}

    def part(self, name: str, state: Path | None = None) -> dict:
        return self.status(state).get("parts", {}).get(name, {})

    def wait_ready(self, *, vision: bool = False, timeout: float = 60.0, state: Path | None = None) -> None:
        def ready() -> bool:
            parts = self.status(state).get("parts", {})
            need = ["pcscd", f"relay:{self.rig.root / 'ttyGW'}", "mqtt"] + (["vision:worker"] if vision else [])
            return all(parts.get(n, {}).get("up") for n in need) and len(parts["pcscd"].get("readers", [])) == 2
        wait_until(ready, timeout, "the daemon up with its readers, relay and broker", step=0.05)

    # -- what the bench observes ----------------------------------------------------------------
    def on_writes(self, coil: int = LOCK, since: int = 0) -> int:
        return sum(1 for w in self.board.timeline[since:] if w.coil == coil and w.on)

    def swipe_granted(self, profile: CardProfile, reader: int, timeout: float = 5.0) -> bool:
        """Present a card; True if the lock was pulsed for it."""
        n = len(self.board.timeline)
        card = VirtualCard(profile, port=VPCD_PORTS[reader])
        card.insert()
        try:
            return self.board.wait_for(lambda tl: any(w.coil == LOCK and w.on for w in tl[n:]), timeout)
        finally:
            card.remove()
            time.sleep(0.45)  # vpcd's presence poll sees it leave (400 ms)

    def central_events(self) -> list[dict]:
        db = self.site.root / "central" / "central.db"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return [json.loads(b) for (b,) in conn.execute("SELECT body FROM events WHERE gw=? ORDER BY seq", (GW,))]
        finally:
            conn.close()

    def drained(self, timeout: float = 30.0, state: Path | None = None) -> None:
        wait_until(lambda: self.status(state).get("journal", {}).get("depth") == 0, timeout, "every event at central", step=0.1)

    def close(self) -> None:
        self.stop()
        from rigs.proc import terminate

        terminate(self.server)
        self.site.stop()
        self.rig.stop()


# -- kill -9 ---------------------------------------------------------------------------------------
def kill9_rounds(fr: FaultRig, rounds: int, rng: random.Random) -> dict:
    fr.write_config(cameras=False)
    fr.start()  # a first run leaves its relock plan; every round after it is a restart after a kill
    fr.wait_ready()
    fr.stop()
    relock: list[float] = []
    unlocked = 0
    moments = {"mid-pulse": 0, "mid-drain": 0, "anywhere": 0}
    start_mark = len(fr.board.timeline)
    for i in range(rounds):
        writes = len(fr.board.timeline)
        t0 = fr.start()
        relocked = fr.board.wait_for(lambda tl: any(w.coil == LOCK and not w.on and w.t_ns > t0 for w in tl[writes:]), 10)
        if relocked:
            t_off = next(w.t_ns for w in fr.board.timeline[writes:] if w.coil == LOCK and not w.on and w.t_ns > t0)
            relock.append((t_off - t0) / 1e6)
        time.sleep(max(0.0, t0 / 1e9 + 1.0 - time.monotonic()))
        if fr.board.coils[LOCK] and fr.on_writes(since=writes) == 0:
            unlocked += 1  # still released 1 s after the restart, and not by a grant of the new run
        fr.wait_ready()
        moment = rng.choice(list(moments))
        moments[moment] += 1
        killed = threading.Event()

        def kill() -> None:
            if not killed.is_set():
                killed.set()
                fr.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]

        if moment == "anywhere":
            threading.Timer(rng.uniform(0.0, 3.0), kill).start()
        else:
            delay = rng.uniform(0.0, 1.4) if moment == "mid-pulse" else rng.uniform(0.0, 0.12)
            fr.board.on_write = lambda w, d=delay: (w.coil == LOCK and w.on and not killed.is_set()
                                                     and threading.Timer(d, kill).start())
        k = 0
        while not killed.is_set() and k < 12:
            profile = STRANGER if rng.random() < 0.25 else rng.choice(RESIDENTS)
            card = VirtualCard(profile, port=VPCD_PORTS[k % 2])
            card.insert()
            killed.wait(rng.uniform(0.3, 0.7))
            card.remove()
            killed.wait(0.45)
            k += 1
        kill()
        fr.proc.wait(10)  # type: ignore[union-attr]
        fr.board.on_write = None
        if (i + 1) % 10 == 0:
            say(f"kill -9 round {i + 1}/{rounds}")
    fr.start()
    fr.wait_ready()
    fr.drained()
    fr.stop()
    pulses = fr.on_writes(since=start_mark)
    events = fr.central_events()
    granted = sum(1 for e in events if e.get("type") == "access" and e.get("decision") == "granted" and e.get("door") == "lobby")
    seqs = sorted({e["seq"] for e in events})
    gaps = (seqs[-1] - len(seqs)) if seqs else 0  # seqs run from 1: every number missing below the last
    say(f"kill -9: moments {moments}; {pulses} lock pulses, {granted} grants at central, {len(events)} events")
    return {"kill9_rounds": rounds, "kill9_lost": max(0, pulses - granted), "kill9_seq_gaps": gaps,
            "unlocked_after_restart": unlocked, "relock_ms": {"p50": _pct(relock, 50), "max": _pct(relock, 100)},
            "_relocked": len(relock)}


# -- outages ---------------------------------------------------------------------------------------
def outages(fr: FaultRig, attempts: int) -> dict:
    fr.write_config(cameras=True)
    fr.start()
    fr.wait_ready(vision=True, timeout=120)
    wait_until(lambda: fr.part("camera:lobby-cam").get("up") and fr.part("camera:gate-cam").get("up"), 60, "the cameras")
    relay = f"relay:{fr.rig.root / 'ttyGW'}"
    plan = {
        "broker": ("mqtt", fr.site.broker.stop, fr.site.broker.start, lambda: _drained_after_swipe(fr)),
        "pcscd": ("pcscd", fr.rig.pcscd.stop, fr.rig.pcscd.start, lambda: fr.swipe_granted(RESIDENTS[0], 0)),
        "relay": (relay, fr.rig.pty.cut, fr.rig.pty.start, lambda: fr.swipe_granted(RESIDENTS[1], 1)),
        "camera": ("camera:lobby-cam", lambda: fr.show("camera", None), lambda: fr.show("camera", "empty"),
                   lambda: _face_decided(fr)),
        "worker": ("vision:worker", lambda: _models_away(fr), lambda: _models_back(fr), lambda: _plate_decided(fr)),
    }
    out: dict[str, dict] = {}
    for what, (part, away, back, works) in plan.items():
        away()
        wait_until(lambda: fr.part(part).get("attempts", 0) >= attempts, 600, f"{attempts} attempts to reach {what}", step=0.2)
        n = fr.part(part)["attempts"]
        back()
        t_back = time.monotonic()
        wait_until(lambda: fr.part(part).get("up") is True, 60, f"{what} up again", step=0.01)
        recover = time.monotonic() - t_back
        if what == "pcscd":
            wait_until(lambda: len(fr.part("pcscd").get("readers", [])) == 2, 10, "both readers again")
        ok = works()
        # a part that came back but does not work has not recovered: null, and the bench exits 1
        out[what] = {"attempts": n, "recover_s": round(recover, 2) if ok else None}
        say(f"outage {what}: {n} attempts, back up in {recover:.2f} s, works again: {ok}")
    return out


def _drained_after_swipe(fr: FaultRig) -> bool:
    before = len(fr.central_events())
    ok = fr.swipe_granted(RESIDENTS[0], 0)
    fr.drained()
    return ok and len(fr.central_events()) > before


def _face_decided(fr: FaultRig, timeout: float = 20.0) -> bool:
    n = len(fr.board.timeline)
    fr.show("camera", "resident")
    try:
        return fr.board.wait_for(lambda tl: any(w.coil == LOCK and w.on for w in tl[n:]), timeout)
    finally:
        fr.show("camera", "empty")
        time.sleep(1.0)  # the walk-up ends (face.gone_s)


def _plate_decided(fr: FaultRig, timeout: float = 20.0) -> bool:
    n = len(fr.board.timeline)
    fr.show("gate-camera", "known-car")
    try:
        return fr.board.wait_for(lambda tl: any(w.coil == BARRIER and w.on for w in tl[n:]), timeout)
    finally:
        fr.show("gate-camera", "road")
        time.sleep(1.5)  # the car leaves (plate.gone_s)


def _models_away(fr: FaultRig) -> None:
    """A model file gone (a failed update, a damaged card), and the worker that had it loaded dies."""
    os.rename(fr.models / "plate_det.onnx", fr.models / "plate_det.onnx.away")
    pid = int(fr.part("vision:worker")["detail"].split()[-1])
    os.kill(pid, signal.SIGKILL)


def _models_back(fr: FaultRig) -> None:
    os.rename(fr.models / "plate_det.onnx.away", fr.models / "plate_det.onnx")


# -- the camera missing at start, a bad reload, a full disk ------------------------------------------
def camera_missing(fr: FaultRig) -> bool:
    fr.stop()
    fr.show("camera", None)
    fr.start()
    fr.wait_ready(vision=True, timeout=120)
    cards = all(fr.swipe_granted(RESIDENTS[k % 2], k % 2) for k in range(4))
    n = len(fr.board.timeline)
    t_appear = time.monotonic()
    fr.show("camera", "resident")
    decided = fr.board.wait_for(lambda tl: any(w.coil == LOCK and w.on for w in tl[n:]), 20)
    face_s = time.monotonic() - t_appear
    fr.show("camera", "empty")
    time.sleep(1.0)
    say(f"camera missing at start: cards granted throughout: {cards}; a face decided {face_s:.2f} s after it appeared")
    return cards and decided and face_s <= 2.0


def bad_reload(fr: FaultRig) -> bool:
    reloads = fr.status().get("reloads", {}).get("applied", 0)
    fr.write_config(cameras=True, extra_camera=CAMERA.format(id="bad-cam", source="/dev/video93", door="lobby"))
    fr.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_until(lambda: fr.status().get("reloads", {}).get("applied", 0) > reloads, 30, "the reload applied", step=0.1)
    fr.wait_ready(vision=True, timeout=60)
    wait_until(lambda: fr.part("camera:bad-cam").get("up") is False, 30, "the bad camera reported down")
    ok = all(fr.swipe_granted(RESIDENTS[k % 2], k % 2) for k in range(2)) and fr.proc.poll() is None  # type: ignore[union-attr]
    say(f"reload naming a camera that cannot open: every door serving: {ok}")
    fr.write_config(cameras=True)
    return ok


def disk_full(fr: FaultRig) -> bool | None:
    """The state directory on a small tmpfs, filled to the last byte while the doors are used."""
    fr.stop()
    small = fr.root / "state-small"
    why = mount_tmpfs(small, "16m")
    if why is not None:
        say(f"disk full: not measured, a tmpfs cannot be mounted here ({why})")
        return None
    try:
        for p in fr.state.iterdir():
            if p.is_file() and p.suffix != ".sock":
                shutil.copy2(p, small / p.name)
        fr.write_config(cameras=False, state=small)
        fr.start()
        fr.wait_ready(state=small)
        with sqlite3.connect(small / "door-edge.db") as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a WAL as a restart leaves it: growing needs new space
        filler = fill(small)
        granted = all(fr.swipe_granted(RESIDENTS[k % 2], k % 2) for k in range(3))
        refused = fr.status(small).get("storage", {}).get("pending", 0) >= 1
        alive = fr.proc.poll() is None  # type: ignore[union-attr]
        filler.unlink()
        wait_until(lambda: fr.status(small).get("storage", {}).get("pending", 1) == 0, 30, "the journal written again")
        fr.drained(state=small)
        say(f"disk full: decisions granted {granted}, writes refused and kept {refused}, daemon alive {alive}, "
            "journal resumed and drained")
        return granted and refused and alive
    finally:
        fr.stop()
        unmount(small)


def main_bench(root: Path, *, rounds: int, attempts: int, fuzz: int) -> dict:
    from devtools.bench_fuzz import fuzz_all
    from devtools.bench_stalls import watchdog_stalls

    rng = random.Random(16)
    t0 = time.monotonic()
    fr = FaultRig(root)
    try:
        k = kill9_rounds(fr, rounds, rng)
        say(f"kill -9 done in {time.monotonic() - t0:.0f} s")
        out = outages(fr, attempts)
        missing_ok = camera_missing(fr)
        reload_ok = bad_reload(fr)
        full_ok = disk_full(fr)
        stalls = watchdog_stalls(fr)
        fuzzed = fuzz_all(fr, fuzz, rng)
    finally:
        fr.close()
    say(f"done in {time.monotonic() - t0:.0f} s")
    return {"bench": "faults", "kill9_rounds": k["kill9_rounds"], "kill9_lost": k["kill9_lost"],
            "kill9_seq_gaps": k["kill9_seq_gaps"], "unlocked_after_restart": k["unlocked_after_restart"],
            "relock_ms": k["relock_ms"], "outages": out, "camera_missing_card_ok": missing_ok,
            "reload_bad_config_kept": reload_ok, "disk_full_decisions_ok": full_ok,
            "watchdog_stalls_detected": stalls, "fuzz": fuzzed}
