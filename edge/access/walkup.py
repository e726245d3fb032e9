"""One decision per walk-up: per-frame face answers from the vision worker in, at most one verdict out.

Pure: every call gets the monotonic time, so tests feed it sequences without threads or cameras.

A walk-up starts with the first frame that shows a face and ends when no face has been seen for
`gone_s`. Within it:
- the same person on `frames` consecutive frames is a match, but only once the face has shown
  natural change across frames (liveness); a recognised face that stays a flat picture for
  `liveness_window_s` is `liveness_failed`;
- `unknown_face` on `frames` consecutive frames is a refusal;
- a face seen for `low_quality_s` without one usable frame (too small, blurred, turned away) is
  recorded as `low_quality`, so a technician sees a badly placed camera in the events.
After a verdict the walk-up only speaks again for a different answer (a stranger steps aside and a
resident steps up); a resident standing at the open door is not granted again every second.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from edge.config import FaceSection

if TYPE_CHECKING:  # a card-only daemon never loads numpy: chips are only passed through here
    import numpy as np

UNKNOWN, LOW_QUALITY, LIVENESS_FAILED = "unknown_face", "low_quality", "liveness_failed"
CHIPS_KEPT = 15  # the chips liveness looks at: the last ~1.5 s at 10 fps


class FaceStatus(Enum):
    """What the worker made of the face in one frame."""

    MATCH = "match"              # a resident: `person` names them
    UNKNOWN = UNKNOWN            # a usable face that matches nobody
    LOW_QUALITY = LOW_QUALITY    # a face too small, blurred or turned away to match
    ERROR = "error"              # the frame could not be processed (`detail` says why)


@dataclass(frozen=True, slots=True)
class FaceAnswer:
    """One frame's answer. A status and a person never share a field, so no person id, whatever it
    is spelled, can be mistaken for a status. No face in the frame is no answer (None)."""

    status: FaceStatus
    person: str | None = None
    detail: str = ""

    @classmethod
    def match(cls, person: str) -> FaceAnswer:
        return cls(FaceStatus.MATCH, person)


@dataclass(frozen=True)
class Verdict:
    person: str | None   # the matched person (reason "match"); None otherwise
    reason: str          # "match" | "unknown_face" | "liveness_failed" | "low_quality"
    liveness: float | None = None


@dataclass
class WalkUp:
    settings: FaceSection
    liveness: Callable[[list[np.ndarray]], float]
    started: float | None = None
    last_face: float = 0.0
    decided: set[str] = field(default_factory=set)
    _answer: FaceAnswer | None = None
    _run: int = 0
    _match_since: float | None = None
    _usable: bool = False
    _chips: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=CHIPS_KEPT))

    def observe(self, now: float, answer: FaceAnswer | None, chip: np.ndarray | None = None) -> Verdict | None:
        """`answer`: the worker's answer for one frame, or None (no face in the frame)."""
        s = self.settings
        if answer is None or answer.status is FaceStatus.ERROR:
            if self.started is not None and now - self.last_face >= s.gone_s:
                self.reset()
            return None
        if self.started is None or now - self.last_face >= s.gone_s:
            self.reset()
            self.started = now
        self.last_face = now
        if chip is not None:
            self._chips.append(chip)
        self._run = self._run + 1 if answer == self._answer else 1
        self._answer = answer
        if answer.status is FaceStatus.LOW_QUALITY:
            if not self._usable and now - self.started >= s.low_quality_s:
                return self._say(Verdict(None, LOW_QUALITY))
            return None
        self._usable = True
        if self._run < s.frames:
            return None
        if answer.status is FaceStatus.UNKNOWN or answer.person is None:
            return self._say(Verdict(None, UNKNOWN))
        person = answer.person
        if not s.liveness:
            return self._say(Verdict(person, "match"))
        if self._match_since is None:
            self._match_since = now
        score = self.liveness(list(self._chips))
        if score >= s.liveness_min:
            return self._say(Verdict(person, "match", round(score, 1)), key=person)
        if now - self._match_since >= s.liveness_window_s:
            return self._say(Verdict(None, LIVENESS_FAILED, round(score, 1)), key=person)
        return None

    def _say(self, verdict: Verdict, key: str | None = None) -> Verdict | None:
        key = key or verdict.reason
        if key in self.decided:
            return None
        self.decided.add(key)
        return verdict

    def reset(self) -> None:
        self.started = None
        self.decided.clear()
        self._answer, self._run, self._match_since, self._usable = None, 0, None, False
        self._chips.clear()
