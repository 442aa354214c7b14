"""Your training script's side of qtrain: where things are, and what it reports.  All of it is
optional: a script that uses none of it still runs, and its output folder still comes home.

    from runner import script as qtrain

    frame = pd.read_csv(qtrain.data())               # data.path, wherever the task has it
    epochs = qtrain.params().get("epochs", 10)       # its arguments (also on its command line)
    start, state = 0, qtrain.load_checkpoint()       # a resumed run's last checkpoint, or None
    if state is not None:
        model.load_state_dict(state["model"]); start = state["epoch"]
    for epoch in range(start + 1, epochs + 1):
        ...
        qtrain.log_epoch(epoch, epochs, train_loss=loss, val_accuracy=acc)   # live in `qtrain run`
        qtrain.save_checkpoint({"model": model.state_dict()}, epoch=epoch)
    qtrain.log_predictions(y_test, predicted, proba=probabilities, classes=["No", "Yes"])
    qtrain.log_metrics(my_score=0.9)
    qtrain.save_model(model)

From the predictions, qtrain computes its standard metrics (accuracy, F1, ... or RMSE, R2) and the
confusion matrix, as for its own models.  Outside qtrain (`python train.py` on a laptop) the same
calls work, into ./qtrain-out.  Every value comes from the environment (`jobs.settings.ScriptEnv`:
QTRAIN_DATA, QTRAIN_OUTPUT_DIR, QTRAIN_CHECKPOINT, QTRAIN_PARAMS, ...), so a script may read those
itself instead of importing this.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from jobs import settings
from jobs.results import CHECKPOINT, CHECKPOINT_INFO, HISTORY, MODEL, atomic_write, epoch_line

REPORTS = ".qtrain"  # in the output folder: what the script reported, for the runner to read
SCRIPT_CHECKPOINT = "qtrain-script-checkpoint/1"

__all__ = ["checkpoint", "data", "data_dir", "device", "load_checkpoint", "log_epoch", "log_metrics",
           "log_predictions", "max_steps", "output_dir", "params", "save_checkpoint", "save_model", "seed",
           "smoke", "threads", "trial"]


# --------------------------------------------------------------------------------- where things are
def data() -> Path | None:
    """The job's data.path as this run finds it (None: the job names no data)."""
    return settings.script_env().data


def data_dir() -> Path | None:
    """The folder that holds it."""
    return settings.script_env().data_dir


def output_dir() -> Path:
    """The folder that comes home (and the script's working folder): made if missing."""
    folder = settings.script_env().output_dir
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def checkpoint() -> Path | None:
    """The checkpoint a resumed run continues from (None: a fresh run)."""
    return settings.script_env().checkpoint


def params() -> dict[str, Any]:
    """The script's arguments (script.args, with a sweep trial's values), as given in the job."""
    return dict(settings.script_env().params)


def trial() -> int | None:
    return settings.script_env().trial


def device() -> str:
    """cuda or cpu: train.device, resolved where the script runs."""
    return settings.script_env().device


def threads() -> int | None:
    return settings.script_env().threads


def seed() -> int:
    return settings.script_env().seed


def smoke() -> bool:
    """A smoke run (`qtrain check --smoke`): a few steps, to find mistakes before paying."""
    return settings.script_env().smoke


def max_steps() -> int | None:
    """In a smoke run, the steps to stop after (None: no limit)."""
    return settings.script_env().max_steps


# ----------------------------------------------------------------------------------- what it reports
def log_epoch(epoch: int, epochs: int | None = None, **metrics: float) -> None:
    """One epoch's numbers (train_loss, val_loss, val_accuracy, ...): a line `qtrain run` shows live,
    and a row of history.csv (the training curves)."""
    values = {k: float(v) for k, v in metrics.items() if _finite(v)}
    print(epoch_line({"epoch": f"{epoch}/{epochs or epoch}", **values}), flush=True)
    path = output_dir() / HISTORY
    rows = [r for r in _read_history(path) if int(float(r.get("epoch") or 0)) < epoch]  # a resumed run's earlier ones
    rows.append({"epoch": epoch, **values})
    fields = ["epoch"] + sorted({k for r in rows for k in r} - {"epoch"})
    with open(path.with_suffix(".csv.tmp"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path.with_suffix(".csv.tmp"), path)


def log_metrics(**metrics: Any) -> None:
    """The script's own final numbers (kept as they are in metrics.json's `reported`)."""
    path = _reports() / "reported.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    known.update({k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, str)) else v)
                  for k, v in metrics.items()})
    atomic_write(path, json.dumps(known, default=str))


def log_predictions(y_true: Any, y_pred: Any, proba: Any = None, classes: list[Any] | None = None,
                    split: str = "test") -> None:
    """The true values and the script's predictions on a split: qtrain computes its standard
    metrics and, for classes, the confusion matrix.  Classification when `classes` or `proba` is
    given (labels, or their indices into `classes`); regression otherwise."""
    import numpy as np

    if split not in ("train", "val", "test"):
        raise ValueError(f"split {split!r}: give train, val or test")
    arrays = {"y_true": np.asarray(_numpy(y_true)), "y_pred": np.asarray(_numpy(y_pred))}
    if proba is not None:
        arrays["proba"] = np.asarray(_numpy(proba), dtype=np.float64)
    if classes is not None:
        arrays["classes"] = np.asarray([str(c) for c in classes])
    if len(arrays["y_true"]) != len(arrays["y_pred"]):
        raise ValueError(f"y_true has {len(arrays['y_true'])} values and y_pred {len(arrays['y_pred'])}")
    np.savez(_reports() / f"predictions-{split}.npz", **arrays)


def save_model(model: Any, name: str = MODEL) -> Path:
    """The trained model into the output folder: a torch.nn.Module (its state_dict), or a file of
    the script's own (copied).  Returns where it went."""
    target = output_dir() / name
    if isinstance(model, (str, Path)):
        import shutil

        shutil.copyfile(model, target)
        return target
    import torch

    tmp = target.with_name(f".{target.name}.tmp")
    torch.save(model.state_dict() if hasattr(model, "state_dict") else model, tmp)
    os.replace(tmp, target)
    return target


def save_checkpoint(state: dict[str, Any], epoch: int) -> Path:
    """What the script needs to go on after `epoch` (weights, optimiser, ...): a cancelled or killed
    run brings it home, and `qtrain resume` hands it back (`load_checkpoint`)."""
    import torch

    target = output_dir() / CHECKPOINT
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save({"format": SCRIPT_CHECKPOINT, "epoch": int(epoch), "state": state}, tmp)
    os.replace(tmp, target)
    atomic_write(target.with_name(CHECKPOINT_INFO), json.dumps({"epoch": int(epoch)}))
    return target


def load_checkpoint() -> dict[str, Any] | None:
    """The last checkpoint of the run this one resumes, as {"epoch": n, **the state saved}; None
    for a fresh run."""
    path = checkpoint()
    if path is None or not Path(path).is_file():
        return None
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=False)  # the script's own file
    if isinstance(saved, dict) and saved.get("format") == SCRIPT_CHECKPOINT:
        return {**saved["state"], "epoch": saved["epoch"]}
    return saved


# ------------------------------------------------------------------------------------------- inside
def _reports() -> Path:
    folder = output_dir() / REPORTS
    folder.mkdir(exist_ok=True)
    return folder


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _numpy(value: Any) -> Any:
    """A tensor (on any device) or a list, as numpy takes it."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]
