"""A virtual contactless card for vsmartcard's vpcd reader driver inside pcscd.

The card is a TCP client of vpcd's port: connecting is putting the card on the reader, closing is
taking it off. Each message is a 2-byte big-endian length and a payload; a 1-byte payload is a
control code (0 off, 1 on, 2 reset, 4 ATR please), anything longer is a command APDU. Behind vpcd
there is no reader firmware, so the card itself answers the PC/SC pseudo-APDU `FF CA` (get UID).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import weakref
from dataclasses import dataclass, field
from typing import ClassVar

VPCD_PORTS = (35963, 35964)  # "Virtual PCD 00 00", "Virtual PCD 00 01"

ATR_IDCARD = bytes.fromhex("3B8880 01 D1038605 00808000 58".replace(" ", ""))
ATR_MIFARE_1K = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
ATR_UNKNOWN = bytes.fromhex("3B021450")

GET_UID = bytes.fromhex("FFCA000000")
IDCARD_UID = bytes.fromhex("0036000008")


@dataclass
class CardProfile:
    """What the card is and how it misbehaves (for the garbage tests)."""

    atr: bytes
    uid: bytes
    kind: str                   # "idcard" | "mifare" | "other"
    fault: str | None = None    # None | "pull" (leave mid-read) | "garbage" | "short" | "sw_error"
    extra: dict = field(default_factory=dict)

    @classmethod
    def idcard(cls, uid_hex: str, **kw) -> CardProfile:
        return cls(ATR_IDCARD, bytes.fromhex(uid_hex), "idcard", **kw)

    @classmethod
    def mifare(cls, uid_hex: str, **kw) -> CardProfile:
        return cls(ATR_MIFARE_1K, bytes.fromhex(uid_hex), "mifare", **kw)

    def answer(self, apdu: bytes) -> bytes:
        if self.fault == "garbage":
            return os.urandom(3)
        if self.fault == "short":
            return b"\x90"
        if self.fault == "sw_error":
            return b"\x6a\x82"
        if self.kind == "idcard":
            if apdu[:5] == IDCARD_UID:
                return self.uid + b"\x90\x00"
            if apdu[:2] == GET_UID[:2]:
                return b"\x00\x00\x00\x00\x90\x00"  # the PUPI of an ID card is zero
        elif self.kind == "mifare" and apdu[:2] == GET_UID[:2]:
            return self.uid + b"\x90\x00"
        return b"\x6d\x00"  # instruction not supported


class VirtualCard:
    """Put a card on a vpcd reader (`insert`) and take it off (`remove`)."""

    # every card lying on a reader now: a test that fails before taking its card away would leave
    # it there for every later test (vpcd serves one card per reader), so the tests' teardown takes
    # them all off (`remove_all`)
    _on_readers: ClassVar[weakref.WeakSet[VirtualCard]] = weakref.WeakSet()

    @classmethod
    def remove_all(cls) -> int:
        """Take every card still on a reader off it; returns how many there were."""
        left = list(cls._on_readers)
        for card in left:
            card.remove()
        return len(left)

    def __init__(self, profile: CardProfile, *, port: int = VPCD_PORTS[0], host: str = "127.0.0.1"):
        self.profile = profile
        self.port = port
        self.host = host
        self.apdus = 0
        self.atr_requests = 0  # one per pcscd presence poll while the card lies on the reader
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def insert(self, timeout: float = 3.0) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="vcard", daemon=True)
        self._thread.start()
        VirtualCard._on_readers.add(self)

    def remove(self) -> None:
        VirtualCard._on_readers.discard(self)
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    @property
    def inserted(self) -> bool:
        return self._sock is not None

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # re-armed before every recv
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                head = self._recv_exact(sock, 2)
                if head is None:
                    return
                payload = self._recv_exact(sock, struct.unpack(">H", head)[0])
                if payload is None:
                    return
                if len(payload) == 1:
                    if payload[0] == 4:
                        self.atr_requests += 1
                        self._send(sock, self.profile.atr)
                    continue  # power off/on/reset need no answer
                self.apdus += 1
                if self.profile.fault == "pull":
                    sock.close()  # the card leaves the field in the middle of the read
                    self._sock = None
                    return
                self._send(sock, self.profile.answer(payload))
        except OSError:
            return

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        sock.sendall(struct.pack(">H", len(data)) + data)
