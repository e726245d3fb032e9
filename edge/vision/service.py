"""Cameras at doors and gates: cameras -> the vision worker process (faces, plates) -> the
controller on the event loop.

One `Camera` thread per camera keeps the newest frame; a pump thread per camera hands each new
frame to the `FaceWorker`, which gives every camera a slot of its own (a busy face camera cannot
starve the gate camera); the worker's answers come back on its supervisor thread and are
re-delivered on the event loop, where the controller's walk-up and vehicle vote turn frames into
one decision.

Faults stay here. A camera that is unplugged at start, or dies later, is retried in the background
and reported (`on_part`: the daemon journals `camera_down` / `camera_up`); a camera whose thread
hangs inside its driver (an RTSP read that never returns) is reported and replaced by a fresh one.
A worker that keeps dying, or whose model files are missing, is retried the same way
(`vision_down` / `vision_up`). Card doors never wait for any of it.

This service's own thread also reloads the enrolled templates when `door-edge enroll` changes them
(decrypting them off the event loop), so a removed person stops matching within a couple of
seconds without a restart.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from drivers.backoff import Backoff
from drivers.camera import Camera
from edge.config import FACE_MODES, PLATE_MODES, CameraSection, GatewayConfig
from edge.store.faces import FaceStore, TemplateKeyError, load_template_key
from edge.vision import VisionSetupError
from edge.vision import worker as worker_mod
from edge.vision.face import FACE_MODELS, Settings, model_dir
from edge.vision.worker import FaceWorker, VisionResult

log = logging.getLogger(__name__)

GALLERY_CHECK_S = 1.0
CAMERA_STALL_S = 15.0   # a camera thread silent this long is stuck in its driver: replaced

PartCallback = Callable[[str, str, bool, str], None]  # (kind "camera" | "vision", name, up, detail)


def _task(mode: str, camera: CameraSection) -> str:
    """What a camera's frames are read for: plates at a gate, faces at a face door; a camera at a card
    door that reads passes loads no model at all."""
    if mode in PLATE_MODES:
        return "plate"
    if mode in FACE_MODES or not camera.passes:
        return "face"
    return "pass"


class VisionService:
    def __init__(self, cfg: GatewayConfig, state_dir: Path, on_result: Callable[[VisionResult], None], *,
                 on_part: PartCallback = lambda kind, name, up, detail: None):
        """Opens the template store (VisionSetupError naming the fix: the face key is the installer's
        to provide). Opens no camera and starts no process: `start()` does, and neither can fail."""
        modes = {d.id: d.mode for d in cfg.doors}
        self.tasks = {c.id: _task(modes[c.door], c) for c in cfg.cameras}
        self._cfg = cfg
        self._on_part = on_part
        self.store: FaceStore | None = None
        people: list[str] = []
        templates = None
        if "face" in self.tasks.values():
            try:
                self.store = FaceStore(state_dir, load_template_key(cfg.gateway.face_key_file))
                people, templates = self.store.load()
            except TemplateKeyError as exc:
                if self.store is not None:
                    self.store.close()
                raise VisionSetupError(exc.problem, exc.fix) from None
        self._generation = self.store.generation() if self.store is not None else 0
        rc = cfg.reconnect
        self._sections = {c.id: c for c in cfg.cameras}
        self.cameras: dict[str, Camera] = {c.id: self._camera(c) for c in cfg.cameras}
        self.worker = FaceWorker(on_result, people=people, templates=templates, settings=Settings.from_config(cfg.face),
                                 tasks=self.tasks, qr=frozenset(c.id for c in cfg.cameras if c.passes),
                                 cameras=list(self.cameras), check_models=self._check_models,
                                 backoff=Backoff(rc.base_s, rc.cap_s), start=False, hang_s=worker_mod.HANG_S,
                                 on_change=lambda up, detail: on_part("vision", "worker", up, detail))
        self.enrolled = len(set(people))
        self._halt = threading.Event()
        self._pumps = [threading.Thread(target=self._pump, args=(cid,), name=f"pump {cid}", daemon=True) for cid in self.cameras]
        self._thread = threading.Thread(target=self._run, name="vision", daemon=True)
        self.replaced = 0
        self.heartbeat = time.monotonic()

    def _camera(self, c: CameraSection) -> Camera:
        rc = self._cfg.reconnect
        return Camera(c.source, max_fps=c.max_fps, loop=c.loop, backoff=Backoff(rc.base_s, rc.cap_s),
                      on_change=functools.partial(self._on_part, "camera", c.id))

    def _check_models(self) -> None:
        """Before each worker start: the models its cameras need (ModelError, FaceModelsMissing)."""
        if "plate" in self.tasks.values():
            from edge.vision.models import checked
            from edge.vision.plate import PLATE_MODELS

            for name in PLATE_MODELS:
                checked(name)
        if "face" in self.tasks.values():
            from edge.vision.models import checked

            model_dir()
            for name in FACE_MODELS:
                checked(name)

    def start(self) -> None:
        self.worker.start()
        self._thread.start()

    # -- the service thread -----------------------------------------------------------------------
    def _run(self) -> None:
        """Cameras start once the worker has loaded its models the first time (seconds on a Pi), so
        that the first walk-up after a boot is not lost to frames nobody could look at; then the
        thread watches the cameras and the enrolled templates."""
        while not self.worker.wait_ready(1.0):
            self.heartbeat = time.monotonic()
            if self._halt.is_set():
                return
        for cam in self.cameras.values():
            cam.start()
        for t in self._pumps:
            t.start()
        log.info("vision: %d camera(s) on, %d person(s) enrolled", len(self.cameras), self.enrolled)
        while not self._halt.wait(GALLERY_CHECK_S):
            self.heartbeat = time.monotonic()
            self._watch_cameras()
            self._refresh_gallery()

    def _watch_cameras(self) -> None:
        now = time.monotonic()
        for cid, cam in list(self.cameras.items()):
            stalled = now - cam.heartbeat > CAMERA_STALL_S
            if cam.ended or (cam.is_alive() and not stalled):
                continue
            why = "stuck in its driver" if cam.is_alive() else "its thread ended"
            log.error("camera %s %s for %.0f s: replaced by a fresh one", cid, why, now - cam.heartbeat)
            self._on_part("camera", cid, False, why)
            cam.stop(timeout=0.1)  # a thread stuck in native code cannot be joined: it is left behind
            fresh = self._camera(self._sections[cid])
            self.cameras[cid] = fresh
            self.replaced += 1
            fresh.start()

    def _refresh_gallery(self) -> None:
        """Reload the templates if an enrolment changed them."""
        if self.store is None:
            return
        gen = self.store.generation()
        if gen == self._generation:
            return
        self._generation = gen
        try:
            people, templates = self.store.load()
        except TemplateKeyError as exc:
            log.error("face templates not reloaded, the previous ones stay in use: %s", exc)
            return
        self.worker.set_gallery(people, templates)
        self.enrolled = len(set(people))
        log.info("face templates reloaded: %d person(s) enrolled", self.enrolled)

    def _pump(self, camera_id: str) -> None:
        while not self._halt.is_set():
            cam = self.cameras[camera_id]
            if cam.ended:
                self._halt.wait(0.5)
                continue
            for frame in cam.new_frames(self._halt):
                if self.cameras[camera_id] is not cam:
                    break  # replaced: follow the fresh one
                if frame is not None:
                    self.worker.submit(frame.rgb, frame.index, frame.t_ns, camera_id)

    # -- reporting ----------------------------------------------------------------------------------
    def parts(self) -> dict[str, dict]:
        """Each camera and the worker: up, since, attempts, outages (telemetry, diag)."""
        out = {f"camera:{cid}": dict(cam.reconnects.snapshot().as_dict(), frames=cam.frames, ended=cam.ended)
               for cid, cam in self.cameras.items()}
        w = self.worker.stats
        out["vision:worker"] = dict(self.worker.reconnects.snapshot().as_dict(), restarts=w.restarts, hangs=w.hangs,
                                    results=w.results, dropped=w.dropped)
        return out

    def stop(self, timeout: float = 3.0) -> None:
        self._halt.set()
        deadline = time.monotonic() + timeout
        for cam in self.cameras.values():
            cam.stop(timeout=max(0.1, deadline - time.monotonic()))
        for t in [*self._pumps, self._thread]:
            if t.is_alive():
                t.join(max(0.1, deadline - time.monotonic()))
        self.worker.stop(timeout=max(0.5, deadline - time.monotonic()))
        if self.store is not None:
            self.store.close()
