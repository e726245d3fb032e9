"""Where a plate may be, from classic image cues: a plate's own colour and the dense vertical edges of
its characters. Pure OpenCV on BGR frames, no model.

Why beside a trained detector: ours was trained on composites (synthetic plates pasted on photos),
and on real street photos it misses plates at night, on grey cars seen from above, and big yellow
truck plates. These cues find most of those, and cheaply; they also fire on grilles, signs and
lettering, so every proposal is only a place to try: the recogniser and the format check decide
whether a plate is there (a proposal that does not read as a plate is dropped, not reported).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np

# how far a plate's long side may lean from level: 35 degrees for any plate-shaped thing (a taller
# lean is a post, a sign or a lamp); 60 for a blob of a plate's own colour, whose colour says more
# than its lean (a handheld photo, a camera mounted askew, a plate hung crooked)
UPRIGHT, STEEP = 35.0, 60.0
# a row of characters is at most ROW times as long as high, unless the closing that joins them has
# run on into the rim, the dot or a bumper edge beside it: then up to LONG_EDGES. Steep colour blobs
# and such long rows are less like a plate than the rest, and are proposed beside the plate-like
# places, not instead of them: EXTRA of them at most (`proposals`)
ROW, LONG_EDGES, EXTRA = 6.0, 10.0, 2
# plate backgrounds in HSV (OpenCV hue 0-180): hue from, hue to, least value, and how much below the
# asked-for saturation floor the colour may go (new-energy green is pale): blue, yellow, green
PLATE_HUES = [(100, 128, 50, 0), (15, 34, 90, 0), (35, 85, 110, 70)]


def order_quad(pts: np.ndarray) -> np.ndarray:
    """Corners as top-left, top-right, bottom-right, bottom-left. An elongated quad (one pair of
    opposite sides half again as long as the other) starts at the long side that runs rightwards
    clockwise, its top: a plate leaning past 45 degrees would otherwise be read standing on its end.
    Others start at the corner nearest the image's top-left (the same corner up to 45 degrees)."""
    pts = np.asarray(pts, np.float32)
    c = pts.mean(axis=0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    pts = pts[np.argsort(ang)]  # clockwise in image coordinates
    side = np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1)  # side i runs from corner i to corner i + 1
    even, odd = side[0] + side[2], side[1] + side[3]
    if max(even, odd) >= 1.5 * min(even, odd):
        tops = [i for i in ((0, 2) if even > odd else (1, 3)) if pts[(i + 1) % 4, 0] > pts[i, 0]]
        if tops:
            return np.roll(pts, -tops[0], axis=0)
    tl = int(np.argmin(pts.sum(axis=1)))
    return np.roll(pts, -tl, axis=0)


def _ranges(s_min: int) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """cv2.inRange bounds of each plate colour at a saturation floor."""
    return [((lo, max(40, s_min - paler), v), (hi, 255, 255)) for lo, hi, v, paler in PLATE_HUES]


# which reader a rectified crop goes to (`palette`)
COLOUR, GREEN, PLAIN = 0, 1, 2


def palette(crops: np.ndarray, s_min: int = 60, least: float = 0.1) -> np.ndarray:
    """Which reader each rectified plate crop (N x 32 x 128 x 3, BGR) goes to: GREEN for a green
    new-energy plate (at least `least` of the crop new-energy green, and more of it green than
    blue: a blue plate's cyan cast, or a green car showing around it, is less green than its blue);
    PLAIN where no plate colour covers `least` of it (an infrared camera at night, a colour camera
    in the dark, a white or black plate); COLOUR for the rest. Every other pixel of the whole batch
    as one image: one colour conversion for all of them."""
    n = len(crops)
    if not n:
        return np.zeros(0, np.int8)
    small = np.ascontiguousarray(crops[:, ::2, ::2])
    h, w = small.shape[1:3]
    hsv = cv2.cvtColor(small.reshape(n * h, w, 3), cv2.COLOR_BGR2HSV)
    blue, yellow, green = ((cv2.inRange(hsv, lo, hi).reshape(n, h * w) > 0).mean(axis=1) for lo, hi in _ranges(s_min))
    out = np.full(n, COLOUR, np.int8)
    out[np.maximum(np.maximum(blue, yellow), green) < least] = PLAIN
    out[(green >= least) & (green > blue)] = GREEN
    return out


def _plate_shaped(c: np.ndarray, max_long: float, aspect: tuple[float, float], fill_min: float,
                  max_tilt: float = UPRIGHT) -> tuple | None:
    """The contour's minimum-area rectangle and its tilt in degrees, ((cx, cy), (w, h), angle, area,
    tilt), if it has a plate's proportions, fills it and leans no more than max_tilt; else None."""
    area = cv2.contourArea(c)
    if area < 60:
        return None
    (cx, cy), (w, h), a = cv2.minAreaRect(c)
    long_, short = max(w, h), min(w, h)
    tilt = a if w >= h else a - 90  # the long side's angle from horizontal
    tilt = (tilt + 90) % 180 - 90
    if abs(tilt) > max_tilt:
        return None
    if short < 5 or long_ > max_long or not aspect[0] <= long_ / short <= aspect[1] or area / max(1.0, w * h) < fill_min:
        return None
    return (cx, cy), (w, h), a, area, tilt


def _colour_region(bgr: np.ndarray, quad: np.ndarray) -> tuple[np.ndarray, float, np.ndarray] | None:
    """The region around a quad where its plate colour is searched, as HSV at most 480 px (with
    the scale and the region's top-left corner in the frame). A third of the width each side: a
    detector blob often covers only part of a long plate."""
    H, W = bgr.shape[:2]
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    pw, ph = x1 - x0, y1 - y0
    x0, y0 = max(0, x0 - pw // 3), max(0, y0 - ph // 3)
    x1, y1 = min(W, x1 + pw // 3), min(H, y1 + ph // 3)
    region = bgr[y0:y1, x0:x1]
    if region.size == 0:
        return None
    scale = min(1.0, 480 / max(region.shape[:2]))
    if scale < 1.0:
        region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(region, cv2.COLOR_BGR2HSV), scale, np.array([x0, y0], np.float32)


def _colour_blobs(hsv: np.ndarray):
    """(saturation floor, blob contour) of every plate colour, strictest floor first (a
    blue-tinted silver car must not merge with its plate), characters closed over. Yellow and
    green are also taken together: a large vehicle's new-energy plate is yellow under the province
    and the letter and green after, and either half alone cuts characters off."""
    rh, rw = hsv.shape[:2]
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, rw // 40), max(3, rh // 30)))
    for s_min in (150, 110, 80):
        blue, yellow, green = (cv2.inRange(hsv, lo, hi) for lo, hi in _ranges(s_min))
        for mask in (blue, yellow, green, cv2.bitwise_or(yellow, green)):
            m = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, k)
            for c in cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
                yield s_min, c


class BlobMemo:
    """The plate-colour blobs of one frame's regions, each found once and only as far as asked.
    Why: a region is outlined by its colour on the first look (`colour_outline`) and, when its
    reading is unsure, searched again for the colour's corners (`colour_corners`) in the very same
    blobs; finding them twice cost 2-3 ms of a 35 ms read. One memo per frame: the key is the
    region's corners only."""

    def __init__(self) -> None:
        self._regions: dict[bytes, tuple[tuple[np.ndarray, float, np.ndarray] | None, list, Iterator]] = {}

    def blobs(self, bgr: np.ndarray, quad: np.ndarray) -> tuple[tuple[np.ndarray, float, np.ndarray] | None, Iterator]:
        """(`_colour_region` of the quad, its `_colour_blobs`): those found before, then the rest."""
        key = np.asarray(quad, np.float32).tobytes()
        if key not in self._regions:
            found = _colour_region(bgr, quad)
            self._regions[key] = (found, [], _colour_blobs(found[0]) if found is not None else iter(()))
        found, seen, rest = self._regions[key]

        def replay() -> Iterator:
            i = 0
            while True:
                if i == len(seen):
                    nxt = next(rest, None)
                    if nxt is None:
                        return
                    seen.append(nxt)
                yield seen[i]
                i += 1
        return found, replay()


def _best_blob(bgr: np.ndarray, quad: np.ndarray, judge: Callable[[np.ndarray, int], tuple[np.ndarray, float] | None],
               memo: BlobMemo | None = None) -> np.ndarray | None:
    """The outline of the plate-coloured blob in a region that `judge(contour, region width)`
    scores highest (it returns (outline, score), or None for a blob that is no plate), at the
    strictest saturation floor where any blob qualifies; in frame coordinates, or None."""
    found, blobs = (memo or BlobMemo()).blobs(bgr, quad)
    if found is None:
        return None
    hsv, scale, origin = found
    best, best_score, level = None, 0.0, None
    for s_min, c in blobs:
        if best is not None and s_min != level:
            break  # the strictest floor that found a plate wins
        judged = judge(c, hsv.shape[1])
        if judged is not None and judged[1] > best_score:
            (best, best_score), level = judged, s_min
    return None if best is None else order_quad(best / scale + origin)


def _as_rectangle(c: np.ndarray, rw: int) -> tuple[np.ndarray, float] | None:
    """A blob with a plate's proportions as its minimum-area rectangle, scored by size, fill and
    closeness to a plate's 3.2 : 1 (from 1.6 : 1: a plate seen from the side)."""
    shape = _plate_shaped(c, 0.95 * rw, (1.6, 5.5), 0.6, STEEP)
    if shape is None or min(shape[1]) < 6 or shape[3] < 80:
        return None
    (cx, cy), (w, h), a, area, _tilt = shape
    return cv2.boxPoints(((cx, cy), (w, h), a)), area * (area / (w * h)) / (1 + abs(np.log(max(w, h) / min(w, h) / 3.2)))


def _as_corners(c: np.ndarray, rw: int) -> tuple[np.ndarray, float] | None:
    """A blob that is a plate seen at a strong angle as its four corners, scored by size."""
    area = cv2.contourArea(c)
    if area < 80 or np.ptp(c[:, 0, 0]) >= 0.95 * rw or (q := _corners(c)) is None:
        return None
    return q, area


def colour_outline(bgr: np.ndarray, quad: np.ndarray, memo: BlobMemo | None = None) -> np.ndarray | None:
    """The plate's own outline inside a region: the best blob of a plate colour (blue, yellow,
    new-energy green) with a plate's proportions, characters closed over. None if none."""
    return _best_blob(bgr, quad, _as_rectangle, memo)


def colour_corners(bgr: np.ndarray, quad: np.ndarray, memo: BlobMemo | None = None) -> np.ndarray | None:
    """The four corners of the biggest plate-coloured blob in a region that is a plate seen at a
    strong angle (`_corners`): a yawed plate is a parallelogram, and the rectangle around it
    (`colour_outline`) rectifies it slanted or is not plate-shaped at all. None if none."""
    return _best_blob(bgr, quad, _as_corners, memo)


def _corners(c: np.ndarray) -> np.ndarray | None:
    """The blob's four corners (its convex hull simplified to a quadrilateral) if they make a plate
    seen at an angle: top edge within STEEP degrees of level, wider than tall, filled by the blob."""
    hull = cv2.convexHull(c)
    peri = cv2.arcLength(hull, True)
    for eps in (0.02, 0.04, 0.06, 0.08):
        approx = cv2.approxPolyDP(hull, eps * peri, True)
        if len(approx) == 4:
            break
    else:
        return None
    q = order_quad(approx.reshape(4, 2))
    tl, tr, br, bl = q
    wide = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    tall = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    tilt = np.degrees(np.arctan2(tr[1] - tl[1], tr[0] - tl[0]))
    if abs(tilt) > STEEP or tall < 6 or not 1.1 <= wide / tall <= 6.0:
        return None
    return q if cv2.contourArea(c) >= 0.75 * cv2.contourArea(q.reshape(-1, 1, 2)) else None


MAX_SIDE = 640  # the frame's long side where the cues look (and the detector's input is taken from)


def shrunk(bgr: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """The frame at most `max_side` pixels on its long side (area-averaged), and its scale.
    Why once per frame: area-averaging a full camera frame costs milliseconds (doing it once saved
    1.5 ms of a 34 ms read on the dev scenes); the cues and the detector's letterbox both start
    from this one (`PlateReader.read`)."""
    s = min(1.0, max_side / max(bgr.shape[:2]))
    return (cv2.resize(bgr, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1.0 else bgr), s


def proposals(bgr: np.ndarray, limit: int = 8, max_side: int = MAX_SIDE, *, view: tuple[np.ndarray, float] | None = None) -> list[np.ndarray]:
    """Up to `limit` plate-shaped places in the whole frame, the most edge-dense first: blobs of a
    plate colour, and blobs of dense vertical edges (a row of characters) at two closing widths;
    then up to EXTRA places less like a plate, the most edge-dense first: colour blobs leaning more
    than UPRIGHT, rows of edges longer than ROW : 1. Why apart: ranked together, a steep blob (a blue
    sign aslant) or a long row of edges (a grille) would take the place of a plate-like place, and
    upright, plate-proportioned plates are what a gate camera mostly sees.
    `view`: the frame already `shrunk` to `max_side`."""
    img, s = view if view is not None else shrunk(bgr, max_side)
    h, w = img.shape[:2]
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    edges = cv2.convertScaleAbs(cv2.Sobel(cv2.GaussianBlur(gray, (3, 3), 0), cv2.CV_16S, 1, 0, ksize=3))
    plate_like: list[tuple[np.ndarray, float]] = []
    extra: list[tuple[np.ndarray, float]] = []

    def keep(c: np.ndarray, aspect: tuple[float, float], fill_min: float, grow: tuple[float, float], min_edges: float,
             max_tilt: float = UPRIGHT) -> None:
        shape = _plate_shaped(c, 0.5 * w, aspect, fill_min, max_tilt)
        if shape is None or shape[3] > 0.1 * h * w:
            return
        (cx, cy), (rw, rh), a, _, tilt = shape
        x, y, bw, bh = cv2.boundingRect(c)
        density = float(edges[y:y + bh, x:x + bw].mean())
        if density >= min_edges:
            like = abs(tilt) <= UPRIGHT and max(rw, rh) <= ROW * min(rw, rh)
            (plate_like if like else extra).append((cv2.boxPoints(((cx, cy), (rw * grow[0], rh * grow[1]), a)) / s, density))

    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, w // 80), max(3, h // 120)))
    for lo, hi in _ranges(80):
        m = cv2.morphologyEx(cv2.inRange(hsv, lo, hi), cv2.MORPH_CLOSE, k)
        for c in cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
            keep(c, (1.8, 6.0), 0.5, (1.0, 1.0), 15.0, STEEP)
    _, strong = cv2.threshold(edges, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    for kw in (w // 50, w // 30):
        m = cv2.morphologyEx(strong, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, kw), max(3, kw // 5))))
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, kw // 2), max(3, kw // 6))))
        for c in cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]:
            keep(c, (2.0, LONG_EDGES), 0.55, (1.1, 1.2), 0.0)  # edge blobs: the characters; grow to the plate's rim
    plate_like.sort(key=lambda f: -f[1])
    extra.sort(key=lambda f: -f[1])
    return [order_quad(q) for q, _ in plate_like[:limit] + extra[:EXTRA]]


def proposals_in(bgr: np.ndarray, quad: np.ndarray, limit: int = 3) -> list[np.ndarray]:
    """`proposals` inside a region (its bounding box): a region much bigger than its plate, such as
    the back of a car of the plate's own colour, holds the plate at a scale the whole-frame search
    cannot see."""
    H, W = bgr.shape[:2]
    x0, y0 = np.clip(np.floor(quad.min(axis=0)).astype(int), 0, [W, H])
    x1, y1 = np.clip(np.ceil(quad.max(axis=0)).astype(int), 0, [W, H])
    if x1 - x0 < 40 or y1 - y0 < 16:
        return []
    return [q + np.array([x0, y0], np.float32) for q in proposals(bgr[y0:y1, x0:x1], limit)]


def _face(bgr: np.ndarray, quad: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The outline's inside face-on at `size` (w, h), and the homography from the frame to it."""
    w, h = size
    m = cv2.getPerspectiveTransform(np.asarray(quad, np.float32), np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32))
    return cv2.warpPerspective(bgr, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), m


def tighten(bgr: np.ndarray, quad: np.ndarray, size: tuple[int, int] = (256, 64)) -> np.ndarray | None:
    """The outline shrunk to the band of characters inside it (dense vertical edges), with a rim's
    margin; None when it is already tight or nothing inside looks like a row of characters."""
    w, h = size
    face, m = _face(bgr, quad, size)
    edges = np.abs(cv2.Sobel(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), cv2.CV_32F, 1, 0, ksize=3))
    rows = np.nonzero(edges.mean(axis=1) > 0.5 * edges.mean(axis=1).max())[0]
    if len(rows) < h // 4:
        return None
    y0, y1 = rows[0], rows[-1] + 1
    cols = np.convolve(edges[y0:y1].mean(axis=0), np.ones(9) / 9, mode="same")
    on = np.nonzero(cols > 0.35 * cols.max())[0]
    if len(on) == 0:
        return None
    x0, x1 = on[0], on[-1] + 1
    if x1 - x0 > 0.92 * w and y1 - y0 > 0.85 * h:
        return None  # already tight
    if x1 - x0 < 0.3 * w or (x1 - x0) / (y1 - y0) < 2.0:
        return None  # not a row of characters
    px, py = (x1 - x0) * 0.04, (y1 - y0) * 0.12
    band = np.array([[x0 - px, y0 - py], [x1 + px, y0 - py], [x1 + px, y1 + py], [x0 - px, y1 + py]], np.float32)
    return cv2.perspectiveTransform(band[None], np.linalg.inv(m))[0]


def deslant(bgr: np.ndarray, quad: np.ndarray, size: tuple[int, int] = (256, 64), min_shear: float = 0.15) -> np.ndarray | None:
    """The outline sheared so that the characters inside it stand upright; None when they already
    do. The slant is the shear that makes the ink of the band of characters fall into the fewest
    columns (the sum of squared column counts is highest)."""
    w, h = size
    face, m = _face(bgr, quad, size)
    band = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)[int(h * 0.18): int(h * 0.82)]
    _, ink = cv2.threshold(band, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if ink.mean() > 0.5:
        ink = 1 - ink  # the characters are the minority
    bh = ink.shape[0]
    ink = cv2.copyMakeBorder(ink.astype(np.float32), 0, 0, bh, bh, cv2.BORDER_CONSTANT)
    shears = np.linspace(-0.5, 0.5, 21)
    score = [float((cv2.warpAffine(ink, np.array([[1, s, -s * bh / 2], [0, 1, 0]], np.float32), ink.shape[::-1]).sum(axis=0) ** 2).sum()) for s in shears]
    s = float(shears[int(np.argmax(score))])
    if abs(s) < min_shear:
        return None
    upright = np.array([[s * h / 2, 0], [w + s * h / 2, 0], [w - s * h / 2, h], [-s * h / 2, h]], np.float32)
    return cv2.perspectiveTransform(upright[None], np.linalg.inv(m))[0]
