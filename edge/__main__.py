"""`door-edge` command line: run, config check, keygen, whitelist, events, diag, bench, demo.

Exit codes: 0 fine, 1 something is wrong (diag found a fault, a run failed), 2 the input is wrong
(bad config, bad CSV, bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from edge import config as config_mod

DEFAULT_CONFIG = Path(os.environ.get("DOOR_EDGE_CONFIG", "/etc/door-edge/gateway.toml"))


def _load(path: Path) -> config_mod.GatewayConfig:
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from edge.app import App
    from edge.health import setup_logging
    from edge.privacy import SiteKeyError

    cfg = _load(args.config)
    setup_logging(cfg.gateway.log_level)
    try:
        app = App(args.config, cfg)
        asyncio.run(app.run())
    except SiteKeyError as exc:
        print(f"site key: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
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
    from edge.store.whitelist import ImportError_, Whitelist, read_csv

    cfg = _load(args.config)
    try:
        entries = read_csv(args.csv, Tokenizer(load_key(cfg.gateway.site_key_file)))
    except (ImportError_, SiteKeyError, FileNotFoundError) as exc:
        print(f"import refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    unknown = sorted({d for e in entries if e.doors for d in e.doors} - {d.id for d in cfg.doors})
    if unknown:
        print(f"import refused, nothing changed: door(s) {', '.join(unknown)} not in the config", file=sys.stderr)
        return 2
    conn = _whitelist_store(cfg)
    version = Whitelist(conn).replace(entries)
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


def _fmt_event(e) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.ts))
    cred = f" {e.kind} {e.token}" if e.kind else ""
    lat = f" {e.latency_ms:.2f}ms" if e.latency_ms is not None else ""
    what = (e.decision if e.reason == e.decision else f"{e.decision} ({e.reason})") if e.decision else e.reason
    return f"{e.seq:>7} {when} {e.door or '-':10} {what}{cred}{lat}"


def cmd_events_tail(args: argparse.Namespace) -> int:
    from edge.store.outbox import Outbox

    cfg = _load(args.config)
    conn = _store(cfg)
    ob = Outbox(conn)
    last = 0
    for e in ob.tail(args.n):
        print(json.dumps(e.as_dict()) if args.json else _fmt_event(e), flush=True)
        last = e.seq or last
    try:
        while args.follow:
            time.sleep(0.2)
            for e in ob.next_batch(last):
                print(json.dumps(e.as_dict()) if args.json else _fmt_event(e), flush=True)
                last = e.seq or last
    except KeyboardInterrupt:
        pass
    conn.close()
    return 0


def cmd_diag(args: argparse.Namespace) -> int:
    from edge.diag import main as diag_main

    return diag_main(args.config, as_json=args.json, pulse=args.pulse)


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import main as bench_main

    return bench_main(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import main as demo_main

    return demo_main(args)


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

    dg = with_config(sub.add_parser("diag", help="technician checks; non-zero exit when something is wrong"))
    dg.add_argument("--json", action="store_true")
    dg.add_argument("--pulse", action="store_true", help="also pulse each door's relay once")
    dg.set_defaults(func=cmd_diag)

    bn = sub.add_parser("bench", help="benchmarks; one JSON line of figures")
    bn.add_argument("name", choices=["card"])
    bn.add_argument("--swipes", type=int, default=200)
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(func=cmd_bench)

    dm = sub.add_parser("demo", help="the whole door on virtual devices, with a scripted scene")
    dm.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    dm.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
