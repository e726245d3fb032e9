"""The composition root: builds the parts from the config, starts them in order, stops them in order.

Build (`_build`) constructs every part and can fail only for the installer's reasons (a key, a
certificate, the face key: a SetupError naming the fix); it opens no device. Start (`_start`)
cannot fail: relay links first (so each lock is written to its resting state before anything
else), the journal flusher, a `started` event saying how the previous run ended, then readers,
sync, vision and the retention purger. Every device is opened by its own thread and retried in the
background for as long as it takes; its outages are journaled and shown in telemetry and diag.

A reload (SIGHUP) builds the new parts first and swaps them in only if that worked: a reload
that fails keeps the running parts. Stop: readers first (no new decisions), the doors to their
fail mode, then vision, sync (`stopped` published), the journal flushed, within STOP_BUDGET_S,
well inside the unit's TimeoutStopSec.

A loop task or a thread that dies of an exception is our own bug: it is logged, the daemon stops
in order and exits 1, and systemd starts it again.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.backoff import Backoff
from drivers.pcsc import PcscWatcher
from drivers.ports import Output
from drivers.relay import LcusLink, ModbusLink, RelayListener, SerialRelayLink
from drivers.sam_ga467 import Ga467Watcher
from edge import config as config_mod
from edge import report
from edge import status as status_mod
from edge.access.alarms import AlarmBook
from edge.access.controller import Controller, DoorIO
from edge.config import Door, Ga467Reader, GatewayConfig, LcusRelay, ModbusRelay, PcscReader
from edge.errors import SetupError
from edge.health import Heartbeats, heartbeat_max_age_s, notify, watchdog_interval_s
from edge.privacy import Tokenizer, load_key
from edge.relock import PlannedOutput, Relocked, write_plan
from edge.store.db import get_meta, open_db, open_whitelist_db, set_meta, storage_fault
from edge.store.outbox import Event, Flusher, Outbox
from edge.store.passback import Passages
from edge.store.passes import PassUses
from edge.store.retention import Retention
from edge.store.whitelist import Whitelist
from edge.vision import VisionSetupError

if TYPE_CHECKING:
    from edge.sync.service import SyncService
    from edge.vision.service import VisionService
    from protocol import Keyring

log = logging.getLogger(__name__)

TICK_S = 0.1
WHITELIST_CHECK_S = 1.0
SPACE_CHECK_S = 30.0    # how often the journal's backlog and the disk's free space are looked at (alarms)
PASS_KEPT_S = 86400.0   # a pass's use count is kept a day past its window (a clock stepped back still finds it used)
STOP_BUDGET_S = 14.0   # TimeoutStopSec is 20 s: the ordered stop must end well before SIGKILL


OutputHook = Callable[[str, Output, bool, int], None]


class _LoopBridge:
    """Relay-thread observations, re-delivered on the event loop to the running controller.

    The links exist before the controller (it is built with them), so the bridge asks for the
    controller when a report arrives instead of holding one: before the first start there is none
    and the report is dropped (a link reports nothing before it starts); after a reload it is the
    new one, which is the controller that now owns the doors."""

    def __init__(self, loop: asyncio.AbstractEventLoop, controller: Callable[[], Controller | None],
                 output_hooks: Sequence[OutputHook] = ()):
        self._loop = loop
        self._controller = controller
        self._output_hooks = output_hooks  # on the link's thread: the bench timestamps relay frames

    def link_changed(self, port: str, up: bool, detail: str) -> None:
        self._loop.call_soon_threadsafe(self._deliver, lambda c: c.on_link(port, up, detail))

    def inputs_changed(self, port: str, unit: int, bits: int) -> None:
        self._loop.call_soon_threadsafe(self._deliver, lambda c: c.on_inputs(port, unit, bits))

    def output_written(self, port: str, output: Output, on: bool, t_ns: int) -> None:
        for hook in self._output_hooks:
            hook(port, output, on, t_ns)

    def _deliver(self, call: Callable[[Controller], object]) -> None:
        controller = self._controller()
        if controller is not None:
            call(controller)


def _lcus_link(port: str, doors: list[Door], listener: RelayListener, backoff: Backoff) -> SerialRelayLink:
    relays = [d.relay for d in doors if isinstance(d.relay, LcusRelay)]
    return LcusLink(port, relays[0].baud, listener, outputs={r.output: False for r in relays}, backoff=backoff)


def _modbus_link(port: str, doors: list[Door], listener: RelayListener, backoff: Backoff) -> SerialRelayLink:
    units: dict[int, int] = {}  # unit -> discrete inputs to poll: up to the highest one a door wires
    for d in doors:
        wired = [i for i in d.inputs.model_dump().values() if i is not None]
        if wired and isinstance(d.relay, ModbusRelay):
            units[d.relay.unit] = max(units.get(d.relay.unit, 0), max(wired) + 1)
    relays = [d.relay for d in doors if isinstance(d.relay, ModbusRelay)]
    return ModbusLink(port, relays[0].baud, listener, inputs=units, rs485=relays[0].rs485,
                      outputs={r.output: False for r in relays}, board_timed=any(r.pulse_timer == "board" for r in relays),
                      backoff=backoff)


# relay `type` -> builder of one port's link from the doors on that port (config check refuses two
# types on one port). A new board type is a config model in edge.config, a link in drivers.relay
# and a line here.
LinkBuilder = Callable[[str, list[Door], RelayListener, Backoff], SerialRelayLink]
LINK_BUILDERS: dict[str, LinkBuilder] = {"lcus": _lcus_link, "modbus": _modbus_link}


def build_links(cfg: GatewayConfig, listener: RelayListener) -> tuple[dict[str, SerialRelayLink], dict[str, tuple[SerialRelayLink, Output]]]:
    """One link per serial port, owning every output on it at its resting state (locked); each door
    gets its (link, output)."""
    by_port: dict[str, list[Door]] = {}
    for d in cfg.doors:
        by_port.setdefault(d.relay.port, []).append(d)
    rc = cfg.reconnect
    links = {port: LINK_BUILDERS[doors[0].relay.type](port, doors, listener, Backoff(rc.base_s, rc.cap_s))
             for port, doors in by_port.items()}
    return links, {d.id: (links[d.relay.port], d.relay.output) for d in cfg.doors}


def _liveness() -> Callable[[list[Any]], float]:
    """The face chips' liveness score; imported only where cameras are configured (numpy, OpenCV)."""
    from edge.vision.face import liveness_score

    return liveness_score


def _pass_keys(cfg: GatewayConfig) -> Keyring | None:
    """Central's keys, where a camera reads visitor passes (SyncSetupError when they cannot be read:
    the same check sync makes); None where no camera does."""
    if cfg.sync is None or not any(c.passes for c in cfg.cameras):
        return None
    from edge.sync.service import check_credentials

    return check_credentials(cfg.sync)


def relock_plan(cfg: GatewayConfig) -> list[PlannedOutput]:
    """What the next start writes off before it has even loaded its config (edge.relock)."""
    return [PlannedOutput(d.relay.type, d.relay.port, d.relay.baud, d.relay.output.unit, d.relay.output.index) for d in cfg.doors]


def preflight(cfg: GatewayConfig) -> None:
    """Everything a build reads besides the devices: the site key and, with sync, central's keys and
    our TLS files, and the face key. Raises what `_build` would (a SetupError)."""
    Tokenizer(load_key(cfg.gateway.site_key_file))
    if cfg.sync is not None:
        from edge.sync.service import check_credentials

        check_credentials(cfg.sync)
    registration_key(cfg)
    if any(d.mode in config_mod.FACE_MODES for d in cfg.doors):
        from edge.store.faces import TemplateKeyError, load_template_key

        try:
            load_template_key(cfg.gateway.face_key_file)
        except TemplateKeyError as exc:
            raise VisionSetupError(exc.problem, exc.fix) from None


def registration_key(cfg: GatewayConfig) -> bytes | None:
    """Central's registration public key, where a reader registers tenants; SetupError naming the fix."""
    if not any(isinstance(r, Ga467Reader) and r.mode == "register" for r in cfg.readers):
        return None
    import protocol

    path = cfg.sync.registration_key_file if cfg.sync is not None else None
    assert path is not None  # noqa: S101 - config check refuses a register reader without it
    try:
        return protocol.read_registration_key(path)
    except FileNotFoundError:
        raise SetupError(f"registration key {path} not found",
                         "copy registration.pub from central (`door-edge central keygen` made it) to that path") from None
    except (OSError, ValueError) as exc:
        raise SetupError(f"registration key {path} unusable: {exc}", "copy central's registration.pub again (it is base64 text)") from None


@dataclass
class Parts:
    cfg: GatewayConfig
    conn: sqlite3.Connection
    whitelist: Whitelist
    outbox: Outbox
    flusher: Flusher
    links: dict[str, SerialRelayLink]
    controller: Controller
    watcher: PcscWatcher | None
    retention: Retention
    passages: Passages
    id_readers: list[Ga467Watcher] = field(default_factory=list)
    sync: SyncService | None = None
    pass_uses: PassUses | None = None
    vision: VisionService | None = None
    heartbeats: Heartbeats = field(default_factory=Heartbeats)
    status: asyncio.AbstractServer | None = None


class App:
    def __init__(self, config_path: Path | None, cfg: GatewayConfig | None = None, *, relocked: Relocked | None = None):
        self.config_path = config_path
        self.cfg = cfg if cfg is not None else config_mod.load(config_path)  # type: ignore[arg-type]
        self.relocked = relocked
        self.parts: Parts | None = None
        self.event_hooks: list[Callable[[Event], None]] = []
        self.output_hooks: list[Callable[[str, Output, bool, int], None]] = []
        self.ready = asyncio.Event()
        self.failure: str | None = None  # why the daemon stopped itself (a part died of a bug)
        self.reloads = {"applied": 0, "refused": 0}
        self.watchdog: dict[str, Any] = {"pings": 0, "withheld": 0, "stalled": []}
        self.started_ts = time.time()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._loop_beat = time.monotonic()
        self._next_space_check = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- build: construct everything, open nothing ------------------------------------------------
    def _build(self, loop: asyncio.AbstractEventLoop, cfg: GatewayConfig) -> Parts:
        tokenizer = Tokenizer(load_key(cfg.gateway.site_key_file))
        state = cfg.state_dir()
        conn = open_db(state, autocheckpoint=False)  # the card path: never a checkpoint inside its commit
        built = None
        try:
            built = self._build_on(loop, cfg, tokenizer, conn)
        finally:
            if built is None:
                conn.close()  # a build that failed leaves nothing open
        return built

    def _build_on(self, loop: asyncio.AbstractEventLoop, cfg: GatewayConfig, tokenizer: Tokenizer,
                  conn: sqlite3.Connection) -> Parts:
        state = cfg.state_dir()
        pass_keys = _pass_keys(cfg)  # before anything opens: a build that fails here has nothing to close
        whitelist = Whitelist(open_whitelist_db(state))
        outbox = Outbox(conn)
        flusher = Flusher(state)
        outbox.on_put.append(flusher.notify)
        bridge = _LoopBridge(loop, lambda: self.parts.controller if self.parts is not None else None, self.output_hooks)
        links, outputs = build_links(cfg, bridge)
        doors = {d.id: DoorIO(d, *outputs[d.id]) for d in cfg.doors}
        stale = threading.Event()  # set by sync while central is silent too long; read on every decision
        passages = Passages(open_db(state, autocheckpoint=False))
        pass_uses = PassUses(open_db(state, autocheckpoint=False)) if pass_keys is not None else None
        a = cfg.alarms
        controller = Controller(cfg, whitelist, outbox, tokenizer, doors, listeners=self.event_hooks, stale=stale.is_set,
                                liveness=_liveness() if cfg.cameras else (lambda chips: 0.0), passages=passages,
                                pass_keys=pass_keys, pass_uses=pass_uses,
                                alarms=AlarmBook(a.denials, a.credential_denials, a.window_s))
        rc = cfg.reconnect

        def reader_status(name: str, state: str) -> None:
            loop.call_soon_threadsafe(self._reader_status, controller, name, state)

        watcher = None
        pcsc = [r for r in cfg.readers if isinstance(r, PcscReader)]
        if pcsc:
            watcher = PcscWatcher(sorted({r.match for r in pcsc}), lambda read: loop.call_soon_threadsafe(controller.on_card, read),
                                  reader_status, backoff=Backoff(rc.base_s, rc.cap_s))
        seal_to = registration_key(cfg)
        id_readers = [Ga467Watcher(r.port, lambda read: loop.call_soon_threadsafe(controller.on_identity, read), reader_status,
                                   baud=r.baud, seal_to=seal_to if r.mode == "register" else None, backoff=Backoff(rc.base_s, rc.cap_s))
                      for r in cfg.readers if isinstance(r, Ga467Reader)]

        def from_thread(event: Event) -> None:  # an event another thread journaled, told on the loop
            loop.call_soon_threadsafe(controller.notify_listeners, event)

        retention = Retention(cfg, on_put=flusher.notify, record=from_thread)
        done = False
        try:
            vision = self._build_vision(loop, cfg, controller) if cfg.cameras else None
            sync = (self._build_sync(loop, cfg, whitelist, flusher, controller, stale, health=lambda: report.health(parts))
                    if cfg.sync is not None else None)
            done = True
        finally:
            if not done:
                whitelist.close()
                passages.close()
                if pass_uses is not None:
                    pass_uses.close()
        parts = Parts(cfg, conn, whitelist, outbox, flusher, links, controller, watcher, retention, passages, id_readers=id_readers,
                      sync=sync, vision=vision, heartbeats=Heartbeats(heartbeat_max_age_s()), pass_uses=pass_uses)
        hb = parts.heartbeats
        hb.add("loop", lambda: self._loop_beat)
        hb.add("journal", lambda: flusher.heartbeat)
        for port, link in links.items():
            hb.add(f"relay:{port}", functools.partial(getattr, link, "heartbeat"))
        if watcher is not None:
            hb.add("readers", lambda: watcher.heartbeat)
        for idr in id_readers:
            hb.add(f"id-reader:{idr.port}", functools.partial(getattr, idr, "heartbeat"))
        if parts.sync is not None:
            sync = parts.sync
            hb.add("sync", lambda: sync.heartbeat)
            hb.add("mqtt", lambda: sync.mqtt.heartbeat)
        if parts.vision is not None:
            vision = parts.vision
            hb.add("vision", lambda: vision.heartbeat)
        return parts

    def _build_vision(self, loop: asyncio.AbstractEventLoop, cfg: GatewayConfig, controller: Controller) -> VisionService:
        from edge.vision.service import VisionService

        doors = {c.id: c.door for c in cfg.cameras}

        def deliver(r) -> None:  # on the worker's supervisor thread
            for text in r.passes or ():
                loop.call_soon_threadsafe(controller.on_pass, r.camera, text, r.t_ns)
            if r.task == "pass":
                return
            if r.plates is not None:
                loop.call_soon_threadsafe(controller.on_plate, r.camera, r.plates, r.t_ns)
            else:
                loop.call_soon_threadsafe(controller.on_face, r.camera, r.answer, r.chip, r.t_ns)

        def part(kind: str, name: str, up: bool, detail: str) -> None:
            loop.call_soon_threadsafe(functools.partial(controller.on_part, kind, name, up=up, detail=detail, door=doors.get(name)))

        return VisionService(cfg, cfg.state_dir(), deliver, on_part=part)

    def _build_sync(self, loop: asyncio.AbstractEventLoop, cfg: GatewayConfig, whitelist: Whitelist, flusher: Flusher,
                    controller: Controller, stale: threading.Event, *, health: Callable[[], dict[str, Any]]) -> SyncService:
        from edge.sync.rpc import Op
        from edge.sync.service import SyncService

        def pulse(args: dict) -> dict:
            door = args["door"]
            if door not in controller.io:
                raise ValueError(f"no door {door!r}; doors: {', '.join(controller.io)}")
            loop.call_soon_threadsafe(controller.remote_pulse, door, str(args.get("req_id", "")))
            return {"door": door, "pulsed_ms": controller.io[door].door.pulse_ms}

        def diag(args: dict) -> dict:
            from edge.diag import runtime_checks

            return {"checks": runtime_checks(cfg)}

        sync = SyncService(cfg, whitelist, flusher, health=health,
                           on_event=lambda e: loop.call_soon_threadsafe(controller.notify_listeners, e),
                           ops={"relay_pulse": Op(pulse, acting=True, help="test pulse of a door's lock (signed only)"),
                                "diag": Op(diag, help="the technician checks that do not touch held devices")},
                           stale=stale)
        return sync

    # -- start: cannot fail ---------------------------------------------------------------------
    def _start(self, parts: Parts, *, first: bool) -> None:
        for link in parts.links.values():
            link.start()  # first of all: every lock to its resting state as soon as its port opens
        parts.flusher.start()
        if first:
            self._journal_start(parts)
        try:
            write_plan(parts.cfg.state_dir(), relock_plan(parts.cfg))
        except OSError as exc:
            log.warning("relock plan not written (%s): after a crash the doors relock when the links open", exc)
        if parts.watcher is not None:
            parts.watcher.start()
        for idr in parts.id_readers:
            idr.start()
        if parts.sync is not None:
            parts.sync.start()
        if parts.vision is not None:
            parts.vision.start()
        parts.retention.start()
        log.info("started: %d door(s), %d reader match(es), whitelist v%d with %d credential(s), journal seq %d",
                 len(parts.controller.io), len(parts.cfg.readers), parts.whitelist.version, len(parts.whitelist),
                 parts.outbox.last_seq())

    def _journal_start(self, parts: Parts) -> None:
        """`started`, with how the previous run ended: a run that did not reach its clean stop was
        killed (SIGKILL, OOM, the watchdog) or lost its power."""
        previous = get_meta(parts.conn, "run_state")
        how = {None: "first start", "stopped": "previous run stopped cleanly",
               "running": "previous run ended without a clean stop (killed, crashed or power lost)"}.get(previous, previous)
        relocked = f"; {self.relocked.describe()}" if self.relocked is not None else ""
        parts.controller.record(Event("system", "started", detail=f"{how}{relocked}"))
        self._set_run_state(parts, "running")

    @staticmethod
    def _set_run_state(parts: Parts, state: str) -> None:
        try:
            set_meta(parts.conn, "run_state", state)
        except sqlite3.OperationalError as exc:
            if not storage_fault(exc):
                raise
            log.warning("run state not recorded (%s)", exc)

    def _reader_status(self, controller: Controller, name: str, state: str) -> None:
        """pcscd and readers coming and going, as journal events (on the loop)."""
        if name == "pcscd":
            controller.on_part("pcscd", "pcscd", up=state == "up", detail=state)
            return
        reader = controller.reader_for(name)
        doors = [reader.door] if reader is not None and isinstance(reader, Ga467Reader) else sorted(
            {r.door for r in controller.cfg.readers if isinstance(r, PcscReader) and r.match in name})
        if state == "gone":
            controller.on_part("reader", name, up=False, detail="gone", door=",".join(doors) or None)
        elif state in ("empty", "card"):
            controller.on_part("reader", name, up=True, detail="back", door=",".join(doors) or None)

    # -- stop -----------------------------------------------------------------------------------
    def _teardown(self, parts: Parts, *, fail_mode: bool, budget_s: float = STOP_BUDGET_S) -> None:
        deadline = time.monotonic() + budget_s

        def left(share: float) -> float:
            return max(0.2, min(share, deadline - time.monotonic()))

        parts.controller.accepting = False
        if parts.watcher is not None:
            parts.watcher.stop(timeout=left(2.0))
        for idr in parts.id_readers:
            idr.stop(timeout=left(1.0))
        finals = parts.controller.final_states() if fail_mode else {}
        for link in parts.links.values():
            link.request_stop(finals.get(link))
        for link in parts.links.values():
            link.join(left(3.0))
        if parts.vision is not None:
            parts.vision.stop(timeout=left(3.0))
        if parts.status is not None:
            parts.status.close()
            status_mod.socket_path(parts.cfg.state_dir()).unlink(missing_ok=True)
        if parts.sync is not None:
            parts.sync.stop(timeout=left(4.0))  # `stopped` status, clean disconnect
        parts.retention.stop(timeout=left(1.0))
        if fail_mode:
            parts.controller.record(Event("system", "stopped", detail=self.failure or "clean stop"))
            self._set_run_state(parts, "stopped" if self.failure is None else "failed")
        parts.flusher.stop(timeout=left(3.0))
        self._close(parts)

    @staticmethod
    def _close(parts: Parts) -> None:
        parts.whitelist.close()
        parts.passages.close()
        if parts.pass_uses is not None:
            parts.pass_uses.close()
        parts.conn.close()

    def stop(self) -> None:
        self._stop.set()

    def fail(self, reason: str) -> None:
        """A part died of a bug: stop in order and exit 1 (systemd restarts the daemon)."""
        if self.failure is None:
            self.failure = reason
            log.critical("%s: stopping so that systemd starts the daemon afresh", reason)
        self._stop.set()

    # -- run ------------------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped; 0 after a clean stop, 1 when a part died (SetupError at start)."""
        loop = self._loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop), (signal.SIGHUP, self._reload.set)):
            try:
                loop.add_signal_handler(sig, handler)
            except (RuntimeError, ValueError):
                pass  # not the main thread (tests, benchmarks): stop() is called directly
        previous_hook = threading.excepthook
        threading.excepthook = self._thread_died
        try:
            self.parts = self._build(loop, self.cfg)
            self._start(self.parts, first=True)
            await self._serve_status(self.parts)
            # everything built at start lives as long as the daemon: out of the collector's sight,
            # so that a collection during a swipe walks only what the swipes themselves made
            gc.freeze()
            notify("READY=1\nSTATUS=" + self.status_line())
            self.ready.set()
            tasks = [self._task(self._ticker(), "tick"), self._task(self._watchdog(), "watchdog"),
                     self._task(self._whitelist_watch(), "whitelist-watch")]
            try:
                while not self._stop.is_set():
                    stop_wait = asyncio.create_task(self._stop.wait())
                    reload_wait = asyncio.create_task(self._reload.wait())
                    await asyncio.wait({stop_wait, reload_wait}, return_when=asyncio.FIRST_COMPLETED)
                    stop_wait.cancel()
                    reload_wait.cancel()
                    if self._reload.is_set() and not self._stop.is_set():
                        self._reload.clear()
                        await self._do_reload(loop)
            finally:
                for t in tasks:
                    t.cancel()
                notify("STOPPING=1")
                if self.parts is not None:
                    self._teardown(self.parts, fail_mode=True)
                    self.parts = None
                log.info("stopped")
        finally:
            threading.excepthook = previous_hook
        return 0 if self.failure is None else 1

    def _task(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("loop task %s died", task.get_name(), exc_info=exc)
            self.fail(f"loop task {task.get_name()} died: {exc.__class__.__name__}")
        elif not self._stop.is_set():
            self.fail(f"loop task {task.get_name()} ended")

    def _thread_died(self, args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        log.error("thread %s died", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]
        reason = f"thread {name} died: {args.exc_type.__name__}"
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.fail, reason)

    async def _serve_status(self, parts: Parts) -> None:
        parts.status = await status_mod.serve(status_mod.socket_path(parts.cfg.state_dir()), self.status)

    async def _do_reload(self, loop: asyncio.AbstractEventLoop) -> None:
        """Build the new parts first; only if that worked, stop the old ones and start the new."""
        notify("RELOADING=1")
        try:
            new_cfg = config_mod.load(self.config_path) if self.config_path else self.cfg
            preflight(new_cfg)
            new = self._build(loop, new_cfg)
        except (SetupError, OSError, sqlite3.Error) as exc:
            self.reloads["refused"] += 1
            log.error("reload refused, keeping the running config: %s", exc)
            notify("READY=1")
            return
        old = self.parts
        assert old is not None  # noqa: S101 - narrows the type; the caller has checked
        self._teardown(old, fail_mode=False)
        self.cfg, self.parts = new_cfg, new
        self._start(new, first=False)
        await self._serve_status(new)
        self.reloads["applied"] += 1
        new.controller.record(Event("system", "config_reloaded", detail=f"{len(new_cfg.doors)} door(s), "
                                                                          f"{len(new_cfg.cameras)} camera(s)"))
        log.info("config reloaded")
        notify("READY=1\nSTATUS=" + self.status_line())

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._loop_beat = time.monotonic()
            parts = self.parts
            if parts is None:
                continue
            parts.controller.tick()
            parts.outbox.retry()
            if time.monotonic() >= self._next_space_check:
                self._next_space_check = time.monotonic() + SPACE_CHECK_S
                self._space_alarms(parts)
                if parts.pass_uses is not None:
                    parts.pass_uses.purge_before(time.time() - PASS_KEPT_S)

    @staticmethod
    def _space_alarms(parts: Parts) -> None:
        """The journal that waits in memory, and the disk that is filling: alarms for the office
        (raised while they stand; they reach central once the journal can be written again)."""
        state = parts.cfg.state_dir()
        parts.controller.condition("journal_overflow", parts.outbox.pending > 0, subject=str(state))
        floor = parts.cfg.alarms.disk_free_min_mb
        try:
            free_mb = shutil.disk_usage(state).free / 1e6
        except OSError:
            return
        parts.controller.condition("disk_nearly_full", bool(floor) and free_mb < floor, subject=str(state))

    async def _whitelist_watch(self) -> None:
        """Without sync, `door-edge whitelist import` changes the list on disk: the new index is
        built off the loop and swapped in (with sync, the sync thread swaps lists in itself)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WHITELIST_CHECK_S)
            parts = self.parts
            if parts is None or parts.sync is not None:
                continue
            wl = parts.whitelist
            if wl.stored_version() != wl.version:
                await loop.run_in_executor(None, wl.reload)
                log.info("whitelist v%d loaded (%d credentials)", wl.version, len(wl))

    async def _watchdog(self) -> None:
        interval = watchdog_interval_s()
        was_stale: list[str] = []
        while True:
            await asyncio.sleep(interval or 1.0)
            parts = self.parts
            if parts is None:
                continue
            stale = parts.heartbeats.stale()
            if stale:
                self.watchdog["withheld"] += 1
                if stale != was_stale:
                    log.error("not feeding the watchdog: no heartbeat from %s", ", ".join(stale))
                    self.watchdog["stalled"] = sorted(set(self.watchdog["stalled"]) | set(stale))
            elif was_stale:
                log.warning("every part beats again: feeding the watchdog")
            was_stale = stale
            if interval and not stale:
                self.watchdog["pings"] += 1
                notify("WATCHDOG=1\nSTATUS=" + self.status_line())

    # -- what the parts look like (edge.report) ---------------------------------------------------
    def status(self) -> dict:
        """The status socket's answer (edge.status): no personal data."""
        if self.parts is None:
            return {"pid": os.getpid(), "state": "starting"}
        return report.snapshot(self.parts, pid=os.getpid(), started=self.started_ts, config=str(self.config_path),
                               watchdog=self.watchdog, reloads=self.reloads)

    def status_line(self) -> str:
        return "starting" if self.parts is None else report.status_line(self.parts)
