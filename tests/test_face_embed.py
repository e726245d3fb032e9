"""dlib's face network run by onnxruntime (edge.vision.face_embed) against dlib's own encoder, on
real photos (tests/data/faces, LFW thumbnails), and its refusal of a weight file it was not made for."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from edge.vision.face import MODEL_FILES, model_dir
from edge.vision.face_embed import FaceEmbedder
from edge.vision.models import ModelError

DATA = Path(__file__).parent / "data" / "faces"
WEIGHTS = model_dir() / MODEL_FILES["encoder"]


@pytest.fixture(scope="module")
def chips() -> list[np.ndarray]:
    """Aligned chips of every test photo, as the pipeline cuts them (dlib's 5-point alignment)."""
    detector, shape = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model_dir() / MODEL_FILES["shape5"]))
    out = []
    for f in sorted(DATA.glob("*.jpg")):
        img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        big = cv2.resize(img, None, fx=2, fy=2)
        if rects := detector(big, 1):
            out.append(dlib.get_face_chip(big, shape(big, rects[0]), size=150))
    assert len(out) >= 10
    return out


def test_the_embeddings_are_dlibs_own(chips):
    """The same 128 numbers as dlib's encoder for every face (float rounding apart), one at a time
    and in a batch: the cohort, the thresholds and every enrolled template were made with dlib's."""
    ours = FaceEmbedder(WEIGHTS)
    encoder = dlib.face_recognition_model_v1(str(WEIGHTS))
    theirs = np.array([encoder.compute_face_descriptor(c) for c in chips], np.float32)
    one_by_one = np.vstack([ours.embed([c]) for c in chips])
    assert np.abs(one_by_one - theirs).max() < 1e-5
    assert np.abs(ours.embed(chips) - theirs).max() < 1e-5
    # and they tell people apart: the nearest other face of each is not itself
    d = np.linalg.norm(theirs[:, None] - theirs[None], axis=2)
    assert d[~np.eye(len(d), dtype=bool)].min() > 0.05


def test_a_weight_file_the_graph_was_not_made_from_is_refused(tmp_path):
    """The graph reads dlib's file at fixed offsets: another file (a changed package, a damaged
    copy) would give wrong embeddings and match wrong people, so it is refused, naming the fix."""
    damaged = bytearray(WEIGHTS.read_bytes())
    damaged[len(damaged) // 2: len(damaged) // 2 + 4] = b"\x00\x00\x80\x7f"  # one weight made infinite
    (tmp_path / WEIGHTS.name).write_bytes(bytes(damaged))
    with pytest.raises(ModelError) as err:
        FaceEmbedder(tmp_path / WEIGHTS.name)
    assert "is not the dlib file" in str(err.value) and "face_recognition_models" in err.value.fix
    with pytest.raises(ModelError) as err:
        FaceEmbedder(tmp_path / "nothing.dat")
    assert "is missing" in str(err.value)


def test_the_graph_script_reads_dlibs_file_to_its_last_byte_and_refuses_one_cut_short():
    """training.faces.dlib_graph reads the network as dlib's deserialisers do; the shipped graph's
    offsets come from it, so a file it cannot read to the end exactly is refused, not guessed at."""
    from training.faces.dlib_graph import read_network

    data = WEIGHTS.read_bytes()
    mean, layers = read_network(data)
    kinds = [layer.kind for layer in layers]
    assert kinds.count("con") == 29 and kinds.count("add") == 14 and kinds[-1] == "fc"
    assert np.allclose(mean, (122.782, 117.001, 104.298), atol=1e-3)  # dlib's per-channel input means
    offset, count = layers[0].params
    assert count == 32 * 3 * 7 * 7 + 32 and offset + 4 * count < len(data)
    with pytest.raises(ValueError, match="ends"):
        read_network(data[:-1000])
