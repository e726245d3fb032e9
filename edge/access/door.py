"""The door state machine: inputs and grants in, relay actions and door events out.

Pure: it is fed the monotonic time with every call and returns what to do, so tests drive it
without threads or hardware and the controller does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edge.config import Door

# After a grant or an exit press the door may be opened until the pulse ends plus this grace.
OPEN_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class Pulse:
    ms: int


@dataclass(frozen=True, slots=True)
class Hold:
    released: bool  # True: keep the lock released (fire); False: back to normal (locked)


@dataclass(frozen=True, slots=True)
class DoorEvent:
    reason: Literal["opened", "closed", "forced_open", "held_open", "exit_button",
                    "fire_release", "fire_cleared", "tamper", "tamper_cleared"]


Action = Pulse | Hold | DoorEvent


@dataclass
class DoorMachine:
    door: Door
    contact_open: bool = False
    exit_pressed: bool = False
    fire: bool = False
    tamper: bool = False
    authorised_until: float = 0.0
    open_since: float | None = None
    held_alarm: bool = False
    forced: bool = False
    _known: bool = field(default=False, repr=False)

    def grant(self, now: float) -> list[Action]:
        """A credential was granted: pulse the lock and allow the door to open."""
        self.authorised_until = now + self.door.pulse_ms / 1000 + OPEN_GRACE_S
        if self.fire:
            return []  # already released and held
        return [Pulse(self.door.pulse_ms)]

    def inputs(self, now: float, *, contact: bool | None, exit_button: bool | None, fire: bool | None,
               tamper: bool | None = None) -> list[Action]:
        """New input states (None = input not wired). Edges produce actions; levels are remembered.
        A tamper input already on at start-up is reported too: an open housing is news whenever seen."""
        out: list[Action] = []
        first = not self._known
        self._known = True
        if tamper is not None and tamper != self.tamper:
            self.tamper = tamper
            out.append(DoorEvent("tamper" if tamper else "tamper_cleared"))
        if fire is not None and fire != self.fire:
            self.fire = fire
            out += [Hold(True), DoorEvent("fire_release")] if fire else [Hold(False), DoorEvent("fire_cleared")]
        if exit_button is not None:
            if exit_button and not self.exit_pressed and not first:
                out.append(DoorEvent("exit_button"))
                out += self.grant(now)
            self.exit_pressed = exit_button
        if contact is not None and contact != self.contact_open:
            self.contact_open = contact
            if contact:
                self.open_since = now
                if first:
                    pass  # open at start-up: not an intrusion we saw happen
                elif self.fire or now <= self.authorised_until:
                    out.append(DoorEvent("opened"))
                else:
                    self.forced = True
                    out.append(DoorEvent("forced_open"))
            else:
                self.open_since = None
                self.held_alarm = self.forced = False
                self.authorised_until = 0.0  # one grant, one passage
                out.append(DoorEvent("closed"))
        return out + self.tick(now)

    def tick(self, now: float) -> list[Action]:
        """Time passing: the held-open alarm (not while the fire alarm holds the door released)."""
        if (self.open_since is not None and not self.held_alarm and not self.fire
                and now - self.open_since >= self.door.held_open_s):
            self.held_alarm = True
            return [DoorEvent("held_open")]
        return []

    def shutdown_state(self) -> bool:
        """Whether the lock is left released when the daemon stops or loses the relay."""
        return self.door.fail_mode == "safe"
