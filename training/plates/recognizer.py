"""Train the plate recogniser (CNN + CTC) on synthetic plates plus the real training crops; export ONNX.

    .venv/bin/python -m training.plates.recognizer --real ../shared/data/plates_train --out models/plate_rec.onnx

Needs `make train-deps` (torch CPU, Pillow, the fonts). Deterministic for a seed on one machine
(thread scheduling aside). The real yardstick (../shared/data/plates) is never read here.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from edge.vision.plate_format import CHARSET, PROVINCES
from training.plates import glyphs
from training.plates.data import REC_H, REC_W, colourless, held_out, jitter, real_crops, synth_set
from training.plates.onnx_init import freeze_norms, load_onnx, with_history


def block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


# channels of each stage: the reader that looks at every outline in a frame (`small`), and the one
# that looks again at the outline a region was read through (`large`, about 3.5x the work)
WIDTHS = {"small": (16, 32, 64, 64, 96, 160), "large": (32, 64, 128, 128, 192, 256)}


class Recogniser(nn.Module):
    """32x128 BGR (0-255) in; (N, T=32, classes) log-probabilities out; class 0 = CTC blank."""

    def __init__(self, classes: int = len(CHARSET) + 1, size: str = "small"):
        super().__init__()
        c1, c2, c3, c4, c5, c6 = WIDTHS[size]
        self.features = nn.Sequential(
            *block(3, c1), nn.MaxPool2d(2),                     # 16 x 64
            *block(c1, c2), nn.MaxPool2d(2),                    # 8 x 32
            *block(c2, c3), *block(c3, c4), nn.MaxPool2d((2, 1)),  # 4 x 32
            *block(c4, c5),
            nn.Conv2d(c5, c6, (4, 1), bias=False), nn.BatchNorm2d(c6), nn.ReLU(inplace=True),  # 1 x 32
        )
        self.context = nn.Sequential(nn.Conv1d(c6, c6, 5, padding=2), nn.ReLU(inplace=True), nn.Dropout(0.15))
        self.head = nn.Conv1d(c6, classes, 1)
        # training only (not exported): the province from the plate's left quarter. Provinces are the
        # commonest error; a loss of their own makes the features tell 31 similar glyphs apart
        self.province = nn.Linear(c6, len(PROVINCES))

    def forward(self, x: torch.Tensor, with_province: bool = False):
        x = (x - 127.5) / 64.0
        f = self.features(x).squeeze(2)          # N, 160, 32
        logp = self.head(f + self.context(f)).permute(0, 2, 1).log_softmax(-1)  # N, T, C
        if with_province:
            return logp, self.province(f[:, :, : f.shape[2] // 4].mean(-1))
        return logp


def encode(text: str) -> list[int]:
    return [CHARSET.index(c) + 1 for c in text]


def greedy(logp: np.ndarray) -> str:
    best = logp.argmax(-1)
    out, prev = [], 0
    for k in best:
        if k != prev and k != 0:
            out.append(CHARSET[k - 1])
        prev = k
    return "".join(out)


def to_tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs).astype(np.float32)).permute(0, 3, 1, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=Path, required=True, help="folder with labels.csv of real training crops")
    ap.add_argument("--out", type=Path, default=Path("models/plate_rec.onnx"))
    ap.add_argument("--synthetic", type=int, default=40000)
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--green", type=float, default=0.3, help="share of green new-energy plates among the synthetic ones")
    ap.add_argument("--size", choices=sorted(WIDTHS), default="small", help="the network's width (WIDTHS)")
    ap.add_argument("--init", type=Path, help="start from these weights (a .pt this script saved, or an .onnx it "
                    "exported; then BatchNorm stays frozen): fine-tuning")
    ap.add_argument("--glyphs", type=Path, help="draw green plates in real glyphs cut from this folder's crops "
                    "(training.plates.glyphs); default: --real")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle)")
    ap.add_argument("--colourless", type=float, default=0.0, help="share of each batch made colourless (data.colourless: "
                    "an infrared camera at night)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(2)
    glyphs.use(args.glyphs or args.real)  # green plates in real glyphs, in the synthesis processes too

    val_real, train_real = held_out(real_crops(args.real))
    n_val = len(val_real)
    t0 = time.time()
    synth = synth_set(args.synthetic, args.seed, green=args.green)
    print(f"{len(train_real)} real crops for training, {n_val} held out; {len(synth)} synthetic in {time.time() - t0:.0f} s", flush=True)

    model = Recogniser(size=args.size)
    frozen = args.init is not None and args.init.suffix == ".onnx"
    if frozen:
        load_onnx(model, args.init)
    elif args.init is not None:
        missing, _ = model.load_state_dict(torch.load(args.init), strict=False)
        assert all(k.startswith("province.") for k in missing), missing
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    xent = nn.CrossEntropyLoss()
    real_share = 0.35
    for step in range(1, args.steps + 1):
        n_real = int(args.batch * real_share)
        batch = [train_real[i] for i in rng.integers(0, len(train_real), n_real)]
        batch = [(t, jitter(img, rng)) for t, img in batch]
        batch += [synth[i] for i in rng.integers(0, len(synth), args.batch - n_real)]
        batch = colourless(batch, rng, args.colourless)
        x = to_tensor([img for _, img in batch])
        targets = torch.tensor([k for t, _ in batch for k in encode(t)], dtype=torch.long)
        lengths = torch.tensor([len(t) for t, _ in batch], dtype=torch.long)
        model.train()
        if frozen:
            freeze_norms(model)
        logp, prov = model(x, with_province=True)
        logp = logp.permute(1, 0, 2)  # T, N, C
        loss = ctc(logp, targets, torch.full((len(batch),), logp.shape[0], dtype=torch.long), lengths)
        has = [i for i, (t, _) in enumerate(batch) if t[0] in PROVINCES]
        loss = loss + 0.3 * xent(prov[has], torch.tensor([PROVINCES.index(batch[i][0][0]) for i in has]))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if step % 500 == 0 or step == args.steps:
            acc = evaluate(model, val_real)
            print(f"step {step} loss {loss.item():.3f} held-out real exact {acc:.3f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out.with_suffix(".pt"))  # for fine-tuning; not shipped (models/*.pt is ignored)
    torch.onnx.export(model, to_tensor([np.zeros((REC_H, REC_W, 3), np.uint8)]), str(args.out), input_names=["image"],
                      output_names=["logp"], dynamic_axes={"image": {0: "n"}, "logp": {0: "n"}}, opset_version=17, dynamo=False)
    summary = {"out": str(args.out), "held_out_real_exact": evaluate(model, val_real),
               "held_out_colourless_exact": evaluate(model, colourless(val_real, np.random.default_rng(0), 1.0)), "seed": args.seed,
               "steps": args.steps, "synthetic": args.synthetic, "size": args.size, "green": args.green,
               "lr": args.lr, "colourless": args.colourless, "init": str(args.init) if args.init else None}
    summary = with_history(summary, args.init)
    args.out.with_suffix(".train.json").write_text(json.dumps(summary, ensure_ascii=False))
    print(json.dumps(summary))


@torch.no_grad()
def evaluate(model: Recogniser, items: list[tuple[str, np.ndarray]]) -> float:
    model.eval()
    imgs = [cv2.resize(img, (REC_W, REC_H), interpolation=cv2.INTER_AREA) for _, img in items]
    logp = model(to_tensor(imgs)).numpy()
    return float(np.mean([greedy(lp) == t for lp, (t, _) in zip(logp, items, strict=False)]))


if __name__ == "__main__":
    main()
