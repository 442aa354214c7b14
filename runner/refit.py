"""The epochs (and, for a table whose job leaves `model` out, the model) chosen on held-out rows,
then one model refit on every training row (`train.refit`, issue 27).

A single validation split of a small table is small and noisy: on 66 rows (diabetes) early stopping
stopped at epoch 10 or 20 by chance, and the model trained on 15% fewer rows.  So, by default, a
table of at most CV_ROWS train + validation rows is cross-validated instead:

- the rows of train and validation are cut into FOLDS folds (stratified for classification);
- each candidate model trains on FOLDS - 1 folds and is scored on the fifth, the FOLDS models in
  lockstep, epoch by epoch; the candidate's curve is the mean validation loss over the folds, and
  it stops when that mean has not improved for the early-stopping patience;
- the candidates: the job's model; and, when the job leaves `model` out (the default MLP), also
  the linear model (`hidden: []`), which an MLP cannot beat on a few dozen rows of a linear
  relation (bench/tables.py: tiny_40), at 10 times the learning rate and given at least 1,000
  steps (it may run past `train.epochs`);
- the candidate with the lowest mean validation loss wins, or the simplest one within a standard
  error of it (`pick`), with its best epoch count; one model is trained on all train + validation
  rows for that many epochs: the model that is saved and tested.

`metrics.json` `val` then holds the out-of-fold predictions' metrics at that epoch (every train +
validation row scored by a model that did not train on it), and `refit` says what was chosen;
history.csv's validation columns are the folds' means.

`train.refit: true` also refits a larger table: its epochs are chosen by early stopping on the
validation split, as before, then the model is trained again on train + validation for that many
epochs.  `false` keeps the single split (the weights of the best validation epoch).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from jobs.spec import Job, MLPSpec
from runner import log
from runner.evaluate import split_metrics, to_predictions
from runner.models import build_from_arch
from runner.prepare import Prepared
from runner.train import Trainer, seed_everything

CV_ROWS = 2000  # train + validation rows up to which `refit: auto` cross-validates
FOLDS = 5
LINEAR_LR_FACTOR = 10.0  # the linear candidate's learning rate, times the job's
LINEAR_STEPS = 1000  # the optimizer steps the linear candidate may take, at least
LINEAR_PATIENCE = 50  # its early-stopping patience, at least: one full-batch step an epoch


@dataclass
class Choice:
    """What the held-out rows chose, and how."""

    how: str  # "cv": k-fold cross-validation; "val": the validation split
    arch: dict[str, Any]
    label: str  # the chosen model, in words
    epochs: int
    train: dict[str, Any]  # its training settings, where they differ from the job's (lr, batch_size)
    rows: int  # the rows the final model trains on
    candidates: dict[str, float] = field(default_factory=dict)  # label -> best mean validation loss
    curve: list[dict[str, float]] = field(default_factory=list)  # per epoch: mean validation fields
    val_metrics: dict[str, Any] | None = None  # out-of-fold metrics at `epochs` (cv)

    @property
    def monitor(self) -> str:
        """metrics.json's `monitor`: what chose the epochs."""
        return f"val_loss ({FOLDS}-fold mean)" if self.how == "cv" else "val_loss"

    def record(self) -> dict[str, Any]:
        """metrics.json's `refit`."""
        chosen_on = f"{FOLDS}-fold cross-validation" if self.how == "cv" else "the validation split"
        text = f"refit on train+val ({self.rows} rows) for {self.epochs} epochs chosen on {chosen_on}"
        if len(self.candidates) > 1:
            text += f", {self.label} chosen over " + ", ".join(c for c in self.candidates if c != self.label)
        return {"how": self.how, "epochs": self.epochs, "rows": self.rows, "model": self.label, "train": self.train,
                "folds": FOLDS if self.how == "cv" else None,
                "candidates": {k: round(v, 6) for k, v in self.candidates.items()}, "text": text}


def mode(job: Job, prepared: Prepared) -> str | None:
    """"cv", "val" or None (train once, as the job says)."""
    refit = job.train.refit
    if refit is False or job.resources.spread():
        return None  # a distributed run trains once, as the job says (runner.distributed)
    if len(prepared.input_shape) != 1 or len(prepared.y.get("val", ())) == 0:
        return None  # images, or no validation split: nothing to choose on
    if refit == "auto" and not job.filled("train.early_stopping"):
        return None  # the job chose its own stopping (or none): trained as it says
    rows = len(prepared.y["train"]) + len(prepared.y["val"])
    if rows <= CV_ROWS and rows >= 2 * FOLDS:
        return "cv"
    return "val" if refit is True else None


def plan(job: Job, prepared: Prepared) -> str | None:
    """What the run will do to choose, in words (`qtrain check`), or None."""
    how = mode(job, prepared)
    if how is None:
        return None
    rows = len(prepared.y["train"]) + len(prepared.y["val"])
    if how == "cv":
        labels = " and ".join(label for label, _, _ in candidates(job, {}, rows))
        return (f"{FOLDS}-fold cross-validation of {labels} on the {rows} train + val rows, then one model "
                f"refit on all of them (train.refit)")
    return (f"epochs by early stopping on the validation split, then refit on the {rows} train + val rows "
            f"(train.refit: true)")


def label_of(model: Any) -> str:
    if isinstance(model, MLPSpec):
        return "linear" if not model.hidden else f"mlp {model.hidden}"
    return f"{model.kind}"


def candidates(job: Job, arch: dict[str, Any], rows: int) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(label, arch, training settings) of each model to cross-validate: the job's, as it says;
    and the linear model when the job leaves `model` out, trained full-batch at LINEAR_LR_FACTOR
    times the learning rate for up to LINEAR_STEPS steps (a convex problem on standardised
    features: in the MLP's mini-batches, rate and epochs it stopped short of its optimum, 0.77 r2
    where ridge regression has 0.78 on star98, and on 40 rows 50 one-step epochs were far too few)."""
    out = [(label_of(job.model), arch, {})]
    if "model" not in job.model_fields_set and isinstance(job.model, MLPSpec) and job.model.hidden:
        linear = copy.deepcopy(arch)
        linear["model"] = MLPSpec(hidden=[]).model_dump(mode="json")
        out.append(("linear", linear, {"lr": job.train.lr * LINEAR_LR_FACTOR, "batch_size": "full",
                                       "weight_decay": max(job.train.weight_decay, 1.0 / rows)}))
    return out


def pooled(prepared: Prepared) -> Prepared:
    """train + validation as one training split (the test split kept)."""
    x = {"train": np.concatenate([prepared.x["train"], prepared.x["val"]])}
    y = {"train": np.concatenate([prepared.y["train"], prepared.y["val"]])}
    rows = {"train": np.concatenate([prepared.rows["train"], prepared.rows["val"]])}
    if "test" in prepared.x:
        x["test"], y["test"], rows["test"] = prepared.x["test"], prepared.y["test"], prepared.rows["test"]
    return dataclasses.replace(prepared, x=x, y=y, rows=rows)


def fold_parts(prepared: Prepared, job: Job) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    y = prepared.y["train"]
    seed = job.split.random_state
    if prepared.classes is not None:
        counts = np.bincount(y, minlength=len(prepared.classes))
        if counts[counts > 0].min() >= FOLDS:
            return list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(y, y))
    return list(KFold(FOLDS, shuffle=True, random_state=seed).split(y))


def quiet(job: Job, train: dict[str, Any] | None = None) -> Job:
    """The job as a fold's trainer runs it: no checkpoints, no time-based saving."""
    return job.model_copy(update={"train": job.train.model_copy(update={
        "checkpoint_every": 0, "checkpoint_minutes": 0, **(train or {})})})


@dataclass
class Tried:
    """One candidate's cross-validation."""

    label: str
    arch: dict[str, Any]
    train: dict[str, Any]
    parameters: int
    loss: float = math.inf  # the lowest mean validation loss over the folds
    epoch: int = 0  # its epoch
    fold_losses: list[float] = field(default_factory=list)  # each fold's validation loss at that epoch
    curve: list[dict[str, float]] = field(default_factory=list)
    out: torch.Tensor | None = None  # out-of-fold outputs at that epoch

    @property
    def standard_error(self) -> float:
        return float(np.std(self.fold_losses, ddof=1) / math.sqrt(len(self.fold_losses))) \
            if len(self.fold_losses) > 1 else 0.0


def pick(tried: list[Tried]) -> Tried:
    """The simplest candidate (fewest parameters) whose mean validation loss is within one
    standard error of the lowest (the one-standard-error rule: Hastie, Tibshirani and Friedman,
    The Elements of Statistical Learning, 7.10): two candidates the folds cannot tell apart go
    to the simpler one (diabetes: the MLP and the linear model 0.497 and 0.493)."""
    best = min(tried, key=lambda t: t.loss)
    near = [t for t in tried if t.loss <= best.loss + best.standard_error]
    return min(near, key=lambda t: (t.parameters, t.loss))


def cross_validate(job: Job, prepared: Prepared, arch: dict[str, Any], device: torch.device) -> Choice:
    pool = pooled(prepared)
    parts = fold_parts(pool, job)
    es = job.train.early_stopping
    patience, min_delta = (es.patience, es.min_delta) if es else (10, 0.0)
    weights = np.array([len(va) for _, va in parts], dtype=np.float64)
    weights /= weights.sum()
    tried = []
    for label, cand, train in candidates(job, arch, len(pool.y["train"])):
        fold_job = quiet(job, train)
        seed_everything(job.train.seed)
        trainers = []
        for tr, va in parts:
            fold = dataclasses.replace(pool, x={"train": pool.x["train"][tr], "val": pool.x["train"][va]},
                                       y={"train": pool.y["train"][tr], "val": pool.y["train"][va]},
                                       rows={"train": pool.rows["train"][tr], "val": pool.rows["train"][va]})
            trainers.append(Trainer(build_from_arch(cand), fold, fold_job, device, "cv"))
        t = Tried(label, cand, train, sum(p.numel() for p in trainers[0].model.parameters() if p.requires_grad))
        limit, wait = job.train.epochs, patience
        if label == "linear":  # a convex problem: given the steps to converge, however few rows
            per_epoch = math.ceil(len(trainers[0].data.y["train"]) / trainers[0].batch_size)
            limit = max(limit, math.ceil(LINEAR_STEPS / per_epoch))
            wait = max(patience, LINEAR_PATIENCE)
        waited = 0
        for epoch in range(1, limit + 1):
            rows, outs = [], []
            for trainer in trainers:
                trained = trainer.run_epoch()
                fields, out = trainer.evaluate_outputs("val")
                rows.append({**trained, **fields})
                outs.append(out)
            mean = {k: float(np.dot(weights, [r[k] for r in rows])) for k in rows[0]}
            t.curve.append(mean)
            if not math.isfinite(mean["val_loss"]):
                break
            if mean["val_loss"] < t.loss - min_delta:
                t.loss, t.epoch, waited = mean["val_loss"], epoch, 0
                t.fold_losses = [r["val_loss"] for r in rows]
                t.out = _out_of_fold(outs, parts, len(pool.y["train"]))
            else:
                waited += 1
                if waited >= wait:
                    break
        tried.append(t)
        log.info(f"cross-validated {label}: mean val_loss {t.loss:.6g} (standard error {t.standard_error:.2g}) "
                 f"at epoch {t.epoch} ({FOLDS} folds)")
    chosen = pick(tried)
    val = _metrics(prepared, pool.y["train"], chosen.out) if chosen.out is not None else None
    epochs = max(chosen.epoch, 1)
    return Choice("cv", chosen.arch, chosen.label, epochs, chosen.train, len(pool.y["train"]),
                  {t.label: t.loss for t in tried}, chosen.curve[:epochs], val)


def _out_of_fold(outs: list[torch.Tensor], parts, n: int) -> torch.Tensor:
    """Every pooled row's output from the fold model that did not train on it (`outs`: each
    fold's outputs on its validation rows)."""
    out = torch.empty((n, outs[0].shape[1]), dtype=outs[0].dtype)
    for o, (_, va) in zip(outs, parts):
        out[torch.from_numpy(va)] = o
    return out


def _metrics(prepared: Prepared, y: np.ndarray, out: torch.Tensor) -> dict[str, Any]:
    pred, proba = to_predictions(out, prepared.classes, prepared.state.get("target"))
    return split_metrics(y, pred, proba, prepared.classes)


def from_validation(history: list[dict[str, Any]], best_epoch: int, arch: dict[str, Any], label: str,
                    rows: int, best_value: float) -> Choice:
    """`refit: true` on a larger table: the epochs early stopping chose on the validation split."""
    curve = [{k: v for k, v in h.items() if k.startswith("val_")} for h in history[:best_epoch]]
    return Choice("val", arch, label, best_epoch, {}, rows, {label: best_value}, curve)


def refit_job(job: Job, choice: Choice) -> Job:
    """The job as the final model trains: the chosen model's epochs and settings on train +
    validation, no early stopping."""
    return job.model_copy(update={"train": job.train.model_copy(update={
        "epochs": choice.epochs, "early_stopping": None, **choice.train})})


def merge_history(history: list[dict[str, Any]], curve: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The refit's rows, with the chosen candidate's mean validation fields of the same epoch."""
    merged = []
    for row in history:
        i = row["epoch"] - 1
        extra = {k: v for k, v in curve[i].items() if k.startswith("val_")} if i < len(curve) else {}
        merged.append({**row, **extra})
    return merged
