"""The fixed cohort that face scores are normalised against (`models/face_cohort.npz`).

`python -m training.faces.cohort --data ../shared/data/faces_train --out models/face_cohort.npz`

A match score is the cosine similarity of the probe's embedding and a resident's template,
normalised against this cohort (adaptive symmetric normalisation, AS-norm): how far it stands above
the probe's `k` best cohort scores, and above the template's (edge.vision.face.Cohort). The cohort
is the embeddings of people who are not anyone's residents, made once here, so the normalisation is
the same in a house of four and in a building of two hundred, where the old z-score against the
gallery itself was meaningless in the first and drifted with the second.

The file holds unit-length 128-d embeddings (float16) and `k`; no image, no name. `k` is half the
cohort: chosen on faces_train alone, by fitting on half of its people and judging on the other
half (unseen people, as at a door), where it gave the best true-accept rate at 1 % false accepts
(printed by this script with the figures for the raw distance). The development and held-out sets
play no part in it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from training.faces.embed import embed_folder


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def asnorm(s: np.ndarray, probe_stats: tuple[np.ndarray, np.ndarray], tmpl_stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    (pm, ps), (tm, ts) = probe_stats, tmpl_stats
    return 0.5 * ((s - pm[:, None]) / ps[:, None] + (s - tm[None]) / ts[None])


def top_stats(x: np.ndarray, cohort: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = -np.partition(-(x @ cohort.T), k - 1, axis=1)[:, :k]
    return top.mean(axis=1), top.std(axis=1) + 1e-6


def by_person(ids: np.ndarray, keep: set | None = None) -> dict[str, list[int]]:
    """Row indices of each person in `ids` (only the people in `keep`, if given), in row order."""
    by: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(ids):
        if keep is None or p in keep:
            by[p].append(i)
    return by


def wccn(x: np.ndarray, ids: np.ndarray, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    """Within-class covariance normalisation learnt from unit-length rows `x` of people `ids`:
    (mean, W) such that `(x - mean) @ W` has the within-person spread whitened. `shrink` pulls
    the covariance towards a multiple of the identity (LFW has two or three photos a person: the
    estimate is noisy). Tried, not shipped: see `split_half`."""
    mean = x.mean(axis=0)
    xc = x - mean
    groups = [xc[ix] - xc[ix].mean(axis=0) for ix in by_person(ids).values() if len(ix) >= 2]
    within = sum(g.T @ g for g in groups) / sum(len(g) - 1 for g in groups)
    d = x.shape[1]
    cov = (1 - shrink) * within + shrink * np.trace(within) / d * np.eye(d)
    w, v = np.linalg.eigh(cov)
    return mean, v @ np.diag(w ** -0.5) @ v.T


def split_half(emb: np.ndarray, ids: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Cohort from half of the people, judged on the other half: one photo of each enrolled, the
    others as probes, single-photo people as strangers. True accepts at 1 % false accepts.

    Also judged: the embeddings projected by `wccn` learnt on the cohort half (the projection that
    issue 21 asked to try). It lowered the figure at every shrinkage (0.80 -> 0.60-0.70 on
    faces_train): the dlib embedding is already trained to make one person's photos close, and
    two or three photos a person teach a projection the noise of that half, so none ships."""
    rng = np.random.default_rng(seed)
    people = np.unique(ids)
    rng.shuffle(people)
    out: dict[str, list[float]] = defaultdict(list)
    x = unit(emb)
    for half in (0, 1):
        judged = set(people[half::2])
        fit = np.array([i for i, p in enumerate(ids) if p not in judged])
        by = by_person(ids, judged)
        enrolled = [p for p, ix in by.items() if len(ix) >= 2]
        t = np.array([by[p][0] for p in enrolled])
        genuine = [(k, i) for k, p in enumerate(enrolled) for i in by[p][1:]]
        strangers = [ix[0] for ix in by.values() if len(ix) == 1]
        probes = np.array([i for _, i in genuine] + strangers)

        def normed(v: np.ndarray, k: int) -> np.ndarray:
            return asnorm(v[probes] @ v[t].T, top_stats(v[probes], v[fit], k), top_stats(v[t], v[fit], k))

        scores = {"distance": -np.linalg.norm(emb[probes][:, None] - emb[t][None], axis=2)}
        for frac in (0.25, 0.5, 1.0):
            scores[f"asnorm_k{frac}"] = normed(x, max(1, int(len(fit) * frac)))
        for shrink in (0.2, 0.5, 0.8):
            mean, w = wccn(x[fit], ids[fit], shrink)
            scores[f"wccn{shrink}_asnorm_k0.5"] = normed(unit((x - mean) @ w), len(fit) // 2)
        for name, s in scores.items():
            g = []
            imp = []
            for row, (k, _) in enumerate(genuine):
                others = np.delete(s[row], k).max()
                g.append(s[row, k] if s[row, k] > others else -np.inf)
                imp.append(others)
            imp += list(s[len(genuine):].max(axis=1))
            cut = np.sort(imp)[::-1][int(0.01 * len(imp))]
            out[name].append(float(np.mean(np.array(g) > cut)))
    return {name: round(float(np.mean(v)), 3) for name, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a labelled photo folder (labels.csv) of people who are nobody's residents")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--embeddings", type=Path, help="reuse embeddings written by `python -m training.faces.embed DIR OUT --probes-only`")
    args = ap.parse_args()
    data = dict(np.load(args.embeddings)) if args.embeddings else embed_folder(args.data, templates_too=False)
    emb, ids = data["probe"].astype(np.float32), data["ids"]
    figures = split_half(emb, ids)
    cohort = unit(emb).astype(np.float16)
    k = len(cohort) // 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("wb") as f:  # a file object: np.savez would otherwise append .npz to a name without it
        np.savez(f, cohort=cohort, k=np.int32(k))
    print(json.dumps({"out": str(args.out), "cohort": len(cohort), "people": len(np.unique(ids)), "k": k,
                      "split_half_tar_at_far001": figures}))


if __name__ == "__main__":
    main()
