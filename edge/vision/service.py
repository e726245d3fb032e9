"""Cameras at doors and gates: cameras -> the vision worker process (faces, plates) -> the
controller on the event loop.

One `Camera` thread per camera keeps the newest frame; a pump thread per camera hands each new
frame to the shared `FaceWorker` (dropped when the worker is busy: the present, not a backlog); the
worker's answers come back on its reader thread and are re-delivered on the event loop, where the
controller's walk-up logic turns frames into one decision. Enrolled templates are decrypted here,
passed to the worker process, and reloaded when `door-edge enroll` changes them (polled), so a
removed person stops matching within a couple of seconds without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from drivers.camera import Camera, CameraError
from edge.config import PLATE_MODES, GatewayConfig
from edge.store.faces import FaceStore, TemplateKeyError, load_template_key
from edge.vision import VisionSetupError
from edge.vision.face import FaceModelsMissing, Settings, model_dir
from edge.vision.worker import VisionResult, FaceWorker

log = logging.getLogger(__name__)

GALLERY_CHECK_S = 1.0


class VisionService:
    def __init__(self, cfg: GatewayConfig, state_dir: Path, on_result: Callable[[VisionResult], None]):
        """Checks the models, opens the template store and the cameras; VisionSetupError naming the fix."""
        modes = {d.id: d.mode for d in cfg.doors}
        self.tasks = {c.id: "plate" if modes[c.door] in PLATE_MODES else "face" for c in cfg.cameras}
        self.store: FaceStore | None = None
        people, templates = [], None
        if "plate" in self.tasks.values():
            from edge.vision.models import ModelError, checked
            from edge.vision.plate import PLATE_MODELS

            try:
                for name in PLATE_MODELS:
                    checked(name)
            except ModelError as exc:
                raise VisionSetupError(str(exc)) from None
        if "face" in self.tasks.values():
            try:
                model_dir()
                self.store = FaceStore(state_dir, load_template_key(cfg.gateway.face_key_file))
            except (FaceModelsMissing, TemplateKeyError) as exc:
                raise VisionSetupError(str(exc)) from None
            try:
                people, templates = self.store.load()
            except TemplateKeyError as exc:
                self.store.close()
                raise VisionSetupError(str(exc)) from None
        self._generation = self.store.generation() if self.store is not None else 0
        self.cameras: dict[str, Camera] = {}
        for c in cfg.cameras:
            try:
                self.cameras[c.id] = Camera(c.source, max_fps=c.max_fps, loop=c.loop)
            except CameraError as exc:
                if self.store is not None:
                    self.store.close()
                raise VisionSetupError(f"cameras.{c.id}: {exc}") from None
        self.worker = FaceWorker(on_result, people=people, templates=templates, settings=Settings.from_config(cfg.face), tasks=self.tasks)
        self.enrolled = len(set(people))
        self._halt = threading.Event()
        self._pumps = [threading.Thread(target=self._pump, args=(cid, cam), name=f"pump {cid}", daemon=True)
                       for cid, cam in self.cameras.items()]
        self._next_check = 0.0
        self._beat = time.monotonic()

    @property
    def heartbeat(self) -> float:
        """The pumps' last turn; a file or folder played to its end is not a hang."""
        if self.cameras and all(c.ended for c in self.cameras.values()):
            return time.monotonic()
        return self._beat

    def start(self) -> None:
        """Cameras start once the worker has its models loaded (a few seconds on a Pi), so that the
        first walk-up after a boot is not lost to frames dropped while nobody could look at them."""
        threading.Thread(target=self._start_when_ready, name="faces-start", daemon=True).start()

    def _start_when_ready(self) -> None:
        while not self.worker.wait_ready(1.0):
            self._beat = time.monotonic()  # loading models is not a hang
            if self._halt.is_set():
                return
        if self._halt.is_set():
            return
        for cam in self.cameras.values():
            cam.start()
        for t in self._pumps:
            t.start()
        log.info("faces: %d camera(s) on, %d person(s) enrolled", len(self.cameras), self.enrolled)

    def _pump(self, camera_id: str, cam: Camera) -> None:
        for frame in cam.new_frames(self._halt):
            self._beat = time.monotonic()
            if frame is not None:
                self.worker.submit(frame.rgb, frame.index, frame.t_ns, camera_id)

    def refresh(self) -> None:
        """Reload the templates if an enrolment changed them (called from the event loop's ticker)."""
        now = time.monotonic()
        if now < self._next_check or self.store is None:
            return
        self._next_check = now + GALLERY_CHECK_S
        gen = self.store.generation()
        if gen == self._generation:
            return
        self._generation = gen
        people, templates = self.store.load()
        self.worker.set_gallery(people, templates)
        self.enrolled = len(set(people))
        log.info("face templates reloaded: %d person(s) enrolled", self.enrolled)

    def stop(self) -> None:
        self._halt.set()
        for cam in self.cameras.values():
            cam.stop()
        for t in self._pumps:
            if t.is_alive():
                t.join(3)
        self.worker.stop()
        if self.store is not None:
            self.store.close()
