"""`door-edge-central` (also `door-edge central`): the reference central server's command line.

Exit codes as the gateway's: 0 fine, 1 something is wrong (no broker, no answer), 2 the input is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from central import cli_fleet
from central.config import load_config
from central.server import ROLES, Central, Role
from edge import config as config_mod


def _central(args: argparse.Namespace, *, serve: bool, connect: bool = True, listen: tuple[str, ...] | None = None) -> Central:
    from central.store import Unavailable, redact

    try:
        cfg = load_config(args.config)
    except config_mod.ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    role: Role = getattr(args, "role", "all") if serve else "all"
    client_id = "central" if serve and role == "all" else f"central-{role if serve else 'tool'}-{socket.gethostname()}-{os.getpid()}"
    try:
        central = Central(cfg, client_id=client_id)
    except Unavailable as exc:
        where = redact(cfg.database.url) if cfg.database else str(cfg.central.state_dir)
        print(f"central: the database ({where}) is unavailable: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if not connect:
        return central
    try:
        return central.connect(serve=serve, role=role, listen=listen)
    except (OSError, ConnectionError) as exc:
        print(f"central: cannot reach the broker {cfg.broker.host}:{cfg.broker.port}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_central_keygen(args: argparse.Namespace) -> int:
    """The signing pair (lists, commands) and the registration pair (identities sealed to central);
    each is made only where it does not exist yet, never overwritten."""
    from protocol import generate_registration_key, generate_signing_key

    private, public = args.dir / "signing.key", args.dir / "signing.pub"
    reg_private, reg_public = args.dir / "registration.key", args.dir / "registration.pub"
    made = 0
    if private.exists():
        print(f"{private} exists; it is never overwritten (rotate by adding a new key to the gateways first)", file=sys.stderr)
    else:
        kid = generate_signing_key(private, public)
        made += 1
        print(f"wrote {private} (keep it on central only) and {public} (key id {kid}); give every gateway the .pub file")
    if reg_private.exists():
        print(f"{reg_private} exists; it is never overwritten (registrations sealed to it could not be opened)", file=sys.stderr)
    else:
        generate_registration_key(reg_private, reg_public)
        made += 1
        print(f"wrote {reg_private} (keep it on central only) and {reg_public}; gateways that register tenants need "
              "sync.registration_key_file = that .pub file")
    return 0 if made else 2


def _office(args: argparse.Namespace) -> str:
    return args.by or os.environ.get("SUDO_USER") or os.environ.get("USER") or "office"


def cmd_central_registrations(args: argparse.Namespace) -> int:
    central = _central(args, serve=False, connect=False)
    states = ("pending", "approved", "rejected") if args.all else ("pending",)
    rows = central.registrations(_office(args), states=states)
    central.store.close()
    if args.json:
        print(json.dumps([r.summary() for r in rows], ensure_ascii=False))
        return 0
    for r in rows:
        s = r.summary()
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["received"]))
        print(f"{s['id']:14} {s['state']:9} {when}  {s['name']:8} idno {s['token']}  {s['gateway']}/{s['door'] or '-'}"
              + (f"  {s['building'] or ''} {s['room'] or ''} to {s['lease_end']} by {s['decided_by']}" if s["state"] == "approved" else ""))
    print(f"{len(rows)} registration(s)" + ("" if args.all else " waiting"))
    return 0


def cmd_central_approve(args: argparse.Namespace) -> int:
    from datetime import date

    from central.registrations import RegistrationError

    try:
        until = date.fromisoformat(args.until)
    except ValueError:
        print(f"--until {args.until!r}: not a date; give the lease's last day as YYYY-MM-DD", file=sys.stderr)
        return 2
    doors = None if args.doors.strip() == "*" else frozenset(d for d in args.doors.replace(";", ",").split(",") if d.strip())
    central = _central(args, serve=False)
    try:
        result = central.approve(args.id, doors=doors, until=until, who=_office(args), building=args.building, room=args.room, ic=args.ic)
    except RegistrationError as exc:
        print(f"approve refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    finally:
        time.sleep(0.5)  # let paho hand the delta to the broker
        central.close()
    print(f"{args.id} approved to {until}: list v{result.version} ({result.upserts} credential(s)) sent to the gateways")
    return 0


def cmd_central_reject(args: argparse.Namespace) -> int:
    from central.registrations import RegistrationError

    central = _central(args, serve=False, connect=False)
    try:
        central.reject(args.id, who=_office(args), note=args.note)
    except RegistrationError as exc:
        print(f"reject refused: {exc}", file=sys.stderr)
        return 2
    finally:
        central.store.close()
    print(f"{args.id} rejected")
    return 0


def cmd_central_export(args: argparse.Namespace) -> int:
    central = _central(args, serve=False, connect=False)
    n = central.export_registrations(args.out, _office(args))
    central.store.close()
    print(f"wrote {n} approved registration(s) to {args.out} (this export is in the audit log)")
    return 0


def cmd_central_publish(args: argparse.Namespace) -> int:
    from edge.store.whitelist import ResidentsCsvError

    central = _central(args, serve=False)
    try:
        result = central.publish_csv(args.residents, args.site)
    except (ResidentsCsvError, FileNotFoundError) as exc:
        print(f"publish refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    finally:
        time.sleep(0.5)  # let paho hand the last messages to the broker
        central.close()
    where = f"site {result.site} " if result.site else ""
    print(f"{where}list v{result.version}: {result.upserts} upserted, {result.deletes} deleted, sent as {result.mode}")
    return 0


def _office_of(args: argparse.Namespace, *, connect: bool):
    from central.office import Office

    return Office(_central(args, serve=False, connect=connect))


def cmd_central_pass(args: argparse.Namespace) -> int:
    """Visitor passes: issue (the QR code printed once, and a PNG with --png), revoke, list."""
    from central.passes import PassError

    office = _office_of(args, connect=args.action == "revoke")
    try:
        if args.action == "issue":
            doors = tuple(d.strip() for d in (args.doors or "").split(",") if d.strip())
            issued = office.issue_pass(host=args.host or "", doors=doors, uses=args.uses, hours=args.hours, who=_office(args))
            p = issued.visitor_pass
            print(issued.terminal(), end="")
            if args.png:
                args.png.write_bytes(issued.png())
            print(f"pass {p.id}: {', '.join(p.doors)} until {time.strftime('%Y-%m-%d %H:%M', time.localtime(p.not_after))}, "
                  f"{p.uses} use(s){f'; QR code in {args.png}' if args.png else ''}")
            if args.text:
                print(issued.text)
        elif args.action == "revoke":
            result = office.revoke_pass(args.id or "", _office(args))
            time.sleep(0.5)  # let paho hand the delta to the broker
            print(f"pass {args.id} revoked: list v{result.version} sent to the gateways")
        else:
            for row in office.passes():
                state = f"revoked by {row['revoked_by']}" if row["revoked_by"] else ("expired" if row["not_after"] < time.time() else "valid")
                print(f"{row['id']}  {','.join(row['doors']):16} until {time.strftime('%Y-%m-%d %H:%M', time.localtime(row['not_after']))}"
                      f"  uses {row['uses']}  host {row['host']}  {state}")
    except PassError as exc:
        print(f"pass {args.action} refused: {exc}", file=sys.stderr)
        return 2
    finally:
        office.central.close() if args.action == "revoke" else office.central.store.close()
    return 0


def cmd_central_alarms(args: argparse.Namespace) -> int:
    office = _office_of(args, connect=False)
    try:
        if args.ack is not None:
            if not office.acknowledge(args.ack, _office(args)):
                print(f"alarm {args.ack}: no such alarm, or already acknowledged", file=sys.stderr)
                return 2
            print(f"alarm {args.ack} acknowledged")
            return 0
        rows = office.alarms(open_only=not args.all)
    finally:
        office.central.store.close()
    if args.json:
        print(json.dumps(rows))
        return 0
    for a in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["raised"]))
        print(f"{a['id']:>6} {a['severity']:8} {a['name']:18} {a['gw']:14} {a['door'] or '-':10} {a['subject'] or '':16} {when}"
              f"{'  cleared' if a['cleared'] else ''}{'  ack ' + a['acked_by'] if a['acked_by'] else ''}")
    print(f"{len(rows)} alarm(s)" + ("" if args.all else " open"))
    return 0


def cmd_central_care(args: argparse.Namespace) -> int:
    office = _office_of(args, connect=False)
    try:
        if args.action == "set":
            office.set_care(args.person, quiet_h=args.quiet_hours, consent_by=args.consent_by or "", who=_office(args))
            print(f"{args.person}: cared-for, quiet period {args.quiet_hours:g} h (consent recorded by {args.consent_by})")
        else:
            office.end_care(args.person, _office(args))
            print(f"{args.person}: care ended")
    except ValueError as exc:
        print(f"care {args.action} refused: {exc}", file=sys.stderr)
        return 2
    finally:
        office.central.store.close()
    return 0


def cmd_central_user(args: argparse.Namespace) -> int:
    """Office staff accounts; the password is read from standard input (one line), never an argument."""
    from central.staff import StaffError, add

    central = _central(args, serve=False, connect=False)
    password = sys.stdin.readline().rstrip("\n")
    try:
        with central.store.use() as db:
            add(db, args.name, password, args.role)
    except StaffError as exc:
        print(f"user refused: {exc}", file=sys.stderr)
        return 2
    finally:
        central.store.close()
    print(f"user {args.name} ({args.role}) saved")
    return 0


def cmd_central_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from central import sites
    from edge.health import setup_logging

    setup_logging("info")
    try:
        cfg = load_config(args.config)
    except config_mod.ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if cfg.webhook is not None and not cfg.webhook.secret_file.is_file():
        print(f"config error: webhook.secret_file: {cfg.webhook.secret_file} does not exist. Fix: write the secret the office's "
              "system checks the POSTs with into that file (one line, 0600), or remove [webhook]", file=sys.stderr)
        return 2
    central = _central(args, serve=True)
    done = threading.Event()
    died: list[str] = []

    def thread_died(hook: threading.ExceptHookArgs) -> None:
        """A bug in a handler (on paho's thread): logged, and the server exits 1 for its supervisor to restart it."""
        logging.getLogger("central").error("thread %s died", hook.thread.name if hook.thread else "?",
                                           exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback))  # type: ignore[arg-type]
        died.append(hook.exc_type.__name__)
        done.set()

    threading.excepthook = thread_died
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    web = None
    if not args.no_web and args.role != "ingest":  # the console belongs with the lists
        from central.web import WebServer

        try:
            web = WebServer(central).start_serving()
        except OSError as exc:
            print(f"central: {exc}; set [web] port (or --no-web)", file=sys.stderr)
            central.close()
            return 1
    m = central.cfg.metrics
    metrics = None
    if m.port:
        from central.metrics import serve as serve_metrics

        try:
            metrics = serve_metrics(central, m.host, m.port)
        except OSError as exc:
            print(f"central: metrics cannot listen on {m.host}:{m.port}: {exc}; set [metrics] port (0: off)", file=sys.stderr)
            if web is not None:
                web.stop()
            central.close()
            return 1
    with central.store.use() as db:
        members = sites.gateways(db)
    print(f"central serving ({args.role}) list v{central.version} to {len(members)} gateway(s) in {len(set(members.values()))} site(s)"
          + (f"; office console on {web.url}" if web else "") + (f"; metrics on http://{m.host}:{m.port}/metrics" if metrics else ""),
          flush=True)
    done.wait()
    if metrics is not None:
        metrics.shutdown()
    if web is not None:
        web.stop()
    central.close()
    return 1 if died else 0


def cmd_central_status(args: argparse.Namespace) -> int:
    central = _central(args, serve=False, connect=False)
    rows = central.gateways()
    events = {r["gw"]: central.event_count(r["gw"]) for r in rows if r.get("site") is not None}
    violations = central.passback_violations()
    with central.store.use() as db:
        pending = db.execute("SELECT count(*) FROM registrations WHERE state='pending'").fetchone()[0]
    version = central.version
    central.store.close()
    if args.json:
        print(json.dumps({"version": version, "gateways": rows, "events": events, "antipassback_violations": violations,
                          "registrations_pending": pending}))
        return 0
    for r in rows:
        print(f"{r['gw']:16} {r['state'] or '-':8} site {r.get('site') or '(none)':14} conn {r['conn'] or 0:<4} list v{r['applied_version'] or 0:<6} "
              f"events {events.get(r['gw'], 0):<8} {('last reject: ' + r['last_reject']) if r['last_reject'] else ''}")
    if pending:
        print(f"{pending} registration(s) waiting for the office (`registrations`)")
    if violations:
        print("anti-passback violations by credential (a card lent around?):")
        for token, n in violations.items():
            print(f"  {token}  {n}")
    return 0


def cmd_central_events(args: argparse.Namespace) -> int:
    from edge.store.outbox import Event

    central = _central(args, serve=False, connect=False)
    events = central.events(args.gateway, last=args.n)
    central.store.close()
    for e in events:
        print(json.dumps(e) if args.json else Event(**e).line())
    return 0


def cmd_central_cmd(args: argparse.Namespace) -> int:
    central = _central(args, serve=False, listen=("cmd/resp",))  # its own client id: `serve` keeps running
    kv = dict(a.split("=", 1) for a in args.arg)
    resp = central.call(args.gateway, args.op, kv, signed=args.sign, timeout=args.timeout)
    central.close()
    if resp is None:
        print(f"no answer from {args.gateway} in {args.timeout}s (offline? see `central status`)", file=sys.stderr)
        return 1
    print(json.dumps(resp.model_dump()))
    return 0 if resp.ok else 1


def cmd_central_acl(args: argparse.Namespace) -> int:
    from protocol import mosquitto_acl

    print(mosquitto_acl(args.central_user), end="")
    return 0


def build_parser(prog: str = "door-edge-central") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="The reference central server: signed lists, event ingest, remote diagnostics.")
    ce = ap.add_subparsers(dest="sub", required=True)
    ck = ce.add_parser("keygen", help="create the Ed25519 signing key pair (signing.key, signing.pub)")
    ck.add_argument("--dir", type=Path, default=Path("."))
    ck.set_defaults(func=cmd_central_keygen)

    def central_cfg(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", type=Path, default=Path("central.toml"), help="central config (default ./central.toml)")
        return p

    cp = central_cfg(ce.add_parser("publish", help="make a residents CSV the new signed list and push it"))
    cp.add_argument("--residents", type=Path, required=True)
    cp.add_argument("--site", help="the site whose list it is (default: [central] site)")
    cp.set_defaults(func=cmd_central_publish)
    csv_ = central_cfg(ce.add_parser("serve", help="answer list requests, ingest and acknowledge events, serve the office console"))
    csv_.add_argument("--no-web", action="store_true", help="without the office console")
    csv_.add_argument("--role", choices=ROLES, default="all",
                      help="all (default): everything in one process; ingest: events only; lists: lists, gateways, alarms, "
                           "the console. ingest and lists may run many times each (shared subscriptions)")
    csv_.set_defaults(func=cmd_central_serve)
    cpa = central_cfg(ce.add_parser("pass", help="visitor passes: issue (prints the QR code), revoke, list"))
    cpa.add_argument("action", choices=("issue", "revoke", "list"))
    cpa.add_argument("id", nargs="?", help="the pass to revoke")
    cpa.add_argument("--host", help="the host's resident reference (p-...)")
    cpa.add_argument("--doors", help="door ids separated by commas")
    cpa.add_argument("--hours", type=float, default=2.0, help="how long it is valid from now (default 2; short: a photo of it opens the door too)")
    cpa.add_argument("--uses", type=int, default=2, help="how many times it opens a door (default 2)")
    cpa.add_argument("--png", type=Path, help="also write the QR code to this PNG file")
    cpa.add_argument("--text", action="store_true", help="also print the code's text")
    cpa.add_argument("--by", help="who issued it (default $USER)")
    cpa.set_defaults(func=cmd_central_pass)
    cal = central_cfg(ce.add_parser("alarms", help="open alarms (--all: history); --ack ID acknowledges one"))
    cal.add_argument("--all", action="store_true")
    cal.add_argument("--json", action="store_true")
    cal.add_argument("--ack", type=int, metavar="ID")
    cal.add_argument("--by", help="who acknowledged (default $USER)")
    cal.set_defaults(func=cmd_central_alarms)
    cca = central_cfg(ce.add_parser("care", help="flag a resident living alone for care (with consent), or end it"))
    cca.add_argument("action", choices=("set", "end"))
    cca.add_argument("person", help="the resident's reference (p-...)")
    cca.add_argument("--quiet-hours", type=float, default=24.0, help="no door event for this long raises an alarm (default 24)")
    cca.add_argument("--consent-by", help="who gave consent (the resident, or a guardian)")
    cca.add_argument("--by", help="who recorded it (default $USER)")
    cca.set_defaults(func=cmd_central_care)
    cu = central_cfg(ce.add_parser("user", help="add or update an office account (password on standard input)"))
    cu.add_argument("action", choices=("add",))
    cu.add_argument("name")
    cu.add_argument("--role", choices=("staff", "police"), default="staff")
    cu.set_defaults(func=cmd_central_user)
    cs = central_cfg(ce.add_parser("status", help="each gateway's state, applied list version and events"))
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(func=cmd_central_status)
    cv = central_cfg(ce.add_parser("events", help="the last events central received from a gateway"))
    cv.add_argument("--gateway", "-g", required=True)
    cv.add_argument("-n", type=int, default=20)
    cv.add_argument("--json", action="store_true")
    cv.set_defaults(func=cmd_central_events)
    cc = central_cfg(ce.add_parser("cmd", help="remote diagnostics on a gateway"))
    cc.add_argument("--gateway", "-g", required=True)
    cc.add_argument("--op", required=True, help="ping, diag, journal_stats, whitelist_status, whitelist_resync, relay_pulse")
    cc.add_argument("--arg", action="append", default=[], help="KEY=VALUE (e.g. door=lobby)")
    cc.add_argument("--sign", action="store_true", help="sign the command (needed by relay_pulse)")
    cc.add_argument("--timeout", type=float, default=10.0)
    cc.set_defaults(func=cmd_central_cmd)
    cr = central_cfg(ce.add_parser("registrations", help="new tenants' registrations waiting for the office (audited)"))
    cr.add_argument("--all", action="store_true", help="approved and rejected ones too")
    cr.add_argument("--json", action="store_true")
    cr.add_argument("--by", help="who is looking (the audit log's name; default $USER)")
    cr.set_defaults(func=cmd_central_registrations)
    cap = central_cfg(ce.add_parser("approve", help="approve a registration: the tenant's ID card (and an IC card) open the doors to the lease end"))
    cap.add_argument("id", help="the registration id (see `registrations`)")
    cap.add_argument("--doors", required=True, help="door ids separated by commas, or * for every door")
    cap.add_argument("--until", required=True, help="the lease's last day, YYYY-MM-DD")
    cap.add_argument("--building", help="the household's building (default: central.site)")
    cap.add_argument("--room", help="the household's room")
    cap.add_argument("--ic", help="the UID of an IC card issued at the desk (hex)")
    cap.add_argument("--by", help="who approved (default $USER)")
    cap.set_defaults(func=cmd_central_approve)
    crj = central_cfg(ce.add_parser("reject", help="reject a registration"))
    crj.add_argument("id")
    crj.add_argument("--note", default="", help="why (kept with the registration)")
    crj.add_argument("--by", help="who rejected (default $USER)")
    crj.set_defaults(func=cmd_central_reject)
    cx = central_cfg(ce.add_parser("export", help="the residence-registration list (CSV) for the police station (audited)"))
    cx.add_argument("--out", type=Path, required=True)
    cx.add_argument("--by", help="who exported (default $USER)")
    cx.set_defaults(func=cmd_central_export)
    cli_fleet.add_parsers(ce, central_cfg, _central)
    ca = ce.add_parser("acl", help="print the mosquitto ACL: each gateway limited to its own topics")
    ca.add_argument("--central-user", default="central")
    ca.set_defaults(func=cmd_central_acl)

    return ap


def main(argv: list[str] | None = None, prog: str = "door-edge-central") -> int:
    args = build_parser(prog).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
