"""`door-edge diag`: what a field technician checks, each line with the likely fix when it fails.

Checks run against the real parts: the config file, the site key, the state directory and its
free space, the database (whitelist version, journal depth), pcscd and the configured readers
(with card presence), each relay port and board (with the door inputs), and optionally a test
pulse. Exit 0 when nothing failed, 1 otherwise; warnings do not fail.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import serial

from drivers import modbus
from drivers.relay import exchange, lcus_frame, open_port
from edge import config as config_mod

MIN_FREE_MB = 200


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _config(path: Path, out: list[Check]) -> config_mod.GatewayConfig | None:
    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as exc:
        for p in exc.problems:
            out.append(Check("config", "fail", f"{p.path}: {p.message}", p.fix))
        return None
    out.append(Check("config", "ok", f"{path}: {len(cfg.doors)} door(s), {len(cfg.readers)} reader(s)"))
    for w in config_mod.warnings(cfg):
        out.append(Check("config", "warn", w))
    return cfg


def _site_key(cfg: config_mod.GatewayConfig, out: list[Check]) -> None:
    from edge.privacy import SiteKeyError, Tokenizer, load_key

    try:
        Tokenizer(load_key(cfg.gateway.site_key_file))
        out.append(Check("site key", "ok", f"{cfg.gateway.site_key_file} readable"))
    except SiteKeyError as exc:
        out.append(Check("site key", "fail", str(exc), "create it with `door-edge keygen FILE` (same key as central)"))


def _state(cfg: config_mod.GatewayConfig, out: list[Check]) -> None:
    from edge.store.db import open_db, open_whitelist_db
    from edge.store.outbox import Outbox
    from edge.store.whitelist import Whitelist

    state = cfg.state_dir()
    if not state.exists():
        out.append(Check("state dir", "warn", f"{state} does not exist yet", "it is created at first start; or set gateway.state_dir"))
        return
    if not os.access(state, os.W_OK):
        out.append(Check("state dir", "fail", f"{state} not writable by uid {os.getuid()}", "StateDirectory=door-edge in the unit, or chown"))
        return
    free_mb = shutil.disk_usage(state).free / 2**20
    out.append(Check("disk", "ok" if free_mb >= MIN_FREE_MB else "fail", f"{free_mb:.0f} MB free under {state}",
                     "" if free_mb >= MIN_FREE_MB else "free space: old logs, camera snapshots, or a bigger card"))
    try:
        conn, wconn = open_db(state), open_whitelist_db(state)
        wl, ob = Whitelist(wconn), Outbox(conn)
        out.append(Check("whitelist", "ok" if len(wl) else "warn", f"v{wl.version}, {len(wl)} credential(s)",
                         "" if len(wl) else "import residents: `door-edge whitelist import FILE.csv`"))
        out.append(Check("journal", "ok", f"{ob.depth()} event(s) kept, last seq {ob.last_seq()}"))
        conn.close()
        wconn.close()
    except (sqlite3.Error, OSError, ValueError, TypeError) as exc:  # a corrupt file, a bad disk, rows that do not parse
        out.append(Check("database", "fail", f"{exc.__class__.__name__}: {exc}", "check the state directory's disk; move a corrupt db aside"))


def _readers(cfg: config_mod.GatewayConfig, out: list[Check], *, serial_ports: bool = True) -> None:
    if serial_ports:
        _id_readers(cfg, out)
    readers = [r for r in cfg.readers if isinstance(r, config_mod.PcscReader)]
    if not readers:
        return
    from smartcard import scard

    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr & 0xFFFFFFFF:
        out.append(Check("pcscd", "fail", "cannot reach pcscd", "systemctl start pcscd.socket (apt-get install pcscd)"))
        return
    try:
        hr, names = scard.SCardListReaders(ctx, [])
        names = names if not hr & 0xFFFFFFFF else []
        out.append(Check("pcscd", "ok", f"{len(names)} reader(s): {', '.join(names) or '-'}"))
        for r in readers:
            match = [n for n in names if r.match in n]
            if not match:
                out.append(Check(f"reader {r.match}", "fail", f"not connected (door {r.door})",
                                 "plug the reader in, check `pcsc_scan`, or fix readers[].match"))
                continue
            hr, states = scard.SCardGetStatusChange(ctx, 0, [(match[0], scard.SCARD_STATE_UNAWARE)])
            present = bool(states and states[0][1] & scard.SCARD_STATE_PRESENT)
            out.append(Check(f"reader {r.match}", "ok", f"{match[0]} -> door {r.door} ({r.direction}); "
                                                        f"{'card present' if present else 'no card'}"))
    finally:
        scard.SCardReleaseContext(ctx)


def _id_readers(cfg: config_mod.GatewayConfig, out: list[Check]) -> None:
    """GA 467 ID-card readers through the driver's own exchange: the SAM module's id, a card in the field."""
    from drivers.sam_ga467 import Ga467Watcher, ReadAborted, SamError

    for r in cfg.readers:
        if not isinstance(r, config_mod.Ga467Reader):
            continue
        name = f"id reader {r.port}"
        try:
            sam, present = Ga467Watcher(r.port, lambda read: None, baud=r.baud).probe()
        except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
            if "busy" in str(exc).lower() or "lock" in str(exc).lower():
                out.append(Check(name, "warn", f"{r.port} in use (the daemon holds it; its view is above)", "stop door-edge to probe the reader"))
            else:
                out.append(Check(name, "fail", f"cannot open the port ({exc.__class__.__name__})", "plug the reader in, or fix readers[].port"))
            continue
        except ReadAborted:
            out.append(Check(name, "fail", f"the module does not answer at {r.baud} baud",
                             "check the cable and power, and readers[].baud against the module's switches"))
            continue
        except SamError as exc:
            out.append(Check(name, "fail", f"the SAM module answers {exc.name}", "power-cycle the reader; a failed self-test needs a new module"))
            continue
        out.append(Check(name, "ok", f"SAM {sam[:12]}... -> door {r.door} ({r.direction}, {r.mode}); "
                                     f"{'card present' if present else 'no card'}"))


def _relays(cfg: config_mod.GatewayConfig, out: list[Check], pulse: bool) -> None:
    for d in cfg.doors:
        r = d.relay
        name = f"relay {d.id}"
        try:
            port = open_port(r.port, r.baud)
        except (serial.SerialException, OSError) as exc:
            busy = "lock" in str(exc).lower() or "busy" in str(exc).lower()
            if busy:
                out.append(Check(name, "warn", f"{r.port} in use (the daemon holds it)", "stop door-edge to probe the board"))
            else:
                out.append(Check(name, "fail", f"{r.port}: cannot open ({exc.__class__.__name__})",
                                 "check the USB adapter and cable; ls -l /dev/serial/by-id; user in group dialout"))
            continue
        try:
            if r.type == "lcus":
                out.append(Check(name, "ok", f"{r.port} open (LCUS boards cannot answer; use --pulse and listen)"))
                if pulse:
                    port.write(lcus_frame(r.channel, True))
                    time.sleep(d.pulse_ms / 1000)
                    port.write(lcus_frame(r.channel, False))
                continue
            parser = modbus.FrameParser(request=False)
            wired = {k: v for k, v in d.inputs.model_dump().items() if v is not None}
            count = max(wired.values(), default=0) + 1
            reply = exchange(port, parser, modbus.read_bits(r.unit, 0x02, 0, count),
                             modbus.transaction_timeout_s(8, 5 + (count + 7) // 8, r.baud) * 3)
            if reply is None or reply[1] & 0x80:
                out.append(Check(name, "fail", f"unit {r.unit} on {r.port} does not answer at {r.baud} baud",
                                 "check power, A/B wiring, the unit address and the baud rate"))
                continue
            bits = int.from_bytes(reply[3:3 + reply[2]], "little")
            states = {k: bool(bits >> v & 1) for k, v in wired.items()}
            out.append(Check(name, "ok", f"unit {r.unit} answers on {r.port}"))
            if wired:
                words = {"contact": ("open", "closed"), "exit_button": ("pressed", "released"), "fire_alarm": ("ALARM", "quiet")}
                text = ", ".join(f"{k} {words[k][0] if v else words[k][1]}" for k, v in states.items())
                bad = states.get("fire_alarm") or states.get("exit_button")
                out.append(Check(f"inputs {d.id}", "warn" if bad else "ok", text,
                                 "a held exit button or an active fire input: check the wiring" if bad else ""))
            if pulse:
                ok = exchange(port, parser, modbus.write_coil(r.unit, r.coil, True), 0.5) is not None
                time.sleep(d.pulse_ms / 1000)  # long enough to hear the lock
                exchange(port, parser, modbus.write_coil(r.unit, r.coil, False), 0.5)
                out.append(Check(f"pulse {d.id}", "ok" if ok else "fail", f"coil {r.coil} pulsed" if ok else "write not confirmed",
                                 "" if ok else "check the coil number and the board"))
        except (serial.SerialException, OSError) as exc:
            out.append(Check(name, "fail", f"{r.port}: i/o error {exc.__class__.__name__}", "check the adapter and cable"))
        finally:
            port.close()


def _broker(cfg: config_mod.GatewayConfig, out: list[Check]) -> None:
    """DNS, TCP, TLS handshake, MQTT authentication, a round trip on the gateway's own topic."""
    import socket
    import ssl
    import uuid

    import protocol
    from edge.sync.mqtt import new_client, tls_context

    s = cfg.sync
    if s is None:
        return
    where = f"{s.host}:{s.port}"
    try:
        socket.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM)
        out.append(Check("broker dns", "ok", f"{s.host} resolves"))
    except OSError as exc:
        out.append(Check("broker dns", "fail", f"{s.host}: {exc}", "check sync.host, the DNS server, or /etc/hosts"))
        return
    try:
        sock = socket.create_connection((s.host, s.port), timeout=3)
        out.append(Check("broker tcp", "ok", f"{where} accepts connections"))
    except OSError as exc:
        out.append(Check("broker tcp", "fail", f"{where}: {exc}",
                         "is the broker running? is sync.port right (8883 TLS, 1883 plain)? is a firewall in the way?"))
        return
    if s.tls:
        try:
            ctx = tls_context(s)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            out.append(Check("broker tls", "fail", f"cannot load the CA, certificate or key: {exc}",
                             "check sync.ca_file, sync.cert_file and sync.key_file (readable by the service user?)"))
            return
        try:
            with ctx.wrap_socket(sock, server_hostname=s.host) as tls:
                out.append(Check("broker tls", "ok", f"{tls.version()} handshake, broker certificate verified"))
        except (OSError, ssl.SSLError) as exc:
            out.append(Check("broker tls", "fail", f"{exc.__class__.__name__}: {exc}",
                             "sync.ca_file must be the CA that signed the broker's certificate, whose name must match sync.host"))
            return
        _cert_name(cfg, out)
    else:
        sock.close()
        out.append(Check("broker tls", "warn", "TLS is off", "set sync.tls = true and give the gateway a certificate outside a lab"))
    client = new_client(f"{cfg.gateway.id}-diag-{uuid.uuid4().hex[:6]}", s)
    got: list[bytes] = []
    connack: list = []
    client.on_connect = lambda c, u, f, rc, p: connack.append(rc)
    client.on_message = lambda c, u, m: got.append(bytes(m.payload))
    try:
        client.connect(s.host, s.port, keepalive=10)
        _loop_until(client, lambda: bool(connack), 5)
        if not connack or connack[0].is_failure:
            out.append(Check("broker auth", "fail", f"broker refused: {connack[0] if connack else 'no answer'}",
                             "the broker must accept this certificate (require_certificate, use_identity_as_username)"))
            return
        out.append(Check("broker auth", "ok", f"accepted as {cfg.gateway.id}"))
        t = protocol.topic(cfg.gateway.id, protocol.LOOPBACK)
        nonce = uuid.uuid4().hex.encode()
        client.subscribe(t, qos=1)
        t0 = time.monotonic()
        info = client.publish(t, nonce, qos=1)
        _loop_until(client, lambda: nonce in got, 3)
        if nonce in got:
            out.append(Check("broker round trip", "ok", f"{(time.monotonic() - t0) * 1000:.1f} ms on {t}"))
        else:
            out.append(Check("broker round trip", "fail", f"nothing came back on {t} (published: {info.is_published()})",
                             "the broker's ACL must let the gateway use its own topics: see `door-edge central acl`"))
    except (OSError, ssl.SSLError) as exc:
        out.append(Check("broker auth", "fail", f"{exc.__class__.__name__}: {exc}", "see the TLS check above"))
    finally:
        client.disconnect()


def _loop_until(client, cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        client.loop(timeout=0.05)


def _cert_name(cfg: config_mod.GatewayConfig, out: list[Check]) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert cfg.sync is not None and cfg.sync.cert_file is not None  # noqa: S101 - narrows the type; the caller has checked
    cert = x509.load_pem_x509_certificate(cfg.sync.cert_file.read_bytes())
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    days = (cert.not_valid_after_utc.timestamp() - time.time()) / 86400
    if cn != [cfg.gateway.id]:
        out.append(Check("gateway certificate", "fail", f"CN {cn} is not the gateway id {cfg.gateway.id!r}",
                         "issue a certificate with CN = gateway.id: the broker's ACL keys on it"))
    elif days < 30:
        out.append(Check("gateway certificate", "warn" if days > 0 else "fail", f"expires in {days:.0f} day(s)", "renew the gateway certificate"))
    else:
        out.append(Check("gateway certificate", "ok", f"CN {cn[0]!s}, valid for {days:.0f} more day(s)"))


PART_FIXES = {
    "pcscd": "pcscd is not answering: `systemctl restart pcscd`; check the reader's USB cable (`pcsc_scan`)",
    "relay": "the relay board does not answer: check the USB/RS485 adapter, the cable and the board's power",
    "id-reader": "the ID-card reader does not answer: check its USB-serial cable and power, and readers[].baud",
    "camera": "the camera gives no frames: check its cable and power, or its URL and network (the gateway keeps trying)",
    "vision": "the vision worker is down: the detail names a model file to reinstall, or see `journalctl -u door-edge`",
    "mqtt": "the broker is unreachable: see the broker checks below (the journal keeps every event meanwhile)",
}


def _daemon(cfg: config_mod.GatewayConfig, out: list[Check]) -> None:
    """The running daemon's own view (edge.status): every reconnecting part, the watchdog, the journal."""
    from edge import status

    snap = status.read(status.socket_path(cfg.state_dir()))
    if snap is None or snap.get("state") != "running":
        out.append(Check("daemon", "warn", "not running (no answer on its status socket)",
                         "start it: `systemctl start door-edge`; `journalctl -u door-edge` says why it stopped"))
        return
    out.append(Check("daemon", "ok", f"pid {snap['pid']}, up {time.time() - snap['started']:.0f} s"))
    now = time.time()
    for name, p in sorted(snap.get("parts", {}).items()):
        since = f"since {now - p['since']:.0f} s ago"
        if p["up"] or p.get("ended"):
            out.append(Check(name, "ok", f"up {since}; {p['outages']} outage(s) since start"))
        else:
            out.append(Check(name, "fail", f"DOWN {since}, {p['attempts']} attempt(s): {p['detail']}",
                             PART_FIXES.get(name.split(":")[0], "see `journalctl -u door-edge`")))
    stale = snap.get("stale") or []
    out.append(Check("watchdog", "fail" if stale else "ok",
                     f"no heartbeat from {', '.join(stale)}" if stale else f"{len(snap.get('heartbeats', {}))} part(s) beating",
                     "a part is stuck: systemd restarts the daemon when WatchdogSec passes" if stale else ""))
    st = snap.get("storage", {})
    bad = st.get("pending") or st.get("flush_failures")
    out.append(Check("journal storage", "fail" if st.get("pending") else ("warn" if bad or st.get("write_failures") else "ok"),
                     f"{st.get('write_failures', 0)} refused write(s), {st.get('pending', 0)} event(s) waiting in memory, "
                     f"{st.get('pending_dropped', 0)} dropped",
                     "free space under the state directory, or check why it went read-only (`dmesg`)" if bad else ""))


def run_checks(path: Path, *, pulse: bool = False) -> list[Check]:
    out: list[Check] = []
    cfg = _config(path, out)
    if cfg is None:
        return out
    _site_key(cfg, out)
    _daemon(cfg, out)
    _state(cfg, out)
    _readers(cfg, out)
    _relays(cfg, out, pulse)
    _broker(cfg, out)
    _cameras(cfg, out)
    return out


def _cameras(cfg: config_mod.GatewayConfig, out: list[Check]) -> None:
    """Each camera: opens, frame rate over 2 s, an annotated snapshot; the face key and templates."""
    if not cfg.cameras:
        return
    from edge.store.faces import FaceStore, TemplateKeyError, load_template_key
    from edge.vision.diag import check_camera

    if any(d.mode in config_mod.FACE_MODES for d in cfg.doors):
        try:
            store = FaceStore(cfg.state_dir(), load_template_key(cfg.gateway.face_key_file))
            try:
                people, _ = store.load()
                out.append(Check("face templates", "ok" if people else "warn", f"{len(set(people))} person(s) enrolled, sealed",
                                 "enrol residents with `door-edge enroll face --person ID --images DIR`"))
            finally:
                store.close()
        except TemplateKeyError as exc:
            out.append(Check("face templates", "fail", str(exc), "create the key with `door-edge keygen FILE` (gateway.face_key_file)"))
    if any(d.mode in config_mod.FACE_MODES for d in cfg.doors):
        from edge.vision.face import FACE_MODELS, MODEL_FILES, FaceModelsMissing, model_dir
        from edge.vision.face_embed import verified
        from edge.vision.models import ModelError

        _models(out, FACE_MODELS, "reinstall the package")
        try:
            info, _ = verified(model_dir() / MODEL_FILES["encoder"])
            out.append(Check("model face weights", "ok", f"{info.meta['weights']}: the file {info.path.name} was made from"))
        except (ModelError, FaceModelsMissing) as exc:
            out.append(Check("model face weights", "fail", exc.problem, exc.fix))
    if any(d.mode in config_mod.PLATE_MODES for d in cfg.doors):
        from edge.vision.plate import PLATE_MODELS

        _models(out, PLATE_MODELS, "reinstall the package, or retrain (make train-plates)")
    for cam in cfg.cameras:
        check_camera(cfg, cam, cfg.state_dir() / "diag", lambda *a: out.append(Check(*a)))


def _models(out: list[Check], names: tuple[str, ...], fix: str) -> None:
    """A check per model file: its sha256 against the manifest's."""
    from edge.vision.models import ModelError, checked

    for name in names:
        try:
            info = checked(name)
            out.append(Check(f"model {name}", "ok", f"{info.path.name}: sha256 matches the manifest"))
        except ModelError as exc:
            out.append(Check(f"model {name}", "fail", str(exc), fix))


def runtime_checks(cfg: config_mod.GatewayConfig) -> list[dict]:
    """The checks the running daemon can make on request (remote diagnostics): not the relay
    ports or the ID-card readers' ports, which it holds itself, and not the broker, which it is talking to."""
    out: list[Check] = []
    _site_key(cfg, out)
    _state(cfg, out)
    _readers(cfg, out, serial_ports=False)
    return [asdict(c) for c in out]


def main(path: Path, *, as_json: bool = False, pulse: bool = False) -> int:
    checks = run_checks(path, pulse=pulse)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        for c in checks:
            mark = {"ok": " ok ", "warn": "WARN", "fail": "FAIL"}[c.status]
            print(f"[{mark}] {c.name:24} {c.detail}" + (f"\n       fix: {c.fix}" if c.fix and c.status != "ok" else ""))
        print("\nall checks passed" if not failed else "\nsome checks FAILED: see the fixes above")
    return 1 if failed else 0
