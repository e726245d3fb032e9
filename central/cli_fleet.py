"""`door-edge central site ...` and `door-edge central gateway ...`: sites and their gateways."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from central import provision, sites

if TYPE_CHECKING:
    from central.server import Central


def cmd_site(args: argparse.Namespace, open_central: Callable[..., Central]) -> int:
    from edge.privacy import load_key

    central = open_central(args, serve=False, connect=False)
    try:
        with central.store.tx() as db:
            if args.action == "add":
                key = load_key(args.key_file) if args.key_file else secrets.token_bytes(32)
                made = sites.ensure(db, args.name, key)
                print(f"site {args.name} {'added' if made else 'already there'}")
                return 0
            rows = db.execute("SELECT s.site, s.version, count(g.gw) FROM sites s LEFT JOIN gateways g ON g.site = s.site "
                              "GROUP BY s.site, s.version ORDER BY s.site").fetchall()
    finally:
        central.store.close()
    if args.json:
        print(json.dumps([{"site": s, "version": v, "gateways": n} for s, v, n in rows]))
    for s, v, n in rows if not args.json else ():
        print(f"{s or '(unnamed)':24} list v{v:<6} {n} gateway(s)")
    return 0


def cmd_gateway(args: argparse.Namespace, open_central: Callable[..., Central]) -> int:
    central = open_central(args, serve=False, connect=False)
    cfg = central.cfg
    try:
        with central.store.tx() as db:
            if args.action == "list":
                for gw, site in sites.gateways(db, args.site).items():
                    print(f"{gw:24} {site}")
                return 0
            if args.action == "remove":
                left = sites.leave(db, args.gw)
                if left is None:
                    print(f"{args.gw} is in no site", file=sys.stderr)
                    return 2
            else:
                try:
                    sites.join(db, args.gw, args.site)
                    key = sites.key(db, args.site)
                except sites.SiteError as exc:
                    print(f"gateway add refused: {exc}", file=sys.stderr)
                    return 2
    finally:
        central.store.close()
    if args.acl:
        provision.edit_acl(args.acl, args.gw, present=args.action == "add")
    if args.action == "remove":
        print(f"{args.gw} left site {left}" + (f"; its ACL block is gone from {args.acl} (reload the broker: kill -HUP)" if args.acl else
                                              "; take its block out of the broker's ACL and revoke its certificate"))
        return 0
    c = cfg.central
    if (args.ca_cert is None) != (args.ca_key is None):
        print("gateway add: give both --ca-cert and --ca-key (or neither, and issue the certificate with your own PKI)", file=sys.stderr)
        return 2
    bundle = provision.write_bundle(args.gw, args.site, key, args.out, broker_host=args.broker_host or cfg.broker.host,
                                    broker_port=args.broker_port or cfg.broker.port, signing_pub=c.signing_key_file.with_suffix(".pub"),
                                    registration_pub=c.registration_key_file.with_suffix(".pub"), ca_cert=args.ca_cert, ca_key=args.ca_key)
    print(f"{args.gw} joined site {args.site}; wrote {', '.join(bundle.files)} to {bundle.out}")
    print(provision.acl_block(args.gw), end="")
    if args.acl:
        print(f"(kept in {args.acl}; reload the broker: kill -HUP)")
    return 0


def add_parsers(ce: argparse._SubParsersAction, central_cfg: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
                open_central: Callable[..., Central]) -> None:
    cs = central_cfg(ce.add_parser("site", help="sites (a community, with its own key, list and gateways): add, list"))
    cs.add_argument("action", choices=("add", "list"))
    cs.add_argument("name", nargs="?", default="")
    cs.add_argument("--key-file", type=Path, help="the site's existing key (default: a new random one)")
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(func=lambda a: cmd_site(a, open_central))
    cg = central_cfg(ce.add_parser("gateway", help="provision a gateway into a site (certificate, config snippet, ACL), or remove it"))
    cg.add_argument("action", choices=("add", "remove", "list"))
    cg.add_argument("gw", nargs="?", default="", help="the gateway id (its certificate CN)")
    cg.add_argument("--site", help="the site it joins (add), or lists (list)")
    cg.add_argument("--out", type=Path, help="where to write the gateway's files (add)")
    cg.add_argument("--ca-cert", type=Path, help="the broker CA's certificate: issue the gateway's client certificate")
    cg.add_argument("--ca-key", type=Path, help="the CA's private key (PEM)")
    cg.add_argument("--acl", type=Path, help="the broker's ACL file: add or remove the gateway's block in it")
    cg.add_argument("--broker-host", help="the broker as gateways reach it (default: [broker] host)")
    cg.add_argument("--broker-port", type=int, help="its mutual-TLS port (default: [broker] port)")

    def run(a: argparse.Namespace) -> int:
        if a.action != "list" and not a.gw:
            cg.error("a gateway id is needed")
        if a.action == "add" and (not a.site or a.out is None):
            cg.error("gateway add needs --site and --out")
        return cmd_gateway(a, open_central)

    cg.set_defaults(func=run)
