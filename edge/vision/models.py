"""Model files of the `edge.models` package data (the repository's `models/`), checked against `models/manifest.toml` before onnxruntime loads them.

A file whose sha256 differs from the manifest is refused with `ModelError` naming the file and the
fix: a corrupted download, a half-copied image or a file swapped by hand never runs at a gate.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import SetupError

# The models shipped with the package (a wheel's edge/models/, a checkout's models/); DOOR_EDGE_MODELS
# points elsewhere (a retrained set, tests). Package data of a wheel is a plain folder, never a zip.
MODELS_DIR = Path(os.environ.get("DOOR_EDGE_MODELS") or str(importlib.resources.files("edge.models")))


class ModelError(SetupError):
    """A model file that is missing, unlisted or altered (the message names the fix)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    sha256: str
    meta: dict[str, Any]


def manifest(models_dir: Path = MODELS_DIR) -> dict[str, dict[str, Any]]:
    path = models_dir / "manifest.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path} is missing", "reinstall the package (the models ship with it)") from None


def checked(name: str, models_dir: Path = MODELS_DIR) -> ModelInfo:
    """The model's entry, after its file's sha256 has been compared with the manifest's."""
    entries = manifest(models_dir)
    if name not in entries:
        raise ModelError(f"model {name!r} is not in {models_dir / 'manifest.toml'}", "reinstall the package, or regenerate the manifest "
                         "with `python -m training.plates.manifest` after training")
    meta = entries[name]
    path = models_dir / meta["file"]
    try:
        digest = _digest(path)
    except FileNotFoundError:
        raise ModelError(f"{path} is missing", f"reinstall the package, or retrain with: {meta.get('command', '?')}") from None
    if digest != meta["sha256"]:
        raise ModelError(f"{path}: sha256 {digest[:16]}... does not match the manifest ({meta['sha256'][:16]}...): "
                         "the file is damaged or was replaced", "reinstall the package, or retrain and update models/manifest.toml")
    return ModelInfo(name, path, digest, meta)


_digests: dict[tuple[str, int, int, int], str] = {}


def _digest(path: Path) -> str:
    """sha256 of a file, remembered while the file is the same one (inode, size, mtime): the vision
    worker's supervisor checks the models before every start, and a restart loop must stay cheap."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _digests:
        _digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _digests[key]


def session(info: ModelInfo, threads: int = 1, *, external: tuple[str, bytes] | None = None):
    """An onnxruntime session for a checked model (`open_session`)."""
    return open_session(info.path, threads, external=external)


def open_session(path: Path, threads: int = 1, *, external: tuple[str, bytes] | None = None):
    """An onnxruntime session for an ONNX file (CPU; `threads` intra-op threads). `external`: the
    name and contents of the file the graph keeps its weights in (external data), handed over from
    memory, as the face graph's weights are read from dlib's file (edge.vision.face_embed)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if external is not None:
        name, data = external
        opts.add_external_initializers_from_files_in_memory([name], [data], [len(data)])
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
