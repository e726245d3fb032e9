"""Alarms: what the office must see, raised from what the gateway journals, each with a `cleared`.

Pure: every journaled event is shown to `AlarmBook.observe` with the monotonic time, and it returns
the alarm events to journal next (type `alarm`, `reason` the alarm's name, `severity` one of
critical | major | minor when raised and `cleared` when it ends). An alarm is raised once while it
stands and cleared once, so the office gets one alarm per incident, not one per frame or poll.
The alarm events travel through the outbox like every event: nothing is lost offline, and central
pairs a raise with its clear by (gateway, name, door, subject).

| alarm | severity | raised by | cleared by |
|---|---|---|---|
| forced_open | critical | the contact opened without a grant | the door closed |
| held_open | major | open past held_open_s | the door closed |
| tamper | critical | the tamper input | the tamper input back to rest |
| fire | critical | the fire-alarm input (doors released) | the input back to rest |
| reader_down, pcscd_down, id_reader_down, camera_down, vision_down, relay_down | major (relay: critical) | a part gone | the part back |
| repeated_denials | major | N denied presentations at a door within the window | a window with fewer |
| credential_denied | minor | one credential denied N times within the window | a window with none of it |
| journal_overflow | critical | the journal cannot be written: events wait in memory | written again |
| disk_nearly_full | major | free space in the state directory under the floor | space again |
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from edge.store.outbox import Event

SEVERITY = {"forced_open": "critical", "held_open": "major", "tamper": "critical", "fire": "critical", "relay_down": "critical",
            "reader_down": "major", "pcscd_down": "major", "id_reader_down": "major", "camera_down": "major", "vision_down": "major",
            "repeated_denials": "major", "credential_denied": "minor", "journal_overflow": "critical", "disk_nearly_full": "major"}
CLEARED = "cleared"

# door events that raise or clear an alarm: event reason -> (alarm, raised?)
_DOOR = {"forced_open": [("forced_open", True)], "held_open": [("held_open", True)],
         "closed": [("forced_open", False), ("held_open", False)],
         "tamper": [("tamper", True)], "tamper_cleared": [("tamper", False)],
         "fire_release": [("fire", True)], "fire_cleared": [("fire", False)]}


@dataclass
class AlarmBook:
    denials: int = 5            # denied presentations at one door within `window_s` that raise repeated_denials
    credential_denials: int = 3  # denials of one credential within `window_s` that raise credential_denied
    window_s: float = 120.0
    open: set[tuple[str, str, str]] = field(default_factory=set)  # (alarm, door, subject) standing now
    _at_door: dict[str, deque[float]] = field(default_factory=dict)
    _of_token: dict[str, deque[float]] = field(default_factory=dict)

    def observe(self, event: Event, now: float) -> list[Event]:
        """The alarm events that `event` (already journaled) raises or clears."""
        door = event.door or ""
        if event.type == "door":
            return [e for alarm, up in _DOOR.get(event.reason, []) for e in self.set(alarm, up, door=door)]
        if event.type == "access" and event.decision == "denied":
            return self._denied(door, event.token, now)
        return []

    def part(self, kind: str, name: str, *, up: bool, door: str | None = None) -> list[Event]:
        """A reconnecting part (`kind` as in the journal's `{kind}_down`) went away or came back."""
        return self.set(f"{kind}_down", not up, door=door or "", subject=name)

    def set(self, alarm: str, active: bool, *, door: str = "", subject: str = "") -> list[Event]:
        """A condition that is on or off (the journal, the disk): an event only when it changes."""
        key = (alarm, door, subject)
        if active == (key in self.open):
            return []
        (self.open.add if active else self.open.discard)(key)
        return [Event("alarm", alarm, door=door or None, detail=subject or None,
                      severity=SEVERITY.get(alarm, "major") if active else CLEARED)]

    def tick(self, now: float) -> list[Event]:
        """Time passing: denial alarms whose window has gone by quietly are cleared."""
        out: list[Event] = []
        for door, times in list(self._at_door.items()):
            _drop_before(times, now - self.window_s)
            if len(times) < self.denials:
                out += self.set("repeated_denials", False, door=door)
                if not times:
                    del self._at_door[door]
        for token, times in list(self._of_token.items()):
            _drop_before(times, now - self.window_s)
            if not times:
                out += self.set("credential_denied", False, subject=token)
                del self._of_token[token]
        return out

    def _denied(self, door: str, token: str | None, now: float) -> list[Event]:
        out: list[Event] = []
        times = self._at_door.setdefault(door, deque())
        times.append(now)
        _drop_before(times, now - self.window_s)
        if len(times) >= self.denials:
            out += self.set("repeated_denials", True, door=door)
        if token:
            mine = self._of_token.setdefault(token, deque())
            mine.append(now)
            _drop_before(mine, now - self.window_s)
            if len(mine) >= self.credential_denials:
                out += self.set("credential_denied", True, subject=token)
        return out


def _drop_before(times: deque[float], cutoff: float) -> None:
    while times and times[0] < cutoff:
        times.popleft()
