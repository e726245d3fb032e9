"""PC/SC card readers through pcscd (pyscard's scard layer).

One thread waits in SCardGetStatusChange on every configured reader at once (plus the PnP
pseudo-reader for hot-plug). A card that turns PRESENT is read once: the ATR says what it is,
one APDU fetches its UID, and the read goes to `on_read` with the monotonic time the thread saw
PRESENT. A card left on the reader is not read again until it has left the field.

Failures and their recovery (see notes/rigs.md): a card pulled mid-read ends that read, counted;
a reader that vanishes is dropped and picked up again when the PnP notification lists it; pcscd
going away (SCARD_F_COMM_ERROR, then SCARD_E_NO_SERVICE) releases the context and re-establishes
it with jittered backoff, with every reader back to UNAWARE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smartcard import scard

from drivers.backoff import Backoff, Reconnects, pause
from drivers.ports import CardSource

log = logging.getLogger(__name__)

PNP = "\\\\?PnP?\\Notification"
WAIT_MS = 1000
RETRY_MS = 100        # a read that failed transiently is tried again this soon ...
RETRY_FOR_S = 1.5     # ... while the card stays on the reader, for this long

ATR_IDCARD_PREFIX = bytes.fromhex("3B88800 1D10386".replace(" ", ""))
ATR_PART3_PREFIX = bytes.fromhex("3B8F8001804F0CA0000003 06".replace(" ", ""))
APDU_IDCARD_UID = [0x00, 0x36, 0x00, 0x00, 0x08]
APDU_GET_UID = [0xFF, 0xCA, 0x00, 0x00, 0x00]


def _hr(value: int) -> int:
    return value & 0xFFFFFFFF


OK = 0
E_TIMEOUT = _hr(scard.SCARD_E_TIMEOUT)
E_CANCELLED = _hr(scard.SCARD_E_CANCELLED)
E_NO_READERS = _hr(scard.SCARD_E_NO_READERS_AVAILABLE)
E_UNKNOWN_READER = _hr(scard.SCARD_E_UNKNOWN_READER)
# pcscd still held the previous card's state (a quick swap, a reset): the card may well be there
TRANSIENT = {_hr(scard.SCARD_E_NOT_TRANSACTED), _hr(scard.SCARD_W_RESET_CARD), _hr(scard.SCARD_W_UNPOWERED_CARD),
             _hr(scard.SCARD_E_SHARING_VIOLATION), _hr(scard.SCARD_W_UNRESPONSIVE_CARD)}
SERVICE_GONE = {_hr(scard.SCARD_E_NO_SERVICE), _hr(scard.SCARD_F_COMM_ERROR), _hr(scard.SCARD_E_SERVICE_STOPPED),
                _hr(scard.SCARD_E_INVALID_HANDLE), _hr(scard.SCARD_F_INTERNAL_ERROR)}


@dataclass(frozen=True, slots=True)
class CardRead:
    """One presentation of a card. `uid` is personal data: tokenise it at once, never log it."""

    reader: str
    kind: str                       # "idcard" | "ic"
    uid: str = field(repr=False)    # upper-case hex
    t_seen_ns: int                  # monotonic time the reader thread saw PRESENT


def classify(atr: bytes) -> tuple[str, list[int], bool]:
    """(kind, UID APDU, known ATR) for a card's ATR."""
    if atr.startswith(ATR_IDCARD_PREFIX) or (atr.startswith(ATR_PART3_PREFIX) and len(atr) > 12 and atr[12] == 0x07):
        return "idcard", APDU_IDCARD_UID, True
    return "ic", APDU_GET_UID, atr.startswith(ATR_PART3_PREFIX)


def parse_uid(kind: str, response: list[int]) -> str:
    """The UID from a response APDU; ValueError for error status words, short or zero answers."""
    if len(response) < 2:
        raise ValueError("short response")
    sw = (response[-2] << 8) | response[-1]
    if sw != 0x9000:
        raise ValueError(f"status word {sw:04X}")
    uid = bytes(response[:-2])
    if kind == "idcard" and len(uid) != 8:
        raise ValueError(f"ID card UID of {len(uid)} bytes")
    if len(uid) not in (4, 7, 8, 10):
        raise ValueError(f"UID of {len(uid)} bytes")
    if not any(uid):
        raise ValueError("all-zero UID")
    return uid.hex().upper()


class PcscWatcher(threading.Thread):
    """Watches the readers whose names contain one of `matches`; calls `on_read` per presentation."""

    def __init__(self, matches: list[str], on_read: Callable[[CardRead], object],
                 on_status: Callable[[str, str], object] | None = None, *, backoff: Backoff | None = None):
        """`on_status(name, state)` from this thread (must not block): ("pcscd", "up" | "down"), and per
        reader "card" | "empty" | "gone"."""
        super().__init__(name="pcsc", daemon=True)
        self.matches = matches
        self._on_read = on_read
        self._on_status = on_status or (lambda reader, state: None)
        self._stopping = threading.Event()
        self._ctx: int | None = None
        self._ctx_lock = threading.Lock()
        self.readers: dict[str, bool] = {}  # reader name -> card present
        self.counters: Counter[str] = Counter()
        self.heartbeat = time.monotonic()
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=5.0)
        self.reconnects = Reconnects()  # pcscd itself: attempts to establish a context while it is away

    @property
    def service_up(self) -> bool:
        return self.reconnects.is_up

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._ctx_lock:
            if self._ctx is not None:
                scard.SCardCancel(self._ctx)
        self.join(timeout)

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _wanted(self, name: str) -> bool:
        return any(m in name for m in self.matches)

    # -- the thread -----------------------------------------------------------------------------
    def run(self) -> None:
        while not self._stopping.is_set():
            self.heartbeat = time.monotonic()
            hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if _hr(hr) != OK:
                self._service(False, f"no pcscd ({_hr(hr):08X})")
                pause(self._stopping, self._backoff.next(), self._beat)
                continue
            with self._ctx_lock:
                self._ctx = ctx
            try:
                self._watch(ctx)
            finally:
                with self._ctx_lock:
                    self._ctx = None
                scard.SCardReleaseContext(ctx)
            if not self._stopping.is_set():
                self.counters["context_lost"] += 1
                self._service(False, "context lost")
                pause(self._stopping, self._backoff.next(), self._beat)

    def _service(self, up: bool, detail: str) -> None:
        """Every failed attempt is counted; a change is logged and reported once."""
        was = self.reconnects.snapshot().up
        if up:
            self.reconnects.up(detail or "up")
        else:
            self.reconnects.failed(detail)
        if was is not up:
            if up:
                log.info("pcscd reachable")
            else:
                log.warning("pcscd unreachable (%s)", detail)
            self._on_status("pcscd", "up" if up else "down")

    def _list(self, ctx: int) -> list[str] | None:
        hr, names = scard.SCardListReaders(ctx, [])
        if _hr(hr) in (OK, E_NO_READERS):
            return [n for n in (names or []) if self._wanted(n)]
        return None

    def _watch(self, ctx: int) -> None:
        """Serve one pcscd context until it dies or we are stopped."""
        names = self._list(ctx)
        if names is None:
            return
        self._service(True, "")
        self._backoff.reset()
        states: dict[str, int] = dict.fromkeys(names, scard.SCARD_STATE_UNAWARE)
        pnp_state = scard.SCARD_STATE_UNAWARE
        self._publish_readers(states)
        retry: dict[str, tuple[bytes, int, float]] = {}  # reader -> (ATR, first seen ns, give up at)
        while not self._stopping.is_set():
            self.heartbeat = time.monotonic()
            for name, (atr, first_ns, give_up) in list(retry.items()):
                if not self.readers.get(name) or time.monotonic() > give_up or self._read(ctx, name, atr, first_ns):
                    del retry[name]
            query = [(PNP, pnp_state), *list(states.items())]
            hr, result = scard.SCardGetStatusChange(ctx, RETRY_MS if retry else WAIT_MS, query)
            seen_ns = time.monotonic_ns()
            code = _hr(hr)
            if code in (E_TIMEOUT, E_CANCELLED):
                continue
            if code in SERVICE_GONE:
                self._service(False, f"hresult {code:08X}")
                return
            if code == E_UNKNOWN_READER:
                code = OK
                result = []
                self.counters["reader_lost"] += 1
            if code != OK:
                self.counters["status_error"] += 1
                log.warning("SCardGetStatusChange failed: %08X", code)
                return
            relist = False
            for name, event, atr in result:
                if name == PNP:
                    if event & scard.SCARD_STATE_CHANGED:
                        relist = True
                    pnp_state = event & ~scard.SCARD_STATE_CHANGED
                    continue
                if event & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE):
                    relist = True
                    continue
                prev = states.get(name, scard.SCARD_STATE_UNAWARE)
                states[name] = event & ~scard.SCARD_STATE_CHANGED
                present = bool(event & scard.SCARD_STATE_PRESENT) and not event & scard.SCARD_STATE_MUTE
                was_present = bool(prev & scard.SCARD_STATE_PRESENT)
                # the high word counts insertions/removals: +2 while we looked away = a new card
                replaced = was_present and present and ((event >> 16) - (prev >> 16)) & 0xFFFF >= 2
                if present != self.readers.get(name):
                    self.readers[name] = present
                    self._on_status(name, "card" if present else "empty")
                if present and (not was_present or replaced) and self._read(ctx, name, bytes(atr), seen_ns) is None:
                    retry[name] = (bytes(atr), seen_ns, time.monotonic() + RETRY_FOR_S)
            if relist:
                names = self._list(ctx)
                if names is None:
                    return
                states = {n: states.get(n, scard.SCARD_STATE_UNAWARE) for n in names}
                self._publish_readers(states)

    def _publish_readers(self, states: dict[str, int]) -> None:
        for gone in set(self.readers) - set(states):
            del self.readers[gone]
            self._on_status(gone, "gone")
            log.warning("reader gone: %s", gone)
        for name in states:
            if name not in self.readers:
                self.readers[name] = False
                self._on_status(name, "empty")
                log.info("reader found: %s", name)

    def _read(self, ctx: int, name: str, atr: bytes, seen_ns: int) -> bool | None:
        """Read one card: True when read, False when it cannot be, None when worth another try."""
        kind, apdu, known = classify(atr)
        if not known:
            self.counters["unknown_atr"] += 1
            log.info("unknown ATR %s on %s; trying the generic UID command", atr.hex().upper(), name)
        hr, card, proto = scard.SCardConnect(ctx, name, scard.SCARD_SHARE_SHARED,
                                             scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        if _hr(hr) != OK:
            self.counters["connect_failed"] += 1
            log.info("card on %s left before it could be read (%08X)", name, _hr(hr))
            return None if _hr(hr) in TRANSIENT else False
        try:
            hr, response = scard.SCardTransmit(card, proto, apdu)
            if _hr(hr) != OK:
                self.counters["transmit_failed"] += 1
                log.info("card on %s left mid-read (%08X)", name, _hr(hr))
                return None if _hr(hr) in TRANSIENT else False
            try:
                uid = parse_uid(kind, response)
            except ValueError as exc:
                self.counters["bad_response"] += 1
                log.warning("unusable answer from card on %s: %s", name, exc)
                return False
            self.counters["reads"] += 1
            self._on_read(CardRead(name, kind, uid, seen_ns))  # before the disconnect: the door need not wait for it
            return True
        finally:
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)


if TYPE_CHECKING:  # mypy holds the watcher to the port it implements
    _card_source: type[CardSource] = PcscWatcher
