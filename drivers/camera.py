"""Cameras through OpenCV: a V4L2 device, an RTSP/HTTP stream, a video file, or a folder of images.

A `Camera` thread keeps only the newest frame (a door needs the present, not a queue of the
past), stamps it with the monotonic clock when it was read, caps the frame rate, and opens and
reopens its source with jittered backoff, counting every failure. `open_source` raises
`CameraError` naming the source and the likely fix.

Sources: `/dev/videoN` or an integer index (V4L2), `rtsp://...` / `http://...` (FFmpeg), a video
file, or a folder of images (tests, the demo, benchmarks), played in name order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from drivers.backoff import Backoff, Reconnects, pause
from drivers.ports import FrameSource

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class CameraError(Exception):
    """A camera source that cannot be used; the message says which and what to check."""


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray
    t_ns: int        # time.monotonic_ns() when it was read
    index: int       # frames read from this camera so far


class _Folder:
    """Images in name order, as if a camera showed them; `loop` starts again at the end, reading the
    folder afresh (a scene replaced while it plays is picked up at the next pass)."""

    def __init__(self, folder: Path, loop: bool):
        self.folder = folder
        self.files = self._list()
        self.loop = loop
        self.pos = 0

    def _list(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def read(self, retry: bool = True) -> np.ndarray | None:
        if self.pos >= len(self.files):
            if not self.loop:
                return None
            try:
                self.files = self._list()
            except OSError:
                return None  # the folder went away: a camera unplugged
            self.pos = 0
            if not self.files:
                return None
        path = self.files[self.pos]
        self.pos += 1
        img = cv2.imread(str(path)) if path.is_file() else None
        if img is None and self.loop and retry:
            self.pos = len(self.files)  # the scene was replaced under us: start the new one
            return self.read(retry=False)
        return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def release(self) -> None:
        pass


class _Capture:
    def __init__(self, cap: cv2.VideoCapture):
        self.cap = cap

    def read(self) -> np.ndarray | None:
        ok, bgr = self.cap.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok and bgr is not None else None

    def release(self) -> None:
        self.cap.release()


def open_source(source: str, *, loop: bool = False) -> FrameSource:
    """Open a source now; CameraError with the fix if it cannot be."""
    if source.isdigit() or source.startswith("/dev/video"):
        index = int(source) if source.isdigit() else source
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise CameraError(f"camera {source} cannot be opened: is it plugged in (`v4l2-ctl --list-devices`), "
                              "is the service user in group video, is another program using it?")
        return _Capture(cap)
    if "://" in source:
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise CameraError(f"stream {source.split('@')[-1]} cannot be opened: check the URL, the camera's "
                              "credentials and that the gateway can reach it (ping, RTSP port 554)")
        return _Capture(cap)
    path = Path(source)
    if path.is_dir():
        return _Folder(path, loop)
    if path.is_file():
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise CameraError(f"video file {path} cannot be decoded (codec missing or not a video)")
        return _Capture(cap)
    raise CameraError(f"camera source {source!r} is neither a device, a URL, a video file nor a folder of images")


class Camera(threading.Thread):
    """Reads a source continuously; `latest()` is the newest frame, `wait_frame()` waits for a new one.

    The source is opened by the thread, not the constructor: a camera that is unplugged at start,
    or that dies later, is retried with jittered backoff for as long as it takes, and its outages
    are reported through `reconnects` (`on_change(up, detail)`); nothing waits for it. A camera
    counts as up from its first frame after an open."""

    def __init__(self, source: str, *, max_fps: float = 15.0, loop: bool = False, backoff: Backoff | None = None,
                 on_change: Callable[[bool, str], None] | None = None):
        super().__init__(name=f"camera {source}", daemon=True)
        self.source = source
        self._src: FrameSource | None = None
        self._loop = loop
        self._period = 1.0 / max_fps if max_fps > 0 else 0.0
        self._backoff = backoff or Backoff(base_s=0.5, cap_s=10.0)
        self._cond = threading.Condition()
        self._halt = threading.Event()
        self._frame: Frame | None = None
        self.frames = 0
        self.failures = 0
        self.reopens = 0
        self.ended = False   # a file or folder without `loop` has been played to the end
        self.heartbeat = time.monotonic()
        self.reconnects = Reconnects(on_change)

    @classmethod
    def open_now(cls, source: str, **kw: Any) -> Camera:
        """A camera whose source is opened here and now: CameraError at once, for tools (diag,
        enrolment) where a person waits for the answer."""
        cam = cls(source, **kw)
        cam._src = open_source(source, loop=kw.get("loop", False))
        return cam

    def run(self) -> None:
        next_t = time.monotonic()
        while not self._halt.is_set():
            self.heartbeat = time.monotonic()
            if self._src is None and not self._open():
                self._pause(self._backoff.next())
                continue
            rgb = self._src.read() if self._src is not None else None
            if rgb is None:
                if self._is_finite() and not self._loop:
                    self.ended = True
                    with self._cond:
                        self._cond.notify_all()
                    return
                self.failures += 1
                self.reconnects.failed("no frame")
                self._release()
                self._pause(self._backoff.next())
                continue
            self._backoff.reset()
            with self._cond:
                self.frames += 1
                self._frame = Frame(rgb, time.monotonic_ns(), self.frames)
                self._cond.notify_all()
            self.reconnects.up("frames")
            next_t = max(next_t + self._period, time.monotonic())
            self._halt.wait(max(0.0, next_t - time.monotonic()))

    def _open(self) -> bool:
        try:
            self._src = open_source(self.source, loop=self._loop)
        except CameraError as exc:
            self.failures += 1
            self.reconnects.failed(str(exc))
            return False
        self.reopens += 1
        return True

    def _pause(self, seconds: float) -> None:
        pause(self._halt, seconds, self._beat)  # a camera that is down is not a hang

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _is_finite(self) -> bool:
        return not (self.source.isdigit() or self.source.startswith("/dev/video") or "://" in self.source)

    def _release(self) -> None:
        if self._src is not None:
            self._src.release()
            self._src = None

    def latest(self) -> Frame | None:
        return self._frame

    def wait_frame(self, after: int = 0, timeout: float = 2.0) -> Frame | None:
        """The newest frame with an index above `after` (None on timeout or at the end)."""
        with self._cond:
            self._cond.wait_for(lambda: (self._frame is not None and self._frame.index > after) or self.ended, timeout)
            f = self._frame
        return f if f is not None and f.index > after else None

    def new_frames(self, halt: threading.Event | None = None, poll_s: float = 1.0) -> Iterator[Frame | None]:
        """Each new frame as it comes (frames the caller was too slow for are skipped), and None when
        `poll_s` passed without one (so a caller can beat its heartbeat); ends with the source or `halt`."""
        last = 0
        while halt is None or not halt.is_set():
            frame = self.wait_frame(last, timeout=poll_s)
            if frame is None and self.ended:
                return
            if frame is not None:
                last = frame.index
            yield frame

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)
        if not self.is_alive():
            self._release()
