"""GA 467 ID-card readers: the public-security SAM module on a serial or USB-serial port.

The module reads the second-generation resident ID card: the ID number, the validity dates and the
text printed on the card. It speaks frames of `AA AA AA 96 69 | LEN(2, BE) | ... | CHK`, LEN
counting what follows it, CHK the XOR of every byte after the preamble (LEN included); a command
carries CMD and PARA, an answer three status bytes, the last of which is the module's status
(notes/rigs.md has the table and test vectors).

One thread per reader owns the port: it polls "find card" about three times a second, and a card
that enters the field is selected and read once. The 256-byte UCS-2 text is parsed here, in memory;
what leaves the driver is the ID number (which the gateway hashes at once, like a card UID), the
validity dates and, for a reader in `register` mode, the whole identity already sealed to central's
registration key (libsodium sealed box): no name, address or birth date ever leaves in clear. The
1,024-byte WLT photo is dropped unread: its decoder is proprietary and the gateway has no use for it.

Failures and their recovery: garbage on the line is skipped up to the next preamble, a frame whose
checksum is wrong is dropped, and a card pulled mid-read ends that read (a "read failed" status,
or an answer that never completes); each is counted and no presentation is made up from it. A port
that vanishes (an unplugged adapter) or a module that stops answering is reported `gone` and
reopened with the shared jittered backoff; `back` when it answers again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import serial
from nacl.public import PublicKey, SealedBox

from drivers.backoff import Backoff, Reconnects, pause
from drivers.ports import CardSource

log = logging.getLogger(__name__)

PREAMBLE = bytes.fromhex("AAAAAA9669")
MAX_LEN = 4096          # longer than any answer (the read is 1,288): a bigger LEN is noise
POLL_S = 0.3            # "find card" no faster than this (the module's own advice)
MUTE_AFTER = 3          # this many unanswered commands in a row: the module is gone
PROCESS_S = 0.25        # the module's own time per command, on top of the wire time

# commands: (CMD, PARA)
RESET = (0x10, 0xFF)
SAM_STATUS = (0x11, 0xFF)
SAM_ID = (0x12, 0xFF)
FIND = (0x20, 0x01)
SELECT = (0x20, 0x02)
READ_BASE = (0x30, 0x01)

OK, FIND_OK = 0x90, 0x9F
# SW3, the module's status (notes/rigs.md); any other value is named status_XX
STATUS = {0x90: "ok", 0x9F: "find_ok", 0x80: "no_card", 0x81: "select_failed", 0x41: "read_failed",
          0x10: "checksum_error", 0x11: "length_error", 0x21: "command_error", 0x23: "unauthorised",
          0x31: "card_authentication_failed", 0x32: "sam_authentication_failed", 0x33: "information_error",
          0x60: "self_test_failed"}

# the text block: (field, bytes), UCS-2 little-endian, space-padded; 256 bytes in all
TEXT_FIELDS = (("name", 30), ("sex", 2), ("nation", 4), ("birth", 16), ("address", 70), ("idno", 36),
               ("authority", 30), ("valid_from", 16), ("valid_to", 16), ("reserved", 36))
TEXT_BYTES = sum(n for _, n in TEXT_FIELDS)
PHOTO_BYTES = 1024


class SamError(Exception):
    """The module answered with a status other than success; `name` is the STATUS table's name."""

    def __init__(self, sw3: int):
        self.sw3 = sw3
        self.name = STATUS.get(sw3, f"status_{sw3:02x}")
        super().__init__(self.name)


class ReadAborted(Exception):
    """No (complete, well-formed) answer came in time: a card pulled mid-read, a module gone mute."""


class BadFrame(ReadAborted):
    """An answer came but its checksum was wrong (line noise, a loose cable)."""


def checksum(data: bytes) -> int:
    out = 0
    for b in data:
        out ^= b
    return out


def command(cmd: tuple[int, int], data: bytes = b"") -> bytes:
    """A command frame: preamble, LEN, CMD, PARA, data, CHK."""
    body = bytes(cmd) + data
    head = (len(body) + 1).to_bytes(2, "big")
    return PREAMBLE + head + body + bytes([checksum(head + body)])


def answer(sw3: int, data: bytes = b"", sw1: int = 0, sw2: int = 0) -> bytes:
    """An answer frame, as the module sends it (the emulator's side; tests' known answers)."""
    body = bytes([sw1, sw2, sw3]) + data
    head = (len(body) + 1).to_bytes(2, "big")
    return PREAMBLE + head + body + bytes([checksum(head + body)])


@dataclass(frozen=True, slots=True)
class Frame:
    """One well-formed frame off the line: the bytes between LEN and CHK (status + data, or cmd + data)."""

    body: bytes

    @property
    def sw3(self) -> int:
        return self.body[2] if len(self.body) >= 3 else -1

    @property
    def data(self) -> bytes:
        return self.body[3:]


class FrameParser:
    """Frames out of a byte stream, by preamble, length and checksum, never by read boundaries (a
    pty or a USB adapter merges and splits writes at will). Garbage before a preamble, absurd
    lengths and bad checksums are counted in `counters` and skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.counters: Counter[str] = Counter()

    def clear(self) -> int:
        """Drop what is buffered (the start of an answer that will never complete); how many bytes."""
        n = len(self._buf)
        self._buf.clear()
        return n

    def feed(self, data: bytes) -> Iterator[Frame]:
        buf = self._buf
        buf += data
        while True:
            start = buf.find(PREAMBLE)
            if start < 0:
                keep = _partial_preamble(buf)
                if len(buf) > keep:
                    self.counters["garbage_bytes"] += len(buf) - keep
                    del buf[:len(buf) - keep]
                return
            if start:
                self.counters["garbage_bytes"] += start
                del buf[:start]
            if len(buf) < 7:
                return
            length = int.from_bytes(buf[5:7], "big")
            if not 2 <= length <= MAX_LEN:
                self.counters["bad_length"] += 1
                del buf[:1]
                continue
            if len(buf) < 7 + length:
                return
            head_body = bytes(buf[5:7 + length - 1])
            chk = buf[7 + length - 1]
            if checksum(head_body) != chk:
                self.counters["bad_checksum"] += 1
                del buf[:1]  # resynchronise on the next preamble, which may be inside this one
                continue
            del buf[:7 + length]
            self.counters["frames"] += 1
            yield Frame(head_body[2:])


def _partial_preamble(buf: bytearray) -> int:
    """How many trailing bytes of `buf` could be the start of a preamble."""
    for n in range(min(len(PREAMBLE) - 1, len(buf)), 0, -1):
        if bytes(buf[-n:]) == PREAMBLE[:n]:
            return n
    return 0


@dataclass(frozen=True, slots=True)
class Identity:
    """The card's text, in memory only. Personal data: never logged, never stored in clear."""

    name: str = field(repr=False)
    sex: str = field(repr=False)
    nation: str = field(repr=False)
    birth: str = field(repr=False)
    address: str = field(repr=False)
    idno: str = field(repr=False)
    authority: str = field(repr=False)
    valid_from: date | None
    valid_to: date | None          # None: long-term (长期)

    def sealed_to(self, public_key: bytes) -> bytes:
        """The identity as JSON, sealed to `public_key` (X25519): only its private key opens it."""
        doc = {"v": 1, "name": self.name, "sex": self.sex, "nation": self.nation, "birth": self.birth, "address": self.address,
               "idno": self.idno, "authority": self.authority,
               "valid_from": self.valid_from.isoformat() if self.valid_from else None,
               "valid_to": self.valid_to.isoformat() if self.valid_to else None}
        return SealedBox(PublicKey(public_key)).encrypt(json.dumps(doc, ensure_ascii=False).encode())


def _date(text: str, *, field_name: str) -> date | None:
    if text in ("长期", ""):
        return None
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"{field_name} is not a date YYYYMMDD")
    return date(int(text[:4]), int(text[4:6]), int(text[6:]))


def parse_text(block: bytes) -> Identity:
    """The 256-byte text block -> Identity; ValueError (naming the field, never its value) if it is not one."""
    if len(block) != TEXT_BYTES:
        raise ValueError(f"text block of {len(block)} bytes, not {TEXT_BYTES}")
    out: dict[str, str] = {}
    pos = 0
    for name, size in TEXT_FIELDS:
        try:
            out[name] = block[pos:pos + size].decode("utf-16-le").strip(" \x00")
        except UnicodeDecodeError:
            raise ValueError(f"{name} is not UCS-2 text") from None
        pos += size
    idno = out["idno"].upper()
    if len(idno) != 18 or not idno[:17].isdigit() or not (idno[17].isdigit() or idno[17] == "X"):
        raise ValueError("idno is not 17 digits and a check character")
    return Identity(out["name"], out["sex"], out["nation"], out["birth"], out["address"], idno, out["authority"],
                    _date(out["valid_from"], field_name="valid_from"), _date(out["valid_to"], field_name="valid_to"))


def text_block(**fields: str) -> bytes:
    """The inverse of `parse_text` (the emulator's cards): each field UCS-2 LE, space-padded."""
    out = b""
    for name, size in TEXT_FIELDS:
        raw = fields.get(name, "").encode("utf-16-le")
        if len(raw) > size:
            raise ValueError(f"{name} longer than {size // 2} characters")
        out += raw + " ".encode("utf-16-le") * ((size - len(raw)) // 2)
    return out


def parse_base(data: bytes) -> Identity:
    """The data of a "read base information" answer: text length, photo length, text, photo."""
    if len(data) < 4:
        raise ValueError("read answer too short")
    text_len, photo_len = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
    if text_len != TEXT_BYTES or len(data) < 4 + text_len + photo_len:
        raise ValueError("read answer lengths do not add up")
    return parse_text(data[4:4 + text_len])  # the photo after it is neither decoded nor kept


@dataclass(frozen=True, slots=True)
class IdRead:
    """One ID card presented to a GA 467 reader, as it leaves the driver. `idno` is personal data:
    tokenise it at once, never log it. `sealed`: the whole identity sealed to central (register mode)."""

    reader: str
    idno: str = field(repr=False)
    valid_from: date | None
    valid_to: date | None
    t_seen_ns: int
    sealed: bytes | None = field(default=None, repr=False)


def wire_ms(nbytes: int, baud: int) -> float:
    """Time `nbytes` need on an 8N1 line (10 bits a byte)."""
    return nbytes * 10 / baud * 1000


class Ga467Watcher(threading.Thread):
    """One GA 467 module on one serial port; `on_read(IdRead)` per card presented, from this thread.

    `seal_to`: central's registration public key (32 bytes) for a reader in register mode; the
    identity is sealed here and nothing else of it leaves. `on_status(name, state)`: "empty" when the
    module answers (first time or back), "gone" when the port vanished or the module went mute."""

    def __init__(self, port: str, on_read: Callable[[IdRead], object], on_status: Callable[[str, str], object] | None = None,
                 *, baud: int = 115200, seal_to: bytes | None = None, backoff: Backoff | None = None, poll_s: float = POLL_S):
        super().__init__(name=f"ga467:{port}", daemon=True)
        self.port = port
        self.baud = baud
        self._on_read = on_read
        self._on_status = on_status or (lambda name, state: None)
        self._seal_to = seal_to
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=5.0)
        self._poll_s = poll_s
        self._halt = threading.Event()
        self._serial: serial.Serial | None = None
        self.parser = FrameParser()
        self.counters: Counter[str] = Counter()
        self.reconnects = Reconnects()
        self.heartbeat = time.monotonic()
        self.present = False      # a card is in the field (and has been read, or failed for good)
        self.sam_id: str | None = None

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self.join(timeout)

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    # -- the thread -----------------------------------------------------------------------------
    def run(self) -> None:
        while not self._halt.is_set():
            self._beat()
            try:
                port = serial.Serial(self.port, self.baud, timeout=0, write_timeout=1.0, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._gone(f"cannot open ({exc.__class__.__name__})")
                pause(self._halt, self._backoff.next(), self._beat)
                continue
            self._serial = port
            try:
                port.reset_input_buffer()
                self.parser.clear()
                self._serve()
            except (serial.SerialException, OSError) as exc:
                self.counters["port_lost"] += 1
                self._gone(f"port lost ({exc.__class__.__name__})")
            except ReadAborted:
                self.counters["mute"] += 1
                self._gone("module not answering")
            finally:
                self._serial = None
                try:
                    port.close()
                except (serial.SerialException, OSError):
                    pass
            if not self._halt.is_set():
                pause(self._halt, self._backoff.next(), self._beat)

    def _gone(self, detail: str) -> None:
        was = self.reconnects.is_up
        self.reconnects.failed(detail)
        self.present = False
        if was:
            log.warning("ID-card reader %s gone (%s)", self.port, detail)
            self._on_status(self.port, "gone")

    def _serve(self) -> None:
        unanswered = 0
        while not self._halt.is_set():
            self._beat()
            try:
                found = self.find()
                unanswered = 0
            except ReadAborted as exc:
                unanswered += 1
                if not isinstance(exc, BadFrame):
                    self.counters["timeouts"] += 1
                if unanswered >= MUTE_AFTER:
                    raise
                continue
            if not self.reconnects.is_up:
                self.reconnects.up("answering")
                self._backoff.reset()
                log.info("ID-card reader %s answering", self.port)
                self._on_status(self.port, "empty")
            if not found:
                self.present = False
            elif not self.present:
                self.present = self._read_card(time.monotonic_ns())
            self._halt.wait(self._poll_s)

    def _read_card(self, seen_ns: int) -> bool:
        """Select and read the card in the field: True once it is dealt with (read, or unreadable
        for good); False to try again on the next poll (pulled mid-read, a transient status)."""
        try:
            self.exchange(SELECT, expect=OK)
            frame = self.exchange(READ_BASE, expect=OK)
        except SamError as exc:
            self.counters[f"status.{exc.name}"] += 1
            if exc.name in ("read_failed", "select_failed", "no_card"):
                self.counters["pulled_mid_read"] += 1
                log.info("ID card on %s left before it was read (%s)", self.port, exc.name)
            else:
                log.warning("ID-card reader %s refused the read: %s", self.port, exc.name)
            return False
        except BadFrame:
            log.info("ID-card reader %s: an answer with a bad checksum; reading again", self.port)
            return False
        except ReadAborted:
            self.counters["pulled_mid_read"] += 1
            log.info("ID card on %s: the answer did not complete", self.port)
            return False
        try:
            ident = parse_base(frame.data)
        except ValueError as exc:
            self.counters["bad_card_text"] += 1
            log.warning("unusable ID card text on %s: %s", self.port, exc)
            return True
        sealed = ident.sealed_to(self._seal_to) if self._seal_to is not None else None
        self.counters["reads"] += 1
        self._on_read(IdRead(self.port, ident.idno, ident.valid_from, ident.valid_to, seen_ns, sealed))
        return True

    # -- exchanges (also what diag and the bench call) -----------------------------------------
    def find(self) -> bool:
        """Is a card in the field? ReadAborted when the module does not answer."""
        try:
            self.exchange(FIND, expect=FIND_OK)
        except SamError as exc:
            if exc.name != "no_card":
                self.counters[f"status.{exc.name}"] += 1
            return False
        return True

    def exchange(self, cmd: tuple[int, int], *, expect: int, timeout: float | None = None) -> Frame:
        """Send one command and wait for its answer: the frame when SW3 is `expect`, SamError for any
        other status, ReadAborted when no whole answer came within the wire time plus PROCESS_S."""
        port = self._serial
        if port is None:
            raise ReadAborted("port not open")
        answer_bytes = 7 + 3 + 4 + TEXT_BYTES + PHOTO_BYTES + 1 if cmd == READ_BASE else 64
        deadline = time.monotonic() + (timeout if timeout is not None else wire_ms(answer_bytes, self.baud) / 1000 * 1.5 + PROCESS_S)
        before = self.parser.counters["bad_checksum"]
        port.write(command(cmd))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.counters["incomplete_bytes"] += self.parser.clear()  # it would swallow the next answer
                raise ReadAborted("no answer")
            port.timeout = min(left, 0.05)
            data = port.read(port.in_waiting or 1)
            for frame in self.parser.feed(data):
                if len(frame.body) < 3:
                    continue
                if frame.sw3 != expect:
                    raise SamError(frame.sw3)
                return frame
            if self.parser.counters["bad_checksum"] > before:
                self.counters["bad_checksum"] += 1
                self.counters["incomplete_bytes"] += self.parser.clear()
                raise BadFrame("bad checksum")

    @contextmanager
    def session(self) -> Iterator[Ga467Watcher]:
        """The port opened for direct exchanges, without the thread (diag, the bench): raises
        serial.SerialException when it cannot be opened (absent, or held by the running daemon)."""
        port = serial.Serial(self.port, self.baud, timeout=0, write_timeout=1.0, exclusive=True)
        self._serial = port
        try:
            port.reset_input_buffer()
            self.parser.clear()
            yield self
        finally:
            self._serial = None
            port.close()

    def read_once(self) -> Identity | None:
        """Find, select and read: the identity in the field, or None when there is no card."""
        if not self.find():
            return None
        self.exchange(SELECT, expect=OK)
        return parse_base(self.exchange(READ_BASE, expect=OK).data)

    def probe(self) -> tuple[str, bool]:
        """For diag: the SAM module's id (12 FF) and whether a card is in the field. Raises
        serial.SerialException (no port), ReadAborted (no answer) or SamError (the module's refusal)."""
        with self.session():
            sam = self.exchange(SAM_ID, expect=OK).data.hex().upper()
            return sam, self.find()


if TYPE_CHECKING:  # mypy holds the reader to the port it implements
    _card_source: type[CardSource] = Ga467Watcher
