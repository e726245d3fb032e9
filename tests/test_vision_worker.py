"""The vision worker process: frames through shared memory, answers back, restarted when it dies."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from edge.access.walkup import FaceAnswer
from edge.vision.enrol import templates_from
from edge.vision.face import FacePipeline
from edge.vision.worker import FaceWorker
from rigs import scene
from rigs.rig import wait_until
from tests.test_face import PEOPLE, rgb


@pytest.fixture(scope="module")
def gallery():
    pipeline = FacePipeline()
    people, rows = [], []
    for person, nums in PEOPLE.items():
        t, _ = templates_from(pipeline, [(n, rgb(f"{person}_{n}")) for n in nums])
        people += [person] * len(t)
        rows.append(t)
    return people, np.vstack(rows)


def test_frames_go_in_answers_come_out_and_a_dead_worker_comes_back(gallery):
    results = []
    got = threading.Condition()

    def on_result(r) -> None:
        with got:
            results.append(r)
            got.notify_all()

    w = FaceWorker(on_result, people=gallery[0], templates=gallery[1])
    try:
        assert w.wait_ready(60)
        frames = scene.photo_held(rgb("Zhu_Rongji_0009"), 6)

        def feed(n: int) -> None:
            i = 0
            while sum(r.answer == FaceAnswer.match("Zhu_Rongji") for r in results) < n:
                w.submit(frames[i % len(frames)], i + 1, i)
                i += 1
                with got:
                    got.wait(0.05)

        feed(3)
        assert all(r.box is not None and r.chip is not None for r in results)
        os.kill(w.pid, signal.SIGKILL)  # a native crash, say
        wait_until(lambda: w.stats.restarts == 1 and w.wait_ready(0), 60, "the worker started again")
        before = len(results)
        feed(sum(r.answer == FaceAnswer.match("Zhu_Rongji") for r in results) + 2)
        assert len(results) > before and w.stats.dropped >= 0
    finally:
        w.stop()


def test_a_camera_running_flat_out_does_not_starve_another(gallery):
    """Two cameras on one worker: `busy` floods it, `gate` shows a frame now and then. With a slot
    per camera every frame of the quiet camera gets in (first come, first served used to drop them)."""
    results: list = []
    w = FaceWorker(results.append, people=gallery[0], templates=gallery[1], cameras=["busy", "gate"])
    halt = threading.Event()
    try:
        assert w.wait_ready(60)
        frames = scene.photo_held(rgb("Zhu_Rongji_0009"), 6)

        def flood() -> None:
            i = 0
            while not halt.is_set():
                if not w.submit(frames[i % len(frames)], i, 0, "busy"):
                    halt.wait(0.001)
                i += 1

        threading.Thread(target=flood, daemon=True).start()
        wait_until(lambda: sum(r.camera == "busy" for r in results) >= 3, 30, "the busy camera served")
        offered = taken = 0
        for i in range(20):
            before = sum(r.camera == "gate" for r in results)
            offered += 1
            taken += w.submit(frames[i % len(frames)], i, 0, "gate")
            wait_until(lambda: sum(r.camera == "gate" for r in results) > before, 10, "the gate frame answered")
        assert taken == offered  # the quiet camera never lost a frame to the busy one
        assert sum(r.camera == "busy" for r in results) > 20  # and the busy one was served meanwhile
    finally:
        halt.set()
        w.stop()


def test_a_hung_worker_is_killed_and_started_again(gallery):
    results: list = []
    w = FaceWorker(results.append, people=gallery[0], templates=gallery[1], hang_s=2.0)
    try:
        assert w.wait_ready(60)
        frame = rgb("Zhu_Rongji_0009")
        assert w.submit(frame, 1, 0)
        wait_until(lambda: results, 10, "a first answer")
        pid = w.pid
        os.kill(pid, signal.SIGSTOP)  # a native hang: the process neither answers nor dies
        assert w.submit(frame, 2, 0)
        wait_until(lambda: w.stats.hangs == 1, 15, "the hang seen")
        wait_until(lambda: w.ready and w.pid != pid, 60, "a fresh worker")
        assert w.reconnects.snapshot().outages == 1
        before = len(results)
        wait_until(lambda: w.submit(frame, 3, 0) or len(results) > before, 10, "frames taken again")
        wait_until(lambda: len(results) > before, 10, "answers again")
    finally:
        w.stop()


def test_missing_models_are_an_outage_retried_until_they_are_back(tmp_path):
    from drivers.backoff import Backoff
    from edge.vision.models import ModelError

    present = threading.Event()

    def check() -> None:
        if not present.is_set():
            raise ModelError("models/plate_det.onnx is missing: reinstall the package")

    w = FaceWorker(lambda r: None, check_models=check, backoff=Backoff(0.001, 0.002))
    try:
        wait_until(lambda: w.reconnects.snapshot().attempts >= 200, 10, "attempts while the models are missing")
        snap = w.reconnects.snapshot()
        assert snap.up is False and "plate_det.onnx is missing" in snap.detail and w.pid is None
        present.set()
        assert w.wait_ready(60) and w.reconnects.is_up
    finally:
        w.stop()
