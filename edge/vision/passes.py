"""Visitor passes in camera frames: OpenCV's QR detector (the ArUco-based one: about 1 ms on an
empty 640x480 frame, so it can look at every frame of a door camera without slowing faces).

Only codes that are visitor passes (protocol.passes.PREFIX) are returned: a poster's QR code in
view is no presentation. Verification is not done here but on the event loop, against the
gateway's own state (edge.access.passes).
"""

from __future__ import annotations

import cv2
import numpy as np

from protocol.passes import PREFIX


class PassReader:
    def __init__(self) -> None:
        self._detector = cv2.QRCodeDetectorAruco()

    def read(self, rgb: np.ndarray) -> list[str]:
        """The visitor-pass texts found in an RGB frame (usually none, at most a few)."""
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        ok, texts, _, _ = self._detector.detectAndDecodeMulti(grey)
        if not ok:
            return []
        return [t for t in texts if t.startswith(PREFIX)]
