"""Face embeddings: dlib's face ResNet (face_recognition_models' `dlib_face_recognition_resnet_model_v1.dat`)
run by onnxruntime.

The graph (`models/face_embed.onnx`, made by `training.faces.dlib_graph`) holds the network's
layers and no weights: each weight is external data at an offset in dlib's file, which is handed to
onnxruntime from memory. So the weights come from the registry package as they always did, and
the embeddings are dlib's own (the largest difference on the dev faces is 4e-7, float rounding).

Why not dlib's encoder: dlib-bin is built without BLAS, and its network took ~120 ms a face on
the development machine against ~7 ms here, and a door embeds three frames or more before it
decides. dlib still finds and aligns the faces (its HOG detector and 5-point model).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.vision.models import MODELS_DIR, ModelError, ModelInfo, checked, session

CHIP = 150


def verified(weights: Path, models_dir: Path = MODELS_DIR) -> tuple[ModelInfo, bytes]:
    """The graph's manifest entry (its sha256 checked) and dlib's weight file, read, once its
    sha256 is the one the graph was made from; ModelError naming the fix otherwise."""
    info = checked("face_embed", models_dir)
    try:
        data = weights.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{weights} is missing", "reinstall face_recognition_models (the face weights come with it)") from None
    if weights.name != info.meta["weights"] or hashlib.sha256(data).hexdigest() != info.meta["weights_sha256"]:
        raise ModelError(f"{weights} is not the dlib file {info.path.name} was made from ({info.meta['weights']}, sha256 "
                         f"{info.meta['weights_sha256'][:16]}...)", "install face_recognition_models 0.3.0 (`make install`), or "
                         f"remake the graph: {info.meta.get('command', '?')}")
    return info, data


class FaceEmbedder:
    """`embed(chips)`: 128-d embeddings of aligned 150 x 150 RGB face chips (`dlib.get_face_chip`).

    Refuses to start (ModelError, naming the fix) when the graph's sha256 differs from the
    manifest's, or when dlib's weight file is not the one the graph was made from: an offset into
    another file would read the wrong numbers and match the wrong people, silently. Not
    thread-safe: one per worker, as FacePipeline."""

    def __init__(self, weights: Path, models_dir: Path = MODELS_DIR, threads: int = 1):
        info, data = verified(weights, models_dir)
        self._session = session(info, threads, external=(weights.name, data))

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """N x 128 float32 for N chips (150 x 150 x 3, RGB uint8), in one run."""
        x = np.ascontiguousarray(np.stack(chips).astype(np.float32).transpose(0, 3, 1, 2))
        if x.shape[1:] != (3, CHIP, CHIP):
            raise ValueError(f"face chips must be {CHIP} x {CHIP} RGB, not {x.shape[2:]} x {x.shape[1]}")
        return self._session.run(None, {"chip": x})[0]
