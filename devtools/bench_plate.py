"""`door-edge bench plate --data DIR`: our plate models against hyperlpr2 on the same images, same run.

- crops: every `crop` row of DIR/labels.csv read as a plate already cut out
  (`PlateReader.read_crop`: the pipeline's refine and rectify steps, no detector); exact = the best
  valid reading equals the label.
- scenes: every `scene...` row through the whole pipeline (detect, refine, rectify, recognise); a
  scene is read when its labelled plate is among the plates read (a photo may show several cars).
  `frame_ms` is the whole pipeline's time per scene, timed interleaved with the peer's (ours, then
  the peer's, scene by scene), so both see the same machine.
- green_synthetic_exact: green 8-character new-energy plates generated with a seed that training
  never used (so never seen), aged like camera crops, read like the crops.
- folds: scenes and crops split five ways by plate string; each fold's rate, the mean and the worst.
- green_real_exact: the real green new-energy plates among the crops and scenes (8-character
  labels), each read as its kind is; null when the data has none.
- colourless: the crops and the scenes again in grey (all three channels alike), as a camera without
  colour sees them (an infrared camera at night, a colour camera in the dark), read the same way;
  their exact rates and the scenes' folds. Grey is not infrared (a plate's paint reflects infrared
  differently from how bright it looks), so it says how the readers do without colour, not at night.
- peer: hyperlpr2 (MIT; Caffe models run by OpenCV's dnn, needs OpenCV 4.x), its recogniser
  (`segmentation_free_recognition`) on the crops and its pipeline (`plate_recognition`) on the
  scenes, timed the same way. Installed by `make bench` (pip --no-deps: it asks for the GUI OpenCV).
"""

from __future__ import annotations

import csv
import random
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from edge.vision.plate import PlateReader
from training.plates.synth import FontsMissing

GREEN_SEED = 424242  # training uses seeds 7 and 11 (and their derived chunk seeds): disjoint
GREEN_N = 300


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _rate(hits: list[bool]) -> float | None:
    """The share of hits; None for an empty set (JSON null: NaN is not JSON)."""
    return round(float(np.mean(hits)), 4) if hits else None


def _rows(data: Path) -> list[dict]:
    with (data / "labels.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def green_set(data: Path, n: int = GREEN_N, seed: int = GREEN_SEED) -> list[tuple[str, np.ndarray]]:
    """Synthetic green plates lettered with glyphs cut from the crops of the judged folder (never
    from the training crops: training.plates.glyphs), fonts where it has none."""
    from training.plates.glyphs import use
    from training.plates.synth import sample

    use(data)
    rng = random.Random(seed)
    return [(t, aged) for t, _flat, aged in (sample(rng, "green") for _ in range(n))]


def _peer():
    try:
        from hyperlpr2 import PR
    except (ImportError, OSError) as exc:  # not installed, or its native libraries do not load
        print(f"bench plate: peer hyperlpr2 unavailable ({exc.__class__.__name__}: {exc}); `make bench` installs it", file=sys.stderr)
        return None
    return PR


def bench_plate(data: Path, *, green_n: int = GREEN_N) -> dict:
    rows = _rows(data)
    crops = [(r["plate"], cv2.imread(str(data / r["file"]))) for r in rows if r["kind"] == "crop"]
    scenes = [(r["plate"], cv2.imread(str(data / r["file"]))) for r in rows if r["kind"].startswith("scene")]
    reader = PlateReader()
    peer = _peer()

    ours_crop = [c[0].text == label if (c := reader.read_crop(img)) else False for label, img in crops]
    ours_scene, frame_ms, peer_scene, peer_ms = [], [], [], []
    for label, img in scenes:  # interleaved: ours, then the peer's, frame by frame (the same machine state for both)
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        reads = reader.read(rgb)
        frame_ms.append((time.perf_counter() - t0) * 1000)
        ours_scene.append(label in {r.text for r in reads})
        if peer is not None:
            t0 = time.perf_counter()
            res = peer.plate_recognition(img)
            peer_ms.append((time.perf_counter() - t0) * 1000)
            peer_scene.append(label in {r[0] for r in res})
    try:
        green = green_set(data, green_n)
        green_exact = _rate([c[0].text == t if (c := reader.read_crop(img)) else False for t, img in green])
    except (ImportError, OSError, FontsMissing) as exc:  # Pillow not installed, or the fonts
        print(f"bench plate: no green synthetic set ({exc}); `make bench` installs Pillow and the fonts", file=sys.stderr)
        green_exact = None

    plain_crop = [c[0].text == label if (c := reader.read_crop(_grey(img))) else False for label, img in crops]
    plain_scene = [label in {r.text for r in reader.read(cv2.cvtColor(_grey(img), cv2.COLOR_BGR2RGB))} for label, img in scenes]

    real_green = [hit for (label, _), hit in zip(crops, ours_crop, strict=True) if len(label) == 8]
    real_green += [hit for (label, _), hit in zip(scenes, ours_scene, strict=True) if len(label) == 8]
    out = {"bench": "plate", "crops": len(crops), "crop_exact": _rate(ours_crop),
           "scenes": len(scenes), "scene_exact": _rate(ours_scene),
           "green_synthetic_exact": green_exact,
           "frame_ms": {"p50": _pct(frame_ms, 50), "p99": _pct(frame_ms, 99)},
           "peer": "hyperlpr2", "peer_crop_exact": None, "peer_scene_exact": None, "peer_frame_ms": {"p50": None},
           "green_real_exact": _rate(real_green), "green_real": len(real_green),
           "folds": {"k": FOLDS, "scene_exact": _folds(scenes, ours_scene), "crop_exact": _folds(crops, ours_crop)},
           "colourless": {"crop_exact": _rate(plain_crop), "scene_exact": _rate(plain_scene), "scene_folds": _folds(scenes, plain_scene)}}
    if peer is not None:
        peer_crop = [peer.segmentation_free_recognition(img)[0] == label for label, img in crops]
        out.update(peer_crop_exact=_rate(peer_crop), peer_scene_exact=_rate(peer_scene),
                   peer_frame_ms={"p50": _pct(peer_ms, 50)})
    return out


FOLDS = 5


def _grey(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def _folds(items: list[tuple[str, np.ndarray]], hits: list[bool]) -> dict:
    """The hit rate per fold, folds by plate string (every photo of one plate in one fold), with
    their mean and the worst: a heuristic that fixes one photo shows up as one fold's gain only."""
    per: list[list[bool]] = [[] for _ in range(FOLDS)]
    for (label, _), hit in zip(items, hits, strict=True):
        per[zlib.crc32(label.encode()) % FOLDS].append(hit)
    rates = [_rate(p) for p in per]
    known = [r for r in rates if r is not None]
    return {"per_fold": rates, "mean": round(float(np.mean(known)), 4) if known else None, "worst": min(known) if known else None}
