"""Training data: real crops from a labels.csv folder, synthetic plates made in parallel, and the
cheap augmentations applied on every draw. Shared by the recogniser's and the detector's training.
"""

from __future__ import annotations

import csv
import random
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from edge.vision.plate_format import is_valid

REC_H, REC_W = 32, 128  # recogniser input (height, width); see edge.vision.plate


def real_crops(folder: Path) -> list[tuple[str, np.ndarray]]:
    """(plate, BGR crop) for every `crop` row of folder/labels.csv whose label is a valid plate."""
    out = []
    with (folder / "labels.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["kind"] != "crop" or not is_valid(row["plate"]):
                continue
            img = cv2.imread(str(folder / row["file"]))
            if img is not None:
                out.append((row["plate"], img))
    return out


def held_out(real: list[tuple[str, np.ndarray]]) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """(held-out tenth, the rest) of the real crops: the same split for every trainer, seed and
    stage, so that a fine-tuned or companion model never trains on what the others are judged on."""
    real = list(real)
    random.Random(0).shuffle(real)
    n_val = len(real) // 10
    return real[:n_val], real[n_val:]


def _synth_chunk(args: tuple[int, int, str | None, float | None]) -> list[tuple[str, np.ndarray]]:
    from training.plates.synth import sample

    seed, n, colour, green = args
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c = colour or ("green" if green is not None and rng.random() < green else None)
        text, _flat, aged = sample(rng, c or ("blue" if green is not None and rng.random() < 0.7 else None))
        out.append((text, cv2.resize(aged, (REC_W, REC_H), interpolation=cv2.INTER_AREA)))
    return out


def synth_set(n: int, seed: int, colour: str | None = None, procs: int = 2, green: float | None = None) -> list[tuple[str, np.ndarray]]:
    """n synthetic crops at the recogniser's size, made by `procs` processes (deterministic for a seed).
    `green`: that share green new-energy plates, the rest mostly blue (None: synth.sample's own mix)."""
    chunks = [(seed * 1000 + i, n // procs + (i < n % procs), colour, green) for i in range(procs)]
    with get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_synth_chunk, chunks)
    return [x for part in parts for x in part]


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real crop as a different detector and camera would give it: crop/pad, light, blur."""
    h, w = img.shape[:2]
    dx0, dx1 = rng.integers(-w // 12, w // 12 + 1, 2)
    dy0, dy1 = rng.integers(-h // 8, h // 8 + 1, 2)
    img = cv2.copyMakeBorder(img, max(0, -dy0), max(0, -dy1), max(0, -dx0), max(0, -dx1), cv2.BORDER_REPLICATE)
    img = img[max(0, dy0): img.shape[0] - max(0, dy1), max(0, dx0): img.shape[1] - max(0, dx1)]
    img = cv2.resize(img, (REC_W, REC_H), interpolation=cv2.INTER_AREA)
    f = img.astype(np.float32) * rng.uniform(0.6, 1.3) + rng.uniform(-25, 25)
    if rng.random() < 0.3:  # a colour cast (see synth.age)
        f = f * rng.uniform(0.7, 1.3, 3).astype(np.float32)
    if rng.random() < 0.3:
        f = cv2.GaussianBlur(f, (3, 3), 0)
    f += rng.normal(0, rng.uniform(0, 8), f.shape)
    return np.clip(f, 0, 255).astype(np.uint8)


T = TypeVar("T")


def mono(bgr: np.ndarray, weights: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """The image as a camera without colour sees it: one mix of its three channels, in all three."""
    m = np.clip(bgr.astype(np.float32) @ np.asarray(weights, np.float32), 0, 255).astype(np.uint8)
    return cv2.merge([m, m, m])


def colourless(batch: list[tuple[T, np.ndarray]], rng: np.random.Generator, share: float) -> list[tuple[T, np.ndarray]]:
    """The batch (label, image) with about `share` of its images made colourless (`mono`, one
    random mix of the three channels). Why: at night a gate camera switches to infrared and sees no
    colour (a blue plate is only lighter or darker than its characters, by how the paint reflects
    infrared), and a colour camera in low light loses most of it; a reader that learnt only
    colour plates misread 1 in 8 of the dev crops greyed. A random mix, not a fixed grey: how
    bright each paint is in infrared differs from its brightness to the eye. At share 0 the
    batch is returned as it is, drawing nothing from `rng`: the models trained before this
    existed are made again by their commands, draw for draw."""
    if share <= 0:
        return batch
    return [(label, mono(img, rng.dirichlet((1.0, 1.0, 1.0))) if rng.random() < share else img) for label, img in batch]
