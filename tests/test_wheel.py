"""The gateway install: the runtime wheel, built from this tree and installed non-editable into a
clean virtualenv, checks a config and reads a plate with the models it carries, and holds nothing
of the test bench.

The clean venv installs the wheel's dependencies from requirements.lock (pyscard is built once and
then comes from pip's wheel cache). It runs outside the repository, so nothing is found by accident
through the working directory or the development venv's path file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge.vision.plate import PLATE_MODELS
from tests.conftest import REPO

RUNTIME_TOP = {"edge", "drivers", "protocol", "central"}


# what a build reads; built from a copy, so that the checkout gets no build/ or egg-info (and may be read-only)
BUILD_INPUTS = ("pyproject.toml", "README.md", "models", *sorted(RUNTIME_TOP))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pt"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("door_edge-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("gateway") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(REPO / "requirements.lock"), str(wheel)],
                         capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return venv


def run(venv: Path, command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`command` from the clean venv's bin/, with none of the development environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DOOR_EDGE_MODELS", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / command), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120, check=False)


def test_the_wheel_holds_the_runtime_and_its_models_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == RUNTIME_TOP
    models = {Path(n).name for n in names if n.startswith("edge/models/")}
    assert {"manifest.toml", "face_cohort.npz", "face_embed.onnx", *(f"{m}.onnx" for m in PLATE_MODELS)} <= models
    for part in ("rigs/", "devtools/", "training/", "tests/", "/virtual/", "pki", "bench", "demo", "synth"):
        assert not [n for n in names if part in n], part


def test_an_installed_gateway_checks_its_config(installed, tmp_path):
    res = run(installed, "door-edge", "config", "check", str(REPO / "config" / "gateway.example.toml"), cwd=tmp_path)
    assert res.returncode == 0 and ": ok (" in res.stdout, res.stdout + res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nid = 'gw'\nsite_key_file = 'site.key'\ntypo = 1\n")
    res = run(installed, "door-edge", "config", "check", str(bad), cwd=tmp_path)
    assert res.returncode == 2 and "gateway.typo" in res.stdout


def test_an_installed_gateway_reads_a_plate_with_its_packaged_models(installed, tmp_path):
    script = (
        "import cv2, sys\n"
        "from edge.vision import models\n"
        "from edge.vision.plate import PlateReader\n"
        "assert 'site-packages' in str(models.MODELS_DIR), models.MODELS_DIR\n"
        "reads = PlateReader().read(cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB))\n"
        "print(models.MODELS_DIR, [r.text for r in reads if r.text])\n"
    )
    res = run(installed, "python", "-c", script, str(REPO / "tests" / "data" / "plates" / "car_known.jpg"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "site-packages" in res.stdout and "[]" not in res.stdout, res.stdout


def test_an_installed_gateway_embeds_a_face_with_its_packaged_graph_and_the_registrys_weights(installed, tmp_path):
    """The face graph ships in the wheel without weights; they are read from the installed
    face_recognition_models package (checked against the manifest) and must give dlib's embedding."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import dlib\n"
        "import numpy as np\n"
        "from edge.vision import models\n"
        "from edge.vision.enrol import read_rgb\n"
        "from edge.vision.face import MODEL_FILES, FacePipeline, model_dir\n"
        "assert 'site-packages' in str(models.MODELS_DIR) and 'site-packages' in str(model_dir())\n"
        "img = read_rgb(Path(sys.argv[1]))\n"
        "pipe = FacePipeline()\n"
        "(face,) = [f for f in pipe.analyse(img) if f.embedding is not None]\n"
        "shape = dlib.shape_predictor(str(model_dir() / MODEL_FILES['shape5']))\n"
        "chip = dlib.get_face_chip(img, shape(img, dlib.rectangle(*face.box)), size=150)\n"
        "theirs = np.array(dlib.face_recognition_model_v1(str(model_dir() / MODEL_FILES['encoder'])).compute_face_descriptor(chip))\n"
        "print('largest difference', float(np.abs(face.embedding - theirs).max()))\n"
    )
    res = run(installed, "python", "-c", script, str(REPO / "tests" / "data" / "faces" / "Emma_Watson_0004.jpg"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.split()[-1]) < 1e-5, res.stdout


def test_an_installed_gateway_has_no_bench_and_says_where_it_is(installed, tmp_path):
    res = run(installed, "python", "-c", "import importlib.util as u; print([m for m in ('rigs', 'devtools', 'training') if u.find_spec(m)])",
              cwd=tmp_path)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr
    res = run(installed, "door-edge", "bench", "card", cwd=tmp_path)
    assert res.returncode == 2 and "make dev" in res.stderr
    res = run(installed, "door-edge-central", "--help", cwd=tmp_path)
    assert res.returncode == 0 and "publish" in res.stdout
