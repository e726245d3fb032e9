"""The vision worker process: frames through shared memory, answers back, restarted when it dies."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from drivers.virtual.rig import wait_until
from edge.vision.enrol import templates_from
from edge.vision.face import FacePipeline
from edge.vision.worker import FaceWorker
from drivers.virtual import scene
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
            while sum(r.answer == "Zhu_Rongji" for r in results) < n:
                w.submit(frames[i % len(frames)], i + 1, i)
                i += 1
                with got:
                    got.wait(0.05)

        feed(3)
        assert all(r.box is not None and r.chip is not None for r in results)
        os.kill(w.pid, signal.SIGKILL)  # a native crash, say
        wait_until(lambda: w.stats.restarts == 1 and w.wait_ready(0), 60, "the worker started again")
        before = len(results)
        feed(sum(r.answer == "Zhu_Rongji" for r in results) + 2)
        assert len(results) > before and w.stats.dropped >= 0
    finally:
        w.stop()
