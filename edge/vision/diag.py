"""Camera checks for `door-edge diag`: does each camera open, what frame rate does it give over
two seconds, and what does it see. The last is an annotated snapshot PNG for the technician: face
boxes with their quality and match distance, never a name (the technician has no need to learn who
lives here); at a gate, plate outlines with the detector's score and whether a reading holds, never
the plate text. The snapshot is written only because a technician asked for it, into the state
directory's `diag/` folder, and `door-edge diag` says where; nothing else keeps frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from drivers.camera import Camera, CameraError
from edge.config import CameraSection, GatewayConfig

MEASURE_S = 2.0


def annotate(rgb: np.ndarray, faces: list, distances: list[float | None]) -> np.ndarray:
    """A copy of the frame (BGR, for cv2.imwrite) with each face's box, quality and distance."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for f, d in zip(faces, distances, strict=False):
        l, t, r, b = f.box
        colour = (0, 200, 0) if f.quality.ok else (0, 160, 255)
        cv2.rectangle(out, (l, t), (r, b), colour, 2)
        label = f"{int(f.quality.size_px)}px " + ("ok" if f.quality.ok else f.quality.reason)
        if d is not None:
            label += f" d={d:.2f}"
        cv2.putText(out, label, (l, max(12, t - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return out


def check_camera(cfg: GatewayConfig, cam: CameraSection, snapshot_dir: Path, add: Callable[[str, str, str, str], None]) -> None:
    name = f"camera {cam.id}"
    try:
        camera = Camera.open_now(cam.source, max_fps=cam.max_fps)
    except CameraError as exc:
        add(name, "fail", str(exc), "check the source in cameras[].source; `v4l2-ctl --list-devices` lists USB cameras")
        return
    camera.start()
    try:
        first = camera.wait_frame(0, timeout=5.0)
        if first is None:
            add(name, "fail", f"{cam.source}: opened, but no frame in 5 s",
                "another program (or the running daemon) may hold it; check the cable, the stream URL and the camera's power")
            return
        t0, n0 = time.monotonic(), first.index
        while time.monotonic() - t0 < MEASURE_S and not camera.ended:
            camera.wait_frame(camera.latest().index, timeout=0.5)  # type: ignore[union-attr]
        frame = camera.latest()
        fps = (frame.index - n0) / (time.monotonic() - t0)  # type: ignore[union-attr]
        h, w = frame.rgb.shape[:2]  # type: ignore[union-attr]
        low = fps < min(5.0, cam.max_fps * 0.5) and not camera.ended
        add(name, "warn" if low else "ok", f"{w}x{h}, {fps:.1f} fps over {MEASURE_S:g} s (cap {cam.max_fps:g})",
            "a face needs 5+ fps: lower the camera's resolution or check the network for a stream")
        add(f"snapshot {cam.id}", *_snapshot(cfg, cam, frame.rgb, snapshot_dir))  # type: ignore[union-attr]
    finally:
        camera.stop()


def annotate_plates(rgb: np.ndarray, reads: list) -> np.ndarray:
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for r in reads:
        colour = (0, 200, 0) if r.candidates else (0, 160, 255)
        cv2.polylines(out, [np.round(r.quad).astype(np.int32)], True, colour, 2)
        label = f"plate {r.score:.2f} " + ("readable" if r.candidates else "unreadable")
        x, y = np.round(r.quad.min(axis=0)).astype(int)
        cv2.putText(out, label, (int(x), max(12, int(y) - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return out


def _write(snapshot_dir: Path, cam: CameraSection, bgr: np.ndarray) -> Path:
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    path = snapshot_dir / f"snapshot-{cam.id}-{time.strftime('%Y%m%d-%H%M%S')}.png"
    cv2.imwrite(str(path), bgr)
    return path


def _snapshot(cfg: GatewayConfig, cam: CameraSection, rgb: np.ndarray, snapshot_dir: Path) -> tuple[str, str, str]:
    from edge.config import PLATE_MODES
    from edge.vision.face import FaceModelsMissing, FacePipeline, Settings
    from edge.vision.models import ModelError

    if cfg.door(cam.door).mode in PLATE_MODES:
        from edge.vision.plate import PlateReader

        try:
            reads = PlateReader().read(rgb)
        except ModelError as exc:
            return "fail", str(exc), "reinstall the package, or retrain (make train-plates)"
        path = _write(snapshot_dir, cam, annotate_plates(rgb, reads))
        readable = sum(bool(r.candidates) for r in reads)
        return ("ok" if reads else "warn"), f"{len(reads)} plate(s), {readable} readable; annotated frame at {path} (delete it when done)", \
            "no plate in view: stop a car where it stops for the barrier and run diag again"

    try:
        pipeline = FacePipeline(Settings.from_config(cfg.face))
    except (FaceModelsMissing, ModelError) as exc:
        return "fail", str(exc), "reinstall the package (make setup)"
    faces = pipeline.analyse(rgb)
    distances: list[float | None] = [None] * len(faces)
    gallery = _gallery(cfg)
    if gallery is not None:
        distances = [gallery.search(f.embedding).distance if f.embedding is not None else None for f in faces]
    path = _write(snapshot_dir, cam, annotate(rgb, faces, distances))
    usable = sum(f.quality.ok for f in faces)
    status = "ok" if faces else "warn"
    return status, f"{len(faces)} face(s), {usable} usable; annotated frame at {path} (delete it when done)", \
        "no face in view: stand where residents stand and run diag again; aim the camera at face height"


def _gallery(cfg: GatewayConfig):
    from edge.store.faces import FaceStore, TemplateKeyError, load_template_key
    from edge.vision.face import Gallery, Settings

    try:
        store = FaceStore(cfg.state_dir(), load_template_key(cfg.gateway.face_key_file))
    except (TemplateKeyError, OSError):
        return None
    try:
        people, templates = store.load()
    except TemplateKeyError:
        return None
    finally:
        store.close()
    return Gallery(people, templates, Settings.from_config(cfg.face)) if people else None
