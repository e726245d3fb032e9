"""Visitor passes: a compact token central signs and the gateway verifies with no network.

A pass is shown as a QR code (a phone screen, a printout) to a door camera. It must be small, so
that the code is coarse enough for a 640x480 camera to read at arm's length: the body is a packed
binary record, not JSON, and the text is base32 (QR alphanumeric mode, 5.5 bits a character):

    DGP1:<base32(body || ed25519(body))>

    body = version (1) | kid (8) | pass id (8) | not_before (u32, unix s) | not_after (u32)
           | uses (u16) | host ref (8: the 16 hex digits of `p-...`) | site (u8 length + UTF-8)
           | door count (u8) then each door (u8 length + UTF-8)

The signature is central's list-signing key (the gateways already trust it). The body names the
site, so a pass of one community opens nothing in another; it names no person, only the host's
opaque reference. What a pass cannot stop: a photo of the code forwarded to someone else opens the
door within the window and the uses left, which is why windows are short by default.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature

from protocol import Keyring, Rejected, Signer

PREFIX = "DGP1:"
VERSION = 1
SIG_BYTES = 64
_HEAD = struct.Struct(">B8s8sIIH8s")
_MAX_DOORS = 32


@dataclass(frozen=True, slots=True)
class VisitorPass:
    id: str                    # 16 hex digits: the pass's own id (journaled, revoked by)
    site: str                  # the community (gateway.site / central.site)
    doors: tuple[str, ...]     # the doors it opens
    not_before: int            # unix seconds
    not_after: int             # unix seconds (the window's end: refused from this second on)
    uses: int                  # how many times it may open a door
    host: str                  # the host's opaque person reference, p- + 16 hex

    def __post_init__(self) -> None:
        if not (len(self.id) == 16 and all(c in "0123456789abcdef" for c in self.id)):
            raise ValueError("a pass id is 16 lower-case hex digits")
        if not (self.host.startswith("p-") and len(self.host) == 18):
            raise ValueError("a pass's host is an opaque person reference (p- and 16 hex digits)")
        if not self.doors or len(self.doors) > _MAX_DOORS:
            raise ValueError(f"a pass opens 1 to {_MAX_DOORS} doors")
        if not 1 <= self.uses <= 0xFFFF:
            raise ValueError("a pass has 1 to 65535 uses")
        if not 0 <= self.not_before < self.not_after <= 0xFFFFFFFF:
            raise ValueError("a pass's window must end after it begins")


def new_id() -> str:
    return secrets.token_hex(8)


def _text(s: str) -> bytes:
    raw = s.encode()
    if not 1 <= len(raw) <= 255:
        raise ValueError(f"{s[:16]!r}: 1 to 255 bytes")
    return bytes([len(raw)]) + raw


def pack(p: VisitorPass, kid: str) -> bytes:
    """The signed body (no signature)."""
    head = _HEAD.pack(VERSION, bytes.fromhex(kid), bytes.fromhex(p.id), p.not_before, p.not_after, p.uses, bytes.fromhex(p.host[2:]))
    return head + _text(p.site) + bytes([len(p.doors)]) + b"".join(_text(d) for d in p.doors)


def unpack(body: bytes) -> tuple[str, VisitorPass]:
    """(kid, pass) from a body; ValueError if it is not one."""
    if len(body) < _HEAD.size + 3:
        raise ValueError("too short")
    version, kid, pid, nb, na, uses, host = _HEAD.unpack_from(body)
    if version != VERSION:
        raise ValueError(f"version {version}")
    at = _HEAD.size

    def take() -> str:
        nonlocal at
        size = body[at]
        text = body[at + 1:at + 1 + size]
        if size == 0 or len(text) != size:
            raise ValueError("truncated")
        at += 1 + size
        return text.decode()  # UnicodeDecodeError is a ValueError

    try:
        site = take()
        count, at = body[at], at + 1
        if not 1 <= count <= _MAX_DOORS:
            raise ValueError("door count")
        doors = tuple(take() for _ in range(count))
    except IndexError:
        raise ValueError("truncated") from None
    if at != len(body):
        raise ValueError("trailing bytes")
    return kid.hex(), VisitorPass(pid.hex(), site, doors, nb, na, uses, "p-" + host.hex())


def issue(signer: Signer, p: VisitorPass) -> str:
    """The text of the QR code."""
    body = pack(p, signer.kid)
    return PREFIX + base64.b32encode(body + signer.sign(body)).decode().rstrip("=")


def read(text: str, keyring: Keyring, site: str) -> VisitorPass:
    """Verify a pass's signature and site (not its window, uses or revocation: the gateway's state
    decides those). Rejected with `pass_malformed`, `pass_bad_signature` (an unknown key too) or
    `pass_other_site`; the text itself is never echoed (it is a bearer credential)."""
    if not text.startswith(PREFIX):
        raise Rejected("pass_malformed", "not a visitor pass")
    b32 = text[len(PREFIX):].strip()
    try:
        raw = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    except (binascii.Error, ValueError):
        raise Rejected("pass_malformed", "not base32") from None
    body, sig = raw[:-SIG_BYTES], raw[-SIG_BYTES:]
    try:
        kid, p = unpack(body)
    except (ValueError, struct.error):
        raise Rejected("pass_malformed", "not a pass body") from None
    key = keyring.keys.get(kid)
    if key is None:
        raise Rejected("pass_bad_signature", f"unknown key {kid}")
    try:
        key.verify(sig, body)
    except InvalidSignature:
        raise Rejected("pass_bad_signature", f"kid {kid}") from None
    if p.site != site:
        raise Rejected("pass_other_site", "the pass names another site")
    return p
