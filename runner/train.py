"""The training loop.

Small datasets live on the device as tensors and are batched by slicing a shuffled index (no
per-sample DataLoader overhead).  One progress line per epoch on stdout, a checkpoint every N epochs
and at the end with everything `resume` needs (model, optimizer, scheduler, epoch, best, history,
RNG state), early stopping that restores the best weights.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed
from torch import nn

from jobs import settings
from jobs.errors import JobError, QtrainError
from jobs.spec import Job, TrainSpec, resolve_batch_size
from runner import distributed, log
from runner.augment import augment
from runner.prepare import Prepared
from runner.batches import predict_raw
from runner.models import Net, materialize, probe
from runner.optim import make_optimizer
from runner.outputs import returned
from runner.stream import ImageSplit

MIN_IS_BETTER = ("loss", "rmse", "mae", "log_loss")


# ------------------------------------------------------------------------------------ helpers
def select_device(preference: str) -> torch.device:
    """cuda > mps > cpu for `auto`; an explicit device that is missing is an error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if preference == "cuda" and not cuda:
        raise JobError("train.device cuda: no CUDA device is visible here",
                       hint="use device: auto to fall back to the CPU")
    if preference == "mps" and not mps:
        raise JobError("train.device mps: no Apple GPU (MPS) here", hint="use device: auto")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def keep_freed_memory() -> None:
    """Have glibc keep what a training step frees for the next one, instead of handing it back to
    the system and faulting it in again, zeroed, page by page: a step's activations and gradients
    are megabytes, each freed and allocated anew every step (on the seed-004 CNN, 1.5x the
    images/s).  Big blocks come from the heap (mmap from 256 MiB only) and the heap is trimmed only
    past 1 GiB free.  Peak memory is unchanged; memory stays at its peak until the run ends.  A C
    library other than glibc (macOS, musl) is left alone."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 256 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def set_threads(spec: TrainSpec) -> None:
    """torch's threads: `train.threads`, else the CPU share the platform gives this process
    (OMP_NUM_THREADS, which the emulator sets per instance so that a sweep's concurrent trials
    never oversubscribe the cores), else every core this process may use."""
    n = spec.threads or _env_threads() or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                           else os.cpu_count() or 1)
    torch.set_num_threads(n)


def _env_threads() -> int | None:
    return settings.task().threads


def autocast_for(device: torch.device, spec: TrainSpec):
    """(context factory, GradScaler or None) for the job's mixed-precision setting."""
    enabled = device.type == "cuda" if spec.mixed_precision == "auto" else spec.mixed_precision
    if not enabled:
        return contextlib.nullcontext, None
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return (lambda: torch.autocast("cuda", dtype=dtype)), scaler
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), None


def make_loss(job: Job, prepared: Prepared, device: torch.device) -> nn.Module:
    spec = job.train
    if job.task == "regression":
        return {"auto": nn.MSELoss, "mse": nn.MSELoss, "mae": nn.L1Loss,
                "huber": nn.HuberLoss}[spec.loss]()
    weights = None
    classes = prepared.classes or []
    if spec.class_weights == "balanced":
        counts = np.bincount(prepared.y["train"], minlength=len(classes)).astype(np.float64)
        weights = len(prepared.y["train"]) / (len(classes) * np.maximum(counts, 1))
    elif isinstance(spec.class_weights, dict):
        unknown = sorted(set(spec.class_weights) - set(classes))
        if unknown:
            raise JobError(f"train.class_weights: unknown classes {unknown}",
                           hint=f"classes are {classes}")
        weights = np.array([spec.class_weights.get(c, 1.0) for c in classes])
    if weights is not None:
        weights = torch.tensor(weights, dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weights)


# --------------------------------------------------------------------------------- the loop
@dataclass
class Tensors:
    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]  # class index, or the (scaled) regression target

    @classmethod
    def from_prepared(cls, prepared: Prepared, device: torch.device) -> "Tensors":
        scale = prepared.state.get("target")
        xs, ys = {}, {}
        for split in prepared.splits:
            if isinstance(prepared.x[split], ImageSplit):  # image files: decoded batch by batch
                xs[split] = prepared.x[split].to(device)
                ys[split] = torch.from_numpy(np.array(prepared.y[split], dtype=np.int64)).to(device)
                continue
            x = torch.from_numpy(prepared.x[split]).to(device)
            if x.ndim == 4:  # NHWC in memory: oneDNN/cuDNN convolutions run much faster
                x = x.contiguous(memory_format=torch.channels_last)
            xs[split] = x
            y = prepared.y[split]
            if prepared.classes is None:
                if scale:
                    y = (y - scale["center"]) / scale["scale"]
                ys[split] = torch.from_numpy(np.asarray(y, dtype=np.float32)).to(device)[:, None]
            else:
                ys[split] = torch.from_numpy(np.array(y, dtype=np.int64)).to(device)
        return cls(xs, ys)


def _returns_more(model: nn.Module, x: Any) -> bool:
    if returned(model) is None:
        probe(model, x)
    return returned(model) is not None


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0
    best_epoch: int | None = None
    best_value: float | None = None
    early_stop_epoch: int | None = None
    train_seconds: float = 0.0
    samples_seen: int = 0
    resumed_from: int | None = None
    time_limited: int | None = None  # the epoch training stopped after, at the job's time limit

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds else 0.0


class Trainer:
    def __init__(self, model: nn.Module, prepared: Prepared, job: Job, device: torch.device,
                 job_hash: str, checkpoint_path: Path | None = None, deadline: float | None = None):
        self.model = materialize(model, prepared.x["train"]).to(device)  # a lazy module's shapes, first
        if len(prepared.input_shape) == 3:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.prepared = prepared
        self.job = job
        self.spec = job.train
        self.device = device
        self.job_hash = job_hash
        self.checkpoint_path = checkpoint_path
        self.deadline = deadline  # time.monotonic() by which training must have stopped (max_minutes)
        self._saved_at, self._save_seconds = time.monotonic(), 0.0  # the timed checkpoints' clock
        self.data = Tensors.from_prepared(prepared, device)
        self.loss_fn = make_loss(job, prepared, device)
        self.eval_loss_fn = make_loss(job, prepared, torch.device("cpu"))  # outputs come back on CPU
        self.optimizer = make_optimizer(self.model, self.spec)
        self.autocast, self.scaler = autocast_for(device, self.spec)
        self.scheduler = self._make_scheduler()
        self.generator = torch.Generator(device="cpu").manual_seed(self.spec.seed)
        aug = job.preprocess.augment
        self.augment = aug if aug.active() and len(prepared.input_shape) == 3 else None  # images only
        if aug.active() and self.augment is None:
            log.warn("preprocess.augment changes images only: this job's data is a table, so it is not used")
        es = self.spec.early_stopping
        self.monitor = es.monitor if es else ("val_loss" if "val" in self.data.y else "train_loss")
        self.minimize = self.monitor.split("_", 1)[-1] in MIN_IS_BETTER or self.monitor.endswith("loss")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.has_batchnorm = _has_batchnorm(self.model)
        self.result = TrainResult()
        self.start_epoch = 1
        self.epoch = 1
        # a distributed run (runner.distributed): DistributedDataParallel, each rank on its shard of
        # the training rows (DistributedSampler), the epoch's figures summed over the ranks, rank 0's
        # decisions (early stopping, the time limit) followed by all, only rank 0 writing
        self.rank = distributed.current()
        self.net: nn.Module = self.model  # what a training step calls
        self.sampler = None
        n = len(self.data.x["train"])
        if self.rank.active and torch.distributed.is_initialized():
            from torch.nn.parallel import DistributedDataParallel
            from torch.utils.data import DistributedSampler

            index = device.index if device.index is not None else (torch.cuda.current_device() if device.type == "cuda" else None)
            # a module whose forward returns more than its output (auxiliary heads) leaves parameters unused
            unused = not isinstance(self.model, Net) and _returns_more(self.model, self.data.x["train"])
            self.net = DistributedDataParallel(self.model, device_ids=[index] if device.type == "cuda" else None,
                                               find_unused_parameters=unused)
            self.sampler = DistributedSampler(range(n), num_replicas=self.rank.world, rank=self.rank.rank,
                                              shuffle=True, seed=self.spec.seed)
            n = len(self.sampler)
        # train.batch_size is per process (auto: guessed from the rows this process trains on)
        self.batch_size = resolve_batch_size(self.spec.batch_size, n, images=len(prepared.input_shape) == 3)

    def _make_scheduler(self):
        if self.spec.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.spec.epochs)
        if self.spec.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=0.5, patience=max(2, self._patience() // 3))
        return None

    def _patience(self) -> int:
        es = self.spec.early_stopping
        return es.patience if es else 10

    # ---------------------------------------------------------------------------- one step
    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimisation step; returns (loss, correct predictions or None) as tensors on the
        device: nothing waits for the device between steps (the epoch reads them once)."""
        with self.autocast():
            out = self.net(xb)
            loss = self.loss_fn(out.float(), yb)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        correct = (out.detach().argmax(1) == yb).sum() if self.prepared.classes is not None else None
        return loss.detach(), correct

    def check_step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        """The loss and its gradients on one batch, without the optimiser's update: what a check
        needs to prove that the model, the loss and the data fit together.  (An update would import
        `torch._dynamo`, 0.7 s, for nothing: `Optimizer.step` marks a graph break on every call.)"""
        with self.autocast():
            loss = self.loss_fn(self.model(xb).float(), yb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def run_epoch(self) -> dict[str, float]:
        x, y = self.data.x["train"], self.data.y["train"]
        n = len(x)
        bs = self.batch_size
        if self.sampler is not None:  # this rank's shard, in an order all ranks draw alike
            self.sampler.set_epoch(self.epoch)
            order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.device)
            n = len(order)
        else:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        self.net.train()
        # float64 where the device has it: the same sum as adding Python floats, without a sync
        loss_sum = torch.zeros((), device=self.device,
                               dtype=torch.float32 if self.device.type == "mps" else torch.float64)
        correct_sum = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        if isinstance(x, ImageSplit):  # image files: batches decoded ahead in workers
            batches = ((idx.to(self.device), xb) for idx, xb in x.batches(order, bs))
        else:
            batches = ((order[start: start + bs], None) for start in range(0, n, bs))
        for idx, xb in batches:
            if len(idx) < 2 and n >= 2 and self.has_batchnorm:
                continue  # batchnorm cannot train on a single sample
            xb = x[idx] if xb is None else xb
            if self.augment is not None:
                xb = augment(xb, self.augment, self.generator)
            loss, correct = self.train_step(xb, y[idx])
            loss_sum.add_(loss, alpha=len(idx))
            if correct is not None:
                correct_sum += correct
            seen += len(idx)
        if self.sampler is not None:  # the epoch over every rank's rows
            totals = torch.stack([loss_sum.double(), correct_sum.double(),
                                  torch.tensor(float(seen), dtype=torch.float64, device=self.device)])
            torch.distributed.all_reduce(totals)
            loss_sum, correct_sum, seen = totals[0], totals[1], int(totals[2])
        total_loss, total_correct = float(loss_sum), int(correct_sum)
        if not math.isfinite(total_loss):
            raise QtrainError(f"training diverged at epoch loss {total_loss}",
                              hint="lower train.lr, or check the data for extreme values")
        self.result.samples_seen += seen
        fields = {"train_loss": total_loss / max(seen, 1)}
        if self.prepared.classes is not None:
            fields["train_accuracy"] = total_correct / max(seen, 1)
        return fields

    def evaluate_split(self, split: str) -> dict[str, float]:
        return self.evaluate_outputs(split)[0]

    def evaluate_outputs(self, split: str) -> tuple[dict[str, float], torch.Tensor]:
        """(the split's loss and metric fields, the model's raw outputs on it, on the CPU)."""
        out = predict_raw(self.model, self.data.x[split])
        y = self.data.y[split].cpu()
        loss = float(self.eval_loss_fn(out, y))
        fields = {f"{split}_loss": loss}
        if self.prepared.classes is not None:
            fields[f"{split}_accuracy"] = float((out.argmax(1) == y).float().mean())
        else:
            scale = self.prepared.state.get("target") or {"scale": 1.0}
            err = (out - y) * scale["scale"]
            fields[f"{split}_rmse"] = float(err.pow(2).mean().sqrt())
            fields[f"{split}_mae"] = float(err.abs().mean())
        return fields, out

    # ------------------------------------------------------------------------ checkpointing
    # saving may cost at most this share of the training time (train.checkpoint_minutes)
    CHECKPOINT_BUDGET = 0.02

    def checkpoint_due(self) -> bool:
        """Time for a timed checkpoint: `train.checkpoint_minutes` since the last one, and at
        least 50 times as long as the last save took (so saving stays under 2% of the time)."""
        minutes = self.spec.checkpoint_minutes
        if not minutes or self.checkpoint_path is None:
            return False
        interval = max(minutes * 60.0, self._save_seconds / self.CHECKPOINT_BUDGET)
        return time.monotonic() - self._saved_at >= interval

    def _out_of_time(self, epoch_seconds: float) -> bool:
        """Would another epoch, and then the final evaluation (taken as long as an epoch), end
        past the deadline?"""
        return self.deadline is not None and time.monotonic() + 2 * epoch_seconds > self.deadline

    def agreed(self, value: float) -> float:
        """Rank 0's `value`, on every rank (a plain run: `value`): each rank then decides alike."""
        if self.sampler is None:
            return value
        held = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        torch.distributed.broadcast(held, src=0)
        return float(held[0])

    def save_checkpoint(self, epoch: int, patience_left: int) -> None:
        if self.checkpoint_path is None or not self.rank.main:
            return
        started = time.monotonic()
        state = {
            "format": "qtrain-checkpoint/1", "job_hash": self.job_hash, "epoch": epoch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "best_state": self.best_state, "best_value": self.result.best_value,
            "best_epoch": self.result.best_epoch, "patience_left": patience_left,
            "history": self.result.history, "samples_seen": self.result.samples_seen,
            "train_seconds": self.result.train_seconds,
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
        }
        tmp = self.checkpoint_path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)
        self._saved_at = time.monotonic()
        self._save_seconds = self._saved_at - started

    def load_checkpoint(self, path: Path) -> int:
        """Restore from `path`; returns the patience left.  Refuses another job's checkpoint."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise QtrainError(f"checkpoint {path}: cannot be read ({exc})",
                              hint="delete it to start from scratch") from exc
        if state.get("job_hash") != self.job_hash:
            raise QtrainError(f"checkpoint {path} belongs to a different job",
                              hint="delete it, or resume with the job that wrote it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.best_state = state["best_state"]
        r = self.result
        r.best_value, r.best_epoch = state["best_value"], state["best_epoch"]
        r.history, r.samples_seen = state["history"], state["samples_seen"]
        r.train_seconds = state["train_seconds"]
        r.resumed_from = state["epoch"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.generator.set_state(state["rng"]["generator"].cpu())
        self.start_epoch = state["epoch"] + 1
        r.epochs_run = state["epoch"]
        return state["patience_left"]

    # ---------------------------------------------------------------------------------- fit
    def fit(self, resume_from: Path | None = None) -> TrainResult:
        spec, r = self.spec, self.result
        es = spec.early_stopping
        patience_left = es.patience if es else 0
        if resume_from is not None and resume_from.exists():
            patience_left = self.load_checkpoint(resume_from)
            log.info(f"resumed from {resume_from.name} at epoch {self.start_epoch - 1}")
        for epoch in range(self.start_epoch, spec.epochs + 1):
            t0 = time.perf_counter()
            self.epoch = epoch
            fields: dict[str, Any] = {"epoch": f"{epoch}/{spec.epochs}"}
            fields.update(self.run_epoch())
            if "val" in self.data.y:
                fields.update(self.evaluate_split("val"))
            fields["lr"] = self.optimizer.param_groups[0]["lr"]
            r.train_seconds += time.perf_counter() - t0
            fields["elapsed"] = r.train_seconds
            r.epochs_run = epoch
            value = fields.get(self.monitor)
            if value is None:
                raise JobError(f"train.early_stopping.monitor {self.monitor}: not a logged value",
                               hint=f"use one of: {', '.join(k for k in fields if k != 'epoch')}")
            value = self.agreed(value)
            improved = r.best_value is None or (
                value < r.best_value - (es.min_delta if es else 0) if self.minimize
                else value > r.best_value + (es.min_delta if es else 0))
            if improved:
                r.best_value, r.best_epoch = float(value), epoch
                if es and es.restore_best:
                    self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                patience_left = es.patience if es else 0
            elif es:
                patience_left -= 1
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(value if self.minimize else -value)
            elif self.scheduler is not None:
                self.scheduler.step()
            row = {"epoch": epoch, **{k: v for k, v in fields.items() if k != "epoch"}}
            r.history.append(row)
            log.info(log.epoch_line(fields)[len(log.PREFIX) + 1:])
            stop = bool(es) and patience_left <= 0
            out_of_time = not stop and epoch < spec.epochs and bool(self.agreed(
                self._out_of_time(time.perf_counter() - t0)))
            if stop or out_of_time or epoch == spec.epochs or (spec.checkpoint_every and epoch % spec.checkpoint_every == 0) \
                    or self.checkpoint_due():
                self.save_checkpoint(epoch, patience_left)
            if stop:
                r.early_stop_epoch = epoch
                log.info(f"early stop at epoch {epoch}: {self.monitor} has not improved for "
                         f"{es.patience} epochs (best {r.best_value:.6g} at epoch {r.best_epoch})")
                break
            if out_of_time:
                r.time_limited = epoch
                log.warn(f"stopping after epoch {epoch}: another epoch would end past resources.max_minutes")
                break
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return r


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
