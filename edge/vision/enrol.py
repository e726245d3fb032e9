"""Enrolment on the gateway: 3-5 photos of a person -> encrypted templates, with feedback.

Each photo must show exactly one face that passes the quality gates; the feedback says why a photo
was not used (no face, several faces, too small, blurred, turned away) so the installer can take
another. The templates are the augmented embeddings of the usable photos (see FacePipeline._template).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.vision.face import FacePipeline

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
MIN_IMAGES, MAX_IMAGES = 3, 5


class EnrolError(Exception):
    """Not enough usable photos (the message lists each photo's problem)."""


@dataclass
class Feedback:
    source: str
    used: bool
    reason: str  # "ok" or why not


def read_rgb(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path))
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def templates_from(pipeline: FacePipeline, images: Iterable[tuple[str, np.ndarray | None]],
                   progress: Callable[[Feedback], None] = lambda f: None) -> tuple[np.ndarray, list[Feedback]]:
    """Embeddings of the usable photos (at most MAX_IMAGES); EnrolError if fewer than MIN_IMAGES."""
    out: list[np.ndarray] = []
    feedback: list[Feedback] = []
    for source, rgb in images:
        if len(out) >= MAX_IMAGES:
            break
        if rgb is None:
            fb = Feedback(source, False, "not an image")
        else:
            faces = pipeline.analyse(rgb, template=True)
            if not faces:
                fb = Feedback(source, False, "no face found")
            elif len(faces) > 1:
                fb = Feedback(source, False, f"{len(faces)} faces: one person per photo")
            elif not faces[0].quality.ok:
                fb = Feedback(source, False, faces[0].quality.reason or "low quality")
            else:
                out.append(faces[0].embedding)  # type: ignore[arg-type]
                fb = Feedback(source, True, "ok")
        feedback.append(fb)
        progress(fb)
    if len(out) < MIN_IMAGES:
        detail = "; ".join(f"{f.source}: {f.reason}" for f in feedback if not f.used) or "no photos"
        raise EnrolError(f"{len(out)} usable photo(s), {MIN_IMAGES} needed ({detail})")
    return np.vstack(out), feedback
