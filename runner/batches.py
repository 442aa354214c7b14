"""Evaluation batches, sized by the inputs: a model's outputs for a split (`predict_raw`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from runner.stream import ImageSplit

EVAL_BATCH = 2048
EVAL_VALUES = 1 << 20  # an evaluation batch of images holds at most this many input values (4 MB)


def eval_batch(x: Any) -> int:
    """Rows an evaluation batch takes: EVAL_BATCH, fewer for large images (a CNN's activations are
    tens of times its input: 2048 RGB images of 64x64 would need several GiB), a power of two from 64."""
    per_row = int(np.prod(x.shape[1:])) if len(x.shape) > 1 else 1
    fit = max(64, EVAL_VALUES // max(per_row, 1))
    return min(EVAL_BATCH, 1 << (fit.bit_length() - 1))


@torch.no_grad()
def predict_raw(model: nn.Module, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Model outputs for `x` in eval mode, in batches of `eval_batch(x)`; float32 on the CPU."""
    batch = batch or eval_batch(x)
    was_training = model.training
    model.eval()
    if isinstance(x, ImageSplit):  # image files: decoded ahead in workers
        outs = [model(xb).float() for _, xb in x.batches(torch.arange(len(x)), batch)]
    else:
        outs = [model(x[i: i + batch]).float() for i in range(0, len(x), batch)]
    model.train(was_training)
    if not outs:
        return torch.zeros(0)
    return torch.cat(outs).cpu()
