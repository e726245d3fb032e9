"""`door-edge bench pass`: the time to find and decode a visitor pass in a 640x480 camera frame and
to verify it (signature, site, window, uses), as the gateway does for every frame of a camera that
reads passes; and the cost of a frame with no code in it (what every other frame costs).

Frames: a pass's QR code as the console draws it, held up at several sizes (3 to 5 pixels a module:
about 15 to 25 cm from a wide door camera) and places on the doorway, through JPEG as a camera
delivers it. One JSON line: `qr_ms` (find + decode + verify: p50, p99), its parts, how many were
found, and `empty_ms`.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge.access.passes import check
from edge.vision.passes import PassReader
from protocol import Keyring, Signer, generate_signing_key
from protocol import passes as tokens
from rigs import scene


def _frame(code: np.ndarray, rng: random.Random) -> np.ndarray:
    h, w = code.shape[:2]
    frame = np.full((*scene.SIZE, 3), scene.BACKGROUND, np.uint8)
    y, x = rng.randint(0, scene.SIZE[0] - h), rng.randint(0, scene.SIZE[1] - w)
    frame[y:y + h, x:x + w] = code
    ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return cv2.imdecode(jpg, cv2.IMREAD_COLOR)[:, :, ::-1].copy()  # as the camera hands it over: RGB


def bench_pass(frames: int, pct: Callable[[list[float], float], float | None], seed: int = 7) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="door-edge-pass-") as tmp:
        generate_signing_key(Path(tmp) / "k", Path(tmp) / "p")
        signer, ring = Signer.from_file(Path(tmp) / "k"), Keyring.from_files([Path(tmp) / "p"])
    now = int(time.time())
    reader = PassReader()
    detect, verify, total, empty = [], [], [], []
    found = 0
    for i in range(frames):
        p = tokens.VisitorPass(tokens.new_id(), "bench-site", ("lobby",), now - 60, now + 7200, 2, f"p-{i:016x}")
        text = tokens.issue(signer, p)
        frame = _frame(scene.code_image(text, scale=3 + i % 3), rng)
        t0 = time.perf_counter()
        texts = reader.read(frame)
        t1 = time.perf_counter()
        ok = False
        for t in texts:
            ok = check(tokens.read(t, ring, "bench-site"), "lobby", time.time(), used=0, revoked=False).value == "visitor_granted"
        t2 = time.perf_counter()
        found += ok
        detect.append((t1 - t0) * 1000)
        verify.append((t2 - t1) * 1000)
        total.append((t2 - t0) * 1000)
        blank = np.full((*scene.SIZE, 3), scene.BACKGROUND, np.uint8)
        blank[rng.randint(0, 400):, rng.randint(0, 500):] = rng.randint(40, 200)  # a doorway with something in it
        t3 = time.perf_counter()
        reader.read(blank)
        empty.append((time.perf_counter() - t3) * 1000)

    def fig(values: list[float]) -> dict:
        return {"p50": round(pct(values, 50) or 0, 3), "p99": round(pct(values, 99) or 0, 3)}

    return {"bench": "pass", "frames": frames, "frame": f"{scene.SIZE[1]}x{scene.SIZE[0]}", "found": found,
            "qr_ms": fig(total), "detect_ms": fig(detect), "verify_ms": fig(verify), "empty_ms": fig(empty)}
