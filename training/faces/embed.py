"""Embeddings of a labelled photo folder (`labels.csv`: file,identity), as the gateway computes them.

`python -m training.faces.embed DIR OUT.npz [--probes-only]` writes, for every photo with a usable face, its probe
embedding (one look at the aligned chip, as a camera frame gets) and its enrolment template (the
augmented mean, as `door-edge face enrol` makes), with the identity. Group photos (`MULTI:`) are skipped.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from edge.vision.enrol import read_rgb
from edge.vision.face import FacePipeline


def embed_folder(data: Path, *, templates_too: bool = True) -> dict[str, np.ndarray]:
    pipe = FacePipeline()
    files, ids, probes, templates = [], [], [], []
    with (data / "labels.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["identity"].startswith("MULTI:")]
    for n, r in enumerate(sorted(rows, key=lambda r: r["file"])):
        img = read_rgb(data / r["file"])
        faces = [x for x in pipe.analyse(img) if x.embedding is not None]
        tmpl = [x for x in pipe.analyse(img, template=True) if x.embedding is not None] if templates_too else faces
        if faces and tmpl:
            files.append(r["file"])
            ids.append(r["identity"])
            probes.append(faces[0].embedding)
            templates.append(tmpl[0].embedding)
        if n % 200 == 0:
            print(f"{n}/{len(rows)}", file=sys.stderr, flush=True)
    return {"files": np.array(files), "ids": np.array(ids), "probe": np.vstack(probes), "template": np.vstack(templates)}


if __name__ == "__main__":
    out = embed_folder(Path(sys.argv[1]), templates_too="--probes-only" not in sys.argv)
    np.savez_compressed(sys.argv[2], **out)
    print(f"{len(out['files'])} faces -> {sys.argv[2]}")
