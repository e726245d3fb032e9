"""Lock relay boards on a serial port: LCUS (write-only) and Modbus RTU (coils + discrete inputs).

One thread per serial port owns the port and serialises every transaction on it; callers only
queue commands (`pulse`, `hold`) and never block. Pulse ends are timed on the monotonic clock in
that thread. A lost port (unplugged adapter, vanished pty) or a board that stops answering is
reported once as link down, retried with jittered backoff, and reported again when it is back;
the desired output states are then written again so the door is where it should be.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import serial
import serial.rs485

from drivers import modbus
from drivers.backoff import Backoff

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05  # discrete inputs at 20 Hz
RETRIES = 3


@dataclass(frozen=True, slots=True, order=True)
class Output:
    """One relay output: Modbus (unit, coil), or LCUS (0, channel)."""

    unit: int
    index: int


class RelayListener(Protocol):
    """Receives what a link observes. Called from the link's thread: must not block."""

    def link_changed(self, port: str, up: bool, detail: str) -> None: ...

    def inputs_changed(self, port: str, unit: int, bits: int) -> None: ...

    def output_written(self, port: str, output: Output, on: bool, t_ns: int) -> None: ...


@dataclass
class LinkStats:
    writes: int = 0
    retries: int = 0
    failures: int = 0
    polls: int = 0
    reconnects: int = 0
    exceptions: int = 0


@dataclass(order=True)
class _Timer:
    due: float
    output: Output = field(compare=False)
    token: int = field(compare=False)


def open_port(name: str, baud: int) -> serial.Serial:
    """A device path (opened exclusively) or a pyserial URL such as socket://host:port."""
    if "://" in name:
        port = serial.serial_for_url(name, baudrate=baud, timeout=0)
    else:
        port = serial.Serial(name, baudrate=baud, timeout=0, exclusive=True)
    port.reset_input_buffer()
    return port


def exchange(port: serial.Serial, parser: modbus.FrameParser, request: bytes, timeout: float) -> bytes | None:
    """Send one Modbus request and wait for the matching reply (or exception reply).

    Stray bytes before the request are fed to the parser (and counted as garbage); answers from
    other units are skipped. Raises SerialException/OSError when the port itself fails.
    """
    if port.in_waiting:
        parser.feed(port.read(port.in_waiting))
    parser.discard()
    port.write(request)
    deadline = time.monotonic() + timeout
    fd = port.fileno()
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        data = port.read(port.in_waiting or 1)
        if not data:
            raise serial.SerialException("port closed under us")
        for frame in parser.feed(data):
            if frame[0] == request[0] and frame[1] in (request[1], request[1] | 0x80):
                return frame
    return None


class SerialRelayLink(threading.Thread):
    """The port thread: queue in, transactions out, reconnects. Subclasses speak the board's protocol."""

    def __init__(self, port: str, baud: int, listener: RelayListener, *, rs485: bool = False):
        super().__init__(name=f"relay:{os.path.basename(port)}", daemon=True)
        self.port_name = port
        self.baud = baud
        self.rs485 = rs485
        self._listener = listener
        self._commands: queue.SimpleQueue[tuple[str, Output, int]] = queue.SimpleQueue()
        self._port: serial.Serial | None = None
        self._desired: dict[Output, bool] = {}
        self._timers: list[_Timer] = []
        self._timer_token: dict[Output, int] = {}
        self.up: bool | None = None  # unknown until the first open attempt
        self.stats = LinkStats()
        self.heartbeat = time.monotonic()
        self._backoff = Backoff(base_s=0.1, cap_s=5.0)

    # -- the public, thread-safe surface -------------------------------------------------------
    def pulse(self, output: Output, ms: int) -> None:
        """Energise `output` now and de-energise it `ms` later (a later pulse extends it)."""
        self._commands.put(("pulse", output, ms))

    def hold(self, output: Output, on: bool) -> None:
        """Set `output` steadily on or off, cancelling any pulse in progress."""
        self._commands.put(("hold", output, int(on)))

    def stop(self, final: dict[Output, bool] | None = None, timeout: float = 3.0) -> None:
        """Write the final states (fail mode) if the link is up, then close the port."""
        for out, on in (final or {}).items():
            self.hold(out, on)
        self._commands.put(("stop", Output(0, 0), 0))
        self.join(timeout)

    # -- the thread -----------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            if self._port is None and not self._open():
                if self._drain_until(time.monotonic() + self._backoff.next(), offline=True):
                    break
                continue
            if self._serve():
                break
        self._close()

    def _open(self) -> bool:
        try:
            port = open_port(self.port_name, self.baud)
            if self.rs485:
                port.rs485_mode = serial.rs485.RS485Settings()
        except (serial.SerialException, OSError, ValueError) as exc:
            self._set_up(False, f"cannot open: {exc.__class__.__name__}")
            return False
        self._port = port
        self.stats.reconnects += 1
        if self._on_open():
            self._backoff.reset()
            self._set_up(True, "open")
            for out, on in sorted(self._desired.items()):
                self._write(out, on)
            return True
        return self._port is not None

    def _on_open(self) -> bool:
        """Probe the board after the port opened; True if it answered (or cannot answer)."""
        return True

    def _close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass
            self._port = None

    def _lost(self, detail: str) -> None:
        log.warning("relay port %s lost: %s", self.port_name, detail)
        self._close()
        self._set_up(False, detail)

    def _set_up(self, up: bool, detail: str) -> None:
        if up != self.up:
            self.up = up
            self._listener.link_changed(self.port_name, up, detail)

    def _serve(self) -> bool:
        """Run while the port is open; True when asked to stop."""
        next_poll = time.monotonic()
        while self._port is not None:
            now = time.monotonic()
            self.heartbeat = now
            self._fire_timers(now)
            if self._port is None:
                return False
            deadline = min([next_poll] + [t.due for t in self._timers[:1]])
            try:
                cmd = self._commands.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                cmd = None
            if cmd is not None:
                if self._handle(cmd):
                    return True
                continue
            if time.monotonic() >= next_poll:
                self._poll()
                next_poll = time.monotonic() + POLL_INTERVAL_S
        return False

    def _drain_until(self, until: float, *, offline: bool) -> bool:
        """While the port is down: keep accepting commands (remembered as desired state)."""
        while (left := until - time.monotonic()) > 0:
            self.heartbeat = time.monotonic()
            try:
                cmd = self._commands.get(timeout=left)
            except queue.Empty:
                return False
            if self._handle(cmd):
                return True
        return False

    def _handle(self, cmd: tuple[str, Output, int]) -> bool:
        op, out, arg = cmd
        if op == "stop":
            return True
        token = self._timer_token.get(out, 0) + 1
        self._timer_token[out] = token  # cancels any pending pulse end
        if op == "pulse":
            self._desired[out] = False  # the resting state to come back to
            if self._port is not None:
                self._write(out, True)
            heapq.heappush(self._timers, _Timer(time.monotonic() + arg / 1000, out, token))
        else:
            self._desired[out] = bool(arg)
            if self._port is not None:
                self._write(out, bool(arg))
        return False

    def _fire_timers(self, now: float) -> None:
        while self._timers and self._timers[0].due <= now:
            t = heapq.heappop(self._timers)
            if self._timer_token.get(t.output) == t.token and self._port is not None:
                self._write(t.output, self._desired.get(t.output, False))

    def _write(self, out: Output, on: bool) -> bool:
        raise NotImplementedError

    def _poll(self) -> None:
        """Periodic work while open (input polling); the base link has none."""


class LcusLink(SerialRelayLink):
    """LCUS-1..8 CH340 relay boards: `A0 ch state sum`, no read-back, no inputs."""

    def _write(self, out: Output, on: bool) -> bool:
        frame = bytes([0xA0, out.index, int(on), (0xA0 + out.index + int(on)) & 0xFF])
        try:
            assert self._port is not None
            self._port.write(frame)
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            self._lost(f"write failed: {exc.__class__.__name__}")
            return False
        self.stats.writes += 1
        self._listener.output_written(self.port_name, out, on, time.monotonic_ns())
        return True


class ModbusLink(SerialRelayLink):
    """Modbus RTU relay/IO boards: write coil (05) with echo check, discrete inputs (02) polled."""

    def __init__(self, port: str, baud: int, listener: RelayListener, *, inputs: dict[int, int] | None = None,
                 rs485: bool = False):
        super().__init__(port, baud, listener, rs485=rs485)
        self._inputs = dict(inputs or {})  # unit -> number of discrete inputs to read
        self._last_bits: dict[int, int] = {}
        self.parser = modbus.FrameParser(request=False)
        self._failing = 0
        self.last_write_ns = 0

    def _on_open(self) -> bool:
        self._last_bits.clear()
        if self._inputs:
            self._poll()
        return self._port is not None

    def _transact(self, request: bytes, resp_len: int) -> bytes | None:
        """One request/response with retries; None if the board never answered properly."""
        timeout = modbus.transaction_timeout_s(len(request), resp_len, self.baud)
        for attempt in range(RETRIES):
            if attempt:
                self.stats.retries += 1
            port = self._port
            if port is None:
                return None
            try:
                t_written = time.monotonic_ns()
                reply = exchange(port, self.parser, request, timeout)
            except (serial.SerialException, OSError) as exc:
                self._lost(f"i/o error: {exc.__class__.__name__}")
                return None
            if reply is not None and reply[1] & 0x80:
                self.stats.exceptions += 1
                log.warning("relay unit %d exception code %d for function %d", reply[0], reply[2], request[1])
                reply = None
            if reply is not None:
                self._failing = 0
                self._set_up(True, "answering")
                self.last_write_ns = t_written
                return reply
        self.stats.failures += 1
        self._failing += 1
        if self._failing >= RETRIES:
            self._set_up(False, "board not answering")
        return None

    def _write(self, out: Output, on: bool) -> bool:
        request = modbus.write_coil(out.unit, out.index, on)
        reply = self._transact(request, 8)
        if reply is None:
            return False
        if reply != request:
            self.stats.failures += 1
            return False
        self.stats.writes += 1
        self._listener.output_written(self.port_name, out, on, self.last_write_ns)
        return True

    def _poll(self) -> None:
        for unit, count in self._inputs.items():
            reply = self._transact(modbus.read_bits(unit, 0x02, 0, count), 5 + (count + 7) // 8)
            if reply is None:
                continue
            self.stats.polls += 1
            bits = int.from_bytes(reply[3:3 + reply[2]], "little")
            if self._last_bits.get(unit) != bits:
                self._last_bits[unit] = bits
                self._listener.inputs_changed(self.port_name, unit, bits)


LINK_TYPES: dict[str, type[SerialRelayLink]] = {"lcus": LcusLink, "modbus": ModbusLink}
