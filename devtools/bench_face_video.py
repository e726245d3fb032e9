"""`bench face`'s check on real live video (../shared/data/video/short_hamilton_clip.mp4).

Two people on the clip, Lin-Manuel Miranda and Alex Lacamoire, have photos in ../faces. They are
enrolled from those photos beside the development gallery; every frame of the clip is analysed as a
camera frame is, and the figures say:

- `recognised`: frames on which each of them was accepted, out of the frames with their face as the
  nearest resident (a real scene: lit from a stage, turned, moving);
- `false_accepts`: frames on which anyone else enrolled was accepted (nobody else is on the clip);
- `liveness_live`: the liveness score of each one-second window of a recognised person's face on
  the clip (landmark-aligned chips, edge.vision.face.liveness_score) and `liveness_live_pass`, the
  share of windows at or above LIVENESS_MIN;
- `liveness_photo`: the score of the same person's enrolment photo held up and moved in front of
  the camera (rigs.scene.photo_held), which must stay below it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from edge.vision.enrol import read_rgb
from edge.vision.face import LIVENESS_MIN, FacePipeline, Gallery, liveness_score

PEOPLE = {"Lin_Manuel_Miranda": ["fr_examples_lin-manuel-miranda.png"],
          "Alex_Lacamoire": ["fr_examples_alex-lacamoire.png", "fr_examples_knn_examples_train_alex_lacamoire_img1.jpg"]}
WINDOW = 30  # frames: one second of the clip


def video_check(clip: Path, faces: Path, pipe: FacePipeline, people: list[str], rows: list[np.ndarray]) -> dict | None:
    from rigs import scene

    if not clip.exists() or not all((faces / f).exists() for fs in PEOPLE.values() for f in fs):
        return None
    people, rows = list(people), list(rows)
    photos = {}
    for person, files in PEOPLE.items():
        for f in files:
            img = read_rgb(faces / f)
            found = [x for x in pipe.analyse(img, template=True) if x.embedding is not None]
            if found:
                people.append(person)
                rows.append(found[0].embedding)
                photos.setdefault(person, img)
    gallery = Gallery(people, np.vstack(rows), pipe.s)
    cap = cv2.VideoCapture(str(clip))
    nearest: dict[str, int] = defaultdict(int)
    accepted: dict[str, int] = defaultdict(int)
    chips: dict[str, list[np.ndarray]] = defaultdict(list)
    frames = false_accepts = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames += 1
        for face in pipe.analyse(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)):
            if face.embedding is None:
                continue
            m = gallery.search(face.embedding)
            if m.nearest in PEOPLE:
                nearest[m.nearest] += 1
            if m.person in PEOPLE:
                accepted[m.person] += 1
                chips[m.person].append(face.chip)
            elif m.person is not None:
                false_accepts += 1
    cap.release()
    live = {p: [round(liveness_score(c[i:i + WINDOW]), 1) for i in range(0, len(c) - WINDOW + 1, WINDOW)] for p, c in chips.items()}
    photo = {}
    for person, img in photos.items():
        small = cv2.resize(img, (150, round(150 * img.shape[0] / img.shape[1])), interpolation=cv2.INTER_AREA)  # a print's size at the door
        held = [f.chip for fr in scene.photo_held(small, WINDOW) for f in pipe.analyse(fr, embed=False)[:1]]
        photo[person] = round(liveness_score(held), 1) if len(held) >= 2 else None
    windows = [s for v in live.values() for s in v]
    return {"frames": frames, "recognised": {p: [accepted[p], nearest[p]] for p in PEOPLE}, "false_accepts": false_accepts,
            "liveness_live": live, "liveness_live_pass": round(float(np.mean([s >= LIVENESS_MIN for s in windows])), 3) if windows else None,
            "liveness_photo": photo, "liveness_min": LIVENESS_MIN}
