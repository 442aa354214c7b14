"""What your nn.Module returns, as the tensor qtrain trains on (`model.kind: module`).

Models return what they return: a tensor; a tuple or list, whose first element is the output
(torchvision's GoogLeNet and Inception in training mode: the logits, then the auxiliary heads'); a
dict or an object with `logits` (Hugging Face's `ModelOutput`).  `take_output` is registered as a
forward hook on the user's module, so training, evaluation, `predict`, checkpoints and the MLflow
export all see the tensor, and the module's own state dict is untouched.  Anything else raises
`OutputError`, which `qtrain check` turns into one line.

This module imports nothing of qtrain's, so that a model exported to MLflow carries the hook by
value (cloudpickle) and loads where qtrain is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

ACCEPTED = "a tensor, a tuple or list (its first element), or a dict or object with logits (Hugging Face's ModelOutput)"


class OutputError(TypeError):
    """A forward's output qtrain cannot take a tensor from."""


def output_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        if out and isinstance(out[0], torch.Tensor):
            return out[0]
        first = type(out[0]).__name__ if out else "nothing"
        raise OutputError(f"forward returns a {type(out).__name__} whose first element is {first}, not a tensor")
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        keys = ", ".join(str(k) for k in list(out)[:6]) or "no keys"
        raise OutputError(f"forward returns a dict without logits (its keys: {keys})")
    raise OutputError(f"forward returns {type(out).__name__}")


def take_output(module: torch.nn.Module, inputs: Any, out: Any) -> torch.Tensor:
    """The forward hook: the output tensor of whatever the module returned; what it returned is
    remembered (`returned`) for DistributedDataParallel's sake (auxiliary heads go unused)."""
    tensor = output_tensor(out)
    if tensor is not out:
        module.__dict__["_qtrain_returned"] = type(out).__name__
    return tensor


def attach(module: torch.nn.Module) -> torch.nn.Module:
    module.register_forward_hook(take_output)
    return module


def returned(module: torch.nn.Module) -> str | None:
    """The type the module's forward returned when it was not a tensor (None: a tensor, or never run)."""
    return module.__dict__.get("_qtrain_returned")
