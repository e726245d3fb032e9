"""Keyed hashing of credentials.

The gateway never stores a card UID or an ID number: it stores `HMAC-SHA256(site_key, kind:value)`.
The central server holds the same site key and computes the same tokens when it builds whitelists,
so a list can be checked without either side shipping the numbers. Logs and events carry only the
first 12 hex digits of a token, enough to correlate and too short to be a lookup key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from edge.errors import SetupError

KINDS = ("idcard", "ic", "idno", "plate", "face")
MIN_KEY_BYTES = 32
PERSON_REF = re.compile(r"^p-[0-9a-f]{16}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class SiteKeyError(SetupError):
    """The site key file is missing or unusable."""


def normalise(kind: str, value: str) -> str:
    """The canonical form hashed for a credential, so that "04 a1 b2" and "04A1B2" agree."""
    if kind not in KINDS:
        raise ValueError(f"unknown credential kind {kind!r}; use one of {', '.join(KINDS)}")
    v = value.strip()
    if kind in ("idcard", "ic"):
        v = re.sub(r"[\s:-]", "", v).upper()
        if not v or not _HEX.match(v) or len(v) % 2:
            raise ValueError("a card UID must be an even number of hex digits")
    elif kind == "idno":
        v = v.upper()
        if not re.fullmatch(r"\d{17}[\dX]", v):
            raise ValueError("an ID number has 17 digits and a final digit or X")
    elif kind == "plate":
        v = re.sub(r"[\s.·-]", "", v).upper()
    return v


class Tokenizer:
    """Turns (kind, value) into the stored token; holds the site key and nothing else."""

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise SiteKeyError(f"site key is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed",
                               "make a new one with `door-edge keygen FILE` and give central the same key")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def token(self, kind: str, value: str) -> str:
        mac = self._mac.copy()
        mac.update(f"{kind}:{normalise(kind, value)}".encode())
        return mac.hexdigest()

    def person_ref(self, person: str) -> str:
        """The opaque reference a list row, a face template and an event know a person by: `p-` and 16
        hex digits of HMAC(site_key, "person:" + id). Central keeps the map back to the person; the
        gateway never holds the name. A value that already is a reference is kept as it is."""
        p = person.strip()
        if PERSON_REF.match(p):
            return p
        mac = self._mac.copy()
        mac.update(f"person:{p}".encode())
        return "p-" + mac.hexdigest()[:16]

    def token_raw(self, kind: str, canonical: str) -> str:
        """Hot path for drivers that already produce the canonical form (upper-case hex UIDs)."""
        mac = self._mac.copy()
        mac.update(f"{kind}:{canonical}".encode())
        return mac.hexdigest()


def short(token: str) -> str:
    """The part of a token that may appear in logs and events."""
    return token[:12]


def load_key(path: Path) -> bytes:
    """Read a site key file: raw bytes, or hex text (64+ digits)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SiteKeyError(f"site key file {path} not found",
                           f"create one with `door-edge keygen {path}` and give the central server the same key") from None
    except PermissionError:
        raise SiteKeyError(f"site key file {path} is not readable by this user",
                           "use LoadCredential= in the unit, or fix the file's owner") from None
    text = data.strip()
    if len(text) >= 2 * MIN_KEY_BYTES and _HEX.match(text.decode("ascii", "replace")):
        return bytes.fromhex(text.decode())
    if len(data) < MIN_KEY_BYTES:
        raise SiteKeyError(f"site key file {path} holds {len(data)} bytes; at least {MIN_KEY_BYTES} are needed",
                           "use the site's key file as central has it (`door-edge keygen` makes one for a new site)")
    return data


def generate_key(path: Path) -> None:
    """Write a new random site key as hex, readable by the owner only; never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
