"""Has the gate camera's view changed since it was last read? An empty gate is an unchanging view.

Why: the plate pipeline reads every frame, and a frame without a plate is its dearest (nothing to
stop at: every cue is tried, then the whole frame once more equalised; about 28 ms here, several
times that on a Raspberry Pi). An empty gate is that frame ten times a second, all night. A view
that has not changed since a read found no plate in it would read the same, so that read is
reused and the pipeline rests; a car arriving changes the view and is read at once.

The view is compared as a coarse grid of mean grey levels with the frame last read: sensor noise
and compression move a cell's mean by a level or two; a car, its lights or its plate entering a
cell move it by far more. The comparison is with the frame last read, not the previous frame, so
a slow change (a car creeping in, dusk falling) adds up until it counts. A view is read in full at
least every `refresh_s` anyway. A view with a readable plate in it (a car waiting) is read on
every frame: the vote across frames wants each frame's own reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

GRID = (32, 18)      # cells across and down (40 x 40 pixels each at 1280 x 720)
TOLERANCE = 6.0      # grey levels a cell's mean may move and the view still count as unchanged
REFRESH_S = 1.0      # a view is read in full at least this often


@dataclass
class StillView:
    """One camera's last read view and what it read (`reads`: the pipeline's result, reused)."""

    tolerance: float = TOLERANCE
    refresh_s: float = REFRESH_S
    _cells: np.ndarray | None = field(default=None, repr=False)
    _read_at: float = 0.0
    reads: list = field(default_factory=list)

    @staticmethod
    def cells(rgb: np.ndarray) -> np.ndarray:
        return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), GRID, interpolation=cv2.INTER_AREA).astype(np.float32)

    def unchanged(self, rgb: np.ndarray, now: float) -> bool:
        """True when the last read found no readable plate, was at most `refresh_s` ago, and no
        cell of this frame differs from that frame's by more than `tolerance`."""
        if self._cells is None or now - self._read_at >= self.refresh_s:
            return False
        cells = self.cells(rgb)
        return cells.shape == self._cells.shape and float(np.abs(cells - self._cells).max()) <= self.tolerance

    def read(self, rgb: np.ndarray, now: float, reads: list) -> None:
        """Remember a full read of this frame; only a view without a readable plate is reused."""
        readable = any(r.candidates for r in reads)
        self._cells = None if readable else self.cells(rgb)
        self._read_at, self.reads = now, reads
