"""Plates: detect, rectify, recognise (our own ONNX models on onnxruntime), top-k candidates, the
format check, and a vote across the frames of one vehicle. Pure computation on numpy frames (RGB).

- Detector (`models/plate_det.onnx`): a plate mask at 1/4 resolution of a 256x256 letterboxed
  frame. Each blob is a plate region with two candidate outlines: the plate colour's own outline
  inside it (HSV, characters closed over) and the blob's. Each is rectified (128x32) and read, and
  the outlines vote (`_vote`); a region read below `SURE` is read again through the winning outline
  tightened to its band of characters (`plate_cues.tighten`), through the plate-shaped places
  inside it (`plate_cues.proposals_in`: a blue car's whole back is one blue blob, the plate only a
  part of it), through the plate colour's four corners (`plate_cues.colour_corners`: a plate
  seen from the side is a parallelogram) and sheared until its characters stand upright
  (`plate_cues.deslant`: seen from above and aside, they lean). The detector was trained on
  composites only, and alone it often marks a whole car front: the colour outline, the second look
  and the vote across outlines are what make its regions usable.
- Cues (`edge.vision.plate_cues`): plate-coloured and edge-dense places the detector missed (night,
  grey cars from above, big yellow plates, a plate leaning steeply in a handheld photo or from a
  camera mounted askew); they count only when they read as a plate. A frame
  where nothing reads gets the cues once more on its locally equalised copy (dusk, haze, glare).
- One reading per plate: overlapping regions keep the most probable reading, the others' strings
  join its runners-up.
- Recogniser (`models/plate_rec.onnx`): CNN + CTC over 32 columns; a prefix beam search bound by
  the plate grammar (`plate_format.could_be`) gives the top-k strings with probabilities; only
  strings with the shape of a real plate are kept, renormalised over plates when the crop is mostly
  a plate (`readings`).
- Large recogniser (`models/plate_rec_large.onnx`): the same network at 3.5x the work. A region
  whose reading is unsure after the vote is read by it through the winning outline shrunk by 10 %
  (`ZOOMS`), and that reading joins the vote. Why not the large one everywhere: a frame
  has about 17 outlines to read, nearly all of them not plates; the small one sorts them out, and
  the large one's work goes to the one or two regions that hold a plate it could not read surely.
- Province classifier (`models/plate_prov.onnx`): the province character from the plate's left
  third, mixed into the recogniser's readings (`with_province`): the province is the recogniser's
  commonest error.
- Green readers (`models/plate_rec_green.onnx`, `models/plate_prov_green.onnx`): the small
  recogniser and the province classifier fine-tuned towards green new-energy plates; plain
  readers (`models/plate_rec_night.onnx`, `models/plate_prov_night.onnx`): the two fine-tuned on
  plates seen without colour, as an infrared camera sees them at night. A crop's colour
  (`plate_cues.palette`) says which pair reads it (`_run_split`).
Why top-k: lookups are by keyed hash, so a gate cannot compare a read with the list "fuzzily"
after hashing; instead each likely reading is hashed and looked up (edge.access.platevote).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge.vision.models import MODELS_DIR, checked, session
from edge.vision.plate_cues import BlobMemo, colour_corners, colour_outline, deslant, order_quad, palette, proposals, proposals_in, shrunk, tighten
from edge.vision.plate_format import CHARSET, PROVINCES, could_be, is_valid, normalise

if TYPE_CHECKING:
    import onnxruntime as ort

DET, STRIDE = 256, 4
REC_H, REC_W = 32, 128
PROVINCE_COLUMNS = 44        # the province classifier sees the rectified plate's left 44 columns
PROVINCE_WEIGHT = 0.7        # its share when mixed with the recogniser's own belief (with_province)
ZOOMS = (0.9,)               # the large recogniser's look at an unsure reading: its outline 10 % smaller
SURE = 0.9                   # a region read at least this probably gets no second look
PLATE_MASS = 0.5             # readings renormalised over the plate-shaped ones when those hold this much
EQUALISE_CLIP = 2.0          # CLAHE clip limit of the second pass over a frame where nothing read
PLATE_MODELS = ("plate_det", "plate_rec", "plate_rec_green", "plate_rec_night", "plate_rec_large", "plate_prov", "plate_prov_green",
                "plate_prov_night")
PAD = 114


@dataclass(frozen=True)
class Candidate:
    text: str
    p: float


@dataclass
class PlateRead:
    quad: np.ndarray                 # 4 x 2 corners in the frame (tl, tr, br, bl)
    candidates: list[Candidate]      # valid plate strings, most likely first (may be empty: unreadable)
    score: float                     # detector confidence (mean mask probability)

    @property
    def text(self) -> str | None:
        return self.candidates[0].text if self.candidates else None

    @property
    def width(self) -> float:
        """How wide the plate is across the frame: the gate acts on the widest (the nearest car)."""
        return _width(self.quad)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    s = size / max(h, w)
    out = np.full((size, size, 3), PAD, np.uint8)
    r = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out[: r.shape[0], : r.shape[1]] = r
    return out, s


def beam_search(logp: np.ndarray, beam: int = 8, k: int = 5, prune: float = -7.0, per_step: int = 8,
                grammar: Callable[[str], bool] | None = None) -> list[tuple[str, float]]:
    """CTC prefix beam search over (T, C) log-probabilities; the `k` best strings with probabilities.
    Per step only the `per_step` likeliest classes above `prune` extend a beam (bounded work on the
    garbage a false region gives). With `grammar`, a prefix it rejects is never followed: the beams
    go to strings that can still be a plate (a rim read as a ninth character no longer crowds out
    the plate it follows). Plain Python floats and a grammar cache shared across calls: it runs on
    every plate-like outline of every frame, and numpy's scalar calls cost more than the search."""
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (log p blank-end, log p char-end)
    for t in range(logp.shape[0]):
        row = logp[t]
        top = np.argpartition(row, -per_step)[-per_step:]
        top = top[row[top] > prune]
        steps = list(zip(top.tolist(), row[top].tolist(), strict=False))
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            total = _lse(pb, pnb)
            for c, p in steps:
                if c == 0:
                    e = nxt[prefix]
                    e[0] = _lse(e[0], total + p)
                    continue
                new = (*prefix, c)
                if prefix and prefix[-1] == c:
                    same = nxt[prefix]
                    same[1] = _lse(same[1], pnb + p)   # a repeat collapses into the same prefix ...
                    if grammar is None or _allowed(grammar, new):
                        e = nxt[new]
                        e[1] = _lse(e[1], pb + p)      # ... unless a blank came between
                elif grammar is None or _allowed(grammar, new):
                    e = nxt[new]
                    e[1] = _lse(e[1], total + p)
        beams = dict(sorted(((p, (v[0], v[1])) for p, v in nxt.items()), key=lambda kv: -_lse(*kv[1]))[:beam])
    out = sorted((("".join(CHARSET[i - 1] for i in p), math.exp(_lse(*v))) for p, v in beams.items()), key=lambda x: -x[1])
    return out[:k]


def _lse(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) on Python floats."""
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


@lru_cache(maxsize=1 << 16)
def _allowed(grammar: Callable[[str], bool], prefix: tuple[int, ...]) -> bool:
    return grammar("".join(CHARSET[i - 1] for i in prefix))


def with_province(reads: list[tuple[str, float]], province_p: np.ndarray, weight: float = PROVINCE_WEIGHT) -> list[tuple[str, float]]:
    """The recogniser's readings with their province re-weighed by the province classifier.

    For each reading of the last characters (the "rest"), the recogniser's own belief in each
    province, p(province | rest), is mixed with the classifier's (`weight` is the classifier's
    share); the rest keeps its total probability. So the classifier can overrule the recogniser's
    province, but never invents the other characters."""
    rests: dict[str, dict[str, float]] = {}
    for text, p in reads:
        if text[:1] in PROVINCES:
            provs = rests.setdefault(text[1:], {})
            provs[text[0]] = provs.get(text[0], 0.0) + p
    out = []
    for rest, provs in rests.items():
        total = sum(provs.values())
        if total <= 0.0:  # underflowed: nothing to re-weigh
            continue
        mixed = weight * province_p + (1 - weight) * np.array([provs.get(c, 0.0) / total for c in PROVINCES])
        for i in np.argsort(mixed)[::-1][:3]:
            out.append((PROVINCES[i] + rest, float(total * mixed[i])))
    return sorted(out, key=lambda r: -r[1])


def readings(logp: np.ndarray, province_p: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
    """A crop's plate readings (plate spelling), most probable first: the grammar-bound beam search,
    renormalised over the plate-shaped strings when those hold at least `PLATE_MASS` of its belief
    (p(reading | it is a plate): a rim read as one more character no longer dilutes the plate),
    then the province re-weighed by the classifier (`with_province`)."""
    found = [(t, p) for t, p in beam_search(logp, k=k, grammar=could_be) if is_valid(normalise(t))]
    mass = sum(p for _, p in found)
    if mass >= PLATE_MASS:
        found = [(t, p / mass) for t, p in found]
    return [(normalise(t), p) for t, p in with_province(found, province_p)]


class PlateReader:
    """Loads the plate models (`PLATE_MODELS`, sha256-checked); `read(rgb)` returns the plates in a frame."""

    def __init__(self, models_dir: Path = MODELS_DIR, *, threads: int = 1, det_threshold: float = 0.5):
        self._det_info = checked("plate_det", models_dir)
        self._rec_info = checked("plate_rec", models_dir)
        self._det = session(self._det_info, threads)
        self._rec = session(self._rec_info, threads)
        self._large = session(checked("plate_rec_large", models_dir), threads)
        self._green = session(checked("plate_rec_green", models_dir), threads)
        self._night = session(checked("plate_rec_night", models_dir), threads)
        self._prov = session(checked("plate_prov", models_dir), threads)
        self._prov_green = session(checked("plate_prov_green", models_dir), threads)
        self._prov_night = session(checked("plate_prov_night", models_dir), threads)
        # the readers of each palette (plate_cues.palette: COLOUR, GREEN, PLAIN), recogniser and province
        self._readers = (self._rec, self._green, self._night)
        self._provinces = (self._prov, self._prov_green, self._prov_night)
        self.det_threshold = float(self._det_info.meta.get("threshold", det_threshold))
        self.min_p = float(self._rec_info.meta.get("min_p", 0.3))

    # -- detection ------------------------------------------------------------------------------
    def _mask(self, bgr: np.ndarray, size: int = DET, view: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, float]:
        """The detector's plate probability per cell, and the frame-to-input scale. `view`: the
        frame already shrunk (`plate_cues.shrunk`, never below `size`), letterboxed from instead."""
        small, s0 = view if view is not None and max(view[0].shape[:2]) >= size else (bgr, 1.0)
        img, s = letterbox(small, size)
        logits = self._det.run(None, {"image": img.astype(np.float32).transpose(2, 0, 1)[None]})[0][0, 0]
        return _sigmoid(logits), s * s0

    def _blobs(self, prob: np.ndarray, s: float, min_cells: int = 3) -> list[tuple[np.ndarray, float]]:
        """(minimum-area rectangle corners in the letterboxed image's source coordinates, mean probability)."""
        n, labels, stats, _ = cv2.connectedComponentsWithStats((prob > self.det_threshold).astype(np.uint8), connectivity=8)
        out = []
        for i in range(1, n):
            if stats[i, cv2.CC_STAT_AREA] < min_cells:
                continue
            ys, xs = np.nonzero(labels == i)
            pts = np.stack([xs, ys], axis=1).astype(np.float32) * STRIDE + STRIDE / 2
            rect = cv2.minAreaRect(pts)
            (cx, cy), (w, h), a = rect
            rect = ((cx, cy), (w + STRIDE, h + STRIDE), a)  # the cells' extent, not their centres
            out.append((cv2.boxPoints(rect) / s, float(prob[labels == i].mean())))
        return out

    def detect(self, bgr: np.ndarray, view: tuple[np.ndarray, float] | None = None,
               memo: BlobMemo | None = None) -> list[tuple[list[np.ndarray], float]]:
        """Plate regions in the frame, each with its candidate outlines (best guess first): the plate
        colour's own outline inside the region, then the detector's. `read` keeps the one that reads
        best, and tightens it to its characters when that reading is unsure. `view`: see `_mask`;
        `memo`: the frame's colour blobs, kept for the second look (`_read_regions`)."""
        return [(_outlines(bgr, order_quad(quad), memo), score) for quad, score in self._blobs(*self._mask(bgr, view=view))]

    # -- recognition ----------------------------------------------------------------------------
    @staticmethod
    def rectify(bgr: np.ndarray, quad: np.ndarray, mx: float = 0.02, my: float = 0.05) -> np.ndarray:
        """The plate face-on at 128x32, with a small margin like the training crops."""
        dst = np.array([[REC_W * mx, REC_H * my], [REC_W * (1 - mx), REC_H * my],
                          [REC_W * (1 - mx), REC_H * (1 - my)], [REC_W * mx, REC_H * (1 - my)]], np.float32)
        m = cv2.getPerspectiveTransform(np.asarray(quad, np.float32), dst)
        return cv2.warpPerspective(bgr, m, (REC_W, REC_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def recognise(self, crops: list[np.ndarray], k: int = 5, *, large: bool = False) -> list[list[Candidate]]:
        """Top-k valid readings of plate crops (BGR, any size), by the small recogniser or the `large` one."""
        if not crops:
            return []
        resized = np.stack([cv2.resize(c, (REC_W, REC_H), interpolation=cv2.INTER_AREA) for c in crops])
        x = resized.astype(np.float32).transpose(0, 3, 1, 2)
        which = palette(resized)
        logp = self._large.run(None, {"image": x})[0] if large else _run_split(x, which, self._readers)
        # only crops whose best path is something like a plate are searched (a grille or a sign is not)
        plate_like = [i for i, lp in enumerate(logp) if 6 <= _greedy_length(lp) <= 9]
        out: list[list[Candidate]] = [[] for _ in crops]
        if not plate_like:
            return out
        province = _softmax(_run_split(np.ascontiguousarray(x[plate_like, :, :, :PROVINCE_COLUMNS]), which[plate_like], self._provinces))
        for i, prov in zip(plate_like, province, strict=False):
            cands = [Candidate(t, p) for t, p in readings(logp[i], prov, k * 2) if p >= self.min_p * 0.1]
            # unreadable unless the best reading is confident; the runners-up stay for the lookup (fuzzy tolerance)
            out[i] = cands[:k] if cands and cands[0].p >= self.min_p else []
        return out

    def read_crop(self, bgr: np.ndarray, k: int = 5, margin: float = 0.1) -> list[Candidate]:
        """Top-k readings of a plate already cut out (BGR): another camera's plate crop, a
        technician's, a benchmark's. The crop is read as a region of a frame, with the same refine
        steps as a detected one: padded with the letterbox grey (so the plate's own colour outline
        can be found inside it), read through that outline and its own, then tightened when unsure.
        Why not the recogniser on the crop as it is: a crop cut square around a tilted plate holds
        it slanted, with the corners of the car; rectified, the characters stand as in training."""
        h, w = bgr.shape[:2]
        m = max(4, round(w * margin))
        padded = cv2.copyMakeBorder(bgr, m, m, m, m, cv2.BORDER_CONSTANT, value=(PAD, PAD, PAD))
        quad = np.array([[m, m], [m + w, m], [m + w, m + h], [m, m + h]], np.float32)
        memo = BlobMemo()
        return self._read_regions(padded, [(_outlines(padded, quad, memo), 0.0)], k, known=True, memo=memo)[0].candidates

    def read(self, rgb: np.ndarray, k: int = 5) -> list[PlateRead]:
        """Every plate region, read through each of its candidate outlines, which vote on the
        reading (a detector region no outline can read is kept, unreadable). The places classic
        cues propose (edge.vision.plate_cues) are read alongside and count only when they read as
        a plate: they find the far and dim plates the detector misses. Once the detector's regions
        have read a plate with confidence, only the cues' places at least as wide as it are read:
        the gate acts on the largest plate read (edge.vision.worker), so a smaller one could not
        change what it does, and reading them was a third of a frame's time. A frame where nothing
        reads is tried once more equalised (`_read_equalised`)."""
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        view, memo = shrunk(bgr), BlobMemo()  # one downscale for the detector and the cues; each region's colour blobs once
        reads = self._read_regions(bgr, self.detect(bgr, view, memo), k, memo=memo)
        read_boxes = [r.quad for r in reads if r.candidates]
        sure = max((r.width for r in reads if _p(r.candidates) >= SURE), default=0.0)
        cued = [(_outlines(bgr, q, memo), 0.0) for q in proposals(bgr, view=view)
                if _width(q) >= sure and not any(_inside(q.mean(axis=0), b) for b in read_boxes)]
        reads += [r for r in self._read_regions(bgr, cued, k, memo=memo) if r.candidates]
        if not any(r.candidates for r in reads):
            reads += self._read_equalised(bgr, k)
        return self._dedupe(reads)

    def _read_equalised(self, bgr: np.ndarray, k: int) -> list[PlateRead]:
        """A frame where nothing read, once more with its lightness equalised locally (CLAHE): at
        dusk, in haze or in glare a plate is a dark, flat patch that neither the detector nor the
        cues pick out, and equalised its characters stand out again. The cues' places only, one
        look each: it runs on every frame without a plate (an empty gate), so it is kept cheap."""
        lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
        lab[..., 0] = cv2.createCLAHE(clipLimit=EQUALISE_CLIP, tileGridSize=(8, 8)).apply(lab[..., 0])
        lit = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
        regions = [(_outlines(lit, q), 0.0) for q in proposals(lit)]
        return [r for r in self._read_regions(lit, regions, k, looks=1) if r.candidates]

    def _read_regions(self, bgr: np.ndarray, regions: list[tuple[list[np.ndarray], float]], k: int, looks: int = 2,
                      known: bool = False, memo: BlobMemo | None = None) -> list[PlateRead]:
        """Each region's reading, voted over its outlines (`_vote`). A region not read with
        confidence gets a second look through the winning outline tightened to its characters
        (`tighten`): a loose outline shrinks the characters below what the recogniser knows, or cuts
        the province off; through the plate-shaped places inside the region (`proposals_in`), for a
        region far bigger than its plate; through the plate colour's four corners
        (`colour_corners`), for a plate seen from the side; and through the winning outline sheared
        until its characters stand upright (`deslant`), for a plate seen from above and aside whose
        outline is a rectangle but whose characters lean. A region that read something unsure is
        also read by the large recogniser through its winning outline shrunk by 10 % (`_zoomed`):
        where the small one is unsure, a stronger reader with a slightly tighter framing is the look
        that most often settles it. `looks=1`: no second look. `known`: the
        region is a plate (a crop handed in), so it is deslanted even if nothing read; a detector's
        or cue's region must read first (most are not plates, and each look costs a recognition).
        `memo`: the frame's colour blobs the outlines came from (the corners are found in them)."""
        options: list[list[tuple[np.ndarray, list[Candidate]]]] = [[] for _ in regions]
        self._look(bgr, [(i, q) for i, (outlines, _) in enumerate(regions) for q in outlines], options, k)
        if looks > 1:
            votes = [self._vote(o) for o in options]
            unsure = [(i, q) for i, (q, c) in enumerate(votes) if _p(c) < SURE]
            again = [(i, t) for i, q in unsure if (t := tighten(bgr, q)) is not None]
            again += [(i, p) for i, _ in unsure for p in proposals_in(bgr, regions[i][0][-1])]
            again += [(i, c) for i, _ in unsure if (c := colour_corners(bgr, regions[i][0][-1], memo)) is not None]
            read = [(i, q) for i, q in unsure if votes[i][1] or known]  # unsure, but something like a plate
            again += [(i, d) for i, q in read if (d := deslant(bgr, q)) is not None]
            self._look(bgr, again, options, k)
            self._look(bgr, [(i, z) for i, q in read for z in _zoomed(q)], options, k, large=True)
        return [PlateRead(*self._vote(opts), score) for (_, score), opts in zip(regions, options, strict=False)]

    def _look(self, bgr: np.ndarray, outlines: list[tuple[int, np.ndarray]], options: list[list[tuple[np.ndarray, list[Candidate]]]],
              k: int, large: bool = False) -> None:
        """Read each (region index, outline) and add the outline's readings to its region's options."""
        for (i, q), c in zip(outlines, self.recognise([self.rectify(bgr, q) for _, q in outlines], k, large=large), strict=False):
            options[i].append((q, c))

    def _vote(self, options: list[tuple[np.ndarray, list[Candidate]]]) -> tuple[np.ndarray, list[Candidate]]:
        return _vote(options, self.min_p)

    @staticmethod
    def _dedupe(reads: list[PlateRead]) -> list[PlateRead]:
        """One reading per plate: of the readings whose outlines overlap, or that agree, the most
        probable stays (its runners-up stay with it); unreadable regions stay as they are."""
        kept: list[PlateRead] = []
        for r in sorted((r for r in reads if r.candidates), key=lambda r: -r.candidates[0].p):
            same = next((o for o in kept if r.text == o.text or _inside(r.quad.mean(axis=0), o.quad) or _inside(o.quad.mean(axis=0), r.quad)), None)
            if same is None:
                kept.append(r)
                continue
            known = {c.text for c in same.candidates}
            extra = [c for c in r.candidates if c.text not in known]
            same.candidates = sorted(same.candidates + extra, key=lambda c: -c.p)[: max(len(same.candidates), len(r.candidates))]
        return kept + [r for r in reads if not r.candidates]


def _run_split(x: np.ndarray, which: np.ndarray, models: tuple[ort.InferenceSession, ...]) -> np.ndarray:
    """A model's output for a batch whose rows go to the model of their palette (`which`, indexes
    into `models`: plate_cues.palette), in the batch's order.

    Why a reader per palette for the first look: a reader trained to read both colours well loses
    blue accuracy as it gains green (a fine-tune towards green cost 1 % of the blue crops and a
    scene), and one taught colourless plates lost as much; the crop's colour, which says which
    reader to ask, is plain to see."""
    used = [(k, which == k) for k in np.unique(which).tolist()]
    if len(used) == 1:
        return models[used[0][0]].run(None, {"image": x})[0]
    parts = [(mask, models[k].run(None, {"image": np.ascontiguousarray(x[mask])})[0]) for k, mask in used]
    out = np.empty((len(x), *parts[0][1].shape[1:]), np.float32)
    for mask, part in parts:
        out[mask] = part
    return out


def _zoomed(quad: np.ndarray, scales: tuple[float, ...] = ZOOMS) -> list[np.ndarray]:
    """The outline scaled about its centre by each of `scales`."""
    q = np.asarray(quad, np.float32)
    c = q.mean(axis=0)
    return [c + (q - c) * s for s in scales]


def _outlines(bgr: np.ndarray, quad: np.ndarray, memo: BlobMemo | None = None) -> list[np.ndarray]:
    """A region's outlines to read: the plate colour's own inside it (if any), then the region's."""
    colour = colour_outline(bgr, quad, memo)
    return [colour, quad] if colour is not None else [quad]


def _p(cands: list[Candidate]) -> float:
    return cands[0].p if cands else 0.0


def _width(quad: np.ndarray) -> float:
    """How wide an outline is across the frame (the measure the gate ranks plates by)."""
    return float(np.ptp(np.asarray(quad)[:, 0]))


def _vote(options: list[tuple[np.ndarray, list[Candidate]]], min_p: float) -> tuple[np.ndarray, list[Candidate]]:
    """A region's readings from those of its outlines: each string ranked by the sum of its
    probabilities over the outlines (agreement), reported with its best single probability and the
    outline that gave it; only a string read confidently (>= min_p) by some outline can come first.
    A string with one character fewer than another also votes for that one: an outline that cuts
    a plate's end off (a shadow across it shrinks the plate's colour) or runs two equal characters
    together at low resolution saw the same plate, and it loses characters; it does not add them.
    Why a vote, not the single most probable outline: more outlines are read than fit the plate
    (the colour's rectangle, its corners, the detector's blob, tightened and inner ones), and one
    that cuts a character off or slants the glyphs can read a wrong plate confidently; the
    outlines that see the plate whole then agree against it."""
    total: dict[str, float] = defaultdict(float)
    best: dict[str, tuple[np.ndarray, Candidate]] = {}
    for quad, cands in options:
        for c in cands:
            total[c.text] += c.p
            if c.text not in best or c.p > best[c.text][1].p:
                best[c.text] = (quad, c)
    if not total:
        return options[0][0], []
    for short, votes in list(total.items()):
        for whole in [t for t in total if _one_more(short, t)]:
            total[whole] += votes
    order = sorted(total, key=lambda t: -total[t])
    first = next((t for t in order if best[t][1].p >= min_p), order[0])
    order = [first] + [t for t in order if t != first]
    return best[first][0], [best[t][1] for t in order[: max(len(c) for _, c in options)]]


def _one_more(short: str, whole: str) -> bool:
    """True when `whole` is `short` with one character more (anywhere)."""
    return len(whole) == len(short) + 1 and any(whole[:i] + whole[i + 1:] == short for i in range(len(whole)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _greedy_length(logp: np.ndarray) -> int:
    """Characters on the best path (blanks and repeats collapsed)."""
    best = logp.argmax(-1)
    return int(np.count_nonzero((best != 0) & np.r_[True, best[1:] != best[:-1]]))


def _inside(point: np.ndarray, quad: np.ndarray) -> bool:
    return cv2.pointPolygonTest(np.asarray(quad, np.float32).reshape(-1, 1, 2), (float(point[0]), float(point[1])), False) >= 0
