"""The vote across frames at a vehicle gate, as pure logic: readings in, one verdict per vehicle."""

from __future__ import annotations

from edge.access.platevote import VehicleVote

A = [("皖A12345", 0.9), ("皖A12346", 0.05)]
B = [("浙B7788Z", 0.8)]


def feed(v: VehicleVote, frames: list, dt: float = 0.1) -> list:
    return [out for i, r in enumerate(frames) if (out := v.observe(i * dt, r)) is not None]


def test_a_car_waiting_at_the_barrier_is_one_decision():
    (v,) = feed(VehicleVote(), [A] * 100)
    assert v.reason == "read" and v.candidates == ("皖A12345", "皖A12346")


def test_a_misread_frame_does_not_decide_and_the_best_reading_wins():
    misread = [("皖A12346", 0.6), ("皖A12345", 0.3)]
    (v,) = feed(VehicleVote(frames=3), [A, misread, A, misread, A])
    assert v.candidates[0] == "皖A12345" and "皖A12346" in v.candidates


def test_the_next_car_after_the_gap_is_a_new_decision():
    vs = feed(VehicleVote(gone_s=1.0), [A] * 5 + [None] * 15 + [A] * 5)
    assert [v.candidates[0] for v in vs] == ["皖A12345", "皖A12345"]
    vs = feed(VehicleVote(gone_s=1.0), [A] * 5 + [B] * 5)  # a second car right behind: its own decision
    assert [v.candidates[0] for v in vs] == ["皖A12345", "浙B7788Z"]


def test_a_plate_never_read_is_reported_unreadable_once():
    vs = feed(VehicleVote(unreadable_s=2.0), [[]] * 100)
    assert [(v.reason, v.candidates) for v in vs] == [("plate_unreadable", ())]
    assert feed(VehicleVote(unreadable_s=2.0), [[]] * 10) == []
