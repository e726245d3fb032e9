"""The inference process: frames in through shared memory, results out through a pipe.

Face models run in a process of their own (multiprocessing, spawn) so that a native crash or a slow
frame cannot stall the door: the card path keeps its own core and its own GIL. The daemon side
(`FaceWorker`) copies the newest frame into a free shared-memory slot and sends its slot number;
when every slot is busy the frame is dropped (a door wants the present, not a backlog). A reader
thread hands each result to a callback (the daemon re-delivers it on its event loop). A worker that
dies is started again with backoff, and counted.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Callable

import numpy as np

from drivers.backoff import Backoff

log = logging.getLogger(__name__)

MAX_SHAPE = (720, 1280, 3)  # a slot holds a frame of this many pixels (any shape: 1160x720 portrait fits)
SLOT_BYTES = MAX_SHAPE[0] * MAX_SHAPE[1] * MAX_SHAPE[2]  # a frame sits at the start of its slot, contiguous


@dataclass
class VisionResult:
    index: int                    # the frame's camera index
    t_ns: int                     # when the camera read it (monotonic)
    box: tuple[int, int, int, int] | None
    answer: str | None            # a person id, "unknown_face", "low_quality", or None (no face)
    distance: float | None
    z: float | None
    chip: np.ndarray | None       # aligned grey face for the liveness check (never stored)
    ms: float                     # time in the worker
    camera: str = ""              # which camera the frame came from
    plates: list | None = None    # plate cameras: edge.vision.plate.PlateRead per plate, readable first, then largest (faces: None)


def _serve(conn, shm_name: str, slots: int, people: list[str], templates: np.ndarray, settings,
           tasks: dict[str, str] | None = None) -> None:
    """The worker process: load the models once, then answer frames until the pipe closes.
    `tasks`: camera id -> "face" | "plate" (default face); plate models load only if a camera needs them."""
    from edge.vision.face import FacePipeline, Gallery

    tasks = tasks or {}
    shm = shared_memory.SharedMemory(name=shm_name)
    frames = np.ndarray((slots, SLOT_BYTES), dtype=np.uint8, buffer=shm.buf)
    pipeline = FacePipeline(settings) if "face" in tasks.values() or not tasks else None
    gallery = Gallery(people, templates, settings)
    plates = None
    if "plate" in tasks.values():
        from edge.vision.plate import PlateReader
        from edge.vision.stillness import StillView

        plates = PlateReader()
    boxes: dict[str, tuple[int, int, int, int] | None] = {}  # last face box per camera: the next search starts there
    views: dict[str, StillView] = {}  # per plate camera: the view last read (edge.vision.stillness)
    conn.send(("ready",))
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "gallery":
                gallery = Gallery(msg[1], msg[2], settings)
                continue
            _, slot, index, t_ns, h, w, camera = msg
            t0 = time.perf_counter()
            result = VisionResult(index, t_ns, None, None, None, None, None, 0.0, camera)
            if tasks.get(camera) == "plate":
                try:
                    frame, view, now = frames[slot, : h * w * 3].reshape(h, w, 3), views.setdefault(camera, StillView()), time.monotonic()
                    if view.unchanged(frame, now):
                        reads = view.reads  # an empty gate: the view read a moment ago, unchanged
                    else:
                        reads = plates.read(frame)  # type: ignore[union-attr]
                        # the gate acts on the first: a readable plate before any unreadable region, then the largest
                        reads.sort(key=lambda r: (not r.candidates, -float(np.ptp(r.quad[:, 0]))))
                        view.read(frame, now, reads)
                    result.plates = reads
                except Exception as exc:  # noqa: BLE001 - one bad frame must not take the worker down
                    result.plates, result.answer = [], f"error: {exc.__class__.__name__}"
                conn.send(("free", slot))
                result.ms = (time.perf_counter() - t0) * 1000
                conn.send(("result", result))
                continue
            try:
                faces = pipeline.analyse(frames[slot, : h * w * 3].reshape(h, w, 3), roi=boxes.get(camera))  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - one bad frame must not take the worker down
                faces = []
                result.answer = f"error: {exc.__class__.__name__}"
            conn.send(("free", slot))
            if faces:
                f = faces[0]
                boxes[camera] = result.box = f.box
                result.chip = f.chip
                if not f.quality.ok:
                    result.answer = "low_quality"
                elif f.embedding is not None:
                    m = gallery.search(f.embedding)
                    result.answer, result.distance, result.z = m.person or "unknown_face", m.distance, m.z
            else:
                boxes[camera] = None
            result.ms = (time.perf_counter() - t0) * 1000
            conn.send(("result", result))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        del frames
        shm.close()


@dataclass
class WorkerStats:
    submitted: int = 0
    dropped: int = 0
    results: int = 0
    restarts: int = 0
    last_error: str = ""
    busy: set[int] = field(default_factory=set)


class FaceWorker:
    def __init__(self, on_result: Callable[[VisionResult], None], *, people: list[str] | None = None,
                 templates: np.ndarray | None = None, slots: int = 2, settings=None, tasks: dict[str, str] | None = None):
        self._on_result = on_result
        self._settings = settings  # edge.vision.face.Settings (None: the defaults)
        self._tasks = tasks or {}
        self._people = people or []
        self._templates = templates if templates is not None else np.zeros((0, 128), np.float32)
        self.slots = slots
        self._shm = shared_memory.SharedMemory(create=True, size=slots * SLOT_BYTES)
        self._frames = np.ndarray((slots, SLOT_BYTES), dtype=np.uint8, buffer=self._shm.buf)
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._ready = threading.Event()
        self.stats = WorkerStats()
        self._backoff = Backoff(base_s=0.5, cap_s=10.0)
        self._proc = None
        self._conn = None
        self._start()
        self._reader = threading.Thread(target=self._read, name="face-worker-reader", daemon=True)
        self._reader.start()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self._shm.name, self.slots, self._people, self._templates, self._settings, self._tasks),
                                       name="door-edge-vision", daemon=True)
        self._proc.start()
        child.close()
        with self._lock:
            self._conn = parent
            self.stats.busy.clear()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self, rgb: np.ndarray, index: int, t_ns: int, camera: str = "") -> bool:
        """Hand a frame over if a slot is free; False if it was dropped (worker busy or down)."""
        h, w = rgb.shape[:2]
        with self._lock:
            free = [s for s in range(self.slots) if s not in self.stats.busy]
            if not self._ready.is_set() or not free or h * w * 3 > SLOT_BYTES:
                self.stats.dropped += 1
                return False
            slot = free[0]
            self._frames[slot, : h * w * 3].reshape(h, w, 3)[:] = rgb
            self.stats.busy.add(slot)
            try:
                self._conn.send(("frame", slot, index, t_ns, h, w, camera))  # type: ignore[union-attr]
            except (OSError, BrokenPipeError):
                self.stats.busy.discard(slot)
                self.stats.dropped += 1
                return False
            self.stats.submitted += 1
            return True

    def set_gallery(self, people: list[str], templates: np.ndarray) -> None:
        self._people, self._templates = people, templates
        with self._lock:
            if self._conn is not None:
                self._conn.send(("gallery", people, templates))

    def _read(self) -> None:
        while not self._halt.is_set():
            try:
                msg = self._conn.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                if self._halt.is_set():
                    return
                self._ready.clear()
                code = self._proc.exitcode if self._proc is not None else None
                self.stats.last_error = f"worker exited ({code})"
                log.error("vision worker died (exit %s); restarting", code)
                if self._proc is not None:
                    self._proc.join(1)
                if self._halt.wait(self._backoff.next()):
                    return
                self.stats.restarts += 1
                self._start()
                continue
            if msg[0] == "ready":
                self._ready.set()
                self._backoff.reset()
            elif msg[0] == "free":
                with self._lock:
                    self.stats.busy.discard(msg[1])
            elif msg[0] == "result":
                self.stats.results += 1
                self._on_result(msg[1])

    def stop(self) -> None:
        """The process first (its end wakes the reader with EOF), then the pipe and the memory."""
        self._halt.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(3)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(3)
        self._reader.join(3)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
        del self._frames
        self._shm.close()
        self._shm.unlink()
