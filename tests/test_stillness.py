"""An empty gate is not read again on every frame; a car arriving is read at once (edge.vision.stillness
with the real plate models on the real gate photo, the way the vision worker uses them)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.vision.plate import PlateReader
from edge.vision.stillness import StillView

from .test_plate import KNOWN, KNOWN_PLATE, rgb

PLATE = np.float32([[231, 438], [361, 448], [360, 494], [230, 484]])  # CCPD's corners of the known car's plate


def camera(rgb_frame: np.ndarray, seed: int) -> np.ndarray:
    """The same view as a camera gives it again: sensor noise and JPEG."""
    noisy = np.clip(rgb_frame + np.random.default_rng(seed).normal(0, 2.5, rgb_frame.shape), 0, 255).astype(np.uint8)
    _ok, jpg = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return cv2.imdecode(jpg, cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def scenes():
    car = rgb(KNOWN)
    empty = car.copy()
    x0, y0 = (PLATE.min(axis=0) - 40).astype(int)
    x1, y1 = (PLATE.max(axis=0) + 40).astype(int)
    empty[y0:y1, x0:x1] = cv2.blur(empty[y0:y1, x0:x1], (61, 61))  # the plate gone: no plate in view
    return car, empty


def test_an_unchanged_empty_gate_is_not_read_again(scenes):
    _car, empty = scenes
    reader, view = PlateReader(), StillView()
    assert not view.unchanged(empty, 0.0)                 # nothing read yet
    reads = reader.read(empty)
    assert not any(r.candidates for r in reads)
    view.read(empty, 0.0, reads)
    for i in range(1, 5):                                  # the same view, frame after frame
        assert view.unchanged(camera(empty, i), 0.1 * i)
    assert not view.unchanged(camera(empty, 9), view.refresh_s)  # read in full every refresh_s anyway


def test_a_car_arriving_is_read_at_once_and_a_waiting_car_on_every_frame(scenes):
    car, empty = scenes
    reader, view = PlateReader(), StillView()
    view.read(empty, 0.0, reader.read(empty))
    assert not view.unchanged(car, 0.1)                    # the car changed the view
    reads = reader.read(car)
    assert KNOWN_PLATE in [r.text for r in reads]
    view.read(car, 0.1, reads)
    assert not view.unchanged(camera(car, 1), 0.2)        # a readable plate: each frame gets its own reading


def test_a_small_change_that_adds_up_counts(scenes):
    """Compared with the frame last read, not the previous one: a slow change is not missed."""
    _car, empty = scenes
    view = StillView()
    view.read(empty, 0.0, [])
    lit = empty.astype(np.int16)
    for step in range(1, 6):                               # headlights brightening a patch, 4 levels a frame
        lit[500:580, 600:680] += 4
        frame = np.clip(lit, 0, 255).astype(np.uint8)
        if not view.unchanged(frame, 0.05 * step):
            break
    else:
        pytest.fail("a patch 20 levels brighter still counted as the same view")
    assert step >= 2                                       # a level or two is noise, not a change
