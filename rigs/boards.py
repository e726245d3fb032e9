"""Relay/IO board emulators for the far end of a pty: a Modbus RTU board and an LCUS relay.

They record a timeline of every output write with the monotonic time at which the whole frame had
arrived, which is where the card benchmark stops its clock. Run in-process (a thread) or as
`python -m rigs.boards modbus --port PATH`, which prints the timeline as JSON lines
and takes `di N 0|1`, `garbage HEX`, `mute 0|1` and `quit` on stdin.
"""

from __future__ import annotations

import argparse
import json
import select
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import serial

from drivers import modbus
from drivers.relay import lcus_frame


@dataclass(frozen=True, slots=True)
class CoilWrite:
    t_ns: int
    unit: int
    coil: int
    on: bool


class SerialEmulator(threading.Thread):
    """A device on the far end of a pty: reopens it whenever it comes back, hands what arrives to `_feed`."""

    def __init__(self, path: Path, baud: int, name: str):
        super().__init__(name=name, daemon=True)
        self.path = Path(path)
        self.baud = baud
        self.timeline: list[CoilWrite] = []
        self.on_write: Callable[[CoilWrite], None] | None = None
        self._halt = threading.Event()
        self._port: serial.Serial | None = None
        self._lock = threading.Lock()
        self.changed = threading.Condition()

    def stop(self) -> None:
        self._halt.set()
        self.join(2)

    def inject(self, data: bytes) -> None:
        """Put raw bytes on the line towards the gateway (garbage, bad CRC frames)."""
        with self._lock:
            if self._port is not None:
                self._port.write(data)

    def _record(self, w: CoilWrite) -> None:
        with self.changed:
            self.timeline.append(w)
            self.changed.notify_all()
        if self.on_write is not None:
            self.on_write(w)

    def wait_for(self, predicate: Callable[[list[CoilWrite]], bool], timeout: float) -> bool:
        """Block until predicate(timeline) holds, or the timeout passes."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.timeline), timeout)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                port = serial.Serial(str(self.path), baudrate=self.baud, timeout=0)
            except (serial.SerialException, OSError):
                self._halt.wait(0.05)  # the pty is gone for now: wait for it to come back
                continue
            with self._lock:
                self._port = port
            try:
                self._serve(port)
            except (serial.SerialException, OSError):
                pass
            with self._lock:
                self._port = None
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _serve(self, port: serial.Serial) -> None:
        fd = port.fileno()
        while not self._halt.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                data = port.read(port.in_waiting or 1)
                if not data:
                    raise serial.SerialException("pty closed")
                t_ns = time.monotonic_ns()
                self._feed(data, t_ns, port)

    def _feed(self, data: bytes, t_ns: int, port: serial.Serial) -> None:
        raise NotImplementedError


class ModbusBoard(SerialEmulator):
    """A Modbus RTU relay/IO board: coils (01/05/0F) and discrete inputs (02)."""

    def __init__(self, path: Path, *, unit: int = 1, baud: int = 9600, n_coils: int = 8, n_inputs: int = 8):
        super().__init__(path, baud, f"modbus-board:{unit}")
        self.unit = unit
        self.coils = [False] * n_coils
        self.inputs = [False] * n_inputs
        self.parser = modbus.FrameParser(request=True)
        self.mute = False  # stop answering (a board that lost power, a broken bus)
        self.flash = True  # understands the timed "flash on" write (modbus.flash_on)
        self.requests = 0
        self._flash_token: dict[int, int] = {}

    def set_input(self, index: int, value: bool) -> None:
        self.inputs[index] = value

    def _set_coil(self, coil: int, on: bool, t_ns: int) -> None:
        self._flash_token[coil] = self._flash_token.get(coil, 0) + 1  # a plain write ends a timed pulse
        self.coils[coil] = on
        self._record(CoilWrite(t_ns, self.unit, coil, on))

    def _flash(self, coil: int, seconds: float, t_ns: int) -> None:
        """The board's own pulse timer: on now, off `seconds` later whatever the gateway does."""
        self._set_coil(coil, True, t_ns)
        token = self._flash_token[coil]

        def end() -> None:
            if self._flash_token.get(coil) == token:
                self._set_coil(coil, False, time.monotonic_ns())

        timer = threading.Timer(seconds, end)
        timer.daemon = True
        timer.start()

    def _feed(self, data: bytes, t_ns: int, port: serial.Serial) -> None:
        for frame in self.parser.feed(data):
            if frame[0] != self.unit:
                continue
            self.requests += 1
            func = frame[1]
            if func == 0x05:
                _, _, addr, value = struct.unpack(">BBHH", frame[:6])
                timed = self.flash and addr >= modbus.FLASH_ON_BASE
                coil = addr - modbus.FLASH_ON_BASE if timed else addr
                if coil >= len(self.coils) or (not value if timed else value not in (0xFF00, 0x0000)):
                    reply = modbus.with_crc(bytes([self.unit, 0x85, 2 if coil >= len(self.coils) else 3]))
                elif timed:
                    self._flash(coil, value / 10, t_ns)
                    reply = frame
                else:
                    self._set_coil(coil, value == 0xFF00, t_ns)
                    reply = frame
            elif func in (0x01, 0x02):
                _, _, start, count = struct.unpack(">BBHH", frame[:6])
                bits = self.coils if func == 0x01 else self.inputs
                if start + count > len(bits) or count == 0:
                    reply = modbus.with_crc(bytes([self.unit, func | 0x80, 2]))
                else:
                    value = sum(1 << i for i, b in enumerate(bits[start:start + count]) if b)
                    nbytes = (count + 7) // 8
                    reply = modbus.with_crc(bytes([self.unit, func, nbytes]) + value.to_bytes(nbytes, "little"))
            else:
                reply = modbus.with_crc(bytes([self.unit, func | 0x80, 1]))
            if not self.mute:
                with self._lock:
                    port.write(reply)


class LcusBoard(SerialEmulator):
    """An LCUS-n CH340 relay: `A0 ch state sum`, never answers."""

    def __init__(self, path: Path, *, baud: int = 9600, channels: int = 8):
        super().__init__(path, baud, "lcus-board")
        self.relays = [False] * (channels + 1)
        self.garbage_bytes = 0
        self._buf = bytearray()

    def _feed(self, data: bytes, t_ns: int, port: serial.Serial) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            ch, state = buf[1], buf[2]
            if 1 <= ch < len(self.relays) and state in (0, 1) and bytes(buf[:4]) == lcus_frame(ch, bool(state)):
                self.relays[ch] = bool(state)
                self._record(CoilWrite(t_ns, 0, ch, bool(state)))
                del buf[:4]
            else:
                del buf[0]
                self.garbage_bytes += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rigs.boards")
    ap.add_argument("kind", choices=["modbus", "lcus"])
    ap.add_argument("--port", required=True, type=Path)
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args(argv)
    board: SerialEmulator = ModbusBoard(args.port, unit=args.unit, baud=args.baud) if args.kind == "modbus" else LcusBoard(args.port, baud=args.baud)
    out_lock = threading.Lock()

    def emit(w: CoilWrite) -> None:
        with out_lock:
            sys.stdout.write(json.dumps({"t_ns": w.t_ns, "unit": w.unit, "coil": w.coil, "on": w.on}) + "\n")
            sys.stdout.flush()

    board.on_write = emit
    board.start()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] == "di" and isinstance(board, ModbusBoard):
            board.set_input(int(parts[1]), parts[2] == "1")
        elif parts[0] == "garbage":
            board.inject(bytes.fromhex(parts[1]))
        elif parts[0] == "mute" and isinstance(board, ModbusBoard):
            board.mute = parts[1] == "1"
    board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
