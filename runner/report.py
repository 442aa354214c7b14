"""Writing the results contract's files (`jobs.results` names them and describes each one).

Each file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.results import CONFUSION, CONFUSION_PCT, CONFUSION_PNG, HISTORY, LOSS_CURVE, atomic_write


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_csv(path: Path, frame: pd.DataFrame, index: bool = False) -> None:
    atomic_write(path, frame.to_csv(index=index))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_confusion(out: Path, matrix: np.ndarray, classes: list[str]) -> None:
    counts = pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=classes)
    write_csv(out / CONFUSION, counts, index=True)
    totals = matrix.sum(axis=1, keepdims=True)
    pct = np.divide(matrix * 100.0, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    write_csv(out / CONFUSION_PCT,
              pd.DataFrame(pct.round(2), index=pd.Index(classes, name="true"), columns=classes),
              index=True)
    plt = _plt()
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{pct[i, j]:.0f}%\n({matrix[i, j]})", ha="center", va="center",
                        fontsize=8, color="white" if pct[i, j] > 50 else "black")
    fig.colorbar(im, ax=ax, label="% of true class")
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    _save_fig(fig, out / CONFUSION_PNG)
    plt.close(fig)


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(history)
    write_csv(out / HISTORY, frame)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for col in ("train_loss", "val_loss"):
        if col in frame:
            ax.plot(frame["epoch"], frame[col], label=col.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("Training curve")
    fig.tight_layout()
    _save_fig(fig, out / LOSS_CURVE)
    plt.close(fig)


def _save_fig(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
