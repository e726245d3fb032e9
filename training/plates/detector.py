"""Train the plate detector (a small fully-convolutional net: plate mask at 1/4 resolution) on
composite scenes, and export ONNX.

    .venv/bin/python -m training.plates.detector --real ../shared/data/plates_train --backgrounds ../shared/data/faces \
        --out models/plate_det.onnx

Scenes: photos of people and places (../shared/data/faces, research terms) or generated clutter
(rectangles, lines, stray text, coloured boards without characters, which must NOT fire), with 1-3
plates pasted in perspective at 15-200 px wide: synthetic plates of every colour and the real
training crops. The yardstick scenes (../shared/data/plates) are never read here.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from training.plates import glyphs
from training.plates.data import colourless, real_crops
from training.plates.onnx_init import freeze_norms, load_onnx, with_history

DET = 256     # detector input (square, letterboxed)
STRIDE = 4    # mask resolution: DET // STRIDE


def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Detector(nn.Module):
    """256x256 BGR (0-255) in; plate logits at 64x64 out."""

    def __init__(self):
        super().__init__()
        self.e1 = conv(3, 12, 2)                                   # 128
        self.e2 = conv(12, 24, 2)                                  # 64
        self.e3 = nn.Sequential(conv(24, 48, 2), conv(48, 48))     # 32
        self.e4 = nn.Sequential(conv(48, 64, 2), conv(64, 64, dilation=2), conv(64, 64, dilation=4))  # 16
        self.l3 = nn.Conv2d(64, 48, 1)
        self.d3 = conv(48, 48)
        self.l2 = nn.Conv2d(48, 24, 1)
        self.d2 = conv(24, 24)
        self.head = nn.Conv2d(24, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 127.5) / 64.0
        e2 = self.e2(self.e1(x))
        e3 = self.e3(e2)
        e4 = self.e4(e3)
        d3 = self.d3(e3 + nn.functional.interpolate(self.l3(e4), scale_factor=2.0, mode="nearest"))
        d2 = self.d2(e2 + nn.functional.interpolate(self.l2(d3), scale_factor=2.0, mode="nearest"))
        return self.head(d2)


# -- composite scenes -------------------------------------------------------------------------------
def _clutter(rng: random.Random) -> np.ndarray:
    img = np.full((DET, DET, 3), [rng.randint(0, 255) for _ in range(3)], np.uint8)
    for _ in range(rng.randint(5, 25)):
        colour = [rng.randint(0, 255) for _ in range(3)]
        x, y = rng.randint(-40, DET), rng.randint(-40, DET)
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + rng.randint(5, 120), y + rng.randint(5, 120)), colour, -1 if rng.random() < 0.6 else 2)
        elif rng.random() < 0.5:
            cv2.line(img, (x, y), (rng.randint(0, DET), rng.randint(0, DET)), colour, rng.randint(1, 6))
        else:
            text = "".join(rng.choice("ABCDEFGHKLMNPRSTUVXYZ0123456789 ") for _ in range(rng.randint(2, 9)))
            cv2.putText(img, text, (x, y), rng.choice([0, 1, 2, 3, 4]), rng.uniform(0.4, 1.5), colour, rng.randint(1, 3))
    return img


def _car_front(rng: random.Random) -> np.ndarray:
    """Things that sit around a plate and are not one: a grille of bars, headlights, a badge, a bumper
    edge, a line of stray characters on a body colour. The detector must not fire on them."""
    w, h = rng.randint(200, 440), rng.randint(80, 240)
    body = [rng.randint(0, 255) for _ in range(3)]
    img = np.full((h, w, 3), body, np.uint8)
    dark = [int(c * rng.uniform(0.1, 0.5)) for c in body]
    bars = rng.randint(3, 9)
    for i in range(bars):  # grille
        y = int(h * 0.15) + i * int(h * 0.5 / bars)
        cv2.rectangle(img, (int(w * 0.2), y), (int(w * 0.8), y + max(2, int(h * 0.5 / bars) // 2)), dark, -1)
    for cx in (int(w * 0.1), int(w * 0.9)):  # headlights
        cv2.ellipse(img, (cx, int(h * 0.3)), (int(w * 0.09), int(h * 0.12)), 0, 0, 360, (230, 230, 230), -1)
    cv2.circle(img, (w // 2, int(h * 0.35)), max(4, h // 12), (200, 200, 200), 2)  # badge
    if rng.random() < 0.5:
        text = "".join(rng.choice("ABCDEFGHKLMNPRSTUVXYZ0123456789") for _ in range(rng.randint(3, 8)))
        cv2.putText(img, text, (int(w * 0.2), int(h * 0.95)), 0, h / 120, dark, 2)
    return img


def _board(rng: random.Random) -> np.ndarray:
    """A coloured board with a rim and no characters: plate-shaped, not a plate."""
    from training.plates.synth import COLOURS

    bg, ink = COLOURS[rng.choice(list(COLOURS))]
    img = np.full((140, 440, 3), bg, np.uint8)
    cv2.rectangle(img, (4, 4), (435, 135), ink, 3)
    if rng.random() < 0.5:  # a few stripes or blobs, no plate text
        for _ in range(rng.randint(1, 3)):
            cv2.line(img, (rng.randint(0, 440), rng.randint(0, 140)), (rng.randint(0, 440), rng.randint(0, 140)), ink, rng.randint(2, 8))
    return img


def _paste(scene: np.ndarray, mask: np.ndarray | None, plate: np.ndarray, rng: random.Random, big: bool = False) -> None:
    h, w = plate.shape[:2]
    pw = rng.uniform(60, 250) if big else rng.uniform(16, 200)
    ph = pw * h / w * rng.uniform(0.85, 1.15)
    cx, cy = rng.uniform(pw / 2, DET - pw / 2), rng.uniform(ph / 2, DET - ph / 2)
    angle = np.deg2rad(rng.uniform(-15, 15))
    c, s = np.cos(angle), np.sin(angle)
    pts = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]])
    pts[:, 0] += pts[:, 1] * rng.uniform(-0.3, 0.3)  # shear (a plate seen from the side)
    persp = rng.uniform(-0.12, 0.12) * ph
    pts[0, 1] -= persp
    pts[3, 1] += persp
    dst = np.float32([[cx + x * c - y * s, cy + x * s + y * c] for x, y in pts])
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), dst)
    warped = cv2.warpPerspective(plate, m, (DET, DET), flags=cv2.INTER_AREA)
    alpha = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, (DET, DET))
    sel = alpha > 127
    scene[sel] = warped[sel]
    if mask is not None:
        cv2.fillPoly(mask, [np.round(dst / STRIDE).astype(np.int32)], 1)


def _scenes(args: tuple[int, int, list[str], list[tuple[str, np.ndarray]], float]) -> list[tuple[np.ndarray, np.ndarray]]:
    from training.plates.synth import sample

    seed, n, backgrounds, crops, green = args
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if backgrounds and rng.random() < 0.6:
            bg = cv2.imread(rng.choice(backgrounds))
            s = rng.uniform(1.0, 2.5)
            bg = cv2.resize(bg, None, fx=s, fy=s)
            y, x = rng.randint(0, bg.shape[0] - DET) if bg.shape[0] > DET else 0, rng.randint(0, bg.shape[1] - DET) if bg.shape[1] > DET else 0
            scene = cv2.resize(bg[y:y + DET, x:x + DET], (DET, DET))
        else:
            scene = _clutter(rng)
        mask = np.zeros((DET // STRIDE, DET // STRIDE), np.uint8)
        for _ in range(rng.choice([0, 1, 2])):
            _paste(scene, None, _car_front(rng), rng, big=True)  # negatives first: plates sit on top of cars
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            if rng.random() < 0.4:
                plate = rng.choice(crops)[1]
            else:
                _, flat, _ = sample(rng, "green" if rng.random() < green else None)
                plate = flat
            _paste(scene, mask, plate, rng)
        if rng.random() < 0.4:
            _paste(scene, None, _board(rng), rng)  # negatives
        f = scene.astype(np.float32) * rng.uniform(0.6, 1.3) + rng.uniform(-30, 30)
        if rng.random() < 0.3:
            f = cv2.GaussianBlur(f, (3, 3), 0)
        out.append((np.clip(f, 0, 255).astype(np.uint8), mask))
    return out


def make_scenes(n: int, seed: int, backgrounds: list[str], crops: list[tuple[str, np.ndarray]], procs: int = 2, green: float = 0.0):
    chunks = [(seed * 1000 + i, n // procs + (i < n % procs), backgrounds, crops, green) for i in range(procs)]
    with get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_scenes, chunks)
    return [x for part in parts for x in part]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=Path, required=True, help="folder with labels.csv of real training crops")
    ap.add_argument("--backgrounds", type=Path, help="a folder of photos without plates")
    ap.add_argument("--out", type=Path, default=Path("models/plate_det.onnx"))
    ap.add_argument("--scenes", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    ap.add_argument("--init", type=Path, help="fine-tune the ONNX model this script exported (BatchNorm frozen)")
    ap.add_argument("--green", type=float, default=0.0,
                    help="that share of the synthetic plates pasted green (0: synth.sample's own mix)")
    ap.add_argument("--glyphs", type=Path, help="real glyphs for green plates from this folder's crops; default: --real")
    ap.add_argument("--colourless", type=float, default=0.0, help="share of each batch's scenes made colourless (data.colourless)")
    args = ap.parse_args()
    glyphs.use(args.glyphs or args.real)  # green plates in real glyphs, in the synthesis processes too
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    crops = real_crops(args.real)
    backgrounds = sorted(str(p) for p in args.backgrounds.glob("*.jpg")) if args.backgrounds else []
    t0 = time.time()
    scenes = make_scenes(args.scenes, args.seed, backgrounds, crops, green=args.green)
    val = scenes[: len(scenes) // 20]
    train = scenes[len(scenes) // 20:]
    print(f"{len(train)} training scenes, {len(val)} held out, in {time.time() - t0:.0f} s", flush=True)
    model = Detector()
    if args.init is not None:
        load_onnx(model, args.init)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(4.0))
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(train), args.batch)
        imgs = np.stack([img for _, img in colourless([(j, train[j][0]) for j in idx], rng, args.colourless)])
        masks = np.stack([train[i][1] for i in idx])
        if rng.random() < 0.5:  # mirror: plates are not symmetric, but the detector need not care
            imgs, masks = imgs[:, :, ::-1], masks[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(imgs).astype(np.float32)).permute(0, 3, 1, 2)
        y = torch.from_numpy(np.ascontiguousarray(masks).astype(np.float32))[:, None]
        model.train()
        if args.init is not None:
            freeze_norms(model)
        logits = model(x)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        loss = bce(logits, y) + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps:
            print(f"step {step} loss {loss.item():.3f} held-out IoU {iou(model, val):.3f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 3, DET, DET), str(args.out), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h4", 3: "w4"}}, opset_version=17, dynamo=False)
    summary = {"out": str(args.out), "held_out_iou": iou(model, val), "seed": args.seed, "steps": args.steps, "scenes": args.scenes,
               "green": args.green, "lr": args.lr, "colourless": args.colourless, "init": str(args.init) if args.init else None}
    summary = with_history(summary, args.init)
    args.out.with_suffix(".train.json").write_text(json.dumps(summary, ensure_ascii=False))
    print(json.dumps(summary))


@torch.no_grad()
def iou(model: Detector, items: list[tuple[np.ndarray, np.ndarray]]) -> float:
    model.eval()
    x = torch.from_numpy(np.stack([i for i, _ in items]).astype(np.float32)).permute(0, 3, 1, 2)
    pred = (model(x)[:, 0] > 0).numpy()
    truth = np.stack([m for _, m in items]) > 0
    return float((pred & truth).sum() / max(1, (pred | truth).sum()))


if __name__ == "__main__":
    main()
