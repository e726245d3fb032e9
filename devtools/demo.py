"""`door-edge demo`: the whole door on virtual devices, with a scripted scene.

It starts pcscd with the vpcd virtual readers, a Modbus door board on a pty, a mosquitto broker
with mutual TLS and the per-gateway ACL, the central reference (`door-edge central serve`) and the
daemon as a real `door-edge run` process, with a camera that is a folder of frames. Central
publishes the residents list and a resident is enrolled with `door-edge enroll face`; the camera
shows her walking up (the door opens), a stranger, and a photo of her held up (refused); then the
scene plays residents swiping, a stranger, an expired tenant, the exit button, a door held open and
the fire alarm; then central pushes a changed list live and the next swipe follows it; then ID cards on
GA 467 readers: a resident, an expired card, and a new tenant who registers at the desk, is approved
by the office on central, and opens the door with her next swipe. It prints the
daemon's log as it comes, the relay timeline, the journal and central's view of the gateway.
Everything it started, it stops.
"""

from __future__ import annotations

import argparse
import getpass
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from devtools import REPO, TEST_DATA
from rigs import ga467
from rigs.proc import terminate
from rigs.rig import RESIDENTS_CSV, IdReaderSpec, Rig, wait_until
from rigs.site import Site
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard

DEMO_ROOT = Path(tempfile.gettempdir()) / f"door-edge-demo-{getpass.getuser()}"  # one per user: it is emptied at each start
# Generous on purpose: the demo must also pass on a board slower than a Raspberry Pi 4
# (`slow-cpu 50 make demo`); a fast machine moves on as soon as each decision is made.
START_S = 120.0      # the daemon up, its list fetched
SCENE_S = 120.0      # a camera scene decided
WALK_AWAY_S = 3.0    # an empty doorway between walk-ups: longer than face.gone_s and plate.gone_s
CONTACT, EXIT, FIRE = 0, 1, 2


class Scene:
    def __init__(self, rig: Rig, daemon: subprocess.Popen[str], log: list[str]):
        from edge import config
        from edge.store.db import open_db
        from edge.store.outbox import Outbox

        self.rig = rig
        self.daemon = daemon
        self.outbox = Outbox(open_db(config.load(rig.config_path).state_dir()))
        self.log = log  # the daemon's log lines as they come (events leave the journal once central has them)
        self.consumed: set[int] = set()
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"\n[{time.monotonic() - self.t0:6.2f}s] == {text}", flush=True)

    def expect(self, reason: str, timeout: float = 20.0, door: str = "lobby") -> None:
        """Wait for the daemon to journal an event with this reason at this door. Lines are taken in
        order per door (the gate's camera plays while the lobby's scene does)."""
        def found() -> bool:
            for i, line in enumerate(list(self.log)):
                if i not in self.consumed and f"door={door} " in line and (f"event={reason} " in line or f"reason={reason} " in line):
                    self.consumed.add(i)
                    return True
            return False
        wait_until(found, timeout, f"a '{reason}' event at {door}", step=0.02)

    def swipe(self, card: CardProfile, reader: int, reason: str) -> None:
        vc = VirtualCard(card, port=VPCD_PORTS[reader])
        vc.insert()
        try:
            self.expect(reason)
        finally:
            vc.remove()

    def set_input(self, index: int, on: bool) -> None:
        assert self.rig.board is not None
        self.rig.board.set_input(index, on)

    def coil_is(self, on: bool, timeout: float = 20.0) -> None:
        board = self.rig.board
        assert board is not None
        wait_until(lambda: board.coils[0] == on, timeout, f"the lock relay to turn {'on' if on else 'off'}", step=0.01)

    def show(self, camera: str, scene_name: str) -> None:
        show(self.rig.root, camera, scene_name)

    def pause(self, seconds: float) -> None:
        """A beat of the scene: an empty doorway long enough for the last walk-up to end."""
        time.sleep(seconds)

    def play_cameras(self) -> None:
        """Both cameras at once: a face camera running flat out must not starve the gate camera."""
        self.say("the lobby camera: Li Wei (enrolled; her face allowed on central's list) walks up and looks at it")
        self.say("meanwhile at the vehicle gate: Li Wei's car, its plate on central's list, drives up")
        self.show("camera", "resident")
        self.show("gate-camera", "known-car")
        self.expect("granted", timeout=SCENE_S)
        self.coil_is(True, timeout=SCENE_S)
        self.show("camera", "empty")
        self.expect("granted", timeout=SCENE_S, door="gate")
        self.show("gate-camera", "road")
        self.pause(WALK_AWAY_S)
        self.say("a stranger walks up to the lobby; a visitor's car, not on the list, comes to the gate")
        self.show("camera", "stranger")
        self.show("gate-camera", "visitor-car")
        self.expect("unknown_face", timeout=SCENE_S)
        self.show("camera", "empty")
        self.expect("unknown_plate", timeout=SCENE_S, door="gate")
        self.show("gate-camera", "road")
        self.pause(WALK_AWAY_S)
        self.say("someone holds up a printed photo of Li Wei")
        self.show("camera", "photo")
        self.expect("liveness_failed", timeout=SCENE_S)
        self.show("camera", "empty")
        self.coil_is(False)

    def play(self) -> None:
        self.say("Li Wei (resident) shows her ID card at the outside reader")
        self.swipe(CardProfile.idcard("0102030405060708"), 0, "granted")
        self.coil_is(True)
        self.set_input(CONTACT, True)
        self.expect("opened")
        self.set_input(CONTACT, False)
        self.expect("closed")
        self.coil_is(False)

        self.say("Zhang Min (resident) taps her IC card")
        self.swipe(CardProfile.mifare("04A1B2C3"), 0, "granted")
        self.coil_is(True)
        self.coil_is(False)

        self.say("a stranger tries an unknown IC card")
        self.swipe(CardProfile.mifare("04778899AABBCC"), 0, "unknown_credential")

        self.say("a former tenant whose lease ended tries his old card")
        self.swipe(CardProfile.mifare("04D4E5F6"), 0, "expired")

        self.say("someone inside presses the exit button, then props the door open")
        self.set_input(EXIT, True)
        self.expect("exit_button")
        self.set_input(EXIT, False)
        self.coil_is(True)
        self.set_input(CONTACT, True)
        self.expect("opened")
        self.expect("held_open", timeout=30)
        self.set_input(CONTACT, False)
        self.expect("closed")

        self.say("the door is forced open without a grant")
        self.coil_is(False)
        self.set_input(CONTACT, True)
        self.expect("forced_open")
        self.set_input(CONTACT, False)
        self.expect("closed")

        self.say("FIRE ALARM: the door is released and stays released")
        self.set_input(FIRE, True)
        self.expect("fire_release")
        self.coil_is(True)
        self.swipe(CardProfile.mifare("04778899AABBCC"), 1, "fire_release")
        self.say("fire alarm cleared: the door locks again")
        self.set_input(FIRE, False)
        self.expect("fire_cleared")
        self.coil_is(False)

    def play_sync(self, run: list[str], central_cfg: Path) -> None:
        self.say("Zhang Min moves out: the manager removes her from the list on central, which pushes a signed delta")
        residents = self.rig.root / "residents-v2.csv"
        residents.write_text("\n".join(line for line in RESIDENTS_CSV.splitlines() if "Zhang Min" not in line) + "\n" + FACE_ROW + PLATE_ROW)
        subprocess.run([*run, "central", "publish", "--config", str(central_cfg), "--residents", str(residents)], check=True)
        residents.unlink()
        wait_until(lambda: self.list_version() >= 2, 30, "the gateway to apply list v2")
        self.say("her card, a moment later, without restarting anything")
        self.swipe(CardProfile.mifare("04A1B2C3"), 0, "unknown_credential")
        self.say("a technician asks the gateway for its journal figures through central")
        subprocess.run([*run, "central", "cmd", "--config", str(central_cfg), "--gateway", "gw-demo", "--op", "journal_stats"], check=True)

    def present_id(self, reader: int, card: ga467.FakeId, reason: str) -> None:
        """An ID card laid on GA 467 reader `reader` (0: the lobby's, 1: the office desk's) until the daemon decides."""
        emulator = self.rig.ga467[reader]
        emulator.present(card)
        try:
            self.expect(reason)
        finally:
            emulator.take_away()

    def play_registration(self, run: list[str], central_cfg: Path) -> None:
        import json
        from datetime import date

        self.say("Wang Fang (resident; her ID number is on the list) lays her ID card on the lobby's ID-card reader")
        self.present_id(0, ga467.WANG_FANG, "granted")
        self.coil_is(True)
        self.coil_is(False)
        self.say("Zhao Lei tries an ID card that expired in 2024")
        self.present_id(0, ga467.ZHAO_LEI, "id_card_expired")
        self.say("a new tenant, Chen Jing, registers at the office desk's reader: the gateway seals her identity to central's key")
        self.present_id(1, ga467.CHEN_JING, "registration_sent")
        self.say("she tries the lobby before the office has approved her")
        self.present_id(0, ga467.CHEN_JING, "unknown_credential")

        def pending() -> list[dict]:
            out = subprocess.run([*run, "central", "registrations", "--config", str(central_cfg), "--json", "--by", "demo-office"],
                                 check=True, capture_output=True, text=True).stdout
            return json.loads(out)

        wait_until(lambda: bool(pending()), 30, "central to receive the registration")
        self.say("the community office lists what waits for it on central (door-edge central registrations)")
        subprocess.run([*run, "central", "registrations", "--config", str(central_cfg), "--by", "demo-office"], check=True)
        reg = pending()[0]["id"]
        until = date.today().replace(year=date.today().year + 1).isoformat()
        version = self.list_version()
        self.say(f"the office approves her for the lobby, room 1203, lease to {until}")
        subprocess.run([*run, "central", "approve", reg, "--config", str(central_cfg), "--doors", "lobby", "--until", until,
                        "--building", "demo-court 3", "--room", "1203", "--by", "demo-office"], check=True)
        wait_until(lambda: self.list_version() > version, 30, "the gateway to apply the approval's delta")
        self.say("Chen Jing's ID card at the lobby, without restarting anything")
        self.present_id(0, ga467.CHEN_JING, "granted")
        export = self.rig.root / "registrations.csv"
        subprocess.run([*run, "central", "export", "--config", str(central_cfg), "--out", str(export), "--by", "demo-office"], check=True)
        export.unlink()  # the police station's list, with the identities in it: not left in the demo's folder

    def play_visitor(self, run: list[str], central_cfg: Path) -> None:
        """A visitor for Li Wei: the office issues a one-use pass on central, she forwards its QR code,
        the visitor holds it up to the lobby camera; the door opens with no network needed, once."""
        from rigs import scene

        png = self.rig.root / "visitor-pass.png"
        host = self.rig.person_ref("R-0101 Li Wei")
        self.say("Li Wei expects a visitor: the office issues a one-use pass for the lobby, valid two hours (door-edge central pass issue)")
        subprocess.run([*run, "central", "pass", "issue", "--config", str(central_cfg), "--host", host, "--doors", "lobby", "--uses", "1",
                        "--hours", "2", "--png", str(png), "--by", "demo-office"], check=True)
        scene.write(self.rig.root / "scenes" / "camera" / "visitor", scene.code_held(scene.png_rgb(png.read_bytes()), 12))
        png.unlink()
        self.say("the visitor holds the code on her phone up to the lobby camera")
        self.show("camera", "visitor")
        self.expect("visitor_granted", timeout=SCENE_S)
        self.coil_is(True)
        self.show("camera", "empty")
        self.coil_is(False)
        self.pause(WALK_AWAY_S)
        self.say("she tries the same code again: it was for one visit")
        self.show("camera", "visitor")
        self.expect("pass_used_up", timeout=SCENE_S)
        self.show("camera", "empty")

    def play_alarms(self, run: list[str], central_cfg: Path) -> None:
        """What the office sees of the forced and held doors: alarms on central, acknowledged."""
        import json

        self.say("the office's alarm list on central (door-edge central alarms --all): the forced door, the door held open, the fire")
        subprocess.run([*run, "central", "alarms", "--all", "--config", str(central_cfg)], check=True)
        out = subprocess.run([*run, "central", "alarms", "--all", "--json", "--config", str(central_cfg)], check=True, capture_output=True,
                             text=True).stdout
        forced = next(a for a in json.loads(out) if a["name"] == "forced_open")
        self.say(f"the office acknowledges the forced door (alarm {forced['id']})")
        subprocess.run([*run, "central", "alarms", "--ack", str(forced["id"]), "--by", "demo-office", "--config", str(central_cfg)],
                       check=True)

    def privacy_check(self) -> None:
        """Nothing in the gateway's state directory (the WAL included) names a resident or holds an ID number."""
        secrets_ = ["Li Wei", "Zhang Min", "Wang Fang", ga467.CHEN_JING.name, ga467.WANG_FANG.name, ga467.CHEN_JING.idno,
                    ga467.WANG_FANG.idno]
        found = []
        for f in sorted((self.rig.root / "state").rglob("*")):
            if f.is_file():
                data = f.read_bytes()
                found += [f"{f.name}: {s[:2]}..." for s in secrets_ if s.encode() in data or s.encode("utf-16-le") in data]
        if found:
            raise RuntimeError(f"personal data in the gateway's state: {found}")
        self.say(f"no name and no ID number anywhere in the gateway's state directory ({len(secrets_)} looked for, WAL included)")

    def list_version(self) -> int:
        from edge.store.db import open_whitelist_db
        from edge.store.whitelist import Whitelist

        conn = open_whitelist_db(self.rig.root / "state")
        try:
            return Whitelist(conn).stored_version()
        finally:
            conn.close()


# the office desk's ID-card reader, where new tenants register (it needs the [sync] section before it)
DESK_READER = """
[[readers]]
type = "ga467"
port = "{port}"
door = "lobby"
mode = "register"
"""
LOBBY_CAMERA = 'id = "lobby-cam"\nsource = "{root}/camera"\ndoor = "lobby"\nmax_fps = 15\nloop = true\n'
FACE_ROW = "R-0101 Li Wei,face,,lobby,,\n"  # she consented to face entry at the lobby: central's list says so
FACES = TEST_DATA / "faces"  # LFW thumbnails, see ATTRIBUTION.md there


PLATES = TEST_DATA / "plates"  # CCPD scenes, see ATTRIBUTION.md there
PLATE_ROW = "R-0101 Li Wei,plate,皖AYL375,gate,,\n"


def write_scenes(root: Path) -> None:
    """The cameras' scenes, each a folder of frames the camera plays over and over while the demo
    shows it (`Scene.show`): a slow machine sees a walk-up as many times as it needs to decide."""
    import numpy as np

    from rigs import scene

    her = [scene.read_rgb(FACES / f"Emma_Watson_000{i}.jpg") for i in (4, 1, 2, 3)]
    stranger = [scene.read_rgb(FACES / "Ken_Loach_0001.jpg")]
    lobby = root / "scenes" / "camera"
    scene.write(lobby / "empty", scene.blank(5))
    scene.write(lobby / "resident", scene.live_looped(her))
    scene.write(lobby / "stranger", scene.live(stranger, 15))
    scene.write(lobby / "photo", scene.photo_held(her[0], 30))
    road = [np.full((1160, 720, 3), 110, np.uint8)] * 5
    gate = root / "scenes" / "gate-camera"
    scene.write(gate / "road", road)
    scene.write(gate / "known-car", [scene.read_rgb(PLATES / "car_known.jpg")] * 10)
    scene.write(gate / "visitor-car", [scene.read_rgb(PLATES / "car_unknown.jpg")] * 10)


def show(root: Path, camera: str, scene_name: str) -> None:
    """Put a scene in front of a camera (its source folder is a link: rigs.scene.show)."""
    from rigs import scene  # numpy and OpenCV: only where cameras play

    scene.show(root / camera, root / "scenes" / camera / scene_name)


def enrol_resident(run: list[str], rig: Rig) -> None:
    """`door-edge enroll face` with three photos of the resident (the fourth is the camera's)."""
    from edge.privacy import generate_key

    generate_key(rig.root / "face.key")
    photos = rig.root / "enrol-photos"
    photos.mkdir()
    for i in (1, 2, 3):
        shutil.copy(FACES / f"Emma_Watson_000{i}.jpg", photos / f"li-wei-{i}.jpg")
    print(f"$ door-edge enroll face --config {rig.config_path} --person 'R-0101 Li Wei' --images {photos}", flush=True)
    subprocess.run([*run, "enroll", "face", "--config", str(rig.config_path), "--person", "R-0101 Li Wei", "--images", str(photos)],
                   check=True)
    shutil.rmtree(photos)  # the photos are not kept; the sealed templates are


def _pump(stream, prefix: str, keep: list[str] | None = None) -> None:
    for line in stream:
        print(f"{prefix}{line.rstrip()}", flush=True)
        if keep is not None:
            keep.append(line)


def main(argv: list[str] | None = None, prog: str = "door-edge demo") -> int:
    ap = argparse.ArgumentParser(prog=prog, description="The whole door on virtual devices, with a scripted scene.")
    ap.add_argument("--dir", type=Path, default=None, help=f"an empty or new work folder (default {DEMO_ROOT}, emptied first)")
    root = ap.parse_args(argv).dir or DEMO_ROOT
    if root != DEMO_ROOT and root.exists() and any(root.iterdir()):
        print(f"demo: --dir {root} is not empty; give a new or empty folder (the demo writes state and keys there)", file=sys.stderr)
        return 2
    for tool in ("pcscd", "socat", "mosquitto"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"demo needs {tool}: run `make demo` (it installs the apt packages)", file=sys.stderr)
            return 1
    shutil.rmtree(root, ignore_errors=True)
    rig = Rig(root, pulse_ms=1500, held_open_s=3.0, id_readers=(IdReaderSpec("in"), IdReaderSpec("in", "register")))
    daemon: subprocess.Popen[str] | None = None
    server: subprocess.Popen[str] | None = None
    site: Site | None = None
    rc = 1
    try:
        print("== starting pcscd (virtual readers), a Modbus door board on a pty, mosquitto (mutual TLS, ACL), "
              "central and the daemon", flush=True)
        rig.start()
        site = Site(root / "site", rig.root / "site.key", gateways=["gw-demo"], tls=True, site="demo-court").start()
        cfg = REPO / "config" / "demo.toml"
        # the shipped demo config, plus the [sync] section for this run's broker port and certificate; with central's key
        # the lobby camera can read visitor passes too
        lobby_cam = LOBBY_CAMERA.format(root=root)
        text = cfg.read_text().replace("/tmp/door-edge-demo", str(root)).replace(lobby_cam, lobby_cam + "passes = true\n", 1)
        if "passes = true" not in text:
            raise RuntimeError("config/demo.toml's lobby camera is not as the demo expects (LOBBY_CAMERA)")
        rig.config_path.write_text(text + site.gateway_sync_toml("gw-demo") + DESK_READER.format(port=rig.id_port(1)))
        central_cfg = site.central_config()
        server = site.central_process()
        threading.Thread(target=_pump, args=(server.stdout, "  central| "), daemon=True).start()
        run = [sys.executable, "-m", "edge"]
        with rig.residents_path.open("a") as f:
            f.write(FACE_ROW + PLATE_ROW)
        enrol_resident(run, rig)
        write_scenes(rig.root)
        show(rig.root, "camera", "empty")
        show(rig.root, "gate-camera", "road")
        print(f"$ door-edge central publish --config {central_cfg} --residents {rig.residents_path}", flush=True)
        subprocess.run([*run, "central", "publish", "--config", str(central_cfg), "--residents", str(rig.residents_path)], check=True)
        rig.residents_path.unlink()  # the residents' numbers stay on central; the gateway gets tokens
        daemon = subprocess.Popen([*run, "run", "--config", str(rig.config_path)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=rig.env())
        log: list[str] = []
        threading.Thread(target=_pump, args=(daemon.stderr, "   daemon| ", log), daemon=True).start()
        board = rig.board
        assert board is not None
        wait_until(lambda: board.requests > 2, START_S, "the daemon to poll the door board")
        scene = Scene(rig, daemon, log)
        wait_until(lambda: scene.list_version() >= 1, START_S, "the gateway to fetch its list from central")
        scene.play_cameras()
        scene.play()
        scene.play_sync(run, central_cfg)
        scene.play_registration(run, central_cfg)
        scene.play_visitor(run, central_cfg)
        print("\n== relay timeline (coil 0: lobby lock, coil 1: gate barrier; as the board saw it)")
        t_first = board.timeline[0].t_ns if board.timeline else 0
        for w in board.timeline:
            print(f"   +{(w.t_ns - t_first) / 1e9:7.3f}s  coil {w.coil} {'ON  (released)' if w.on else 'off (locked)'}")
        wait_until(lambda: scene.outbox.depth() == 0, 60, "every event acknowledged by central (then deleted here)")
        print("\n== the events, as central received and acknowledged them (door-edge central events)", flush=True)
        subprocess.run([*run, "central", "events", "--config", str(central_cfg), "--gateway", "gw-demo", "-n", "40"], check=True)
        print("\n== central's view of the gateway (door-edge central status)", flush=True)
        subprocess.run([*run, "central", "status", "--config", str(central_cfg)], check=True)
        scene.play_alarms(run, central_cfg)
        scene.privacy_check()
        rc = 0
    except (TimeoutError, subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if server is not None:
            terminate(server)
        if site is not None:
            site.stop()
        rig.stop()
    print("\n== demo " + ("finished: everything it started has been stopped" if rc == 0 else "FAILED"), flush=True)
    return rc
