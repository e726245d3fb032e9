"""`bench faults`, the fuzz part: garbage into every parser that meets the outside world.

Each input must be taken as valid, or refused with its own counter or a message that names it; an
exception of any other kind is a crash (a bug of ours), and an input that changed no counter and
was not valid is "uncounted". Most inputs go straight into the parsers the daemon uses (APDU
responses, relay-board bytes, every MQTT downlink topic through the sync service's own handler,
config files, residents CSVs); some go through the real parts to the running daemon: cards that
answer garbage through pcscd, garbage on the relay line, garbage on the broker's downlink topics.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from drivers import modbus
from drivers.pcsc import parse_uid
from rigs.rig import RESIDENTS_CSV, wait_until
from rigs.vcard import VPCD_PORTS, CardProfile, VirtualCard

if TYPE_CHECKING:
    from devtools.bench_faults import FaultRig

SHARES = {"apdu": 0.34, "relay": 0.34, "mqtt": 0.22, "config": 0.05, "csv": 0.05}


class Tally:
    def __init__(self) -> None:
        self.inputs = self.crashes = 0
        self.missed: Counter[str] = Counter()  # uncounted inputs, by where they went in
        self.first_crash = ""

    @property
    def uncounted(self) -> int:
        return sum(self.missed.values())

    def crash(self, where: str, exc: BaseException) -> None:
        self.crashes += 1
        if not self.first_crash:
            self.first_crash = f"{where}: {exc.__class__.__name__}: {exc}"


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.4 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.6 and b:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif op < 0.8:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif b:
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 16)]
    return bytes(b)


def fuzz_apdu(n: int, rng: random.Random, t: Tally) -> None:
    valid = [bytes.fromhex("0102030405060708") + b"\x90\x00", bytes.fromhex("04A1B2C3") + b"\x90\x00",
             bytes.fromhex("04778899AABBCC") + b"\x90\x00", b"\x6a\x82", b"\x00" * 8 + b"\x90\x00"]
    for _ in range(n):
        data = _mutate(rng, rng.choice(valid)) if rng.random() < 0.6 else rng.randbytes(rng.randint(0, 24))
        kind = rng.choice(("idcard", "ic"))
        t.inputs += 1
        try:
            parse_uid(kind, list(data))
        except ValueError as exc:
            if not str(exc):
                t.missed["apdu"] += 1  # refused, but without saying why
        except Exception as exc:
            t.crash("apdu", exc)


def fuzz_relay(n: int, rng: random.Random, t: Tally) -> None:
    parser = modbus.FrameParser(request=False)
    valid = [modbus.write_coil(1, 0, True), modbus.write_coil(1, 1, False),
             modbus.with_crc(bytes([1, 2, 1, 5])), modbus.with_crc(bytes([1, 0x85, 2])), modbus.with_crc(bytes([1, 1, 1, 1]))]
    for _ in range(n):
        r = rng.random()
        data = (_mutate(rng, rng.choice(valid)) if r < 0.5 else
                rng.choice(valid) + rng.randbytes(rng.randint(1, 8)) if r < 0.7 else rng.randbytes(rng.randint(1, 40)))
        if not data:
            continue  # nothing arrived: not an input
        t.inputs += 1
        st = parser.stats
        before = (st.frames, st.garbage_bytes, st.bad_crc)
        try:
            parser.feed(data)
            parser.discard()  # what the link does before its next request: a partial frame is garbage
        except Exception as exc:
            t.crash("relay", exc)
            parser = modbus.FrameParser(request=False)
            continue
        if (st.frames, st.garbage_bytes, st.bad_crc) == before:
            t.missed["relay"] += 1


def _sync_service(fr: FaultRig, state: Path):
    from edge import config as config_mod
    from edge.store.db import open_whitelist_db
    from edge.store.outbox import Flusher
    from edge.store.whitelist import Whitelist
    from edge.sync.service import SyncService

    fr.write_config(cameras=False, state=state)
    cfg = config_mod.load(fr.rig.config_path)
    fr.write_config(cameras=False)
    state.mkdir(parents=True, exist_ok=True)
    flusher = Flusher(state)
    return SyncService(cfg, Whitelist(open_whitelist_db(state)), flusher), flusher


def fuzz_mqtt(fr: FaultRig, n: int, rng: random.Random, t: Tally) -> None:
    """Every downlink topic, through the sync service's own handler (not started: no network)."""
    import protocol
    from protocol import CmdReq, EvtAck, Signer, WlHead

    sync, flusher = _sync_service(fr, fr.root / "fuzz-state")
    signer = Signer.from_file(fr.site.root / "signing.key")
    now = time.time()
    valid = {
        "evt/ack": [EvtAck(upto=0).dumps(), EvtAck(upto=5, resend=True).dumps()],
        "wl/head": [signer.seal(WlHead(gw=fr.rig.gw, version=1, sha256="0" * 64, count=0, ts=now))],
        "wl/delta": [signer.seal(WlHead(gw=fr.rig.gw, version=1, sha256="0" * 64, count=0, ts=now))],
        "wl/resp": [b'{"v":1,"body":"e30=","sig":"","kid":"x","alg":"Ed25519"}'],
        "cmd/req": [CmdReq(req_id="r1", op="nope", args={}, expires=now + 3600, gw=fr.rig.gw).dumps()],
    }
    topics = list(protocol.DOWN)

    def counted() -> int:
        return sum(sync.counters().values())

    for i in range(n):
        name = topics[i % len(topics)]
        base = rng.choice(valid.get(name, [b"{}"]))
        r = rng.random()
        payload = (_mutate(rng, base) if r < 0.6 else
                   json.dumps(_random_json(rng)).encode() if r < 0.8 else rng.randbytes(rng.randint(0, 64)))
        t.inputs += 1
        before = counted()
        try:
            sync._handle(name, payload, rng.random() < 0.05)
        except Exception as exc:
            t.crash(f"mqtt {name}", exc)
            continue
        if counted() == before:
            t.missed[f"mqtt {name}"] += 1
    sync._conn.close()
    sync._wconn.close()
    flusher._conn.close()


def _random_json(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([None, True, 0, -1, 2**70, 1.5, "", "x" * rng.randint(0, 40), "1", "v"])
    if r < 0.6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["v", "upto", "resend", "kind", "version", "body", "sig", "kid", "alg", "gw", "req_id", "op", "args", "expires", "x"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def fuzz_files(fr: FaultRig, n_config: int, n_csv: int, rng: random.Random, t: Tally) -> None:
    from edge import config as config_mod
    from edge.privacy import Tokenizer, load_key
    from edge.store.whitelist import ResidentsCsvError, read_csv

    base = fr.rig.config_path.read_bytes()
    tok = Tokenizer(load_key(fr.rig.root / "site.key"))
    with tempfile.TemporaryDirectory(prefix="door-edge-fuzz-") as tmp:
        path = Path(tmp) / "gateway.toml"
        for _ in range(n_config):
            path.write_bytes(_mutate(rng, base) if rng.random() < 0.9 else rng.randbytes(rng.randint(0, 200)))
            t.inputs += 1
            try:
                config_mod.load(path)
            except config_mod.ConfigError as exc:
                if not exc.problems or not all(p.path and p.message for p in exc.problems):
                    t.missed["config"] += 1  # refused without naming the key and what is wrong
            except Exception as exc:
                t.crash("config", exc)
        path = Path(tmp) / "residents.csv"
        csv = RESIDENTS_CSV.encode()
        for _ in range(n_csv):
            path.write_bytes(_mutate(rng, csv) if rng.random() < 0.9 else rng.randbytes(rng.randint(0, 200)))
            t.inputs += 1
            try:
                read_csv(path, tok)
            except ResidentsCsvError as exc:
                if str(path) not in str(exc):
                    t.missed["csv"] += 1  # refused without naming the file (and the line)
            except Exception as exc:
                t.crash("csv", exc)


def fuzz_live(fr: FaultRig, rng: random.Random, t: Tally, *, cards: int = 30, line: int = 2000, broker: int = 2000) -> None:
    """Through the real parts to the running daemon: its counters must account for every input."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    import protocol

    fr.write_config(cameras=False)
    fr.start()
    fr.wait_ready()

    def counter(prefix: str) -> int:
        return sum(v for k, v in fr.status().get("counters", {}).items() if k.startswith(prefix))

    before = counter("pcsc.bad_response") + counter("pcsc.unknown_atr") + counter("pcsc.transmit_failed")
    for i in range(cards):
        fault = rng.choice(("garbage", "short", "sw_error"))
        card = VirtualCard(CardProfile.mifare("04A1B2C3", fault=fault), port=VPCD_PORTS[i % 2])
        card.insert()
        time.sleep(0.5)
        card.remove()
        time.sleep(0.45)
        t.inputs += 1
    def got() -> int:
        return counter("pcsc.bad_response") + counter("pcsc.unknown_atr") + counter("pcsc.transmit_failed") - before

    try:
        wait_until(lambda: got() >= cards, 10, "every garbage card counted", step=0.2)
    except TimeoutError:
        t.missed["cards via pcscd"] += cards - got()
    relay = f"relay:{fr.rig.root / 'ttyGW'}"
    before = counter(f"{relay}.garbage_bytes")
    sent = 0
    for _ in range(line):
        junk = bytes([rng.choice([0, 0xF8, 0xFF])]) + rng.randbytes(rng.randint(1, 12))  # no unit 1 frame can start it
        fr.board.inject(junk)
        sent += 1
        t.inputs += 1
    try:
        wait_until(lambda: counter(f"{relay}.garbage_bytes") - before >= sent, 30, "the line garbage counted", step=0.2)
    except TimeoutError:
        t.missed["relay line"] += sent - (counter(f"{relay}.garbage_bytes") - before)
    def handled() -> int:
        return counter("sync.malformed_total") + counter("cmd.") + counter("evt.")

    before = handled()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-fuzzer", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", fr.site.broker.port)
    client.loop_start()
    for i in range(broker):
        name = ("evt/ack", "wl/head", "wl/delta", "wl/resp", "cmd/req")[i % 5]
        payload = rng.randbytes(rng.randint(0, 48)) if rng.random() < 0.5 else json.dumps(_random_json(rng)).encode()
        client.publish(protocol.topic(fr.rig.gw, name), payload, qos=1).wait_for_publish(5)
        t.inputs += 1
    client.loop_stop()
    client.disconnect()
    try:
        wait_until(lambda: handled() - before >= broker, 30, "the broker garbage counted", step=0.2)
    except TimeoutError:
        t.missed["mqtt via the broker"] += broker - (handled() - before)
    if fr.proc.poll() is not None:  # type: ignore[union-attr]
        t.crash("daemon", RuntimeError(f"exited {fr.proc.returncode}"))  # type: ignore[union-attr]
    fr.stop()


def fuzz_all(fr: FaultRig, n: int, rng: random.Random) -> dict:
    from devtools.bench_faults import say

    t = Tally()
    t0 = time.monotonic()
    fuzz_live(fr, rng, t)
    rest = max(0, n - t.inputs)
    logging.disable(logging.WARNING)  # a million refusals, each logged by its parser
    try:
        steps: list[tuple[str, Callable[[int], None]]] = [
            ("apdu", lambda k: fuzz_apdu(k, rng, t)), ("relay", lambda k: fuzz_relay(k, rng, t)),
            ("mqtt", lambda k: fuzz_mqtt(fr, k, rng, t)),
            ("files", lambda k: fuzz_files(fr, k // 2, k - k // 2, rng, t))]
        shares = [SHARES["apdu"], SHARES["relay"], SHARES["mqtt"], SHARES["config"] + SHARES["csv"]]
        for (name, step), share in zip(steps, shares, strict=False):
            step(int(rest * share) if name != "files" else max(0, n - t.inputs))  # the files make up the rest
    finally:
        logging.disable(logging.NOTSET)
    say(f"fuzz: {t.inputs} inputs in {time.monotonic() - t0:.0f} s; {t.crashes} crash(es) {t.first_crash}; "
        f"{t.uncounted} uncounted {dict(t.missed)}")
    return {"inputs": t.inputs, "crashes": t.crashes, "uncounted": t.uncounted}

