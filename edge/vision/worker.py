"""The inference process: frames in through shared memory, results out through a pipe.

Face and plate models run in a process of their own (multiprocessing, spawn) so that a native crash
or a slow frame cannot stall the door: the card path keeps its own core and its own GIL.

The daemon side (`FaceWorker`) gives every camera a shared-memory slot of its own and copies each
camera's newest frame into it when the slot is free; a camera whose slot is still busy drops that
frame (a door wants the present, not a backlog). With one slot per camera, at most one frame of
each camera is ever waiting, and the worker takes them in turn: a face camera running flat out
cannot starve the gate camera.

A supervisor thread owns the process: it checks the model files before each start (a missing or
altered file is an outage like any other, retried with backoff, never a crash), starts it, reads its
messages, kills it when a frame has been in it for longer than `hang_s` (a native hang), and starts
it again with jittered backoff when it dies, for as long as it takes. Its outages are reported
through `reconnects` (the daemon journals `vision_down` / `vision_up`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import numpy as np

from drivers.backoff import Backoff, Reconnects, pause
from edge.access.walkup import FaceAnswer, FaceStatus

log = logging.getLogger(__name__)

MAX_SHAPE = (720, 1280, 3)  # a slot holds a frame of this many pixels (any shape: 1160x720 portrait fits)
SLOT_BYTES = MAX_SHAPE[0] * MAX_SHAPE[1] * MAX_SHAPE[2]  # a frame sits at the start of its slot, contiguous
HANG_S = 30.0        # a frame in the worker this long means the worker hangs: it is killed and started again
START_S = 180.0      # loading the models may take this long on a slow board before the start counts as failed


@dataclass
class VisionResult:
    index: int                    # the frame's camera index
    t_ns: int                     # when the camera read it (monotonic)
    box: tuple[int, int, int, int] | None
    answer: FaceAnswer | None     # None: no face in the frame
    distance: float | None
    z: float | None
    chip: np.ndarray | None       # aligned grey face for the liveness check (never stored)
    ms: float                     # time in the worker
    camera: str = ""              # which camera the frame came from
    plates: list | None = None    # plate cameras: edge.vision.plate.PlateRead per plate, readable first, then largest (faces: None)
    passes: list[str] | None = None  # cameras that read visitor passes: the pass texts in the frame
    task: str = "face"            # what the camera's frames were read for: face | plate | pass


# -- messages on the pipe ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FrameMsg:
    slot: int
    index: int
    t_ns: int
    h: int
    w: int
    camera: str


@dataclass(frozen=True, slots=True)
class GalleryMsg:
    people: list[str]
    templates: np.ndarray


@dataclass(frozen=True, slots=True)
class ReadyMsg:
    pass


@dataclass(frozen=True, slots=True)
class FreedMsg:
    slot: int


@dataclass(frozen=True, slots=True)
class ResultMsg:
    result: VisionResult


def _serve(conn, shm_name: str, slots: int, people: list[str], templates: np.ndarray, settings,
           tasks: dict[str, str] | None = None, qr: frozenset[str] = frozenset()) -> None:
    """The worker process: load the models once, then answer frames until the pipe closes.
    `tasks`: camera id -> "face" | "plate" | "pass" (default face); plate models load only if a camera
    needs them. `qr`: the cameras whose frames are also searched for visitor passes."""
    import cv2

    from edge.vision.face import FacePipeline, Gallery, answer_for
    from edge.vision.passes import PassReader

    tasks = tasks or {}
    pass_reader = PassReader() if qr else None
    shm = shared_memory.SharedMemory(name=shm_name)
    frames = np.ndarray((slots, SLOT_BYTES), dtype=np.uint8, buffer=shm.buf)
    pipeline = FacePipeline(settings) if "face" in tasks.values() or not tasks else None
    gallery = Gallery(people, templates, settings)
    plates = None
    if "plate" in tasks.values():
        from edge.vision.plate import PlateReader
        from edge.vision.stillness import StillView

        plates = PlateReader()
    # what a bad frame can raise inside OpenCV, dlib (RuntimeError) or onnxruntime (RuntimeError
    # subclasses); anything else is our own bug, and the supervisor restarts the process
    bad_frame = (cv2.error, ValueError, RuntimeError)
    boxes: dict[str, tuple[int, int, int, int] | None] = {}  # last face box per camera: the next search starts there
    views: dict[str, StillView] = {}  # per plate camera: the view last read (edge.vision.stillness)
    conn.send(ReadyMsg())
    try:
        while True:
            msg = conn.recv()
            if isinstance(msg, GalleryMsg):
                gallery = Gallery(msg.people, msg.templates, settings)
                continue
            t0 = time.perf_counter()
            camera = msg.camera
            frame = frames[msg.slot, : msg.h * msg.w * 3].reshape(msg.h, msg.w, 3)
            task = tasks.get(camera, "face")
            result = VisionResult(msg.index, msg.t_ns, None, None, None, None, None, 0.0, camera, task=task)
            if pass_reader is not None and camera in qr:
                try:
                    result.passes = pass_reader.read(frame)
                except bad_frame:
                    result.passes = []
            if task == "pass":
                conn.send(FreedMsg(msg.slot))
                result.ms = (time.perf_counter() - t0) * 1000
                conn.send(ResultMsg(result))
                continue
            if task == "plate":
                try:
                    view, now = views.setdefault(camera, StillView()), time.monotonic()
                    if view.unchanged(frame, now):
                        reads = view.reads  # an empty gate: the view read a moment ago, unchanged
                    else:
                        reads = plates.read(frame)  # type: ignore[union-attr]
                        # the gate acts on the first: a readable plate before any unreadable region, then the largest
                        reads.sort(key=lambda r: (not r.candidates, -r.width))
                        view.read(frame, now, reads)
                    result.plates = reads
                except bad_frame as exc:
                    result.plates, result.answer = [], FaceAnswer(FaceStatus.ERROR, detail=exc.__class__.__name__)
                conn.send(FreedMsg(msg.slot))
                result.ms = (time.perf_counter() - t0) * 1000
                conn.send(ResultMsg(result))
                continue
            try:
                faces = pipeline.analyse(frame, roi=boxes.get(camera), nearest_only=True)  # type: ignore[union-attr]
            except bad_frame as exc:
                faces = []
                result.answer = FaceAnswer(FaceStatus.ERROR, detail=exc.__class__.__name__)
            conn.send(FreedMsg(msg.slot))
            if faces:
                f = faces[0]
                boxes[camera] = result.box = f.box
                result.chip = f.chip
                result.answer, m = answer_for(f, gallery)
                if m is not None:
                    result.distance, result.z = m.distance, m.z
            else:
                boxes[camera] = None
            result.ms = (time.perf_counter() - t0) * 1000
            conn.send(ResultMsg(result))
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
    hangs: int = 0
    last_error: str = ""
    busy: dict[int, float] = field(default_factory=dict)  # slot -> monotonic time it was handed over


class FaceWorker:
    """The supervisor of the inference process. `cameras`: the camera ids, one slot each (none: one
    shared slot, for benchmarks and tools). `check_models()` raises when the models cannot be used."""

    def __init__(self, on_result: Callable[[VisionResult], None], *, people: list[str] | None = None,
                 templates: np.ndarray | None = None, settings=None, tasks: dict[str, str] | None = None,
                 qr: frozenset[str] = frozenset(),
                 cameras: list[str] | None = None, check_models: Callable[[], None] | None = None,
                 backoff: Backoff | None = None, hang_s: float = HANG_S, start: bool = True,
                 on_change: Callable[[bool, str], None] | None = None):
        self._on_result = on_result
        self._settings = settings  # edge.vision.face.Settings (None: the defaults)
        self._tasks = tasks or {}
        self._qr = qr
        self._people = people or []
        self._templates = templates if templates is not None else np.zeros((0, 128), np.float32)
        self._slot_of = {cam: i for i, cam in enumerate(cameras or [])}
        self.slots = max(1, len(self._slot_of))
        self._shm = shared_memory.SharedMemory(create=True, size=self.slots * SLOT_BYTES)
        self._frames = np.ndarray((self.slots, SLOT_BYTES), dtype=np.uint8, buffer=self._shm.buf)
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._ready = threading.Event()
        self._check_models = check_models or (lambda: None)
        self._model_errors: tuple[type[BaseException], ...] = _model_errors()
        self.hang_s = hang_s
        self.stats = WorkerStats()
        self.reconnects = Reconnects(on_change)
        self.heartbeat = time.monotonic()
        self._backoff = backoff or Backoff(base_s=0.5, cap_s=10.0)
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._started = 0.0
        self._thread = threading.Thread(target=self._supervise, name="vision-worker", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self, rgb: np.ndarray, index: int, t_ns: int, camera: str = "") -> bool:
        """Hand a frame over if this camera's slot is free; False if it was dropped (slot busy, worker down)."""
        h, w = rgb.shape[:2]
        slot = self._slot_of.get(camera, 0)
        with self._lock:
            if not self._ready.is_set() or slot in self.stats.busy or h * w * 3 > SLOT_BYTES or self._conn is None:
                self.stats.dropped += 1
                return False
            self._frames[slot, : h * w * 3].reshape(h, w, 3)[:] = rgb
            self.stats.busy[slot] = time.monotonic()
            try:
                self._conn.send(FrameMsg(slot, index, t_ns, h, w, camera))
            except (OSError, BrokenPipeError):
                del self.stats.busy[slot]
                self.stats.dropped += 1
                return False
            self.stats.submitted += 1
            return True

    def set_gallery(self, people: list[str], templates: np.ndarray) -> None:
        """New templates for the running worker (and any later one). Blocks while the pipe is full:
        call it off the event loop."""
        with self._lock:
            self._people, self._templates = people, templates
            if self._conn is not None and self._ready.is_set():
                try:
                    self._conn.send(GalleryMsg(people, templates))
                except (OSError, BrokenPipeError):
                    pass  # the worker is dying; the next one starts with these templates

    # -- the supervisor thread ------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._halt.is_set():
            self.heartbeat = time.monotonic()
            if self._proc is None:
                if not self._spawn():
                    pause(self._halt, self._backoff.next(), self._beat)
                continue
            try:
                conn = self._conn  # set with _proc, by _spawn
                if conn is not None and conn.poll(0.5):
                    self._handle(conn.recv())
                else:
                    self._check_hang()
            except (EOFError, OSError):
                if self._halt.is_set():
                    return
                self._died()

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _spawn(self) -> bool:
        try:
            self._check_models()
        except self._model_errors as exc:
            if self.reconnects.snapshot().up is not False:
                log.error("vision worker not started, retrying: %s", exc)
            self.stats.last_error = str(exc)
            self.reconnects.failed(f"models: {exc}")
            return False
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(child, self._shm.name, self.slots, self._people, self._templates,
                                                      self._settings, self._tasks, self._qr), name="door-edge-vision", daemon=True)
        proc.start()
        child.close()
        with self._lock:
            self._proc, self._conn = proc, parent
            self.stats.busy.clear()
        self._started = time.monotonic()
        return True

    def _handle(self, msg) -> None:
        if isinstance(msg, ReadyMsg):
            self._ready.set()
            self._backoff.reset()
            self.reconnects.up(f"pid {self.pid}")
        elif isinstance(msg, FreedMsg):
            with self._lock:
                self.stats.busy.pop(msg.slot, None)
        elif isinstance(msg, ResultMsg):
            self.stats.results += 1
            self._on_result(msg.result)

    def _check_hang(self) -> None:
        now = time.monotonic()
        with self._lock:
            oldest = min(self.stats.busy.values(), default=now)
        loading = not self._ready.is_set() and now - self._started > START_S
        if now - oldest > self.hang_s or loading:
            self.stats.hangs += 1
            log.error("vision worker %s: killing it and starting another",
                      "did not load its models in time" if loading else f"has held a frame for {now - oldest:.0f} s")
            if self._proc is not None:
                self._proc.kill()

    def _died(self) -> None:
        self._ready.clear()
        proc = self._proc
        if proc is not None:
            proc.join(2)
        code = proc.exitcode if proc is not None else None
        self.stats.last_error = f"worker exited ({code})"
        log.error("vision worker died (exit %s); starting another", code)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._proc, self._conn = None, None
            self.stats.busy.clear()
        self.stats.restarts += 1
        self.reconnects.failed(self.stats.last_error)
        pause(self._halt, self._backoff.next(), self._beat)

    def stop(self, timeout: float = 3.0) -> None:
        """The process first (its end wakes the supervisor with EOF), then the pipe and the memory."""
        self._halt.set()
        proc = self._proc
        if proc is not None:
            proc.terminate()
            proc.join(timeout / 2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout / 2)
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        del self._frames
        self._shm.close()
        self._shm.unlink()


def _model_errors() -> tuple[type[BaseException], ...]:
    """The errors a model check raises for files that cannot be used (imported here: light modules)."""
    from edge.vision.face import FaceModelsMissing
    from edge.vision.models import ModelError

    return (ModelError, FaceModelsMissing)
