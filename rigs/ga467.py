"""A virtual GA 467 ID-card reader on the far end of a pty, holding fictitious identities.

It answers the commands the driver sends (reset, SAM status and id, find, select, read base
information) with real frames and real checksums (drivers.sam_ga467's own framing), and can be
made to misbehave as readers do in the field: a card pulled between select and read (`pull_mid_read`:
half an answer, then silence, the card gone), answers with a wrong checksum (`corrupt`), garbage
on the line (`inject`), a module that stops answering (`mute`). `pace` writes answers no faster than
the baud rate allows, so a benchmark sees the line time a real module needs.

The people here do not exist: names, addresses and ID numbers are made up (the numbers carry a valid
ISO 7064 check digit so that they look like the real thing to every check).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import serial

from drivers import sam_ga467 as ga
from rigs.boards import SerialEmulator


def idno(first17: str) -> str:
    """An ID number with its ISO 7064 MOD 11-2 check character."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(c) * w for c, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


@dataclass(frozen=True)
class FakeId:
    name: str
    idno: str
    valid_to: str = "长期"          # YYYYMMDD or 长期
    valid_from: str = "20200101"
    sex: str = "1"
    nation: str = "01"
    birth: str = "19900307"
    address: str = "北京市东城区示例街道1号"
    authority: str = "北京市公安局东城分局"

    def text(self) -> bytes:
        return ga.text_block(name=self.name, sex=self.sex, nation=self.nation, birth=self.birth, address=self.address,
                             idno=self.idno, authority=self.authority, valid_from=self.valid_from, valid_to=self.valid_to)


# fictitious people: Wang Fang is on the rig's residents list (by ID number), Chen Jing is a new
# tenant who registers, Zhao Lei carries a card that expired.
WANG_FANG = FakeId("王芳", "110101199003074514")
CHEN_JING = FakeId("陈静", idno("44030519950612002"), birth="19950612", sex="2", valid_to="20351231",
                   address="广东省深圳市南山区示例路88号")
ZHAO_LEI = FakeId("赵磊", idno("32010219800101003"), birth="19800101", valid_from="20040101", valid_to="20240101")


class Ga467Emulator(SerialEmulator):
    """The module at the far end of `path` (a pty's device end); reopens it if the pty comes back."""

    def __init__(self, path: Path, *, baud: int = 115200, pace: bool = False):
        super().__init__(path, baud, "ga467-emulator")
        self.pace = pace
        self.card: FakeId | None = None
        self.selected = False
        self.pull_mid_read = False   # the next read: half an answer, then the card is gone
        self.corrupt = 0             # this many answers go out with a wrong checksum
        self.mute = False
        self.commands: Counter[str] = Counter()
        self.empty_finds = 0         # "find card" answered "no card": the reader has seen the field empty
        self.parser = ga.FrameParser()

    def present(self, card: FakeId | None) -> None:
        """Lay a card on the reader (or take it away with None)."""
        self.card = card
        self.selected = False

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Wait until the emulator holds its end of the line (it opens it from its own thread)."""
        deadline = time.monotonic() + timeout
        while self._port is None and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._port is not None

    def take_away(self, timeout: float = 5.0) -> None:
        """Take the card away and wait until the reader has looked at the empty field (as a person
        does before laying down the next card), so that the next card is a new presentation."""
        self.present(None)
        seen = self.empty_finds
        deadline = time.monotonic() + timeout
        while self.empty_finds <= seen and time.monotonic() < deadline:
            time.sleep(0.01)

    def _feed(self, data: bytes, t_ns: int, port: serial.Serial) -> None:
        for frame in self.parser.feed(data):
            if self.pace:  # a real line delivers the command's last byte only after its wire time
                due = t_ns / 1e9 + ga.wire_ms(len(frame.body) + 8, self.baud) / 1000
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
            self._answer(port, frame.body)

    def _answer(self, port: serial.Serial, body: bytes) -> None:
        cmd = (body[0], body[1]) if len(body) >= 2 else (0, 0)
        self.commands[f"{cmd[0]:02X}{cmd[1]:02X}"] += 1
        if self.mute:
            return
        out: bytes
        if cmd == ga.RESET or cmd == ga.SAM_STATUS:
            out = ga.answer(ga.OK)
        elif cmd == ga.SAM_ID:
            out = ga.answer(ga.OK, bytes.fromhex("0501000000000000201812310000000000"))
        elif cmd == ga.FIND:
            out = ga.answer(ga.FIND_OK, b"\x00\x00\x00\x00") if self.card is not None else ga.answer(0x80)
            self.empty_finds += self.card is None
        elif cmd == ga.SELECT:
            self.selected = self.card is not None
            out = ga.answer(ga.OK, b"\x00\x00\x00\x00\x00\x00\x00\x00") if self.selected else ga.answer(0x81)
        elif cmd == ga.READ_BASE:
            if self.card is None or not self.selected:
                out = ga.answer(0x41)
            else:
                data = (ga.TEXT_BYTES.to_bytes(2, "big") + ga.PHOTO_BYTES.to_bytes(2, "big") + self.card.text()
                        + bytes(range(256)) * (ga.PHOTO_BYTES // 256))  # a stand-in photo: never decoded
                out = ga.answer(ga.OK, data)
                if self.pull_mid_read:
                    self.pull_mid_read = False
                    self.present(None)
                    self._write(port, out[:len(out) // 2])  # the card left the field mid-answer
                    return
        else:
            out = ga.answer(0x21)
        if self.corrupt:
            self.corrupt -= 1
            out = out[:-1] + bytes([out[-1] ^ 0x5A])
        self._write(port, out)

    def _write(self, port: serial.Serial, out: bytes) -> None:
        if not self.pace:
            with self._lock:
                port.write(out)
            return
        start = time.monotonic()
        for i in range(0, len(out), 64):  # at the line's speed, as a real module's UART sends it
            with self._lock:
                port.write(out[i:i + 64])
            due = start + ga.wire_ms(min(i + 64, len(out)), self.baud) / 1000
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)

