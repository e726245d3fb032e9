"""Chinese plate formats (GA 36-2018): the character set the recogniser emits and the check that a
string can be a real plate.

- Ordinary (blue, yellow, white, black): a province character, a letter (the issuing city), a dot,
  then 5 characters from letters (no I or O) and digits; the last may be 学 (driving school), 警
  (police), 挂 (trailer), 港/澳 (Hong Kong/Macau cross-border).
- New energy (green, 8 characters): province, letter, then 6: a small car has D (electric) or F
  (hybrid) first, then a letter or digit, then 4 digits; a large vehicle has 5 digits, then D or F.
"""

from __future__ import annotations

import re

PROVINCES = "京沪津渝冀晋蒙辽吉黑苏浙皖闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O: they would read as 1 and 0
DIGITS = "0123456789"
SPECIAL = "学警挂港澳"
CHARSET = PROVINCES + LETTERS + DIGITS + SPECIAL  # CTC class i+1 is CHARSET[i]; class 0 is the blank

_AD = f"[{LETTERS}{DIGITS}]"
_CITY = f"[{LETTERS}O]"  # the issuing code may be O (police: 粤O, 京O); the recogniser reads it as 0
_ORDINARY = re.compile(f"^[{PROVINCES}]{_CITY}{_AD}{{4}}(?:{_AD}|[{SPECIAL}])$")
_NEV_SMALL = re.compile(f"^[{PROVINCES}]{_CITY}[DF]{_AD}[{DIGITS}]{{4}}$")
_NEV_LARGE = re.compile(f"^[{PROVINCES}]{_CITY}[{DIGITS}]{{5}}[DF]$")


# the same formats as one set of allowed characters per position, for a decoder that only follows
# strings that can still become a plate (`could_be`)
_AD_SET = frozenset(LETTERS + DIGITS)
_POSITIONS = (
    [frozenset(PROVINCES), frozenset(LETTERS + "O")] + [_AD_SET] * 4 + [_AD_SET | frozenset(SPECIAL)],
    [frozenset(PROVINCES), frozenset(LETTERS + "O"), frozenset("DF"), _AD_SET] + [frozenset(DIGITS)] * 4,
    [frozenset(PROVINCES), frozenset(LETTERS + "O")] + [frozenset(DIGITS)] * 5 + [frozenset("DF")],
)


def could_be(prefix: str) -> bool:
    """True when `prefix` (recogniser spelling: a 0 second is an O) can still grow into a plate."""
    prefix = normalise(prefix)
    return any(len(prefix) <= len(f) and all(c in allowed for c, allowed in zip(prefix, f)) for f in _POSITIONS)


def normalise(read: str) -> str:
    """A recogniser's string in plate spelling: 0 and O are one glyph on a plate, and only the
    issuing code (the second character) can be the letter O."""
    return read[:1] + "O" + read[2:] if read[1:2] == "0" else read


def is_valid(plate: str) -> bool:
    """True when `plate` (no dot, no spaces) has the shape of a real plate."""
    if len(plate) == 7:
        return bool(_ORDINARY.match(plate))
    if len(plate) == 8:
        return bool(_NEV_SMALL.match(plate) or _NEV_LARGE.match(plate))
    return False


def kind_of(plate: str) -> str:
    """`new_energy` for the 8-character green plates, `ordinary` otherwise."""
    return "new_energy" if len(plate) == 8 else "ordinary"
