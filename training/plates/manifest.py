"""Write models/manifest.toml: each model's file, sha256, how it was made and how it is run.

    .venv/bin/python -m training.plates.manifest

Run after training; the daemon refuses a model file whose sha256 differs from this manifest. The
training figures come from the `<model>.train.json` each trainer writes next to its ONNX file.
"""

from __future__ import annotations

import hashlib
import json

from edge.vision.models import MODELS_DIR

# the green readers: fine-tuned from the blue ones (`make train-plates-green`, after `make train-plates`)
GREEN_REC = ("python -m training.plates.recognizer --real ../shared/data/plates_train --init models/plate_rec.onnx "
             "--out /tmp/door-edge-green1/plate_rec_green.onnx --lr 4e-4 --synthetic 30000 --steps 6000 --green 0.5 --seed 31 && "
             "python -m training.plates.recognizer --real ../shared/data/plates_train --init /tmp/door-edge-green1/plate_rec_green.onnx "
             "--out models/plate_rec_green.onnx --lr 3e-4 --synthetic 30000 --steps 6000 --green 0.8 --seed 37")
GREEN_PROV = ("python -m training.plates.province --real ../shared/data/plates_train --init models/plate_prov.onnx "
              "--out models/plate_prov_green.onnx --lr 5e-4 --synthetic 30000 --steps 3000 --green 0.8 --seed 53")
# the plain readers: fine-tuned from the colour ones on batches partly made colourless (`make train-plates-night`)
NIGHT_REC = ("python -m training.plates.recognizer --real ../shared/data/plates_train --init models/plate_rec.onnx "
             "--out models/plate_rec_night.onnx --lr 5e-4 --synthetic 30000 --steps 3000 --green 0.4 --colourless 0.6 --seed 139")
NIGHT_PROV = ("python -m training.plates.province --real ../shared/data/plates_train --init models/plate_prov.onnx "
              "--out models/plate_prov_night.onnx --lr 5e-4 --synthetic 30000 --steps 3000 --green 0.4 --colourless 0.6 --seed 137")

# the models trained on green plates lettered in real glyphs (training.plates.glyphs) cut them before
# blurred glyphs were left out of the bank (5d77fb6); made again with the bank as it is now, the green
# readers read the bench's green set the same to a plate or two (shipped 0.8233, remade 0.8233-0.8267; on a
# second set, seed 31337: 0.83 against 0.8333-0.8367), so the shipped files stay
OLD_BANK = ("training/plates as of the model's commit; its glyph bank was cut before blurred glyphs were left out "
            "(`git checkout 71ca4ed -- training/plates/glyphs.py` to make it again draw for draw)")

MODELS = {
    "plate_det": {
        "file": "plate_det.onnx",
        "task": "plate detection: plate mask at 1/4 resolution",
        "input": "image: float32 N x 3 x S x S, BGR 0-255, letterboxed (pad 114); S = 256 in the pipeline (fully convolutional: any multiple of 4 runs)",
        "output": "logits: N x 1 x S/4 x S/4 (sigmoid > threshold = plate)",
        "threshold": 0.5,
        "training_data": "composite scenes: ../shared/data/faces photos and generated clutter as backgrounds, car-front-like "
                         "negatives (grilles, headlights, badges, plate-shaped boards without characters); synthetic plates "
                         "(training/plates/synth.py, all colours) and the real crops of ../shared/data/plates_train pasted in perspective",
        "code": "edge/vision/train as of commit 5aafd92 (the synthetic plates changed since: `git checkout 5aafd92 -- "
                "edge/vision/train` to reproduce)",
        "command": "python -m training.plates.detector --real ../shared/data/plates_train --backgrounds ../shared/data/faces "
                   "--out models/plate_det.onnx --scenes 8000 --steps 4000 --seed 11",
        "seed": 11,
    },
    "plate_rec": {
        "file": "plate_rec.onnx",
        "task": "plate recognition: CNN + CTC, 32 columns",
        "input": "image: float32 N x 3 x 32 x 128, BGR 0-255, the rectified plate",
        "output": "logp: N x 32 x (1 + len(edge.vision.plate_format.CHARSET)) log-probabilities; class 0 = blank",
        "min_p": 0.3,  # a best reading below this is unreadable: on the dev crops every right reading but 1 % had p >= 0.49
        "training_data": "synthetic plates (training/plates/synth.py: 35-40 % green new-energy, mostly blue, some yellow, "
                         "white, black; 50,000 per stage) and 90 % of the 1,194 real crops of ../shared/data/plates_train",
        "code": "edge/vision/train as of commit 5aafd92 (the synthetic plates and the trainer changed since: "
                "`git checkout 5aafd92 -- edge/vision/train` to reproduce)",
        "command": "python -m training.plates.recognizer --real ../shared/data/plates_train --out /tmp/stage1/plate_rec.onnx "
                   "--synthetic 50000 --steps 15000 --green 0.35 --seed 17 && python -m training.plates.recognizer --real "
                   "../shared/data/plates_train --out models/plate_rec.onnx --init /tmp/stage1/plate_rec.pt --lr 5e-4 "
                   "--synthetic 50000 --steps 8000 --green 0.4 --seed 23",
        "seed": 17,
    },
    "plate_rec_green": {
        "file": "plate_rec_green.onnx",
        "task": "plate recognition of green new-energy plates (edge.vision.plate_cues.new_energy picks it): plate_rec "
                "fine-tuned towards them",
        "input": "image: float32 N x 3 x 32 x 128, BGR 0-255, the rectified plate",
        "output": "logp: N x 32 x (1 + len(edge.vision.plate_format.CHARSET)) log-probabilities; class 0 = blank",
        "training_data": "plate_rec (BatchNorm frozen), then synthetic plates (training/plates/synth.py, green drawn as real ones "
                         "look, 70 % in glyphs cut from ../shared/data/plates_train) and 90 % of its 1,194 real crops",
        "command": GREEN_REC,
        "code": OLD_BANK,
        "seed": 31,
    },
    "plate_rec_night": {
        "file": "plate_rec_night.onnx",
        "task": "plate recognition of plates seen without colour (edge.vision.plate_cues.palette picks it: an infrared "
                "camera at night, a colour camera in the dark, a white or black plate): plate_rec fine-tuned towards them",
        "input": "image: float32 N x 3 x 32 x 128, BGR 0-255, the rectified plate",
        "output": "logp: N x 32 x (1 + len(edge.vision.plate_format.CHARSET)) log-probabilities; class 0 = blank",
        "training_data": "plate_rec (BatchNorm frozen), then synthetic plates (training/plates/synth.py, 40 % green) and 90 % "
                         "of the 1,194 real crops of ../shared/data/plates_train, 60 % of each batch made colourless "
                         "(training.plates.data.colourless: a random mix of the three channels)",
        "command": NIGHT_REC,
        "code": OLD_BANK,
        "seed": 139,
    },
    "plate_rec_large": {
        "file": "plate_rec_large.onnx",
        "task": "plate recognition, the second look at an unsure reading: the same CNN + CTC as plate_rec, 3.5x its work (--size large)",
        "input": "image: float32 N x 3 x 32 x 128, BGR 0-255, the rectified plate",
        "output": "logp: N x 32 x (1 + len(edge.vision.plate_format.CHARSET)) log-probabilities; class 0 = blank",
        "training_data": "synthetic plates (training/plates/synth.py: 40 % green new-energy, mostly blue, some yellow, "
                         "white, black; 50,000 per stage) and 90 % of the 1,194 real crops of ../shared/data/plates_train; then "
                         "fine-tuned on 30,000 synthetic plates, half green drawn as real ones look",
        "command": "python -m training.plates.recognizer --real ../shared/data/plates_train --size large --out /tmp/large1/plate_rec_large.onnx "
                   "--synthetic 50000 --steps 9000 --green 0.4 --seed 101 && python -m training.plates.recognizer --real "
                   "../shared/data/plates_train --size large --out /tmp/large2/plate_rec_large.onnx --init /tmp/large1/plate_rec_large.pt "
                   "--lr 5e-4 --synthetic 50000 --steps 5000 --green 0.4 --seed 103 && python -m training.plates.recognizer --real "
                   "../shared/data/plates_train --size large --init /tmp/large2/plate_rec_large.onnx --out models/plate_rec_large.onnx "
                   "--lr 4e-4 --synthetic 30000 --steps 2500 --green 0.5 --seed 109",
        "code": "the two stages: edge/vision/train as of the commit that added this file (`git log --diff-filter=A -- "
                "models/plate_rec_large.onnx`); the green fine-tune (BatchNorm frozen, green drawn as real ones look): " + OLD_BANK,
        "seed": 101,
    },
    "plate_prov": {
        "file": "plate_prov.onnx",
        "task": "province character of a plate (31 classes), mixed into the recogniser's readings",
        "input": "image: float32 N x 3 x 32 x 44, BGR 0-255, the left 44 columns of the rectified 128x32 plate",
        "output": "logits: N x 31, in the order of edge.vision.plate_format.PROVINCES",
        "training_data": "synthetic plates (training/plates/synth.py, 40 % green, 100,000) and 90 % of the 1,194 real crops "
                         "of ../shared/data/plates_train, real ones drawn with weight 1/sqrt(crops of their province)",
        "command": "python -m training.plates.province --real ../shared/data/plates_train --out models/plate_prov.onnx "
                   "--synthetic 100000 --steps 16000 --seed 43",
        "seed": 43,
    },
    "plate_prov_green": {
        "file": "plate_prov_green.onnx",
        "task": "province character of a green new-energy plate (31 classes): plate_prov fine-tuned towards them",
        "input": "image: float32 N x 3 x 32 x 44, BGR 0-255, the left 44 columns of the rectified 128x32 plate",
        "output": "logits: N x 31, in the order of edge.vision.plate_format.PROVINCES",
        "training_data": "plate_prov (BatchNorm frozen), then synthetic plates (80 % green, drawn as real ones look) and 90 % "
                         "of the real crops of ../shared/data/plates_train",
        "command": GREEN_PROV,
        "code": OLD_BANK,
        "seed": 53,
    },
    "plate_prov_night": {
        "file": "plate_prov_night.onnx",
        "task": "province character of a plate seen without colour (31 classes): plate_prov fine-tuned towards them",
        "input": "image: float32 N x 3 x 32 x 44, BGR 0-255, the left 44 columns of the rectified 128x32 plate",
        "output": "logits: N x 31, in the order of edge.vision.plate_format.PROVINCES",
        "training_data": "plate_prov (BatchNorm frozen), then synthetic plates (40 % green) and 90 % of the real crops of "
                         "../shared/data/plates_train, 60 % of each batch made colourless (training.plates.data.colourless)",
        "command": NIGHT_PROV,
        "code": OLD_BANK,
        "seed": 137,
    },
}


def _toml_value(v) -> str:
    """A TOML value: strings and numbers as JSON writes them, booleans lower-case, a table inline
    (a fine-tuned model's `from`: the summary of the model it started from)."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v, ensure_ascii=False)


def _other_sections(text: str) -> list[str]:
    """The sections of an existing manifest that this script does not write (the face cohort's,
    written by training.faces.cohort), verbatim."""
    kept: list[str] = []
    keep = False
    for line in text.splitlines():
        if line.startswith("["):
            keep = line.strip("[]").split(".")[0] not in MODELS
        if keep:
            kept.append(line)
    return kept


def main() -> None:
    path_toml = MODELS_DIR / "manifest.toml"
    others = _other_sections(path_toml.read_text(encoding="utf-8")) if path_toml.exists() else []
    lines = ["# Model files and how they were made. A file whose sha256 differs is refused (edge/vision/models.py).",
             "# Regenerate with `python -m training.plates.manifest` after training (make train-plates).", ""]
    for name, meta in MODELS.items():
        path = MODELS_DIR / meta["file"]
        entry = dict(meta, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), bytes=path.stat().st_size)
        side = MODELS_DIR / f"{name}.train.json"
        if side.exists():
            entry["trained"] = json.loads(side.read_text())
        lines.append(f"[{name}]")
        for k, v in entry.items():
            if isinstance(v, dict):
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in entry.items():
            if isinstance(v, dict):
                lines.append(f"[{name}.{k}]")
                lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
        lines.append("")
    path_toml.write_text("\n".join(lines + others) + ("\n" if others else ""), encoding="utf-8")
    print(f"wrote {path_toml}")


if __name__ == "__main__":
    main()
