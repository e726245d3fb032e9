"""Cameras through OpenCV: a V4L2 device, an RTSP/HTTP stream, a video file, or a folder of images.

A `Camera` thread keeps only the newest frame (a door needs the present, not a queue of the
past), stamps it with the monotonic clock when it was read, caps the frame rate, and reopens a
source that fails with jittered backoff, counting every failure. A source that cannot be opened
at all raises `CameraError` naming the source and the likely fix.

Sources: `/dev/videoN` or an integer index (V4L2), `rtsp://...` / `http://...` (FFmpeg), a video
file, or a folder of images (tests, the demo, benchmarks), played in name order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from drivers.backoff import Backoff

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class CameraError(Exception):
    """A camera source that cannot be used; the message says which and what to check."""


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray
    t_ns: int        # time.monotonic_ns() when it was read
    index: int       # frames read from this camera so far


class _Folder:
    """Images in name order, as if a camera showed them; `loop` starts again at the end."""

    def __init__(self, folder: Path, loop: bool):
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.loop = loop
        self.pos = 0

    def read(self) -> np.ndarray | None:
        if self.pos >= len(self.files):
            if not self.loop or not self.files:
                return None
            self.pos = 0
        img = cv2.imread(str(self.files[self.pos]))
        self.pos += 1
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


def open_source(source: str, *, loop: bool = False):
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
    """Reads a source continuously; `latest()` is the newest frame, `wait_frame()` waits for a new one."""

    def __init__(self, source: str, *, max_fps: float = 15.0, loop: bool = False, backoff_cap_s: float = 10.0):
        super().__init__(name=f"camera {source}", daemon=True)
        self.source = source
        self._src = open_source(source, loop=loop)  # raises CameraError at once: the installer sees it
        self._loop = loop
        self._period = 1.0 / max_fps if max_fps > 0 else 0.0
        self._backoff = Backoff(base_s=0.5, cap_s=backoff_cap_s)
        self._cond = threading.Condition()
        self._halt = threading.Event()
        self._frame: Frame | None = None
        self.frames = 0
        self.failures = 0
        self.reopens = 0
        self.ended = False   # a file or folder without `loop` has been played to the end
        self.heartbeat = time.monotonic()

    def run(self) -> None:
        next_t = time.monotonic()
        while not self._halt.is_set():
            self.heartbeat = time.monotonic()
            rgb = self._src.read() if self._src is not None else None
            if rgb is None:
                if self._is_finite() and self._src is not None and not self._loop:
                    self.ended = True
                    with self._cond:
                        self._cond.notify_all()
                    return
                self.failures += 1
                self._reopen()
                continue
            self._backoff.reset()
            with self._cond:
                self.frames += 1
                self._frame = Frame(rgb, time.monotonic_ns(), self.frames)
                self._cond.notify_all()
            next_t = max(next_t + self._period, time.monotonic())
            self._halt.wait(max(0.0, next_t - time.monotonic()))

    def _is_finite(self) -> bool:
        return not (self.source.isdigit() or self.source.startswith("/dev/video") or "://" in self.source)

    def _reopen(self) -> None:
        if self._src is not None:
            self._src.release()
            self._src = None
        if self._halt.wait(self._backoff.next()):
            return
        try:
            self._src = open_source(self.source, loop=self._loop)
            self.reopens += 1
        except CameraError:
            pass  # counted as a failure on the next turn; backoff grows

    def latest(self) -> Frame | None:
        return self._frame

    def wait_frame(self, after: int = 0, timeout: float = 2.0) -> Frame | None:
        """The newest frame with an index above `after` (None on timeout or at the end)."""
        with self._cond:
            self._cond.wait_for(lambda: (self._frame is not None and self._frame.index > after) or self.ended, timeout)
            f = self._frame
        return f if f is not None and f.index > after else None

    def new_frames(self, halt: threading.Event | None = None, poll_s: float = 1.0):
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

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)
        if self._src is not None:
            self._src.release()
