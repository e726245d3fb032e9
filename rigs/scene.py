"""Camera scenes for a folder source: walk-ups built from still photos, written as numbered frames.

A folder of images is what `drivers.camera` plays when no camera is plugged in, so the demo and the
tests put a scene there: an empty doorway, a resident stepping up, a stranger, a photo held up.
- `photo_held`: one photo pasted on the frame, moving and growing a little: a print held up to the
  camera. After alignment nothing changes but resampling: the liveness check must refuse it.
- `live`: several photos of the same person in turn at nearly the same place: the stand-in for a
  live face (expression, light, a turn of the head change between moments). No live video of
  labelled people is available to us; this is the closest honest stand-in, and it is what the
  liveness threshold was calibrated against.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import cv2
import numpy as np

SIZE = (480, 640)  # frame height, width
BACKGROUND = (90, 96, 104)


def blank(n: int) -> list[np.ndarray]:
    """The empty doorway."""
    return [np.full((*SIZE, 3), BACKGROUND, np.uint8) for _ in range(n)]


def _paste(img: np.ndarray, scale: float, x: int, y: int) -> np.ndarray:
    frame = np.full((*SIZE, 3), BACKGROUND, np.uint8)
    im = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    h, w = min(im.shape[0], SIZE[0] - y), min(im.shape[1], SIZE[1] - x)
    frame[y:y + h, x:x + w] = im[:h, :w]
    return frame


def photo_held(img: np.ndarray, n: int) -> list[np.ndarray]:
    """A print held up to the camera: the same photo, moving and growing a little."""
    return [_paste(img, 1.6 + 0.02 * (i % 10), 200 + 3 * (i % 10), 100 + 2 * (i % 10)) for i in range(n)]


def live(imgs: list[np.ndarray], n: int) -> list[np.ndarray]:
    """A live face: different moments of one person, in turn, at nearly the same place."""
    return [_paste(imgs[i % len(imgs)], 1.6, 200 + (i % 3), 100 + (i % 2)) for i in range(n)]


def live_looped(imgs: list[np.ndarray], n: int = 29, seed: int = 1) -> list[np.ndarray]:
    """A live face for a scene played over and over (the demo): the moments in a seeded random order,
    never the same twice running, over a prime number of frames. A slow worker that takes every k-th
    frame then still sees the face change; with `live`'s strict cycle it could see one moment only."""
    rng = random.Random(seed)
    order = [0]
    while len(order) < n:
        order.append(rng.choice([i for i in range(len(imgs)) if i != order[-1]]))
    return [_paste(imgs[i], 1.6, 200 + (k % 3), 100 + (k % 2)) for k, i in enumerate(order)]


def code_image(text: str, scale: int = 4) -> np.ndarray:
    """A visitor pass's QR code as the console and `central pass issue --png` draw it (RGB)."""
    import io

    import segno

    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=scale, border=4)
    return png_rgb(buf.getvalue())


def png_rgb(data: bytes) -> np.ndarray:
    """An image file's bytes (a PNG from the console, say) as RGB."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def code_held(code: np.ndarray, n: int = 8) -> list[np.ndarray]:
    """A phone screen with a pass's code held up to the door camera, moving a little."""
    return [_paste(code, 1.0, 200 + 3 * (i % 4), 110 + 2 * (i % 3)) for i in range(n)]


def show(link: Path, folder: Path) -> None:
    """Put a scene in front of a camera whose source is the link `link`: swapped in one rename; the
    camera plays the new scene from its next pass (drivers.camera re-reads a looping folder)."""
    tmp = link.with_name(link.name + ".next")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder)
    os.replace(tmp, link)


def write(folder: Path, frames: list[np.ndarray]) -> Path:
    """Frames as numbered JPEGs (RGB in, as the camera delivers), in the order a folder source plays them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{i:05d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return folder


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(f"{path}: not an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
