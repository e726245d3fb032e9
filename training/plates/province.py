"""Train the province classifier: the first character of a plate from the left third of the rectified
plate; export ONNX.

    .venv/bin/python -m training.plates.province --real ../shared/data/plates_train --out models/plate_prov.onnx

Why a model of its own: the province is a complex Chinese character about 12x20 pixels on a 128x32
plate, and it is the recogniser's commonest error by far (on the dev crops 4 % of the provinces
are wrong and under 1 % of the other characters; on green plates 8 %). The recogniser spreads its
capacity over all 76 classes and 32 columns; this small network spends all of its on 31 glyphs in
one place, and `edge.vision.plate` uses it to re-weigh the recogniser's readings.

Needs `make train-deps`. The real yardstick (../shared/data/plates) is never read here.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from edge.vision.plate_format import PROVINCES
from training.plates import glyphs
from training.plates.data import REC_H, REC_W, colourless, held_out, jitter, real_crops, synth_set
from training.plates.onnx_init import freeze_norms, load_onnx, with_history
from training.plates.recognizer import block, to_tensor

LEFT = 44  # columns of the 128x32 rectified plate the classifier sees (a loose crop's province included)


class ProvinceNet(nn.Module):
    """32 x LEFT BGR (0-255) in; (N, 31) logits over edge.vision.plate_format.PROVINCES out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *block(3, 24), *block(24, 24), nn.MaxPool2d(2),     # 16 x 22
            *block(24, 48), *block(48, 48), nn.MaxPool2d(2),    # 8 x 11
            *block(48, 96), *block(96, 96), nn.MaxPool2d(2),    # 4 x 5
            *block(96, 144),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(144, len(PROVINCES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features((x - 127.5) / 64.0)
        return self.head(f.mean(dim=(2, 3)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=Path, required=True, help="folder with labels.csv of real training crops")
    ap.add_argument("--out", type=Path, default=Path("models/plate_prov.onnx"))
    ap.add_argument("--synthetic", type=int, default=50000)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=41)
    ap.add_argument("--green", type=float, default=0.4)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    ap.add_argument("--init", type=Path, help="fine-tune the ONNX model this script exported (BatchNorm frozen)")
    ap.add_argument("--glyphs", type=Path, help="real glyphs for green plates from this folder's crops; default: --real")
    ap.add_argument("--colourless", type=float, default=0.0, help="share of each batch made colourless (data.colourless)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(2)
    glyphs.use(args.glyphs or args.real)  # green plates in real glyphs, in the synthesis processes too

    val_real, train_real = held_out(real_crops(args.real))  # the recogniser's held-out tenth, held out here too
    counts = Counter(t[0] for t, _ in train_real)
    weights = np.array([counts[t[0]] ** -0.5 for t, _ in train_real])
    weights /= weights.sum()
    t0 = time.time()
    synth = [(t, img) for t, img in synth_set(args.synthetic, args.seed, green=args.green) if t[0] in PROVINCES]
    val_synth, synth = synth[:1000], synth[1000:]
    print(f"{len(train_real)} real, {len(synth)} synthetic in {time.time() - t0:.0f} s", flush=True)

    model = ProvinceNet()
    if args.init is not None:
        load_onnx(model, args.init)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    xent = nn.CrossEntropyLoss(label_smoothing=0.05)
    for step in range(1, args.steps + 1):
        n_real = args.batch * 3 // 8
        batch = [(t, jitter(img, rng)) for t, img in (train_real[i] for i in rng.choice(len(train_real), n_real, p=weights))]
        batch += [synth[i] for i in rng.integers(0, len(synth), args.batch - n_real)]
        batch = colourless(batch, rng, args.colourless)
        x = to_tensor([img[:, :LEFT] for _, img in batch])
        y = torch.tensor([PROVINCES.index(t[0]) for t, _ in batch])
        model.train()
        if args.init is not None:
            freeze_norms(model)
        loss = xent(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == args.steps:
            print(f"step {step} loss {loss.item():.3f} held-out real {evaluate(model, val_real):.3f} "
                  f"synthetic {evaluate(model, val_synth):.3f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, to_tensor([np.zeros((32, LEFT, 3), np.uint8)]), str(args.out), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False)
    summary = {"out": str(args.out), "held_out_real_province": evaluate(model, val_real),
               "held_out_synthetic_province": evaluate(model, val_synth), "seed": args.seed, "steps": args.steps,
               "synthetic": args.synthetic, "green": args.green, "lr": args.lr, "colourless": args.colourless,
               "init": str(args.init) if args.init else None}
    summary = with_history(summary, args.init)
    args.out.with_suffix(".train.json").write_text(json.dumps(summary, ensure_ascii=False))
    print(json.dumps(summary))


@torch.no_grad()
def evaluate(model: ProvinceNet, items: list[tuple[str, np.ndarray]]) -> float:
    model.eval()
    x = to_tensor([cv2.resize(img, (REC_W, REC_H), interpolation=cv2.INTER_AREA)[:, :LEFT] for _, img in items])
    pred = model(x).argmax(-1).numpy()
    return float(np.mean([PROVINCES[p] == t[0] for p, (t, _) in zip(pred, items, strict=False)]))


if __name__ == "__main__":
    main()
