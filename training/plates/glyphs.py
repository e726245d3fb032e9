"""Real plate glyphs: the characters of the real blue training crops, cut out one by one, so that
synthetic plates can be drawn in the plate's own lettering rather than in a desktop font.

Why: the recogniser reads real blue plates well and real green ones badly, and the green ones are
all synthetic in training, drawn in Noto and DejaVu. The plate font (GA 36) has its own narrow,
even strokes; the shapes are the same on a blue plate and on a green one (only the ink is dark on
green), so a glyph cut from a blue crop, inverted, is a fair green-plate glyph.

How: the plate's blue face is found (hue), turned level and cut to its rim; the white ink is
thresholded, the rim's long lines are taken out, and connected components give the six characters
right of the dot (height and even pitch checked); the province is the ink one pitch left of the
letter. A crop where any check fails gives nothing: a wrong cut would teach the recogniser a wrong
shape. A glyph whose strokes ran together (`_solid`: blurred, most often a province) is left out
alone: drawn on a plate it would be a dark blob under a character's label. About one crop in
twenty-five passes on ../shared/data/plates_train; that is enough for a dozen shapes of each letter
and digit, and fonts fill the rest (`synth.render`).

The bank is built once per process from the folder in $DOOR_EDGE_GLYPHS (`use`) and holds ink maps only, no
plate image. Training cuts from ../shared/data/plates_train; `bench plate` draws its green set from
the glyphs of the crops it is judging (../shared/data/plates), so the bench's green plates are not
lettered with the shapes the recogniser trained on. Nothing here ships.
"""

from __future__ import annotations

import os
import random
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

FACE_H = 64  # the levelled plate face's height in pixels
ENV = "DOOR_EDGE_GLYPHS"  # the folder whose crops the bank is cut from (`use`)
SOLID_MAX = 0.2  # the most of a glyph's ink that may be thicker than a sixth of its height (`_solid`)


def _plate_face(img: np.ndarray) -> np.ndarray | None:
    """The blue plate face inside a loose crop, levelled and cut to its rim, FACE_H high; or None."""
    h0 = 80
    img = cv2.resize(img, (max(8, round(img.shape[1] * h0 / img.shape[0])), h0), interpolation=cv2.INTER_CUBIC)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    blue = cv2.inRange(hsv, (95, 70, 35), (130, 255, 255))
    # characters closed over; padded first, or the closing would stretch the blob to the crop's edge
    blue = cv2.morphologyEx(cv2.copyMakeBorder(blue, 25, 25, 9, 9, cv2.BORDER_CONSTANT, value=0), cv2.MORPH_CLOSE,
                            cv2.getStructuringElement(cv2.MORPH_RECT, (9, 25)))[25:-25, 9:-9]
    contours = cv2.findContours(blue, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    (cx, cy), (w, h), a = cv2.minAreaRect(c)
    if w < h:
        w, h, a = h, w, a - 90
    a = ((a + 90) % 180) - 90  # the long side's tilt, in (-90, 90]: never turned upside down
    if cv2.contourArea(c) < 0.5 * w * h or not 2.2 < w / h < 4.5:
        return None
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((cx, cy), a, 1.0), (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    x0, y0 = max(0, int(cx - w / 2 + 0.01 * w)), max(0, int(cy - h / 2 + 0.07 * h))
    x1, y1 = int(cx + w / 2 - 0.01 * w), int(cy + h / 2 - 0.07 * h)
    face = rot[y0:y1, x0:x1]
    if face.shape[0] < 20 or face.shape[1] < 60:
        return None
    return cv2.resize(face, (round(face.shape[1] * FACE_H / face.shape[0]), FACE_H), interpolation=cv2.INTER_CUBIC)


def _boxes(mask: np.ndarray) -> list[list[int]]:
    """Connected ink as boxes (x, y, w, h) from the left; boxes sharing most columns joined (a
    character broken in two by dirt or a rivet)."""
    n, _lab, st, _c = cv2.connectedComponentsWithStats(mask)
    merged: list[list[int]] = []
    for x, y, w, h in sorted((list(map(int, st[i, :4])) for i in range(1, n) if st[i, 4] >= 6), key=lambda b: b[0]):
        if merged and min(x + w, merged[-1][0] + merged[-1][2]) - max(x, merged[-1][0]) > 0.5 * min(w, merged[-1][2]):
            px, py, pw, ph = merged[-1]
            nx, ny = min(px, x), min(py, y)
            merged[-1] = [nx, ny, max(px + pw, x + w) - nx, max(py + ph, y + h) - ny]
        else:
            merged.append([x, y, w, h])
    return merged


def _solid(glyph: np.ndarray) -> float:
    """The share of a glyph's ink (0-255) left after eroding it by a disc a sixth of its height
    across. A plate's strokes are about a tenth of its height thick, so a clean cut keeps almost
    none; a blurred one, where the strokes ran together, keeps a solid core. Such a cut drawn on a
    synthetic plate is a dark blob labelled with a character (most often a province: its strokes
    are the closest together), which teaches a reader to guess and makes a test plate unreadable."""
    k = max(3, round(glyph.shape[0] / 6)) | 1
    # padded with background: erode would take the outside for ink, and keep every stroke on the box's edge
    ink = cv2.copyMakeBorder((glyph > 127).astype(np.uint8), k, k, k, k, cv2.BORDER_CONSTANT, value=0)
    core = cv2.erode(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return float(core.sum()) / max(1, int(ink.sum()))


def _clean(glyph: np.ndarray) -> np.ndarray | None:
    """The glyph's ink stretched to 0-255, or None when it has too little contrast or is mostly
    background or mostly ink (a blurred or misplaced cut)."""
    lo, hi = np.percentile(glyph, (10, 95))
    if hi - lo < 50:
        return None
    g = np.clip((glyph.astype(np.float32) - lo) / (hi - lo), 0, 1)
    if not 0.12 <= float((g > 0.5).mean()) <= 0.75:
        return None
    g = np.clip((g - 0.3) / 0.45, 0, 1)  # the plate's own shading around the strokes is not ink
    return (g * 255).astype(np.uint8)


def cut(text: str, crop: np.ndarray) -> list[tuple[str, np.ndarray]] | None:
    """(character, ink map) for each of a 7-character blue plate's characters but the blurred ones
    (`_solid`), or None when the crop does not give all seven cleanly."""
    face = _plate_face(crop)
    if face is None or len(text) != 7:
        return None
    b, g, r = (c.astype(np.float32) for c in cv2.split(face))
    ink = cv2.normalize(np.clip((r + g) / 2 - 0.35 * b, 0, 255), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _t, mask = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fh, fw = mask.shape
    rim = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (fw // 4, 1)))
    rim |= cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, int(fh * 0.93))))
    mask = cv2.subtract(mask, cv2.dilate(rim, np.ones((3, 3), np.uint8)))
    boxes = _boxes(mask)
    tall = [(x, x + w, y, y + h) for x, y, w, h in boxes if h >= 0.55 * fh and w < 0.9 * fh]
    if len(tall) < 6:
        return None
    six = tall[-6:]
    heights = np.array([t[3] - t[2] for t in six])
    centres = [(t[0] + t[1]) / 2 for t in six[1:]]  # right of the dot the characters stand at one pitch
    pitch = (centres[-1] - centres[0]) / 4
    if heights.max() > 1.35 * heights.min() or pitch < 0.3 * fh or np.diff(centres).max() > 1.4 * np.diff(centres).min():
        return None
    out = []
    for ch, (x0, x1, y0, y1) in zip(text[1:], six, strict=True):
        if ch != "1" and (x1 - x0) < 0.3 * (y1 - y0):
            return None  # only a 1 is that narrow: the cut is off
        glyph = _clean(ink[y0:y1, x0:x1])
        if glyph is None:
            return None
        out.append((ch, glyph))
    letter_x = six[0][0]
    # the province stands one pitch left of the letter (the dot is after the letter, not before it)
    prov = [b for b in boxes if b[0] >= max(0, letter_x - 1.5 * pitch) and b[0] + b[2] <= letter_x - 0.05 * pitch]
    if not prov:
        return None
    x0, x1 = prov[0][0], max(b[0] + b[2] for b in prov)
    if not 0.55 * pitch <= x1 - x0 <= 1.15 * pitch:
        return None
    y0, y1 = min(t[2] for t in six), max(t[3] for t in six)  # the province stands as tall as the rest
    glyph = _clean(ink[y0:y1, x0:x1])
    if glyph is None:
        return None
    # the cut is right; a glyph whose strokes ran together is left out alone (its neighbours may be sharp)
    return [(ch, g) for ch, g in [(text[0], glyph), *out] if _solid(g) <= SOLID_MAX]


def build(folder: Path) -> dict[str, list[np.ndarray]]:
    """Every clean glyph of the real crops in folder/labels.csv, by character."""
    from training.plates.data import real_crops

    bank: dict[str, list[np.ndarray]] = {}
    for text, crop in real_crops(folder):
        for ch, glyph in cut(text, crop) or []:
            bank.setdefault(ch, []).append(glyph)
    return bank


def bank() -> dict[str, list[np.ndarray]]:
    """The bank of the folder in $DOOR_EDGE_GLYPHS, or empty when it is unset (fonts only). An
    environment variable, so that the processes `data.synth_set` spawns draw from the same bank."""
    folder = os.environ.get(ENV)
    return _bank_of(folder) if folder else {}


@lru_cache(maxsize=2)
def _bank_of(folder: str) -> dict[str, list[np.ndarray]]:
    return build(Path(folder))


def real_glyph(ch: str, cell: tuple[int, int], rng: random.Random) -> np.ndarray | None:
    """A real glyph of ch fitted to cell (w, h) as a font's is (synth.fit_cell), or None if the bank has none."""
    from training.plates.synth import fit_cell

    shapes = bank().get(ch)
    if not shapes:
        return None
    return fit_cell(shapes[rng.randrange(len(shapes))], ch, cell)


def use(folder: Path) -> None:
    """Draw real glyphs from folder's crops, in this process and in those it spawns."""
    os.environ[ENV] = str(folder)


if __name__ == "__main__":
    import sys

    b = build(Path(sys.argv[1]))
    print(f"{sum(map(len, b.values()))} glyphs of {len(b)} characters:", " ".join(f"{k}{len(v)}" for k, v in sorted(b.items())))
