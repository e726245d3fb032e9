"""Synthetic Chinese plates for training (and for the green-plate benchmark set).

Each plate is laid out to GA 36 proportions at 1 px per mm (blue/yellow/white/black 440x140 with 7
characters; green new-energy 480x140 with 8), glyphs rendered from Debian's CJK fonts
(`fonts-noto-cjk`, `fonts-wqy-zenhei`) and DejaVu, stretched into their cells as the plate font is,
then aged: colour and light, a rim, rivets, dirt, shadows, blur, noise, JPEG, perspective and a
loose crop like a detector's. Random text follows the real formats (`edge.vision.plate_format`).

Needs Pillow and the fonts: `make train-deps` (training and `bench plate` only, never the daemon).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from edge.vision.plate_format import DIGITS, LETTERS, PROVINCES

# (file, face index): the Noto CJK collections hold JP, KR, SC, TC, HK faces in that order (then the
# Mono ones); plates are printed in simplified Chinese, so the SC faces (2, Mono SC 7)
FONTS_CJK = [("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 2), ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),
             ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 7), ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
             ("/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc", 2)]
FONTS_LATIN = [("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf", 0), ("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf", 0),
               ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 0), ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", 2)]

# (background colour BGR, text colour BGR) per plate colour
COLOURS = {"blue": ((160, 60, 10), (245, 245, 245)), "yellow": ((20, 180, 235), (20, 20, 20)),
           "white": ((235, 235, 235), (20, 20, 20)), "black": ((25, 25, 25), (240, 240, 240))}
AD = LETTERS + DIGITS


class FontsMissing(RuntimeError):
    pass


def _fonts(faces: list[tuple[str, int]]) -> list[tuple[str, int]]:
    found = [f for f in faces if Path(f[0]).exists()]
    if not found:
        raise FontsMissing(f"none of {', '.join(p for p, _ in faces)}: `apt-get install fonts-noto-cjk fonts-wqy-zenhei fonts-dejavu-core` (make train-deps)")
    return found


@lru_cache(maxsize=4096)
def glyph(ch: str, font: tuple[str, int], cell: tuple[int, int]) -> np.ndarray:
    """The character's ink (uint8 0-255) stretched to fill a cell (w, h) as plate fonts do."""
    from PIL import Image, ImageDraw, ImageFont

    f = ImageFont.truetype(font[0], 160, index=font[1])
    img = Image.new("L", (220, 220), 0)
    ImageDraw.Draw(img).text((20, 10), ch, font=f, fill=255)
    a = np.array(img)
    ys, xs = np.nonzero(a > 40)
    return fit_cell(a[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1], ch, cell)


def fit_cell(ink: np.ndarray, ch: str, cell: tuple[int, int]) -> np.ndarray:
    """A character's ink, cropped to its strokes, stretched to fill a cell (w, h) as plate fonts
    do; a 1 (or any narrow glyph) keeps its width, centred."""
    w, h = cell
    if ch == "1" or ink.shape[1] / ink.shape[0] < 0.25:
        nw = max(4, round(ink.shape[1] * h / ink.shape[0]))
        out = np.zeros((h, w), np.uint8)
        g = cv2.resize(ink, (min(nw, w), h), interpolation=cv2.INTER_AREA)
        x0 = (w - g.shape[1]) // 2
        out[:, x0:x0 + g.shape[1]] = g
        return out
    return cv2.resize(ink, (w, h), interpolation=cv2.INTER_AREA)


def random_plate(rng: random.Random, kind: str) -> str:
    """Random text in a real format: kind = ordinary | new_energy."""
    head = rng.choice(PROVINCES) + rng.choice(LETTERS)
    if kind == "new_energy":
        if rng.random() < 0.75:
            return head + rng.choice("DF") + rng.choice(AD) + "".join(rng.choice(DIGITS) for _ in range(4))
        return head + "".join(rng.choice(DIGITS) for _ in range(5)) + rng.choice("DF")
    # ordinary plates use at most two letters in the last five in practice; digits dominate
    tail = [rng.choice(DIGITS) if rng.random() < 0.65 else rng.choice(LETTERS) for _ in range(5)]
    if rng.random() < 0.03:
        tail[-1] = rng.choice("学警挂港澳")
    return head + "".join(tail)


@dataclass
class Plate:
    text: str
    colour: str  # blue | yellow | white | black | green
    image: np.ndarray  # BGR, the flat plate at 1 px/mm


# new-energy plates (GA 36-2018), BGR: a white band along the top, then a gradient from pale green to
# a saturated green at the bottom (small vehicles); large ones are yellow under the province and the
# letter and green after. Read off photographs of real plates; jittered per plate.
NE_TOP, NE_PALE, NE_DEEP, NE_YELLOW = (250, 252, 250), (205, 245, 185), (110, 215, 25), (20, 190, 240)


def _new_energy_face(w: int, h: int, two_tone: bool, split: int, rng: random.Random) -> np.ndarray:
    band = rng.uniform(0.08, 0.16)  # the white band's share of the height
    t = np.clip((np.linspace(0, 1, h, dtype=np.float32) - band) / (1 - band), 0, 1)[:, None, None]
    t = t ** rng.uniform(0.7, 1.4)
    pale, deep = np.array(NE_PALE, np.float32), np.array(NE_DEEP, np.float32)
    img = pale * (1 - t) + deep * t
    img[: int(band * h)] = NE_TOP
    img = img.repeat(w, axis=1)
    if two_tone:
        img[:, :split] = NE_YELLOW
    return img.astype(np.uint8)


def _logo(img: np.ndarray, centre: tuple[int, int], rng: random.Random) -> None:
    """The new-energy mark where other plates have a dot: a white disc, a dark ring, coloured bars."""
    r = rng.randint(12, 15)
    cv2.circle(img, centre, r, (245, 245, 245), -1)
    for k, colour in enumerate(((60, 60, 220), (40, 180, 250), (60, 190, 60), (200, 120, 40))):
        y = centre[1] - r // 2 + k * r // 4
        cv2.line(img, (centre[0] - r + 3, y), (centre[0], y), colour, 2)
    cv2.circle(img, centre, r, (40, 40, 40), 2)


def _reflection(img: np.ndarray, rng: random.Random) -> None:
    """A specular band across the plate (sun or headlights on the film)."""
    h, w = img.shape[:2]
    x0, slope, width = rng.uniform(-0.2 * w, w), rng.uniform(-1.5, 1.5), rng.uniform(0.05, 0.25) * w
    xs = np.arange(w, dtype=np.float32)[None, :] - (x0 + slope * np.arange(h, dtype=np.float32)[:, None])
    gain = np.exp(-((xs / width) ** 2)) * rng.uniform(0.3, 0.8)
    img[:] = np.clip(img + (255 - img.astype(np.float32)) * gain[..., None], 0, 255).astype(np.uint8)


def render(text: str, colour: str, rng: random.Random) -> Plate:
    """The flat plate, face-on, GA 36 layout. Green plates are drawn in real plate glyphs where the
    bank has them (`training.plates.glyphs`), fonts elsewhere."""
    from training.plates.glyphs import real_glyph  # glyphs imports this module

    cjk, latin = rng.choice(_fonts(FONTS_CJK)), rng.choice(_fonts(FONTS_LATIN))
    if len(text) == 8:  # 15 + 8 x 43 + 6 x 9 + 52 + 15 = 480: the mark sits in the 52 mm gap
        w, h, cw, gap, dot_gap, x = 480, 140, 43, 9, 52, 15
    else:
        w, h, cw, gap, dot_gap, x = 440, 140, 45, 12, 34, 15
    green = colour == "green"
    if green:
        img = _new_energy_face(w, h, text[-1] in "DF", x + 2 * cw + gap + dot_gap // 2, rng)
        ink = (rng.randint(10, 40),) * 3
    else:
        bg, ink = COLOURS[colour]
        if colour == "blue":  # from deep navy to the bright cyan-blue of a new, sunlit plate
            bg = (rng.uniform(140, 230), rng.uniform(45, 120), rng.uniform(0, 40))
        img = np.full((h, w, 3), bg, np.uint8)
    jitter = np.array([rng.randint(-25, 25) for _ in range(3)])
    img = np.clip(img.astype(int) + jitter, 0, 255).astype(np.uint8)
    rim = tuple(int(c) for c in ink)
    cv2.rectangle(img, (4, 4), (w - 5, h - 5), rim, 3)
    ch_h = 90
    y = (h - ch_h) // 2
    weight = rng.choice([cv2.erode, cv2.dilate, None, None])  # stroke weight differs between fonts and plates
    real = green and rng.random() < 0.7
    for i, ch in enumerate(text):
        g = real_glyph(ch, (cw, ch_h), rng) if real else None
        if g is None:
            g = glyph(ch, cjk if ch in PROVINCES or not ch.isascii() else latin, (cw, ch_h))
            if weight is not None:
                g = weight(g, np.ones((3, 3), np.uint8))
        g = g.astype(np.float32) / 255
        cell = img[y:y + ch_h, x:x + cw].astype(np.float32)
        img[y:y + ch_h, x:x + cw] = (cell * (1 - g[..., None]) + np.array(ink, np.float32) * g[..., None]).astype(np.uint8)
        x += cw + (dot_gap if i == 1 else gap)
        if i == 1:
            centre = (x - dot_gap // 2 - gap // 2 + 3, h // 2)
            if green:
                _logo(img, centre, rng)
            else:
                cv2.circle(img, centre, 5, rim, -1)
    for rx in (w // 4, 3 * w // 4):  # rivets
        if rng.random() < 0.7:
            cv2.circle(img, (rx, 14), 5, tuple(int(c * 0.8) for c in img[14, rx]), -1)
    if green and rng.random() < 0.3:
        _reflection(img, rng)
    return Plate(text, colour, img)


def age(flat: np.ndarray, rng: random.Random, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Light, dirt, perspective, a loose crop, blur, noise and JPEG: a plate as a camera crops it."""
    h, w = flat.shape[:2]
    img = flat.astype(np.float32)
    # light: gain, gamma, a shadow band
    img = img * rng.uniform(0.5, 1.3) + rng.uniform(-30, 30)
    if rng.random() < 0.3:  # a colour cast: sodium lamps, tinted glass, a camera's white balance
        img = img * np.array([rng.uniform(0.7, 1.3) for _ in range(3)], np.float32)
    if rng.random() < 0.3:
        x0 = rng.randint(0, w)
        img[:, x0:x0 + rng.randint(20, 200)] *= rng.uniform(0.4, 0.8)
    # dirt blobs
    for _ in range(rng.randint(0, 4)):
        cv2.circle(img, (rng.randint(0, w), rng.randint(0, h)), rng.randint(3, 18), (rng.uniform(40, 120),) * 3, -1)
    # perspective onto a canvas with a margin of surroundings (a detector crops loosely)
    mx, my = w * rng.uniform(0.0, 0.12), h * rng.uniform(0.0, 0.25)
    cw_, ch_ = int(w + 2 * mx), int(h + 2 * my)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    def d(s):
        return rng.uniform(-s, s)
    k = 0.06
    dst = np.float32([[mx + d(w * k), my + d(h * k * 2)], [mx + w + d(w * k), my + d(h * k * 2)],
                      [mx + w + d(w * k), my + h + d(h * k * 2)], [mx + d(w * k), my + h + d(h * k * 2)]])
    surround = np.full((ch_, cw_, 3), [rng.uniform(0, 255) for _ in range(3)], np.float32)
    surround += np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 20, surround.shape).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(img, m, (cw_, ch_), borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    mask = cv2.warpPerspective(np.ones((h, w), np.float32), m, (cw_, ch_))[..., None]
    img = warped * mask + surround * (1 - mask)
    # resolution: plates are often ~90-200 px wide in a frame
    small_w = rng.randint(70, 220)
    small = cv2.resize(img, (small_w, max(12, round(small_w * ch_ / cw_))), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        kx = rng.choice([1, 3, 5])
        small = cv2.GaussianBlur(small, (kx, kx), 0) if kx > 1 else small
    if rng.random() < 0.2:  # motion blur
        kernel = np.zeros((1, rng.randint(3, 7)), np.float32)
        kernel[:] = 1 / kernel.size
        small = cv2.filter2D(small, -1, kernel)
    small += np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, rng.uniform(0, 12), small.shape).astype(np.float32)
    small = np.clip(small, 0, 255).astype(np.uint8)
    _ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(30, 95)])
    small = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return small if out_size is None else cv2.resize(small, out_size, interpolation=cv2.INTER_LINEAR)


def sample(rng: random.Random, colour: str | None = None) -> tuple[str, np.ndarray, np.ndarray]:
    """(text, flat plate, aged crop). Colours in proportion to what a gate sees, green boosted."""
    colour = colour or rng.choices(["blue", "green", "yellow", "white", "black"], [0.5, 0.3, 0.14, 0.04, 0.02])[0]
    text = random_plate(rng, "new_energy" if colour == "green" else "ordinary")
    if colour == "white" and rng.random() < 0.5:
        text = text[:-1] + "警"
    p = render(text, colour, rng)
    return text, p.image, age(p.image, rng)
