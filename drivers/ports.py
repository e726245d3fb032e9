"""The hardware ports: what the gateway asks of a lock relay, a card source and a frame source.

Each is a `typing.Protocol` of a few methods, implemented by the drivers in this package and, in the
tests, by the same drivers on the far side of virtual devices. They live with the drivers (not in
`edge`) so that the drivers can be checked against them while importing nothing from `edge`. Every
docstring says what happens on failure: that is the contract a caller relies on at a door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, slots=True, order=True)
class Output:
    """One relay output: Modbus (unit, coil), or LCUS (0, channel)."""

    unit: int
    index: int


@runtime_checkable
class LockRelay(Protocol):
    """The outputs of one relay board on one serial port (drivers.relay.LcusLink, ModbusLink).

    Failure behaviour: no method blocks or raises. Commands are queued to the port's own thread;
    while the port is down or the board does not answer, each output's intended state is kept
    and written the moment the board is back, and the board is retried with bounded backoff for
    as long as it takes. Every owned output starts at its resting state (locked) and is checked
    against the board (read back, or rewritten where the board cannot answer) every second.
    """

    port_name: str

    def pulse(self, output: Output, ms: int) -> None:
        """Release `output` now and relock it `ms` later; a later pulse extends the first."""

    def hold(self, output: Output, on: bool) -> None:
        """Hold `output` released (True) or locked (False) until told otherwise; ends a pulse."""

    def intended(self, output: Output) -> bool:
        """What the output should be now (released during a pulse), whatever the board last said."""


@runtime_checkable
class CardSource(Protocol):
    """Card presentations from PC/SC readers (drivers.pcsc.PcscWatcher) or a GA 467 ID-card reader
    (drivers.sam_ga467.Ga467Watcher), delivered by the callback given at construction, from the
    source's own thread.

    Failure behaviour: `start` never fails. pcscd absent or restarted, a reader unplugged or gone
    mute, a card pulled mid-read, garbage or a bad checksum on a serial line: each is reported
    through the status callback (pcscd down/up; a reader gone/back), counted, and retried with
    bounded backoff; no presentation is made up from a partial read.
    """

    heartbeat: float  # time.monotonic() of the thread's last turn: the watchdog's view of it

    def start(self) -> None:
        """Start watching in the source's own thread; returns at once."""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and wait up to `timeout` for the thread; a wedged pcscd call is cancelled."""


@runtime_checkable
class FrameSource(Protocol):
    """One opened camera source (a V4L2 device, an RTSP stream, a video file, a folder of images),
    as drivers.camera.open_source returns it.

    Failure behaviour: opening raises drivers.camera.CameraError naming the fix. Once open, `read`
    returns None for a frame that did not come (a dropped frame, a stream that stalled, the end of
    a file); it does not raise for a source that went away: the camera thread closes a source that
    returns None (or, for a file or folder played without `loop`, ends) and opens it again with
    bounded backoff.
    """

    def read(self) -> np.ndarray | None:
        """The next frame as RGB, or None when none came."""

    def release(self) -> None:
        """Close the source; safe to call twice."""
