"""`door-edge bench face --data DIR`: accuracy on stills, speed on a stream, against the stock
face_recognition pipeline run in the same process on the same images.

Data: `DIR/labels.csv` (`file,identity`; `MULTI:...` group photos are skipped). Identities with at
least 4 images enrol their first 3 (by file name); the rest are genuine probes. Impostor probes:
every single-image identity, and every genuine probe against a gallery without its own identity.

- Ours: `edge.vision.face` (5-point alignment, dlib's embedding network run by onnxruntime
  (edge.vision.face_embed: dlib's numbers, ~13x faster here), augmented enrolment templates, scores
  normalised against the fixed cohort of models/face_cohort.npz, a distance limit).
- Baseline, as face_recognition's README shows it (`face_locations` with its defaults = HOG with
  one upsampling on the whole image, `face_encodings` = 5-point model with one jitter,
  `compare_faces` at 0.6, the nearest known face): the same dlib calls its api.py makes, without
  importing the package (its model loader needs `pkg_resources`).
- Stream: each probe pasted on a 640x480 background and moved a few pixels per frame for 30 frames
  (one walk-up per probe; liveness off: these frames are a still photo by construction). Ours
  decides as the daemon does: the vision worker's answer for the nearest face of each frame
  (`answer_for`) through the walk-up rule (`edge.access.walkup` at its default settings: the same
  answer on 3 consecutive frames, a low-quality frame breaking the run); it tracks the face in a
  region around the last frame's box (a frame without a face sends the next search to the whole frame, as
  in the worker), and stops embedding once a walk-up is decided; the baseline runs its
  whole pipeline on every frame and opens on the first frame whose nearest known face is within
  0.6. `decision_ms` adds up the processing time from a walk-up's first frame to its decision.
- Folds (`far_at_tar95`, `tar_at_far001`, `folds`): the stills judged fold by fold, five folds by
  person; see `kfold`.
- Video (`video`, when ../video/short_hamilton_clip.mp4 is beside DIR): devtools.bench_face_video.
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np

from devtools.bench_face_video import video_check
from edge.access.walkup import UNKNOWN, FaceAnswer, WalkUp
from edge.config import FaceSection
from edge.vision.enrol import read_rgb
from edge.vision.face import MODEL_FILES, Face, FacePipeline, Gallery, answer_for, model_dir

FRAMES = 30
FRAME_S = 0.1  # the walk-ups' clock: a gateway camera sends about 10 frames a second
STOCK_TOLERANCE = 0.6


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


class Stock:
    """face_recognition's api.py, call for call."""

    def __init__(self) -> None:
        d = model_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(d / MODEL_FILES["shape5"]))
        self.encoder = dlib.face_recognition_model_v1(str(d / MODEL_FILES["encoder"]))

    def encodings(self, rgb: np.ndarray) -> list[np.ndarray]:
        return [np.array(self.encoder.compute_face_descriptor(rgb, self.shape(rgb, r), 1)) for r in self.detector(rgb, 1)]

    @staticmethod
    def identify(known: np.ndarray, names: list[str], enc: np.ndarray) -> str | None:
        d = np.linalg.norm(known - enc, axis=1)
        best = int(np.argmin(d))
        return names[best] if d[best] <= STOCK_TOLERANCE else None


@dataclass
class Split:
    enrol: dict[str, list[str]]
    genuine: list[tuple[str, str]]   # (identity, file)
    singles: list[tuple[str, str]]
    files: list[tuple[str, str]]     # every (identity, file) not in a group photo


def split(data: Path) -> Split:
    by: dict[str, list[str]] = defaultdict(list)
    with (data / "labels.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if not row["identity"].startswith("MULTI:"):
                by[row["identity"]].append(row["file"])
    enrol, genuine, singles, files = {}, [], [], []
    for ident, fs in sorted(by.items()):
        fs.sort()
        files += [(ident, f) for f in fs]
        if len(fs) >= 4:
            enrol[ident] = fs[:3]
            genuine += [(ident, f) for f in fs[3:]]
        elif len(fs) == 1:
            singles.append((ident, fs[0]))
    return Split(enrol, genuine, singles, files)


def walk_up(img: np.ndarray, frames: int = FRAMES) -> list[np.ndarray]:
    out = []
    h, w = img.shape[:2]
    for i in range(frames):
        bg = np.full((480, 640, 3), (96, 104, 112), np.uint8)
        x, y = 240 + 3 * i, 150 + 2 * i
        bg[y:y + h, x:x + w] = img[: 480 - y, : 640 - x]
        out.append(bg)
    return out


def _walk_up_rule() -> WalkUp:
    """The daemon's walk-up rule (edge.access.walkup) at its default settings, liveness off: a bench
    walk-up is a still photo moved about, so it would never pass."""
    return WalkUp(FaceSection(liveness=False), liveness=lambda chips: 0.0)


def _decision(rule: WalkUp, n: int, face: Face | None, gallery: Gallery) -> str | None:
    """Frame n of a walk-up through the daemon's rule, with the worker's answer for its nearest face
    (`answer_for`): the resident decided on, UNKNOWN, or None while undecided (a face the walk-up
    never found usable is no decision here)."""
    answer: FaceAnswer | None = answer_for(face, gallery)[0] if face is not None else None
    verdict = rule.observe(n * FRAME_S, answer)
    if verdict is None or verdict.reason not in ("match", UNKNOWN):
        return None
    return verdict.person or UNKNOWN


def bench_face(data: Path) -> dict:
    sp = split(data)
    ours, stock = FacePipeline(), Stock()
    images = {f: read_rgb(data / f) for _, f in sp.files}

    # -- stills: templates and probe embeddings ------------------------------------------------------
    people, rows, s_names, s_rows = [], [], [], []
    for ident, fs in sp.enrol.items():
        for f in fs:
            faces = [x for x in ours.analyse(images[f], template=True) if x.embedding is not None]
            if faces:
                people.append(ident)
                rows.append(faces[0].embedding)
            enc = stock.encodings(images[f])
            if enc:
                s_names.append(ident)
                s_rows.append(enc[0])
    gallery = Gallery(people, np.vstack(rows))
    known = np.vstack(s_rows)
    without = {ident: Gallery([p for p in people if p != ident], np.vstack([r for p, r in zip(people, rows, strict=False) if p != ident]))
               for ident in sp.enrol}
    emb: dict[str, np.ndarray | None] = {}
    for _, f in sp.files:
        faces = [x for x in ours.analyse(images[f]) if x.embedding is not None]
        emb[f] = faces[0].embedding if faces else None

    def ours_says(g: Gallery, f: str) -> str | None:
        return None if emb[f] is None else g.search(emb[f]).person

    def stock_says(f: str, exclude: str | None = None) -> str | None:
        enc = stock.encodings(images[f])
        if not enc:
            return None
        keep = [i for i, n in enumerate(s_names) if n != exclude]
        return Stock.identify(known[keep], [s_names[i] for i in keep], enc[0])

    impostors = [(None, f) for _, f in sp.singles] + [(ident, f) for ident, f in sp.genuine]
    folds = kfold(sp, gallery, without, emb, ours.s.threshold)
    video = video_check(data.parent / "video" / "short_hamilton_clip.mp4", data, ours, people, rows)
    tar = sum(ours_says(gallery, f) == i for i, f in sp.genuine) / len(sp.genuine)
    rank1 = sum(emb[f] is not None and gallery.search(emb[f]).nearest == i for i, f in sp.genuine) / len(sp.genuine)
    far = sum(ours_says(gallery if ex is None else without[ex], f) is not None for ex, f in impostors) / len(impostors)
    b_tar = sum(stock_says(f) == i for i, f in sp.genuine) / len(sp.genuine)
    b_far = sum(stock_says(f, ex) is not None for ex, f in impostors) / len(impostors)

    # all image pairs at our threshold (an image without a usable face cannot match: a rejection)
    keys = [(i, f) for i, f in sp.files]
    ga = gr = ia = it = 0
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            (ia_, fa), (ib_, fb) = keys[a], keys[b]
            ok = emb[fa] is not None and emb[fb] is not None and float(np.linalg.norm(emb[fa] - emb[fb])) <= ours.s.threshold
            if ia_ == ib_:
                ga += 1
                gr += not ok
            else:
                it += 1
                ia += ok

    # -- stream ---------------------------------------------------------------------------------------
    frame_ms: list[float] = []
    decision_ms: list[float] = []
    right = b_right = walks = 0
    b_frames = b_time = 0.0
    for truth, f in [(i, f) for i, f in sp.genuine] + [(None, f) for _, f in sp.singles]:
        frames = walk_up(images[f])
        # ours, timed once; the decision is then taken against the full gallery and, for a genuine
        # probe, also against the gallery without its own identity (the impostor case)
        seen: list[Face | None] = []
        rule, decision, decided_at, box, elapsed = _walk_up_rule(), None, None, None, 0.0
        for n, frame in enumerate(frames):
            t0 = time.perf_counter()
            faces = ours.analyse(frame, embed=decided_at is None, roi=box, nearest_only=True)  # as the vision worker
            seen.append(faces[0] if faces else None)
            box = faces[0].box if faces else None  # as the vision worker: a frame without a face sends the next search to the whole frame
            if decided_at is None:
                decision = _decision(rule, n, faces[0] if faces else None, gallery)
                decided_at = n if decision else None
            dt = (time.perf_counter() - t0) * 1000
            frame_ms.append(dt)
            elapsed += dt
            if decided_at == n:
                decision_ms.append(elapsed)
        cases = [(truth, decision)]
        if truth is not None:  # the same walk-up against a gallery without this person (its frames up to the decision)
            rule2, dec2 = _walk_up_rule(), None
            for n, face in enumerate(seen[:None if decided_at is None else decided_at + 1]):  # later frames were not embedded
                if dec2 := _decision(rule2, n, face, without[truth]):
                    break
            cases.append((None, dec2))
        for want, got in cases:
            walks += 1
            right += (got == want) if want is not None else (got is None or got == "unknown_face")
        # the stock pipeline on every frame; it opens on the first frame that matches anyone
        opened: list[str | None] = [None, None]
        t0 = time.perf_counter()
        for frame in frames:
            enc = stock.encodings(frame)
            if enc:
                if opened[0] is None:
                    opened[0] = Stock.identify(known, s_names, enc[0])
                if truth is not None and opened[1] is None:
                    keep = [i for i, nm in enumerate(s_names) if nm != truth]
                    opened[1] = Stock.identify(known[keep], [s_names[i] for i in keep], enc[0])
        b_time += time.perf_counter() - t0
        b_frames += len(frames)
        b_right += (opened[0] == truth) if truth is not None else opened[0] is None
        if truth is not None:
            b_right += opened[1] is None

    fps = 1000 / float(np.mean(frame_ms))
    b_fps = b_frames / b_time

    # -- 1:N over 50,000 templates --------------------------------------------------------------------
    rng = np.random.default_rng(7)
    big = np.vstack(rows)[rng.integers(0, len(rows), 50_000)] + rng.normal(0, 0.05, (50_000, 128)).astype(np.float32)
    g50 = Gallery([f"P{i // 3}" for i in range(50_000)], big)
    q = emb[sp.genuine[0][1]]
    times = []
    for _ in range(21):
        t0 = time.perf_counter()
        g50.search(q)
        times.append((time.perf_counter() - t0) * 1000)

    return {"bench": "face", "identities": len(sp.enrol), "enrolled_per_identity": 3, "probes": len(sp.genuine),
            "impostor_probes": len(impostors), "tar": round(tar, 4), "open_set_far": round(far, 4), "rank1": round(rank1, 4),
            "pair_far": round(ia / it, 5), "pair_frr": round(gr / ga, 4), "threshold": ours.s.threshold,
            "baseline_tar": round(b_tar, 4), "baseline_open_set_far": round(b_far, 4),
            "frame_ms": {"p50": _pct(frame_ms, 50), "p99": _pct(frame_ms, 99)}, "fps": round(fps, 1),
            "decision_ms": {"p50": _pct(decision_ms, 50), "p99": _pct(decision_ms, 99)},
            "stream_accuracy": round(right / walks, 4), "baseline_fps": round(b_fps, 2),
            "baseline_stream_accuracy": round(b_right / walks, 4), "speedup": round(fps / b_fps, 2),
            "search_50k_ms": round(float(np.median(times)), 3),
            "far_at_tar95": folds["far_at_tar95"], "tar_at_far001": folds["tar_at_far001"], "folds": folds["summary"], "video": video}


FOLDS = 5
FAR_TARGET = 0.005


def _fold_of(ident: str) -> int:
    """A person's fold: fixed by the name (so a person's photos are always judged together)."""
    import zlib

    return zlib.crc32(ident.encode()) % FOLDS


def _curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float | None, float | None]:
    """FAR where TAR reaches 0.95, and TAR where FAR is at most 0.001 (scores: higher accepts)."""
    if not len(genuine) or not len(impostor):
        return None, None
    t95 = np.sort(genuine)[int(np.floor(0.05 * len(genuine)))]
    far95 = float(np.mean(impostor >= t95)) if np.isfinite(t95) else 1.0
    cut = np.sort(impostor)[::-1][int(np.floor(0.001 * len(impostor)))]
    return round(far95, 4), round(float(np.mean(genuine > cut)), 4)


def kfold(sp: Split, gallery: Gallery, without: dict[str, Gallery], emb: dict[str, np.ndarray | None], max_dist: float) -> dict:
    """Stills, judged fold by fold (people split five ways by name). A fold's threshold is chosen on
    the other four (the least score that lets no more than 0.5 % of their strangers in) and judged
    on it; the curve points are the fold's own. A probe's score is its best person's normalised
    score, -inf when that is not its own person (genuine) or farther than `max_dist`."""

    def score(g: Gallery, f: str, want: str | None) -> float:
        if emb[f] is None:
            return -np.inf
        m = g.search(emb[f])
        if m.distance > max_dist or (want is not None and m.nearest != want):
            return -np.inf
        return m.z

    gen = [(_fold_of(i), score(gallery, f, i)) for i, f in sp.genuine]
    imp = [(_fold_of(i), score(gallery, f, None)) for i, f in sp.singles] + [(_fold_of(i), score(without[i], f, None)) for i, f in sp.genuine]
    out: dict[str, list] = {"far_at_tar95": [], "tar_at_far001": [], "tar": [], "far": [], "threshold": []}
    for k in range(FOLDS):
        g_in = np.array([x for fo, x in gen if fo == k])
        i_in = np.array([x for fo, x in imp if fo == k])
        i_out = np.sort([x for fo, x in imp if fo != k])[::-1]
        allowed = int(np.floor(FAR_TARGET * len(i_out)))
        t = float(i_out[allowed]) + 1e-6 if len(i_out) > allowed and np.isfinite(i_out[allowed]) else -np.inf
        far95, tar001 = _curve(g_in, i_in)
        out["far_at_tar95"].append(far95)
        out["tar_at_far001"].append(tar001)
        out["threshold"].append(round(t, 3))
        out["tar"].append(round(float(np.mean(g_in >= t)), 4) if len(g_in) else None)
        out["far"].append(round(float(np.mean(i_in >= t)), 4) if len(i_in) else None)

    def mean_worst(values: list, worst) -> dict:
        v = [x for x in values if x is not None]
        return {"mean": round(float(np.mean(v)), 4), "worst": worst(v)} if v else {"mean": None, "worst": None}

    summary = {"k": FOLDS, "probes": [sum(fo == k for fo, _ in gen) for k in range(FOLDS)],
               "impostor_probes": [sum(fo == k for fo, _ in imp) for k in range(FOLDS)], "threshold": out["threshold"],
               "tar": mean_worst(out["tar"], min), "open_set_far": mean_worst(out["far"], max),
               "far_at_tar95": mean_worst(out["far_at_tar95"], max), "tar_at_far001": mean_worst(out["tar_at_far001"], min)}
    return {"far_at_tar95": out["far_at_tar95"], "tar_at_far001": out["tar_at_far001"], "summary": summary}

