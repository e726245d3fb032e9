"""`door-edge` command line: run, config check, keygen, whitelist, events, enroll, diag.

`central`, `bench` and `demo` are not part of the gateway runtime: they are found by module name
when their package is on the path (the central reference ships in the same wheel; bench and demo
only in a development checkout, `make dev`), and named with the install that brings them when not.

Exit codes: 0 fine, 1 something is wrong (diag found a fault, a run failed), 2 the input is wrong
(bad config, bad CSV, bad arguments).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `run` relocks the doors before anything heavy loads
    from edge import config as config_mod

DEFAULT_CONFIG = Path(os.environ.get("DOOR_EDGE_CONFIG", "/etc/door-edge/gateway.toml"))


def _load(path: Path) -> config_mod.GatewayConfig:
    from edge import config as config_mod

    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from edge.relock import relock

    relocked = relock(args.config)  # before anything heavy is imported: a crash mid-pulse ends here
    import asyncio

    from edge.app import App
    from edge.errors import SetupError
    from edge.health import setup_logging

    cfg = _load(args.config)
    setup_logging(cfg.gateway.log_level)
    try:
        app = App(args.config, cfg, relocked=relocked)
        return asyncio.run(app.run())
    except SetupError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge import config as config_mod

    try:
        cfg = config_mod.load(args.file)
    except config_mod.ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)")
        for p in exc.problems:
            print(f"  {p}")
        return 2
    for w in config_mod.warnings(cfg):
        print(f"  warning: {w}")
    print(f"{args.file}: ok ({len(cfg.doors)} door(s), {len(cfg.readers)} reader(s), {len(cfg.schedules)} schedule(s))")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge.privacy import generate_key

    try:
        generate_key(args.file)
    except FileExistsError:
        print(f"{args.file} exists; a site key is never overwritten (tokens depend on it)", file=sys.stderr)
        return 2
    print(f"wrote a new site key to {args.file} (mode 0600); give the central server the same key")
    return 0


def _store(cfg: config_mod.GatewayConfig):
    from edge.store.db import open_db

    return open_db(cfg.state_dir())


def _whitelist_store(cfg: config_mod.GatewayConfig):
    from edge.store.db import open_whitelist_db

    return open_whitelist_db(cfg.state_dir())


def cmd_whitelist_import(args: argparse.Namespace) -> int:
    from edge.privacy import SiteKeyError, Tokenizer, load_key
    from edge.store.whitelist import ResidentsCsvError, Whitelist, read_csv

    cfg = _load(args.config)
    if cfg.sync is not None and not args.force:
        print("import refused: this gateway takes its list from central (sync is configured); publish there with "
              "`door-edge central publish`, or pass --force to replace it locally until central's next version", file=sys.stderr)
        return 2
    try:
        entries = read_csv(args.csv, Tokenizer(load_key(cfg.gateway.site_key_file)))
    except (ResidentsCsvError, SiteKeyError, FileNotFoundError) as exc:
        print(f"import refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    unknown = sorted({d for e in entries if e.doors for d in e.doors} - {d.id for d in cfg.doors})
    if unknown:
        print(f"import refused, nothing changed: door(s) {', '.join(unknown)} not in the config", file=sys.stderr)
        return 2
    conn = _whitelist_store(cfg)
    # under central, a local list is version 0: the next head makes the gateway resync from central
    version = Whitelist(conn).replace(entries, 0 if cfg.sync is not None else None)
    conn.close()
    print(f"imported {len(entries)} credential(s) as whitelist v{version}; values were hashed, the CSV was not kept")
    return 0


def cmd_whitelist_show(args: argparse.Namespace) -> int:
    from edge.privacy import short
    from edge.store.whitelist import Whitelist

    cfg = _load(args.config)
    conn = _whitelist_store(cfg)
    wl = Whitelist(conn)
    if args.json:
        print(json.dumps({"version": wl.version, "count": len(wl), "by_kind": wl.counts()}))
    else:
        print(f"whitelist v{wl.version}: {len(wl)} credential(s) " + ", ".join(f"{k} {n}" for k, n in sorted(wl.counts().items())))
        if args.entries:
            for e in sorted(wl.entries(), key=lambda e: (e.kind, e.token)):
                doors = "*" if e.doors is None else ",".join(sorted(e.doors))
                print(f"  {e.kind:7} {short(e.token)}  doors={doors}  from={e.valid_from or '-'}  to={e.valid_to or '-'}")
    conn.close()
    return 0


def cmd_events_tail(args: argparse.Namespace) -> int:
    from edge.store.outbox import Outbox

    cfg = _load(args.config)
    conn = _store(cfg)
    ob = Outbox(conn)
    last = 0
    for e in ob.tail(args.n):
        print(json.dumps(e.as_dict()) if args.json else e.line(), flush=True)
        last = e.seq or last
    try:
        while args.follow:
            time.sleep(0.2)
            for e in ob.next_batch(last):
                print(json.dumps(e.as_dict()) if args.json else e.line(), flush=True)
                last = e.seq or last
    except KeyboardInterrupt:
        pass
    conn.close()
    return 0


def _face_store(cfg: config_mod.GatewayConfig):
    from edge.store.faces import FaceStore, TemplateKeyError, load_template_key

    try:
        return FaceStore(cfg.state_dir(), load_template_key(cfg.gateway.face_key_file))
    except TemplateKeyError as exc:
        print(f"face templates: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_enroll_face(args: argparse.Namespace) -> int:
    from edge.vision.enrol import EnrolError, image_files, read_rgb, templates_from
    from edge.vision.face import FaceModelsMissing, FacePipeline, Settings
    from edge.vision.models import ModelError

    cfg = _load(args.config)
    store = _face_store(cfg)
    try:
        pipeline = FacePipeline(Settings.from_config(cfg.face))
    except (FaceModelsMissing, ModelError) as exc:
        print(f"face models: {exc}", file=sys.stderr)
        return 1
    if args.images is not None:
        if not args.images.is_dir():
            print(f"--images {args.images}: not a folder of photos", file=sys.stderr)
            return 2
        files = image_files(args.images)
        total = len(files)
        images = ((p.name, read_rgb(p)) for p in files)
    else:
        try:
            images = _camera_moments(cfg, args.camera, args.timeout)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        total = 5
    done = [0]

    def progress(fb) -> None:
        done[0] += fb.used
        bar = "#" * done[0] + "." * max(0, total - done[0])
        print(f"\r[{bar}] {fb.source}: {fb.reason}" + " " * 10, file=sys.stderr, end="\n" if not fb.used else "", flush=True)

    try:
        templates, feedback = templates_from(pipeline, images, progress)
    except EnrolError as exc:
        print(f"\nenrolment refused, nothing stored: {exc}", file=sys.stderr)
        return 2
    ref = _person_ref(cfg, args.person)
    n = store.enroll(ref, templates)
    store.close()
    print(f"\nenrolled {args.person} as {ref}: {n} template(s) from {sum(f.used for f in feedback)} photo(s), sealed with the face key")
    return 0


def _camera_moments(cfg: config_mod.GatewayConfig, camera: str, timeout: float):
    """Frames from a camera, one every 0.4 s (distinct moments), until `timeout`; ValueError at once if it cannot open."""
    from drivers.camera import Camera, CameraError

    source = next((c.source for c in cfg.cameras if c.id == camera), camera)
    try:
        cam = Camera.open_now(source, max_fps=10)
    except CameraError as exc:
        raise ValueError(f"--camera {camera}: {exc}") from None
    return _moments(cam, timeout)


def _moments(cam, timeout: float):
    import time

    cam.start()
    try:
        deadline, next_ns, n = time.monotonic() + timeout, 0, 0
        for frame in cam.new_frames(poll_s=0.5):
            if time.monotonic() >= deadline:
                return
            if frame is None or frame.t_ns < next_ns:
                continue
            next_ns = frame.t_ns + 400_000_000  # moments 0.4 s apart
            n += 1
            yield f"moment {n}", frame.rgb
    finally:
        cam.stop()


def cmd_enroll_list(args: argparse.Namespace) -> int:
    store = _face_store(_load(args.config))
    people = store.people()
    store.close()
    for person, n in people.items():
        print(f"{person:24} {n} template(s)")
    print(f"{len(people)} person(s) enrolled")
    return 0


def _person_ref(cfg: config_mod.GatewayConfig, person: str) -> str:
    """The opaque reference the gateway knows `person` by (the same one central's list uses)."""
    from edge.privacy import SiteKeyError, Tokenizer, load_key

    try:
        return Tokenizer(load_key(cfg.gateway.site_key_file)).person_ref(person)
    except SiteKeyError as exc:
        print(f"site key: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_enroll_remove(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    store = _face_store(cfg)
    n = store.remove(_person_ref(cfg, args.person))
    store.close()
    if not n:
        print(f"{args.person} is not enrolled", file=sys.stderr)
        return 1
    print(f"removed {args.person}: {n} template(s) deleted")
    return 0


def cmd_diag(args: argparse.Namespace) -> int:
    from edge.diag import main as diag_main

    return diag_main(args.config, as_json=args.json, pulse=args.pulse)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="door-edge", description="Door and gate access gateway.")
    sub = ap.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
        return p

    with_config(sub.add_parser("run", help="run the daemon")).set_defaults(func=cmd_run)

    cfg = sub.add_parser("config", help="configuration tools").add_subparsers(dest="sub", required=True)
    chk = cfg.add_parser("check", help="validate a config file; exit 2 listing every problem")
    chk.add_argument("file", type=Path)
    chk.set_defaults(func=cmd_config_check)

    kg = sub.add_parser("keygen", help="create a new random site key file")
    kg.add_argument("file", type=Path)
    kg.set_defaults(func=cmd_keygen)

    wl = sub.add_parser("whitelist", help="the local whitelist").add_subparsers(dest="sub", required=True)
    imp = with_config(wl.add_parser("import", help="replace the whitelist with a residents CSV (values are hashed)"))
    imp.add_argument("csv", type=Path)
    imp.add_argument("--force", action="store_true", help="import even though central manages the list (as v0: the "
                     "gateway resyncs from central at its next head); then `systemctl reload door-edge`")
    imp.set_defaults(func=cmd_whitelist_import)
    show = with_config(wl.add_parser("show", help="version and counts (tokens only)"))
    show.add_argument("--entries", action="store_true", help="list entries by shortened token")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_whitelist_show)

    ev = sub.add_parser("events", help="the event journal").add_subparsers(dest="sub", required=True)
    tail = with_config(ev.add_parser("tail", help="last events; -f to follow"))
    tail.add_argument("-f", "--follow", action="store_true")
    tail.add_argument("-n", type=int, default=20)
    tail.add_argument("--json", action="store_true")
    tail.set_defaults(func=cmd_events_tail)

    en = sub.add_parser("enroll", help="face enrolment (templates stay on this gateway, encrypted)").add_subparsers(dest="sub", required=True)
    ef = with_config(en.add_parser("face", help="enrol a person from 3-5 photos"))
    ef.add_argument("--person", required=True, help="the person's id, as in the residents list (kept only as its opaque reference)")
    src = ef.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="a folder with 3-5 photos of the person alone")
    src.add_argument("--camera", help="a camera id from the config (or a source: /dev/videoN, rtsp://..., a folder): "
                                      "the person looks at it; 5 moments are taken")
    ef.add_argument("--timeout", type=float, default=30.0, help="--camera: give up after this many seconds")
    ef.set_defaults(func=cmd_enroll_face)
    with_config(en.add_parser("list", help="who is enrolled")).set_defaults(func=cmd_enroll_list)
    er = with_config(en.add_parser("remove", help="delete a person's templates"))
    er.add_argument("--person", required=True)
    er.set_defaults(func=cmd_enroll_remove)

    dg = with_config(sub.add_parser("diag", help="technician checks; non-zero exit when something is wrong"))
    dg.add_argument("--json", action="store_true")
    dg.add_argument("--pulse", action="store_true", help="also pulse each door's relay once")
    dg.set_defaults(func=cmd_diag)

    for name, (_, what, _) in EXTENSIONS.items():  # listed in --help; main() hands them their argv
        sub.add_parser(name, help=what, add_help=False)
    return ap


# command -> (module with main(argv, prog), what it is, the install that brings it)
EXTENSIONS = {
    "central": ("central.cli", "the reference central server (also `door-edge-central`)", "the door-edge package itself"),
    "bench": ("devtools.bench", "benchmarks; one JSON line of figures", "a development checkout: `make dev`"),
    "demo": ("devtools.demo", "the whole door on virtual devices, with a scripted scene", "a development checkout: `make dev`"),
}


def _extension(name: str, argv: list[str]) -> int:
    module, _, install = EXTENSIONS[name]
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        print(f"door-edge {name}: not installed here (a gateway install has no {name}); it comes with {install}", file=sys.stderr)
        return 2
    return int(importlib.import_module(module).main(argv, prog=f"door-edge {name}") or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in EXTENSIONS:
        return _extension(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
