"""Lock relay boards on a serial port: LCUS (write-only) and Modbus RTU (coils + discrete inputs).

One thread per serial port owns the port and serialises every transaction on it; callers only
queue commands (`pulse`, `hold`) and never block. Pulse ends are timed on the monotonic clock in
that thread, and, where the board can time a pulse itself (`board_timed`), by the board too, so a
daemon killed mid-pulse cannot leave the lock released.

The lock's state is asserted, never assumed: every output the link owns has a resting state from
the moment the link exists (locked), written as soon as the port opens, written again whenever the
port comes back, and checked every `assert_s` while it is open (read back from a Modbus board and
corrected if it differs; rewritten on a write-only LCUS board). A lost port (unplugged adapter,
vanished pty) or a board that stops answering is reported once as link down, retried with
jittered backoff for as long as it takes, and reported again when it is back.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import select
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import serial
import serial.rs485

from drivers import modbus
from drivers.backoff import Backoff, Reconnects
from drivers.ports import LockRelay, Output

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05  # discrete inputs at 20 Hz
ASSERT_S = 1.0          # outputs checked (Modbus) or rewritten (LCUS) this often
RETRIES = 3
WRITE_TIMEOUT_S = 1.0   # a port whose far end stops reading fails the write instead of hanging the thread


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
    corrections: int = 0   # an output found in the wrong state by the periodic check, and set right


def open_port(name: str, baud: int) -> serial.Serial:
    """A device path (opened exclusively) or a pyserial URL such as socket://host:port."""
    if "://" in name:
        port = serial.serial_for_url(name, baudrate=baud, timeout=0, write_timeout=WRITE_TIMEOUT_S)
    else:
        port = serial.Serial(name, baudrate=baud, timeout=0, write_timeout=WRITE_TIMEOUT_S, exclusive=True)
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
    """The port thread: queue in, transactions out, reconnects. Subclasses speak the board's protocol.

    `outputs`: every output this link owns, each at its resting state (False: locked). They are
    written the moment the port opens, before any command, whatever an earlier run left behind."""

    def __init__(self, port: str, baud: int, listener: RelayListener, *, rs485: bool = False,
                 outputs: dict[Output, bool] | None = None, backoff: Backoff | None = None, assert_s: float = ASSERT_S):
        super().__init__(name=f"relay:{os.path.basename(port)}", daemon=True)
        self.port_name = port
        self.baud = baud
        self.rs485 = rs485
        self._listener = listener
        self._commands: queue.SimpleQueue[tuple[str, Output, int]] = queue.SimpleQueue()
        self._port: serial.Serial | None = None
        self._desired: dict[Output, bool] = dict(outputs or {})
        self._pulse_until: dict[Output, float] = {}   # outputs released by a pulse, and when it ends
        self._timers: list[tuple[float, Output]] = []
        self._assert_s = assert_s
        self.stats = LinkStats()
        self.heartbeat = time.monotonic()
        self._backoff = backoff or Backoff(base_s=0.1, cap_s=5.0)
        self.reconnects = Reconnects(lambda up, detail: listener.link_changed(self.port_name, up, detail))

    @property
    def up(self) -> bool | None:
        """None until the first open attempt."""
        return self.reconnects.snapshot().up

    # -- the public, thread-safe surface -------------------------------------------------------
    def pulse(self, output: Output, ms: int) -> None:
        """Energise `output` now and de-energise it `ms` later (a later pulse extends it)."""
        self._commands.put(("pulse", output, ms))

    def hold(self, output: Output, on: bool) -> None:
        """Set `output` steadily on or off, cancelling any pulse in progress."""
        self._commands.put(("hold", output, int(on)))

    def stop(self, final: dict[Output, bool] | None = None, timeout: float = 3.0) -> None:
        """Write the final states (fail mode) if the link is up, then close the port."""
        self.request_stop(final)
        self.join(timeout)

    def request_stop(self, final: dict[Output, bool] | None = None) -> None:
        """Queue the final states and the stop without waiting (several links stop side by side)."""
        for out, on in (final or {}).items():
            self.hold(out, on)
        self._commands.put(("stop", Output(0, 0), 0))

    def intended(self, out: Output) -> bool:
        """What the output should be now: on while a pulse lasts, else its held or resting state."""
        return out in self._pulse_until or self._desired.get(out, False)

    # -- the thread -----------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            if self._port is None and not self._open():
                if self._drain_until(time.monotonic() + self._backoff.next()):
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
            self.reconnects.failed(f"cannot open: {exc.__class__.__name__}")
            return False
        self._port = port
        self.stats.reconnects += 1
        if not self._on_open():
            return False
        self._backoff.reset()
        self.reconnects.up("open")
        self._write_all()
        return self._port is not None

    def _write_all(self) -> None:
        for out in sorted(self._desired.keys() | self._pulse_until.keys()):
            if self._port is None:
                return
            self._write(out, self.intended(out))

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
        self.reconnects.failed(detail)

    def _serve(self) -> bool:
        """Run while the port is open; True when asked to stop."""
        next_poll = time.monotonic()
        next_assert = time.monotonic() + self._assert_s
        while self._port is not None:
            now = time.monotonic()
            self.heartbeat = now
            self._fire_timers(now)
            if self._port is None:
                return False
            deadline = min([next_poll, next_assert] + [t[0] for t in self._timers[:1]])
            try:
                cmd = self._commands.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                cmd = None
            if cmd is not None:
                if self._handle(cmd):
                    return True
                continue
            now = time.monotonic()
            if now >= next_assert:
                self._assert_outputs()
                next_assert = time.monotonic() + self._assert_s
            if self._port is not None and time.monotonic() >= next_poll:
                self._poll()
                next_poll = time.monotonic() + POLL_INTERVAL_S
        return False

    def _drain_until(self, until: float) -> bool:
        """While the port is down: keep accepting commands (remembered as desired state)."""
        while (left := until - time.monotonic()) > 0:
            self.heartbeat = time.monotonic()
            try:
                cmd = self._commands.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if self._handle(cmd):
                return True
        return False

    def _handle(self, cmd: tuple[str, Output, int]) -> bool:
        op, out, arg = cmd
        if op == "stop":
            return True
        if op == "pulse":
            due = time.monotonic() + arg / 1000
            self._desired[out] = False  # the resting state to come back to
            self._pulse_until[out] = max(due, self._pulse_until.get(out, 0.0))
            heapq.heappush(self._timers, (self._pulse_until[out], out))
            if self._port is not None:
                self._write_pulse(out, arg)
        else:
            self._pulse_until.pop(out, None)  # a hold ends any pulse
            self._desired[out] = bool(arg)
            if self._port is not None:
                self._write(out, bool(arg))
        return False

    def _fire_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            due, out = heapq.heappop(self._timers)
            if self._pulse_until.get(out) == due:
                del self._pulse_until[out]
                if self._port is not None:
                    self._write(out, self._desired.get(out, False))

    def _write_pulse(self, out: Output, ms: int) -> bool:
        """Start a pulse on the board; boards that time it themselves are told how long."""
        return self._write(out, True)

    def _write(self, out: Output, on: bool) -> bool:
        raise NotImplementedError

    def _assert_outputs(self) -> None:
        """Periodic: every owned output in the state it should have now."""
        self._write_all()

    def _poll(self) -> None:
        """Periodic work while open (input polling); the base link has none."""


def lcus_frame(channel: int, on: bool) -> bytes:
    """The one command an LCUS board takes: `A0 channel state checksum` (the board never answers)."""
    return bytes([0xA0, channel, int(on), (0xA0 + channel + int(on)) & 0xFF])


class LcusLink(SerialRelayLink):
    """LCUS-1..8 CH340 relay boards: `A0 ch state sum`, no read-back, no inputs."""

    def _write(self, out: Output, on: bool) -> bool:
        frame = lcus_frame(out.index, on)
        try:
            assert self._port is not None  # noqa: S101 - narrows the type; the caller has checked
            self._port.write(frame)
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            self._lost(f"write failed: {exc.__class__.__name__}")
            return False
        self.stats.writes += 1
        self._listener.output_written(self.port_name, out, on, time.monotonic_ns())
        return True


class ModbusLink(SerialRelayLink):
    """Modbus RTU relay/IO boards: write coil (05) with echo check, coils read back (01), discrete
    inputs (02) polled. `board_timed`: pulses use the board's own timer (a "flash on" write at coil
    address 0x0200 + n with the time in 100 ms units, as Waveshare-style Modbus relay boards take it),
    so the board ends the pulse even if the gateway dies during it."""

    def __init__(self, port: str, baud: int, listener: RelayListener, *, inputs: dict[int, int] | None = None,
                 rs485: bool = False, outputs: dict[Output, bool] | None = None, board_timed: bool = False,
                 backoff: Backoff | None = None, assert_s: float = ASSERT_S):
        super().__init__(port, baud, listener, rs485=rs485, outputs=outputs, backoff=backoff, assert_s=assert_s)
        self._inputs = dict(inputs or {})  # unit -> number of discrete inputs to read
        self._last_bits: dict[int, int] = {}
        self.parser = modbus.FrameParser(request=False)
        self._failing = 0
        self._rewrite = False
        self.board_timed = board_timed
        self.last_write_ns = 0

    def _on_open(self) -> bool:
        self._last_bits.clear()
        if self._inputs:
            self._poll_inputs()
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
                if self._failing >= RETRIES:
                    self._rewrite = True  # the board is back (perhaps after a power cut): set every output
                self._failing = 0
                self.reconnects.up("answering")
                self.last_write_ns = t_written
                return reply
        self.stats.failures += 1
        self._failing += 1
        if self._failing >= RETRIES:
            self.reconnects.failed("board not answering")
        return None

    def _write(self, out: Output, on: bool) -> bool:
        return self._write_frame(out, on, modbus.write_coil(out.unit, out.index, on))

    def _write_pulse(self, out: Output, ms: int) -> bool:
        if not self.board_timed:
            return self._write(out, True)
        # 100 ms past the gateway's own end: the gateway relocks first while it lives, so the periodic
        # check never sees the board's end before its own; the board's timer is the backstop
        tenths = min(0xFFFF, -(-ms // 100) + 1)
        return self._write_frame(out, True, modbus.flash_on(out.unit, out.index, tenths))

    def _write_frame(self, out: Output, on: bool, request: bytes) -> bool:
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
        if self._rewrite:
            self._rewrite = False
            self._write_all()
        self._poll_inputs()

    def _assert_outputs(self) -> None:
        """Read the coils back and set right any that differ from what they should be now."""
        owned = sorted(self._desired.keys() | self._pulse_until.keys())
        for unit in sorted({o.unit for o in owned}):
            outs = [o for o in owned if o.unit == unit]
            count = max(o.index for o in outs) + 1
            reply = self._transact(modbus.read_bits(unit, 0x01, 0, count), 5 + (count + 7) // 8)
            if reply is None or self._port is None:
                continue
            bits = int.from_bytes(reply[3:3 + reply[2]], "little")
            for o in outs:
                want = self.intended(o)
                if bool(bits >> o.index & 1) != want:
                    self.stats.corrections += 1
                    log.warning("relay unit %d coil %d found %s, should be %s: set right", unit, o.index,
                                "on" if not want else "off", "on" if want else "off")
                    self._write(o, want)

    def _poll_inputs(self) -> None:
        for unit, count in self._inputs.items():
            reply = self._transact(modbus.read_bits(unit, 0x02, 0, count), 5 + (count + 7) // 8)
            if reply is None:
                continue
            self.stats.polls += 1
            bits = int.from_bytes(reply[3:3 + reply[2]], "little")
            if self._last_bits.get(unit) != bits:
                self._last_bits[unit] = bits
                self._listener.inputs_changed(self.port_name, unit, bits)



if TYPE_CHECKING:  # mypy holds each link to the port it implements
    _lcus: type[LockRelay] = LcusLink
    _modbus: type[LockRelay] = ModbusLink
