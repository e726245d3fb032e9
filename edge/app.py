"""The composition root: builds drivers, store and controller from the config, runs them, stops them.

Start order: database and whitelist, journal flusher, relay links (so the doors are controllable
before anyone can swipe), controller, reader thread; then READY=1. Stop order: readers first (no
new decisions), doors to their fail mode, relay links closed, journal flushed to disk, database
closed. SIGHUP validates the new config and, only if it is valid, rebuilds everything without
touching the doors' states.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from drivers.pcsc import PcscWatcher
from drivers.relay import LINK_TYPES, ModbusLink, Output, SerialRelayLink
from edge import config as config_mod
from edge.access.controller import Controller, DoorIO
from edge.config import GatewayConfig, ModbusRelay
from edge.health import Heartbeats, notify, watchdog_interval_s
from edge.privacy import SiteKeyError, Tokenizer, load_key
from edge.store.db import open_db, open_whitelist_db

from edge.sync.service import SyncSetupError
from edge.vision import VisionSetupError

if TYPE_CHECKING:
    from edge.sync.service import SyncService
    from edge.vision.service import VisionService
from edge.store.outbox import Event, Flusher, Outbox
from edge.store.whitelist import Whitelist

log = logging.getLogger(__name__)

TICK_S = 0.1
WHITELIST_CHECK_S = 1.0


class _LoopBridge:
    """Relay-thread observations, re-delivered on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, controller: Callable[[], Controller | None]):
        self._loop = loop
        self._controller = controller
        self.output_hooks: list[Callable[[str, Output, bool, int], None]] = []

    def _call(self, name: str, *args) -> None:
        def run() -> None:
            c = self._controller()
            if c is not None:
                getattr(c, name)(*args)
        self._loop.call_soon_threadsafe(run)

    def link_changed(self, port: str, up: bool, detail: str) -> None:
        self._call("on_link", port, up, detail)

    def inputs_changed(self, port: str, unit: int, bits: int) -> None:
        self._call("on_inputs", port, unit, bits)

    def output_written(self, port: str, output: Output, on: bool, t_ns: int) -> None:
        for hook in self.output_hooks:
            hook(port, output, on, t_ns)


def build_links(cfg: GatewayConfig, listener) -> tuple[dict[str, SerialRelayLink], dict[str, tuple[SerialRelayLink, Output]]]:
    """One link per serial port; each door gets its (link, output)."""
    links: dict[str, SerialRelayLink] = {}
    outputs: dict[str, tuple[SerialRelayLink, Output]] = {}
    inputs: dict[str, dict[int, int]] = {}
    for d in cfg.doors:
        if isinstance(d.relay, ModbusRelay):
            wired = [i for i in d.inputs.model_dump().values() if i is not None]
            if wired:
                units = inputs.setdefault(d.relay.port, {})
                units[d.relay.unit] = max(units.get(d.relay.unit, 0), max(wired) + 1)
    for d in cfg.doors:
        r = d.relay
        if r.port not in links:
            cls = LINK_TYPES[r.type]
            links[r.port] = (ModbusLink(r.port, r.baud, listener, inputs=inputs.get(r.port), rs485=r.rs485)
                             if cls is ModbusLink else cls(r.port, r.baud, listener))
        out = Output(r.unit, r.coil) if isinstance(r, ModbusRelay) else Output(0, r.channel)
        outputs[d.id] = (links[r.port], out)
    return links, outputs


def preflight(cfg: GatewayConfig) -> None:
    """Everything a build reads besides the devices: the site key and, with sync, central's keys and
    our TLS files. Checked before a reload tears the running parts down (raises what `_build` would)."""
    Tokenizer(load_key(cfg.gateway.site_key_file))
    if cfg.sync is not None:
        from edge.sync.service import check_credentials

        check_credentials(cfg.sync)
    if any(d.mode in config_mod.FACE_MODES for d in cfg.doors):
        from edge.store.faces import TemplateKeyError, load_template_key

        try:
            load_template_key(cfg.gateway.face_key_file)
        except TemplateKeyError as exc:
            raise VisionSetupError(str(exc)) from None


@dataclass
class Parts:
    conn: sqlite3.Connection
    whitelist: Whitelist
    outbox: Outbox
    flusher: Flusher
    links: dict[str, SerialRelayLink]
    controller: Controller
    watcher: PcscWatcher | None
    sync: "SyncService | None" = None
    vision: "VisionService | None" = None
    heartbeats: Heartbeats = field(default_factory=Heartbeats)


class App:
    def __init__(self, config_path: Path | None, cfg: GatewayConfig | None = None):
        self.config_path = config_path
        self.cfg = cfg if cfg is not None else config_mod.load(config_path)  # type: ignore[arg-type]
        self.parts: Parts | None = None
        self.event_hooks: list[Callable[[Event], None]] = []
        self.output_hooks: list[Callable[[str, Output, bool, int], None]] = []
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._loop_beat = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------------
    def _build(self, loop: asyncio.AbstractEventLoop) -> Parts:
        cfg = self.cfg
        tokenizer = Tokenizer(load_key(cfg.gateway.site_key_file))
        state = cfg.state_dir()
        conn = open_db(state)
        whitelist = Whitelist(open_whitelist_db(state))
        outbox = Outbox(conn)
        flusher = Flusher(state)
        outbox.on_put.append(flusher.notify)
        holder: dict[str, Controller] = {}
        bridge = _LoopBridge(loop, lambda: holder.get("c"))
        bridge.output_hooks = self.output_hooks
        links, outputs = build_links(cfg, bridge)
        doors = {d.id: DoorIO(d, *outputs[d.id]) for d in cfg.doors}
        controller = Controller(cfg, whitelist, outbox, tokenizer, doors)
        controller.listeners.extend(self.event_hooks)
        holder["c"] = controller
        watcher = None
        if cfg.readers:
            watcher = PcscWatcher(sorted({r.match for r in cfg.readers}),
                                  lambda read: loop.call_soon_threadsafe(controller.on_card, read))
        vision = self._build_vision(loop, controller) if cfg.cameras else None
        sync = self._build_sync(loop, whitelist, flusher, controller, links, watcher) if cfg.sync is not None else None
        parts = Parts(conn, whitelist, outbox, flusher, links, controller, watcher, sync, vision)
        hb = parts.heartbeats
        hb.add("loop", lambda: self._loop_beat)
        hb.add("journal", lambda: flusher.heartbeat)
        for port, link in links.items():
            hb.add(f"relay:{port}", lambda link=link: link.heartbeat)
        if watcher is not None:
            hb.add("readers", lambda: watcher.heartbeat)
        if sync is not None:
            hb.add("sync", lambda: sync.heartbeat)
        if vision is not None:
            hb.add("cameras", lambda: vision.heartbeat)
        flusher.start()
        for link in links.values():
            link.start()
        if watcher is not None:
            watcher.start()
        if sync is not None:
            sync.start()
        if vision is not None:
            vision.start()
        log.info("started: %d door(s), %d reader match(es), whitelist v%d with %d credential(s), journal seq %d",
                 len(doors), len(cfg.readers), whitelist.version, len(whitelist), outbox.last_seq())
        return parts

    def _build_vision(self, loop: asyncio.AbstractEventLoop, controller: Controller) -> "VisionService":
        from edge.vision.face import liveness_score
        from edge.vision.service import VisionService

        controller.liveness = liveness_score

        def deliver(r) -> None:  # on the worker's reader thread
            if r.plates is not None:
                loop.call_soon_threadsafe(controller.on_plate, r.camera, r.plates, r.t_ns)
            else:
                loop.call_soon_threadsafe(controller.on_face, r.camera, r.answer, r.chip, r.t_ns)

        return VisionService(self.cfg, self.cfg.state_dir(), deliver)

    def _build_sync(self, loop: asyncio.AbstractEventLoop, whitelist: Whitelist, flusher: Flusher, controller: Controller,
                    links: dict[str, SerialRelayLink], watcher: PcscWatcher | None) -> "SyncService":
        from edge.sync.rpc import Op
        from edge.sync.service import SyncService

        def pulse(args: dict) -> dict:
            door = args["door"]
            if door not in controller.io:
                raise ValueError(f"no door {door!r}; doors: {', '.join(controller.io)}")
            loop.call_soon_threadsafe(controller.remote_pulse, door, str(args.get("req_id", "")))
            return {"door": door, "pulsed_ms": controller.io[door].door.pulse_ms}

        def health() -> dict:
            readers = {"service_up": watcher.service_up, "readers": sorted(watcher.readers)} if watcher is not None else {}
            return {"readers": readers, "relays": {port: {"up": link.up} for port, link in links.items()}}

        def diag(args: dict) -> dict:
            from edge.diag import runtime_checks

            return {"checks": runtime_checks(self.cfg)}

        sync = SyncService(self.cfg, whitelist, flusher, health=health, on_event=controller.notify_listeners,
                           ops={"relay_pulse": Op(pulse, acting=True, help="test pulse of a door's lock (signed only)"),
                                "diag": Op(diag, help="the technician checks that do not touch held devices")})
        controller.stale = lambda: sync.is_stale
        return sync

    def _teardown(self, parts: Parts, *, fail_mode: bool) -> None:
        if parts.watcher is not None:
            parts.watcher.stop()
        if parts.vision is not None:
            parts.vision.stop()
        finals = parts.controller.final_states() if fail_mode else {}
        for link in parts.links.values():
            link.stop(final=finals.get(link))
        parts.flusher.stop()
        if parts.sync is not None:
            parts.sync.stop()  # `stopped` status, clean disconnect
        parts.whitelist.close()
        parts.conn.close()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop), (signal.SIGHUP, self._reload.set)):
            try:
                loop.add_signal_handler(sig, handler)
            except (RuntimeError, ValueError):
                pass  # not the main thread (tests, benchmarks): stop() is called directly
        self.parts = self._build(loop)
        notify("READY=1\nSTATUS=" + self.status_line())
        self.ready.set()
        tasks = [asyncio.create_task(self._ticker(), name="tick"),
                 asyncio.create_task(self._watchdog(), name="watchdog")]
        try:
            while not self._stop.is_set():
                stop_wait = asyncio.create_task(self._stop.wait())
                reload_wait = asyncio.create_task(self._reload.wait())
                await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                reload_wait.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    self._do_reload(loop)
        finally:
            for t in tasks:
                t.cancel()
            notify("STOPPING=1")
            if self.parts is not None:
                self._teardown(self.parts, fail_mode=True)
                self.parts = None
            log.info("stopped")

    def _do_reload(self, loop: asyncio.AbstractEventLoop) -> None:
        notify("RELOADING=1")
        try:
            new = config_mod.load(self.config_path) if self.config_path else self.cfg
            preflight(new)
        except (config_mod.ConfigError, SiteKeyError, SyncSetupError, VisionSetupError) as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            notify("READY=1")
            return
        assert self.parts is not None
        self._teardown(self.parts, fail_mode=False)
        self.cfg = new
        self.parts = self._build(loop)
        log.info("config reloaded")
        notify("READY=1\nSTATUS=" + self.status_line())

    async def _ticker(self) -> None:
        next_wl = time.monotonic() + WHITELIST_CHECK_S
        while True:
            await asyncio.sleep(TICK_S)
            self._loop_beat = time.monotonic()
            parts = self.parts
            if parts is None:
                continue
            parts.controller.tick()
            if parts.vision is not None:
                parts.vision.refresh()
            if self._loop_beat >= next_wl and parts.sync is None:  # with sync, the sync thread swaps lists in
                next_wl = self._loop_beat + WHITELIST_CHECK_S
                if parts.whitelist.stored_version() != parts.whitelist.version:
                    parts.whitelist.reload()
                    log.info("whitelist v%d loaded (%d credentials)", parts.whitelist.version, len(parts.whitelist))

    async def _watchdog(self) -> None:
        interval = watchdog_interval_s()
        while True:
            await asyncio.sleep(interval or 5.0)
            parts = self.parts
            if parts is None:
                continue
            stale = parts.heartbeats.stale()
            if stale:
                log.error("not feeding the watchdog: no heartbeat from %s", ", ".join(stale))
                continue
            if interval:
                notify("WATCHDOG=1\nSTATUS=" + self.status_line())

    def status_line(self) -> str:
        p = self.parts
        if p is None:
            return "starting"
        links = ", ".join(f"{port} {'up' if link.up else 'DOWN'}" for port, link in p.links.items())
        readers = "no pcscd" if p.watcher is not None and not p.watcher.service_up else f"{len(p.watcher.readers) if p.watcher else 0} reader(s)"
        central = ""
        if p.sync is not None:
            central = f"; central {'connected' if p.sync.mqtt.connected else 'OFFLINE'}{', list STALE' if p.sync.is_stale else ''}"
        cameras = ""
        if p.vision is not None:
            w = p.vision.worker.stats
            cameras = f"; cameras: {p.vision.enrolled} face(s) enrolled, worker {'up' if p.vision.worker.ready else 'DOWN'}, {w.restarts} restart(s)"
        return f"{readers}; relays: {links}; whitelist v{p.whitelist.version}; journal seq {p.outbox.last_seq()}{central}{cameras}"
