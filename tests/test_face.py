"""The face pipeline with the real dlib models on real photos (tests/data/faces, LFW thumbnails)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.access.walkup import FaceAnswer, FaceStatus
from edge.privacy import Tokenizer, generate_key, load_key
from edge.store.faces import FaceStore, TemplateKeyError
from edge.vision.enrol import EnrolError, templates_from
from edge.vision.face import LIVENESS_MIN, FacePipeline, Gallery, answer_for, liveness_score
from rigs import scene

DATA = Path(__file__).parent / "data" / "faces"
REPO = Path(__file__).resolve().parent.parent
PEOPLE = {"Emma_Watson": ["0001", "0002", "0003"], "Zhu_Rongji": ["0001", "0002", "0007"], "Nan_Wang": ["0001", "0002", "0003"]}
PROBES = {"Emma_Watson": "0004", "Zhu_Rongji": "0009", "Nan_Wang": "0004"}


def rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / f"{name}.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def pipeline():
    return FacePipeline()


@pytest.fixture(scope="module")
def gallery(pipeline):
    people, rows = [], []
    for person, nums in PEOPLE.items():
        t, _ = templates_from(pipeline, [(n, rgb(f"{person}_{n}")) for n in nums])
        people += [person] * len(t)
        rows.append(t)
    return Gallery(people, np.vstack(rows))


def probe(pipeline, name: str) -> np.ndarray:
    (face,) = pipeline.analyse(rgb(name))
    assert face.quality.ok and face.embedding is not None
    return face.embedding


def cut_off(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The frame with a third of the face in `box` past its left edge: a face coming into view."""
    left, _top, right, _bottom = box
    return np.ascontiguousarray(img[:, left + (right - left) // 3:])


@pytest.mark.parametrize("person", sorted(PROBES))
def test_the_same_person_is_recognised_on_another_photo(pipeline, gallery, person):
    m = gallery.search(probe(pipeline, f"{person}_{PROBES[person]}"))
    assert m.person == person


@pytest.mark.parametrize("stranger", ["Takeo_Fukui_0001", "Ken_Loach_0001"])
def test_a_stranger_is_refused(pipeline, gallery, stranger):
    m = gallery.search(probe(pipeline, stranger))
    assert m.person is None  # Takeo Fukui's nearest is Nan Wang at 0.44: close, and still refused


def test_a_stranger_who_resembles_a_resident_is_refused_at_the_default_score(pipeline):
    """Wen Jiabao at a door where Chen Shui-bian is enrolled from three photos, as enrolment takes:
    a look-alike that scores 4.07 against the cohort (mostly Western faces), which the old default
    (4.0) let in as him. The price is in the README's table: Chen's own fourth photo scores 4.2 and
    is refused too, so he needs a better frame in his walk-up, or his card."""
    t, _ = templates_from(pipeline, [(n, rgb(f"Chen_Shui-bian_{n}")) for n in ("0001", "0003", "0004")])
    m = Gallery(["Chen_Shui-bian"] * len(t), t).search(probe(pipeline, "Wen_Jiabao_0010"))
    assert m.nearest == "Chen_Shui-bian" and m.distance < pipeline.s.threshold  # close: only the score refuses him
    assert m.person is None


def test_a_face_cut_off_by_the_frame_edge_is_not_matched(pipeline):
    """A face coming into view at the edge of the frame: its aligned chip is half padding, and its
    embedding can land near anyone's. It is seen (the door knows someone is there), refused as
    `cut_off`, and matched once it is wholly in view."""
    img = rgb("Emma_Watson_0004")
    (whole,) = pipeline.analyse(img)
    cut = pipeline.analyse(cut_off(img, whole.box))
    assert cut and all(f.quality.reason == "cut_off" and f.embedding is None for f in cut)
    assert whole.quality.ok and whole.embedding is not None


def test_a_still_photo_held_up_is_not_alive_and_a_changing_face_is(pipeline):
    photo = [pipeline.analyse(f, embed=False)[0].chip for f in scene.photo_held(rgb("Emma_Watson_0004"), 10)]
    assert liveness_score(photo) < LIVENESS_MIN
    moments = [pipeline.analyse(rgb(f"Nan_Wang_000{i}"), embed=False)[0].chip for i in (1, 2, 3, 4)]
    assert liveness_score(moments) > LIVENESS_MIN


def test_a_door_embeds_only_the_nearest_of_two_faces(pipeline):
    """A photo or a queue puts a second, smaller face in the frame: the door decides on the nearest
    one, so only it is embedded (each embedding is the dearest step of a frame)."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[100:350, 60:310] = cv2.resize(rgb("Emma_Watson_0004"), (250, 250), interpolation=cv2.INTER_CUBIC)
    frame[150:300, 420:570] = cv2.resize(rgb("Nan_Wang_0004"), (150, 150), interpolation=cv2.INTER_AREA)
    every = pipeline.analyse(frame)
    assert len(every) == 2 and all(f.embedding is not None for f in every)
    real, calls = pipeline._encoder, []

    class Counting:
        def embed(self, chips):
            calls.append(len(chips))
            return real.embed(chips)

    pipeline._encoder = Counting()
    try:
        (one,) = pipeline.analyse(frame, nearest_only=True)
    finally:
        pipeline._encoder = real
    assert one.box == every[0].box and one.box[0] < 320  # Emma Watson's, the larger
    assert np.allclose(one.embedding, every[0].embedding) and calls == [1]


def test_a_frame_answers_the_walk_up_with_a_resident_a_stranger_or_low_quality(pipeline, gallery):
    """answer_for, what the vision worker and the bench tell the walk-up: the resident's id, a
    stranger as UNKNOWN, a face cut off by the frame's edge as LOW_QUALITY (not a stranger: the
    walk-up waits for a usable frame), and nothing for a face the worker did not embed."""
    img = rgb("Emma_Watson_0004")
    (whole,) = pipeline.analyse(img)
    answer, m = answer_for(whole, gallery)
    assert answer == FaceAnswer.match("Emma_Watson") and m is not None and m.person == "Emma_Watson"
    (stranger,) = pipeline.analyse(rgb("Ken_Loach_0001"))
    assert answer_for(stranger, gallery)[0] == FaceAnswer(FaceStatus.UNKNOWN)
    cut = pipeline.analyse(cut_off(img, whole.box))
    assert answer_for(cut[0], gallery) == (FaceAnswer(FaceStatus.LOW_QUALITY), None)
    (unembedded,) = pipeline.analyse(img, embed=False)
    assert answer_for(unembedded, gallery) == (None, None)


def test_enrolment_refuses_photos_without_one_usable_face(pipeline):
    blank = np.full((200, 200, 3), 128, np.uint8)
    with pytest.raises(EnrolError) as e:
        templates_from(pipeline, [("a.jpg", rgb("Emma_Watson_0001")), ("blank.png", blank), ("b.jpg", None)])
    assert "blank.png: no face found" in str(e.value) and "b.jpg: not an image" in str(e.value)


def test_templates_are_sealed_and_useless_without_the_key(tmp_path, pipeline):
    key = tmp_path / "face.key"
    generate_key(key)
    t, _ = templates_from(pipeline, [(n, rgb(f"Emma_Watson_{n}")) for n in PEOPLE["Emma_Watson"]])
    store = FaceStore(tmp_path / "state", bytes.fromhex(key.read_text().strip()))
    store.enroll("R-0101", t)
    people, loaded = store.load()
    assert people == ["R-0101"] * 3 and np.array_equal(loaded, t)
    store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir())
    assert t[0].tobytes()[:16] not in raw  # no plaintext float run anywhere in the files
    other = FaceStore(tmp_path / "state", b"\x01" * 32)
    with pytest.raises(TemplateKeyError):
        other.load()
    other.close()
    again = FaceStore(tmp_path / "state", bytes.fromhex(key.read_text().strip()))
    assert again.remove("R-0101") == 3 and again.people() == {}
    again.close()


def test_enroll_cli_with_progress_list_and_remove(tmp_path, rig):
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in PEOPLE["Zhu_Rongji"]:
        (photos / f"zhu_{n}.jpg").write_bytes((DATA / f"Zhu_Rongji_{n}.jpg").read_bytes())
    (photos / "notes.txt").write_text("not a photo")
    generate_key(rig.root / "face.key")
    cfg = str(rig.config_path)
    def run(*a):
        return subprocess.run([sys.executable, "-m", "edge", *a], capture_output=True, text=True, cwd=REPO, timeout=120)
    res = run("enroll", "face", "--config", cfg, "--person", "R-0707", "--images", str(photos))
    assert res.returncode == 0, res.stderr
    ref = Tokenizer(load_key(rig.root / "site.key")).person_ref("R-0707")
    assert f"enrolled R-0707 as {ref}: 3 template(s)" in res.stdout and "zhu_0007.jpg: ok" in res.stderr
    assert ref in run("enroll", "list", "--config", cfg).stdout  # the gateway knows her by reference only
    assert not any(b"R-0707" in f.read_bytes() for f in (rig.root / "state").iterdir() if f.is_file())
    assert run("enroll", "remove", "--config", cfg, "--person", "R-0707").returncode == 0
    assert "0 person(s) enrolled" in run("enroll", "list", "--config", cfg).stdout
    (photos / "zhu_0001.jpg").unlink()
    res = run("enroll", "face", "--config", cfg, "--person", "R-0707", "--images", str(photos))
    assert res.returncode == 2 and "2 usable photo(s), 3 needed" in res.stderr


def test_enroll_from_a_camera_takes_five_moments(tmp_path, rig):
    frames = scene.live([rgb(f"Nan_Wang_000{i}") for i in (1, 2, 3, 4)], 40)
    folder = scene.write(tmp_path / "cam", frames)
    generate_key(rig.root / "face.key")
    cfg = str(rig.config_path)
    def run(*a):
        return subprocess.run([sys.executable, "-m", "edge", *a], capture_output=True, text=True, cwd=REPO, timeout=120)
    res = run("enroll", "face", "--config", cfg, "--person", "R-0808", "--camera", str(folder))
    assert res.returncode == 0, res.stderr
    assert "enrolled R-0808 as p-" in res.stdout and ": 5 template(s)" in res.stdout and "[#####] moment" in res.stderr
    empty = scene.write(tmp_path / "empty", scene.blank(20))
    res = run("enroll", "face", "--config", cfg, "--person", "R-0909", "--camera", str(empty))
    assert res.returncode == 2 and "0 usable photo(s)" in res.stderr and "no face found" in res.stderr
    res = run("enroll", "face", "--config", cfg, "--person", "R-0909", "--camera", "/dev/video99")
    assert res.returncode == 2 and "/dev/video99" in res.stderr


def test_a_score_means_the_same_in_a_house_of_three_and_a_building_of_two_hundred(pipeline, gallery):
    """The cohort is fixed: adding 200 other residents changes neither a resident's score nor a
    stranger's verdict (the old z-score against the gallery itself did both)."""
    rng = np.random.default_rng(3)
    others = rng.normal(0, 0.1, (600, 128)).astype(np.float32) + gallery.t.mean(axis=0)  # 200 people, 3 templates each
    big = Gallery(gallery.people + [f"R{i // 3:03d}" for i in range(600)], np.vstack([gallery.t, others]))
    for person, num in PROBES.items():
        q = probe(pipeline, f"{person}_{num}")
        small_m, big_m = gallery.search(q), big.search(q)
        assert small_m.person == big_m.person == person and abs(small_m.z - big_m.z) < 1e-4
    for stranger in ("Takeo_Fukui_0001", "Ken_Loach_0001"):
        assert big.search(probe(pipeline, stranger)).person is None


def test_an_altered_cohort_file_is_refused(tmp_path):
    from edge.vision.face import Cohort
    from edge.vision.models import MODELS_DIR, ModelError

    for f in ("manifest.toml", "face_cohort.npz"):
        (tmp_path / f).write_bytes((MODELS_DIR / f).read_bytes())
    assert Cohort.load(tmp_path).k > 0
    data = bytearray((tmp_path / "face_cohort.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "face_cohort.npz").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest"):
        Cohort.load(tmp_path)


def test_the_projection_tried_whitens_the_spread_of_one_persons_photos():
    """training.faces.cohort's figures for the projection (why none ships) are only worth reading
    if wccn does what it says: after it, one person's photos spread alike in every direction."""
    from training.faces.cohort import wccn

    rng = np.random.default_rng(3)
    spread = np.array([0.2, 0.1, 0.05, 0.02, 0.01, 0.01, 0.005, 0.005])
    centres = rng.normal(size=(300, 8))
    x = np.repeat(centres, 3, axis=0) + rng.normal(size=(900, 8)) * spread
    ids = np.repeat(np.arange(300).astype(str), 3)
    mean, w = wccn(x, ids, shrink=0.0)
    y = (x - mean) @ w

    def within(v: np.ndarray) -> np.ndarray:
        d = np.vstack([g - g.mean(axis=0) for g in v.reshape(300, 3, 8)])
        return d.T @ d / (300 * 2)

    assert np.linalg.cond(within(x)) > 1000
    assert np.allclose(within(y), np.eye(8), atol=0.15)
