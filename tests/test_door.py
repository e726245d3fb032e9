"""The door state machine, driven with explicit times: no threads, no hardware."""

from __future__ import annotations

from edge.access.door import OPEN_GRACE_S, DoorEvent, DoorMachine, Hold, Pulse
from edge.config import Door

DOOR = Door(id="d", relay={"type": "modbus", "port": "/dev/ttyUSB0"}, pulse_ms=1000, held_open_s=10,
            inputs={"contact": 0, "exit_button": 1, "fire_alarm": 2})


def machine() -> DoorMachine:
    m = DoorMachine(DOOR)
    assert m.inputs(0.0, contact=False, exit_button=False, fire=False) == []  # first sample: levels only
    return m


def reasons(actions) -> list[str]:
    return [a.reason for a in actions if isinstance(a, DoorEvent)]


def test_grant_pulses_and_authorises_one_passage():
    m = machine()
    assert m.grant(1.0) == [Pulse(1000)]
    assert reasons(m.inputs(2.0, contact=True, exit_button=False, fire=False)) == ["opened"]
    assert reasons(m.inputs(3.0, contact=False, exit_button=False, fire=False)) == ["closed"]
    # the same grant does not cover a second opening
    assert reasons(m.inputs(3.5, contact=True, exit_button=False, fire=False)) == ["forced_open"]


def test_opening_without_grant_is_forced():
    m = machine()
    assert reasons(m.inputs(5.0, contact=True, exit_button=False, fire=False)) == ["forced_open"]


def test_grant_window_expires():
    m = machine()
    m.grant(1.0)
    late = 1.0 + 1.0 + OPEN_GRACE_S + 0.1
    assert reasons(m.inputs(late, contact=True, exit_button=False, fire=False)) == ["forced_open"]


def test_held_open_once_then_closed():
    m = machine()
    m.grant(0.0)
    m.inputs(0.5, contact=True, exit_button=False, fire=False)
    assert m.tick(5.0) == []
    assert reasons(m.tick(10.6)) == ["held_open"]
    assert m.tick(20.0) == []  # raised once
    assert reasons(m.inputs(21.0, contact=False, exit_button=False, fire=False)) == ["closed"]


def test_exit_button_pulses_on_press_edge_only():
    m = machine()
    out = m.inputs(1.0, contact=False, exit_button=True, fire=False)
    assert reasons(out) == ["exit_button"] and Pulse(1000) in out
    assert m.inputs(1.1, contact=False, exit_button=True, fire=False) == []  # still held: nothing new
    assert m.inputs(1.2, contact=False, exit_button=False, fire=False) == []
    assert reasons(m.inputs(1.3, contact=True, exit_button=False, fire=False)) == ["opened"]


def test_fire_releases_and_holds_until_cleared():
    m = machine()
    out = m.inputs(1.0, contact=False, exit_button=False, fire=True)
    assert Hold(True) in out and reasons(out) == ["fire_release"]
    assert m.grant(2.0) == []  # already released: no pulse that would end the release
    assert reasons(m.inputs(3.0, contact=True, exit_button=False, fire=True)) == ["opened"]
    assert m.tick(100.0) == []  # no held-open alarm while the fire alarm holds the door
    out = m.inputs(101.0, contact=True, exit_button=False, fire=False)
    assert Hold(False) in out and reasons(out)[0] == "fire_cleared"


def test_door_open_at_start_is_not_an_intrusion():
    m = DoorMachine(DOOR)
    assert reasons(m.inputs(0.0, contact=True, exit_button=False, fire=False)) == []


def test_fail_mode():
    assert DoorMachine(DOOR).shutdown_state() is False
    assert DoorMachine(DOOR.model_copy(update={"fail_mode": "safe"})).shutdown_state() is True


def test_the_tamper_input_is_reported_at_each_edge_even_at_start():
    m = DoorMachine(DOOR)
    assert reasons(m.inputs(0.0, contact=False, exit_button=False, fire=False, tamper=True)) == ["tamper"]  # a housing found open
    assert reasons(m.inputs(1.0, contact=False, exit_button=False, fire=False, tamper=True)) == []
    assert reasons(m.inputs(2.0, contact=False, exit_button=False, fire=False, tamper=False)) == ["tamper_cleared"]
    assert reasons(m.inputs(3.0, contact=False, exit_button=False, fire=False, tamper=None)) == []  # not wired
