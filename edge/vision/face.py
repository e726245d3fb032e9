"""Faces: detection, 5-point alignment, 128-d embeddings, quality gates, open-set 1:N search,
one frame's answer and a liveness check (the decision over frames is edge.access.walkup's). Pure
computation on numpy frames (RGB, uint8).

Models: dlib's HOG detector and 5-point landmark model, run through `dlib-bin` wheels, and dlib's
ResNet embedding model run by onnxruntime (edge.vision.face_embed: the same embeddings, ~15x
faster), all from the files `face_recognition_models` ships. The weight files are located with
`importlib.util.find_spec` rather than by importing the package (its `__init__` runs
`pkg_resources`, which current setuptools no longer ships). The 68-point landmark model is not
used: its training data (iBUG 300-W) excludes commercial use.

Why it refuses strangers where the stock pipeline does not: the stock `compare_faces` accepts
anyone within 0.6 of any template. Here an enrolment template is the mean embedding of fixed
augmentations of the photo (mirror, small shifts, turns, zoom), and a probe is accepted only if
its score against the person's best template stands out from a fixed cohort of strangers
(`Cohort`: AS-norm, adaptive symmetric score normalisation, `score >= z_min`), and its distance is
under `threshold` (a sanity limit). The cohort is 1,969 photos of people who are nobody's
residents (../shared/data/faces_train, training/faces/cohort.py), so a score means the same in a
house of four and in a building of two hundred: the old cohort was the gallery itself, which
said little with few residents and drifted with many. On people none of it was made from, it
raised the true-accept rate at 1 % false accepts from 0.63 (raw distance) to 0.80 (models/manifest.toml).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from edge.access.walkup import FaceAnswer, FaceStatus
from edge.config import FaceSection
from edge.errors import SetupError
from edge.vision.face_embed import FaceEmbedder
from edge.vision.models import MODELS_DIR

MODEL_FILES = {"shape5": "shape_predictor_5_face_landmarks.dat", "encoder": "dlib_face_recognition_resnet_model_v1.dat"}
FACE_MODELS = ("face_embed", "face_cohort")  # ours, in models/ (the manifest's names); the weights are MODEL_FILES'


class FaceModelsMissing(SetupError):
    """The dlib model files cannot be found (names the fix)."""


def model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FaceModelsMissing("face_recognition_models is not installed",
                                "reinstall door-edge (`make install`): the face models come with it")
    d = Path(spec.origin).parent / "models"
    missing = [f for f in MODEL_FILES.values() if not (d / f).exists()]
    if missing:
        raise FaceModelsMissing(f"{d} lacks {', '.join(missing)}", "reinstall face_recognition_models")
    return d


_CONFIGURED = FaceSection()  # the [face] section's defaults: the config is the one place they are set


@dataclass(frozen=True)
class Settings:
    detect_width: int = 320        # frames are downscaled to this width for detection
    upsample: int = 1              # HOG upsampling on the downscaled frame (finds faces down to ~40 px there)
    min_face_px: int = _CONFIGURED.min_face_px  # face box width in the original frame
    min_sharpness: float = 8.0     # variance of the Laplacian on the aligned face
    max_yaw: float = 0.45          # nose offset from the eyes' midline / eye distance
    max_outside: float = 0.1       # share of the face box's width that may lie past the frame's edge
    threshold: float = _CONFIGURED.threshold  # the largest distance to the person's nearest template accepted at all
    z_min: float = _CONFIGURED.z_min          # the least cohort-normalised score (AS-norm) accepted

    @classmethod
    def from_config(cls, face) -> Settings:
        """From the config's [face] section (edge.config.FaceSection)."""
        return cls(min_face_px=face.min_face_px, threshold=face.threshold, z_min=face.z_min)


@dataclass
class Quality:
    ok: bool
    reason: str | None  # None | "too_small" | "cut_off" | "blurred" | "turned_away"
    size_px: float
    sharpness: float
    yaw: float


@dataclass
class Face:
    box: tuple[int, int, int, int]      # left, top, right, bottom in the frame
    landmarks: np.ndarray               # 5 x 2, frame coordinates
    quality: Quality
    chip: np.ndarray                    # aligned 150 x 150 grey face (for liveness; never stored)
    embedding: np.ndarray | None = None  # 128 float32 (only for faces that pass quality)


_AUGMENT = [(0, 0, 0.0, 1.0), (3, 0, 0.0, 1.0), (0, 3, 0.0, 1.0), (0, 0, 4.0, 1.0), (0, 0, -4.0, 1.0), (0, 0, 0.0, 1.05)]


class FacePipeline:
    """Detect, align, gate on quality, embed. Not thread-safe: one per worker."""

    def __init__(self, settings: Settings | None = None, models: Path | None = None, graphs: Path = MODELS_DIR):
        self.s = settings or Settings()
        d = models or model_dir()
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(d / MODEL_FILES["shape5"]))
        self._encoder = FaceEmbedder(d / MODEL_FILES["encoder"], graphs)

    def _detect_at(self, rgb: np.ndarray, scale: float, upsample: int, x0: int = 0, y0: int = 0) -> list:
        h, w = rgb.shape[:2]
        img = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                   interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        return [dlib.rectangle(x0 + round(r.left() / scale), y0 + round(r.top() / scale),
                               x0 + round(r.right() / scale), y0 + round(r.bottom() / scale))
                for r in self._detector(gray, upsample)]

    def detect(self, rgb: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> list:
        """Face rectangles in frame coordinates.

        Whole frame: first downscaled to `detect_width` (a face near the door is big: fast), then,
        if nothing was found, at full resolution with upsampling (a face farther away). Small stills
        are enlarged up to 2x. With `roi` (last frame's box): only the area around it, scaled so
        the face is ~120 px, which costs a few milliseconds instead of a whole-frame search.
        """
        h, w = rgb.shape[:2]
        if roi is not None:
            l, t, r, b = roi
            pad = max(r - l, b - t)
            x0, y0, x1, y1 = max(0, l - pad), max(0, t - pad), min(w, r + pad), min(h, b + pad)
            scale = min(3.0, max(0.25, 120 / max(1, r - l)))
            found = self._detect_at(rgb[y0:y1, x0:x1], scale, 0, x0, y0)
            if found:
                return found
        scale = min(2.0, self.s.detect_width / w)  # small stills are enlarged (up to 2x) so HOG finds their faces
        found = self._detect_at(rgb, scale, self.s.upsample)
        if not found and scale < 1.0:
            found = self._detect_at(rgb, 1.0, self.s.upsample)
        elif not found:  # a small still: one more upsampling (slow, but stills are few)
            found = self._detect_at(rgb, scale, self.s.upsample + 1)
        return found

    def analyse(self, rgb: np.ndarray, *, embed: bool = True, template: bool = False,
                roi: tuple[int, int, int, int] | None = None, nearest_only: bool = False) -> list[Face]:
        """The faces in the frame, the nearest (largest) first. `nearest_only`: that one alone, for a
        door that decides on the nearest face: a photo or a queue puts a second face in the frame
        (two of the bench's slowest walk-ups), and each face costs an embedding (a third of a
        frame's time) that nothing reads."""
        faces = []
        rects = sorted(self.detect(rgb, roi), key=lambda r: -(r.right() - r.left()))
        for rect in rects[:1] if nearest_only else rects:
            shape = self._shape(rgb, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            chip = dlib.get_face_chip(rgb, shape, size=150)
            q = self.quality(rect, pts, chip, rgb.shape[:2])
            face = Face((rect.left(), rect.top(), rect.right(), rect.bottom()), pts, q, cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY))
            if embed and q.ok:
                face.embedding = self._template(chip) if template else self._encoder.embed([chip])[0]
            faces.append(face)
        return faces

    def _template(self, chip: np.ndarray) -> np.ndarray:
        """An enrolment template: the mean embedding of the chip, its mirror image and fixed small
        shifts, turns and zooms of both. Like dlib's jitter, but the same photo always gives the
        same template (dlib's is random: 0.04 apart between two runs, enough to move a verdict)."""
        variants = []
        for dx, dy, angle, zoom in _AUGMENT:
            m = cv2.getRotationMatrix2D((75, 75), angle, zoom)
            m[:, 2] += (dx, dy)
            v = cv2.warpAffine(chip, m, (150, 150), borderMode=cv2.BORDER_REFLECT)
            variants += [v, np.ascontiguousarray(v[:, ::-1])]
        return self._encoder.embed(variants).mean(axis=0)

    def quality(self, rect, pts: np.ndarray, chip: np.ndarray, frame: tuple[int, int] | None = None) -> Quality:
        """Whether a face is fit to match, and if not why. `cut_off`: the face runs past the frame's
        edge (frame = (height, width)); the aligned chip is then half padding, and its embedding
        can land near anyone's: a face coming into view is matched once it is wholly in it."""
        size = float(rect.right() - rect.left())
        outside = 0.0
        if frame is not None:
            h, w = frame
            outside = max(-rect.left(), rect.right() - w, -rect.top(), rect.bottom() - h, 0) / max(size, 1.0)
        sharp = float(cv2.Laplacian(cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
        # 5-point model: 0-1 one eye's corners, 2-3 the other's, 4 below the nose
        eye_a, eye_b, nose = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0), pts[4]
        axis = eye_b - eye_a
        dist = float(np.linalg.norm(axis)) or 1.0
        mid = (eye_a + eye_b) / 2
        yaw = float(np.dot(nose - mid, axis) / dist / dist)
        reason = ("too_small" if size < self.s.min_face_px else "cut_off" if outside > self.s.max_outside
                  else "blurred" if sharp < self.s.min_sharpness else "turned_away" if abs(yaw) > self.s.max_yaw else None)
        return Quality(reason is None, reason, size, sharp, yaw)


# -- 1:N search --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    person: str | None       # None: unknown
    distance: float          # to the person's nearest template
    nearest: str | None      # the best-scoring person, accepted or not
    second: float            # distance to the nearest template of anyone else
    z: float                 # the best person's cohort-normalised score (AS-norm)


class Cohort:
    """Unit-length embeddings of strangers (models/face_cohort.npz); a score is normalised by the
    mean and spread of the `k` best scores of each side against them (AS-norm)."""

    def __init__(self, vectors: np.ndarray, k: int):
        self.v = np.ascontiguousarray(vectors, dtype=np.float32)
        self.k = max(1, min(int(k), len(self.v)))

    @classmethod
    def load(cls, models_dir: Path | None = None) -> Cohort:
        from edge.vision.models import MODELS_DIR, ModelError, checked

        info = checked("face_cohort", models_dir or MODELS_DIR)
        try:
            with np.load(info.path) as data:
                return cls(data["cohort"], int(data["k"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{info.path}: {exc}", "reinstall the package") from None

    def stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For unit-length rows `x`: the mean and spread of each row's `k` best cohort scores."""
        scores = np.atleast_2d(x) @ self.v.T
        top = -np.partition(-scores, self.k - 1, axis=1)[:, : self.k]
        return top.mean(axis=1), top.std(axis=1) + 1e-6


@functools.lru_cache(maxsize=1)
def default_cohort() -> Cohort:
    """The shipped cohort, loaded (and its checksum checked) once per process."""
    return Cohort.load()


class Gallery:
    """Enrolled templates as one float32 matrix; one search is one matrix-vector product (the
    distances and the cosine scores both come from it) plus the probe's cohort statistics."""

    def __init__(self, people: list[str], templates: np.ndarray, settings: Settings | None = None, cohort: Cohort | None = None):
        self.s = settings or Settings()
        self.cohort = cohort or default_cohort()
        order = np.argsort(np.array(people, dtype=object), kind="stable")
        self.people = [people[i] for i in order]
        self.t = (np.ascontiguousarray(templates[order], dtype=np.float32).reshape(len(order), -1) if len(order)
                  else np.zeros((0, 128), np.float32))
        self._norms = (self.t * self.t).sum(axis=1)
        self._lengths = np.sqrt(self._norms) + 1e-12
        if len(self.t):
            self._t_mean, self._t_std = self.cohort.stats(self.t / self._lengths[:, None])
        names, starts = np.unique(np.array(self.people, dtype=object), return_index=True) if self.people else (np.array([]), np.array([]))
        self._names: list[str] = [str(n) for n in names]
        self._starts = np.array(starts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._names)

    def search(self, q: np.ndarray) -> Match:
        if not self._names:
            return Match(None, float("inf"), None, float("inf"), 0.0)
        tq, qq = self.t @ q, float(q @ q)
        dist = np.sqrt(np.maximum(self._norms - 2.0 * tq + qq, 0.0))
        length = float(np.sqrt(qq)) + 1e-12
        cos = tq / (self._lengths * length)
        q_mean, q_std = self.cohort.stats(q / length)
        z = 0.5 * ((cos - q_mean[0]) / q_std[0] + (cos - self._t_mean) / self._t_std)
        per_z = np.maximum.reduceat(z, self._starts)
        per_d = np.minimum.reduceat(dist, self._starts)
        best = int(np.argmax(per_z))
        person, d, score = self._names[best], float(per_d[best]), float(per_z[best])
        rest = np.delete(per_d, best)
        second = float(rest.min()) if len(rest) else float("inf")
        ok = score >= self.s.z_min and d <= self.s.threshold
        return Match(person if ok else None, d, person, second, score)


# -- one frame's answer ----------------------------------------------------------------------------
def answer_for(face: Face, gallery: Gallery) -> tuple[FaceAnswer | None, Match | None]:
    """What a frame's nearest face tells the walk-up (`edge.access.walkup`, which decides over
    frames), and the gallery's match behind it: LOW_QUALITY for a face the quality gate refused, a
    resident or UNKNOWN for an embedded one; no answer for a face that was not embedded (a decided
    walk-up stops embedding). The vision worker and `bench face` both ask here, so the bench's
    walk-ups are decided on the daemon's own answers."""
    if not face.quality.ok:
        return FaceAnswer(FaceStatus.LOW_QUALITY), None
    if face.embedding is None:
        return None, None
    m = gallery.search(face.embedding)
    return (FaceAnswer.match(m.person) if m.person else FaceAnswer(FaceStatus.UNKNOWN)), m


def liveness_score(chips: list[np.ndarray]) -> float:
    """How much the aligned face changes between frames, beyond what moving a flat picture does.

    Each frame's face is aligned to the same 150x150 chip by its landmarks, so translation,
    in-plane rotation and scale of the whole head (or of a photo held up) cancel out; what remains
    is non-rigid change: blinks, expression, the 3-D turn of a real head, and its light. A photo
    moved in front of the camera leaves only resampling noise. Returns the 75th percentile, over the
    frames, of the mean absolute difference between each brightness-normalised chip and the first
    (a walk-up lasts long enough for a blink or a turn; one misaligned frame does not decide).

    What it does not stop: a video replayed on a screen, a 3-D mask, a photo bent or waved so that
    it deforms. It needs a depth or infrared camera for those; face is never the only way in.
    """
    if len(chips) < 2:
        return 0.0
    norm = [(c.astype(np.float32) - c.mean()) / (c.std() + 1e-6) * 40.0 for c in chips]
    inner = (slice(35, 115), slice(35, 115))  # eyes, nose, mouth: not the background or hair at the edges
    diffs = [float(np.abs(norm[0][inner] - c[inner]).mean()) for c in norm[1:]]
    return float(np.percentile(diffs, 75))


# Calibrated on ../shared/data/faces: a photo moved, scaled or turned across 640x480 frames scores
# 1-7 (one landmark failure in 120 reached 17); different moments of one person score 18-36. No live
# video was available: revisit with real walk-ups (a live face changes less between adjacent frames
# than between two photographs).
LIVENESS_MIN = 10.0
