"""Walk-ups and second factors as pure logic: sequences of frame answers in, verdicts out."""

from __future__ import annotations

import numpy as np

from edge.access.second_factor import SecondFactor
from edge.access.walkup import FaceAnswer, FaceStatus, WalkUp
from edge.config import FaceSection

S = FaceSection(frames=3, gone_s=1.0, liveness_window_s=2.0, low_quality_s=3.0, liveness_min=10.0)


def answer(a: str | FaceAnswer | None) -> FaceAnswer | None:
    """The tests' shorthand: a person id, or a status by its value."""
    if a is None or isinstance(a, FaceAnswer):
        return a
    statuses = {s.value: s for s in FaceStatus}
    return FaceAnswer(statuses[a]) if a in statuses else FaceAnswer.match(a)


def feed(w: WalkUp, answers: list, dt: float = 0.1, t0: float = 0.0) -> list:
    chip = np.zeros((150, 150), np.uint8)
    return [v for i, a in enumerate(answers) if (v := w.observe(t0 + i * dt, answer(a), chip)) is not None]


def live(_chips) -> float:
    return 30.0


def flat(_chips) -> float:
    return 2.0


def test_a_resident_standing_at_the_door_is_one_decision():
    (v,) = feed(WalkUp(S, live), ["P"] * 50)
    assert v.person == "P" and v.reason == "match"


def test_a_new_walk_up_after_the_face_has_gone_is_a_new_decision():
    vs = feed(WalkUp(S, live), ["P"] * 5 + [None] * 11 + ["P"] * 5)
    assert [v.person for v in vs] == ["P", "P"]
    vs = feed(WalkUp(S, live), ["P"] * 5 + [None] * 5 + ["P"] * 5)  # looked away for 0.5 s: the same walk-up
    assert [v.person for v in vs] == ["P"]


def test_the_answer_must_hold_for_consecutive_frames():
    assert feed(WalkUp(S, live), ["P", "Q", "P", "Q", "unknown_face", "P"]) == []
    (v,) = feed(WalkUp(S, live), ["P", "unknown_face", "unknown_face", "unknown_face"])
    assert v.reason == "unknown_face" and v.person is None


def test_a_stranger_then_a_resident_stepping_up_get_one_decision_each():
    vs = feed(WalkUp(S, live), ["unknown_face"] * 5 + ["P"] * 5)
    assert [(v.reason, v.person) for v in vs] == [("unknown_face", None), ("match", "P")]


def test_a_flat_face_is_refused_after_the_liveness_window_and_only_once():
    vs = feed(WalkUp(S, flat), ["P"] * 60)
    assert [v.reason for v in vs] == ["liveness_failed"]
    assert feed(WalkUp(S, flat), ["P"] * 15) == []  # 1.5 s: still within the window, no verdict yet


def test_liveness_off_decides_at_once():
    (v,) = feed(WalkUp(S.model_copy(update={"liveness": False}), flat), ["P"] * 3)
    assert v.person == "P"


def test_a_face_never_usable_is_reported_as_low_quality_once():
    vs = feed(WalkUp(S, live), ["low_quality"] * 60)
    assert [v.reason for v in vs] == ["low_quality"]
    assert feed(WalkUp(S, live), ["low_quality"] * 20 + ["P"] * 3 + ["low_quality"] * 40)[0].person == "P"


def test_second_factor_pairs_the_same_person_within_the_window():
    sf = SecondFactor(10.0)
    assert sf.offer("d", factor="card", person="P", kind="ic", token="t1", now=0.0) == (None, [])
    first, expired = sf.offer("d", factor="face", person="P", kind="face", token="t2", now=4.0)
    assert first is not None and first.kind == "ic" and expired == []
    assert sf.pending("d") is None


def test_second_factor_of_someone_else_or_too_late_does_not_open():
    sf = SecondFactor(10.0)
    sf.offer("d", factor="card", person="P", kind="ic", token="t1", now=0.0)
    first, expired = sf.offer("d", factor="face", person="Q", kind="face", token="t2", now=1.0)  # Q's face: P's card is replaced and recorded
    assert first is None and [p.person for p in expired] == ["P"]
    assert [p.person for p in sf.expire(11.5)] == ["Q"]
    sf.offer("d", factor="card", person="P", kind="ic", token="t1", now=20.0)
    first, expired = sf.offer("d", factor="face", person="P", kind="face", token="t2", now=30.0)
    assert first is None and [p.factor for p in expired] == ["card"]


def test_a_resident_whose_id_spells_a_status_is_still_a_resident():
    (v,) = feed(WalkUp(S, live), [FaceAnswer.match("low_quality")] * 5)
    assert v.person == "low_quality" and v.reason == "match"
