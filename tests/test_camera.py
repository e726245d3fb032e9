"""The camera driver on real OpenCV sources: a folder of images, a video file, missing devices."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.backoff import Backoff
from drivers.camera import Camera, CameraError
from rigs.rig import wait_until

FACES = Path(__file__).parent / "data" / "faces"


def test_a_folder_plays_in_name_order_and_ends(tmp_path):
    for i, name in enumerate(["b.jpg", "a.jpg", "c.png"]):
        cv2.imwrite(str(tmp_path / name), np.full((48, 64, 3), 40 * (i + 1), np.uint8))
    (tmp_path / "notes.txt").write_text("skipped")
    cam = Camera(str(tmp_path), max_fps=20)  # slow enough that the test sees every frame
    cam.start()
    seen = []
    while (f := cam.wait_frame(seen[-1][0] if seen else 0)) is not None:
        seen.append((f.index, int(f.rgb[0, 0, 0])))
    cam.stop()
    assert cam.ended and [v for _, v in seen] == [80, 40, 120]  # a, b, c
    assert [i for i, _ in seen] == [1, 2, 3]


def test_a_video_file_is_read_to_its_end(tmp_path):
    path = tmp_path / "clip.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(12):
        out.write(np.full((120, 160, 3), i * 20, np.uint8))
    out.release()
    cam = Camera(str(path), max_fps=500)
    cam.start()
    wait_until(lambda: cam.ended, 10, "the end of the clip")
    cam.stop()
    assert cam.frames == 12 and cam.latest().rgb.shape == (120, 160, 3)


@pytest.mark.parametrize("source,fix", [("/dev/video97", "v4l2-ctl"), ("/nonexistent/where", "neither a device"),
                                        ("rtsp://user:pw@127.0.0.1:1/none", "check the URL")])
def test_a_source_that_cannot_be_opened_says_what_to_check(source, fix):
    with pytest.raises(CameraError) as e:
        Camera.open_now(source)
    assert fix in str(e.value) and "pw" not in str(e.value)


def test_a_source_that_fails_is_reopened_with_backoff(tmp_path):
    src = tmp_path / "cam"
    src.mkdir()
    shutil.copy(FACES / "Emma_Watson_0001.jpg", src / "f1.jpg")
    cam = Camera(str(src), max_fps=100, loop=True, backoff=Backoff(0.1, 0.2))
    cam.start()
    wait_until(lambda: cam.frames >= 3, 5, "frames")
    (src / "f1.jpg").unlink()                       # the camera stops delivering
    wait_until(lambda: cam.failures >= 2, 5, "failures counted")
    shutil.copy(FACES / "Zhu_Rongji_0001.jpg", src / "f2.jpg")  # and comes back
    before = cam.frames
    wait_until(lambda: cam.frames > before + 2, 5, "frames again after reopening")
    cam.stop()
    assert cam.reopens >= 1 and not cam.ended
