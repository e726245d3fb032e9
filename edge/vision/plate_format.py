"""Chinese plate formats (GA 36-2018): the character set the recogniser emits and the check that a
string can be a real plate.

- Ordinary (blue, yellow, white, black): a province character, a letter (the issuing city), a dot,
  then 5 characters from letters (no I or O) and digits; the last may be 学 (driving school), 警
  (police), 挂 (trailer), 港/澳 (Hong Kong/Macau cross-border).
- New energy (green, 8 characters): province, letter, then 6: a small car has D (electric) or F
  (hybrid) first, then a letter or digit, then 4 digits; a large vehicle has 5 digits, then D or F.
"""

from __future__ import annotations

PROVINCES = "京沪津渝冀晋蒙辽吉黑苏浙皖闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O: they would read as 1 and 0
DIGITS = "0123456789"
SPECIAL = "学警挂港澳"
CHARSET = PROVINCES + LETTERS + DIGITS + SPECIAL  # CTC class i+1 is CHARSET[i]; class 0 is the blank

# each format as the characters allowed at each position. The issuing code (second) may be O
# (police: 粤O, 京O); the recogniser reads it as 0 (`normalise`)
_PROVINCE, _CITY = frozenset(PROVINCES), frozenset(LETTERS + "O")
_AD, _DIGIT, _DF = frozenset(LETTERS + DIGITS), frozenset(DIGITS), frozenset("DF")
_FORMATS = (
    [_PROVINCE, _CITY] + [_AD] * 4 + [_AD | frozenset(SPECIAL)],   # ordinary
    [_PROVINCE, _CITY, _DF, _AD] + [_DIGIT] * 4,                  # new energy, small car
    [_PROVINCE, _CITY] + [_DIGIT] * 5 + [_DF],                    # new energy, large vehicle
)


def _fits(text: str, fmt: list[frozenset[str]]) -> bool:
    return all(c in allowed for c, allowed in zip(text, fmt, strict=False))


def could_be(prefix: str) -> bool:
    """True when `prefix` (recogniser spelling: a 0 second is an O) can still grow into a plate."""
    prefix = normalise(prefix)
    return any(len(prefix) <= len(f) and _fits(prefix, f) for f in _FORMATS)


def normalise(read: str) -> str:
    """A recogniser's string in plate spelling: 0 and O are one glyph on a plate, and only the
    issuing code (the second character) can be the letter O."""
    return read[:1] + "O" + read[2:] if read[1:2] == "0" else read


def is_valid(plate: str) -> bool:
    """True when `plate` (no dot, no spaces) has the shape of a real plate."""
    return any(len(plate) == len(f) and _fits(plate, f) for f in _FORMATS)


def kind_of(plate: str) -> str:
    """`new_energy` for the 8-character green plates, `ordinary` otherwise."""
    return "new_energy" if len(plate) == 8 else "ordinary"
