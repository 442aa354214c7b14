"""The optimiser: torch's, built from train.optimizer, with the `torch._dynamo` import that its
methods' wrappers cost on first use (seconds, for a graph qtrain never compiles) taken out."""

from __future__ import annotations

import types

import torch
from torch import nn

from jobs.errors import JobError
from jobs.spec import TrainSpec


def _without_dynamo() -> None:
    """torch wraps a few `Optimizer` methods (`add_param_group`, `zero_grad`, `state_dict`,
    `load_state_dict`) in `torch._disable_dynamo`, whose first call imports `torch._dynamo` (0.7 s,
    a third of a check) only to mark them as not to be compiled.  qtrain never compiles, so each
    wrapper is given its own function as the "disabled" one it caches, and calls it directly."""
    for method in vars(torch.optim.Optimizer).values():
        wrapped = getattr(method, "__wrapped__", None)
        code = getattr(method, "__code__", None)
        if wrapped is not None and code is not None and code.co_filename.endswith("_compile.py"):
            setattr(wrapped, "__dynamo_disable", wrapped)


_without_dynamo()


def _step_without_dynamo(optimizer: torch.optim.Optimizer) -> None:
    """Every torch optimizer's `step` is wrapped (`_use_grad_for_differentiable`) in a function that
    imports `torch._dynamo` (0.8 s, on the first step of every run) only to mark graph breaks for
    `torch.compile`.  qtrain never compiles: this optimizer's `step` runs the optimizer's own step
    under the same grad mode, and calls the step hooks' bookkeeping as torch does.  With step hooks
    registered (qtrain registers none) torch's own `step` runs, as it is."""
    from torch.optim import optimizer as optim_module

    method = type(optimizer).step
    inner = method
    while hasattr(inner, "__wrapped__"):
        inner = inner.__wrapped__
    if inner is method:
        return

    def step(self, closure=None):
        if (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or optim_module._global_optimizer_pre_hooks or optim_module._global_optimizer_post_hooks):
            return method(self) if closure is None else method(self, closure)
        with torch.set_grad_enabled(self.defaults.get("differentiable", False)):
            out = inner(self) if closure is None else inner(self, closure)
        self._optimizer_step_code()
        return out

    optimizer.step = types.MethodType(step, optimizer)


FUSED_DEVICES = frozenset({"cpu", "cuda"})  # where torch's fused optimizer kernels are used here


def _fused(params: list[nn.Parameter]) -> dict[str, bool]:
    """`fused=True` where torch has the kernel (every parameter a real floating-point tensor on a
    CPU or a CUDA device): one kernel a step over all the parameters, not a dozen small ops a
    tensor.  Adam's step on the seed-004 CNN: 0.15 ms, not 0.53 ms (of a 20 ms step, on 2 cores)."""
    ok = all(torch.is_floating_point(p) and p.device.type in FUSED_DEVICES for p in params)
    return {"fused": True} if ok else {}


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise JobError("model: nothing to train (every parameter is frozen)")
    if spec.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, **_fused(params))
    elif spec.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, **_fused(params))
    elif spec.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                                    **_fused(params))
    else:  # torch has no fused RMSprop
        optimizer = torch.optim.RMSprop(params, lr=spec.lr, weight_decay=spec.weight_decay)
    _step_without_dynamo(optimizer)
    return optimizer
