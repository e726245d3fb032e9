"""Modbus RTU framing: CRC, frame builders, and a stream parser.

Serial reads have no message boundaries (a pty merges writes, a USB adapter splits them), so
frames are cut by function-code length and CRC, never by read boundaries; anything else is counted
as garbage and skipped one byte at a time until the stream resynchronises.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


def write_coil(unit: int, coil: int, on: bool) -> bytes:
    return with_crc(struct.pack(">BBHH", unit, 0x05, coil, 0xFF00 if on else 0x0000))


FLASH_ON_BASE = 0x0200  # "flash on" coil addresses of boards that time a pulse themselves (Waveshare-style)


def flash_on(unit: int, coil: int, tenths: int) -> bytes:
    """Turn `coil` on for `tenths` x 100 ms, timed by the board (function 05 at 0x0200 + coil)."""
    return with_crc(struct.pack(">BBHH", unit, 0x05, FLASH_ON_BASE + coil, tenths))


def read_bits(unit: int, func: int, start: int, count: int) -> bytes:
    """Request for function 01 (coils) or 02 (discrete inputs)."""
    return with_crc(struct.pack(">BBHH", unit, func, start, count))


def wire_time_s(n_bytes: int, baud: int) -> float:
    """Time on the wire for n bytes at 8N1 (10 bits a byte)."""
    return n_bytes * 10 / baud


def transaction_timeout_s(req_len: int, resp_len: int, baud: int) -> float:
    """Wire time both ways, the 3.5-character gaps, and a board's turnaround allowance."""
    gaps = 2 * 3.5 * wire_time_s(1, baud)
    return wire_time_s(req_len + resp_len, baud) + gaps + 0.05


def _crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == struct.unpack("<H", frame[-2:])[0]


def _length(buf: bytearray, request: bool) -> int | None:
    """Expected frame length from its first bytes; None if the function code is unknown,
    0 if more bytes are needed to tell."""
    func = buf[1]
    if request:
        if func in (1, 2, 3, 4, 5, 6):
            return 8
        if func in (0x0F, 0x10):
            return 0 if len(buf) < 7 else 9 + buf[6]
        return None
    if func & 0x80:
        return 5
    if func in (1, 2, 3, 4):
        return 0 if len(buf) < 3 else 5 + buf[2]
    if func in (5, 6, 0x0F, 0x10):
        return 8
    return None


@dataclass
class ParserStats:
    frames: int = 0
    garbage_bytes: int = 0
    bad_crc: int = 0


class FrameParser:
    """Feed bytes in, get whole CRC-checked frames out (requests or responses)."""

    def __init__(self, *, request: bool):
        self._request = request
        self._buf = bytearray()
        self.stats = ParserStats()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while len(buf) >= 2:
            n = _length(buf, self._request)
            if n is None or not 1 <= buf[0] <= 247:
                del buf[0]
                self.stats.garbage_bytes += 1
                continue
            if n == 0 or len(buf) < n:
                # maybe a noise byte posed as a long frame's header: a whole valid frame further
                # on proves it, so skip to that frame instead of waiting for bytes that never come
                k = self._valid_frame_after(buf)
                if k is None:
                    break
                del buf[:k]
                self.stats.garbage_bytes += k
                continue
            candidate = bytes(buf[:n])
            if _crc_ok(candidate):
                out.append(candidate)
                del buf[:n]
                self.stats.frames += 1
            else:
                self.stats.bad_crc += 1
                del buf[0]
                self.stats.garbage_bytes += 1
        return out

    def _valid_frame_after(self, buf: bytearray) -> int | None:
        for k in range(1, len(buf) - 3):
            if not 1 <= buf[k] <= 247:
                continue
            n = _length(buf[k:], self._request)
            if n and k + n <= len(buf) and _crc_ok(bytes(buf[k:k + n])):
                return k
        return None

    def discard(self) -> int:
        """Drop a partial frame (after a silence longer than a frame gap); returns bytes dropped."""
        n = len(self._buf)
        self.stats.garbage_bytes += n
        self._buf.clear()
        return n
