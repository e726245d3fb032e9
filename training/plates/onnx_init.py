"""Start training from an ONNX model our trainers exported, for fine-tuning a shipped model whose
torch weights (.pt) were not kept.

The exporter folds each BatchNorm into the convolution before it: the file holds that convolution's
weight and a bias, and no BatchNorm. Loading sets each BatchNorm to the identity carrying the
folded bias (mean 0, variance 1 - eps, scale 1), which reproduces the exported model exactly in eval
mode; `freeze_norms` keeps the BatchNorms in eval mode while the rest trains, so that it stays so.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def load_onnx(model: nn.Module, path: Path) -> None:
    """Load path's weights into model (the same architecture, as our trainer built it); raises
    ValueError when the file does not fit the model."""
    import onnx
    from onnx import numpy_helper

    inits = [(i.name, numpy_helper.to_array(i)) for i in onnx.load(str(path)).graph.initializer]
    folded = [v for k, v in inits if k.startswith("onnx::")]  # (weight, bias) per folded convolution, in order
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    last_conv: nn.Conv2d | None = None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            last_conv = m
        elif isinstance(m, nn.BatchNorm2d):
            if last_conv is None:
                raise ValueError(f"{path}: a BatchNorm without a convolution before it")
            pairs.append((last_conv, m))
            last_conv = None
    if len(folded) != 2 * len(pairs):
        raise ValueError(f"{path}: {len(folded)} folded tensors for {len(pairs)} convolutions with BatchNorm: "
                         "not this network's size")
    state = model.state_dict()
    for k, v in inits:
        if not k.startswith("onnx::"):
            if k not in state or tuple(state[k].shape) != v.shape:
                raise ValueError(f"{path}: {k} {v.shape} does not fit the model")
            state[k] = torch.from_numpy(v.copy())
    model.load_state_dict(state)
    with torch.no_grad():
        for (conv, norm), w, b in zip(pairs, folded[0::2], folded[1::2], strict=True):
            if tuple(conv.weight.shape) != w.shape:
                raise ValueError(f"{path}: a folded weight {w.shape} where the model has {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(w.copy()))
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(b.copy()))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)


def freeze_norms(model: nn.Module) -> None:
    """BatchNorm layers in eval mode (running statistics kept) while the rest trains."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def with_history(summary: dict, init: Path | None) -> dict:
    """A trainer's summary with the summary of the model it started from (`from`), read from the
    .train.json beside `init`, so that a fine-tuned model's manifest entry tells its whole making."""
    side = init.with_suffix(".train.json") if init is not None else None
    if side is not None and side.exists():
        summary = dict(summary, **{"from": json.loads(side.read_text())})
    return summary
