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

from jobs.results import (CONFUSION, CONFUSION_PCT, CONFUSION_PNG, HISTORY, LOSS_CURVE, REGRESSION_PNG,
                          SWEEP_CSV, SWEEP_PNG, SweepSummary, atomic_write)


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


def write_confusion(out: Path, matrix: np.ndarray, classes: list[str], title: str = "") -> None:
    counts = pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=classes)
    write_csv(out / CONFUSION, counts, index=True)
    totals = matrix.sum(axis=1, keepdims=True)
    pct = np.divide(matrix * 100.0, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    write_csv(out / CONFUSION_PCT,
              pd.DataFrame(pct.round(2), index=pd.Index(classes, name="true"), columns=classes),
              index=True)
    plt = _plt()
    n = len(classes)
    size = min(14.0, max(4.5, 0.55 * n + 2.5))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(n), classes, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:  # a number in every cell that has one; an empty cell stays blank
        font = 9 if n <= 10 else 7
        for i in range(n):
            for j in range(n):
                if matrix[i, j] == 0:
                    continue
                text = f"{pct[i, j]:.0f}%\n({matrix[i, j]})" if n <= 10 else f"{matrix[i, j]}"
                ax.text(j, i, text, ha="center", va="center", fontsize=font,
                        color="white" if pct[i, j] > 50 else "black")
    fig.colorbar(im, ax=ax, label="% of true class", fraction=0.046, pad=0.04)
    ax.set_title(_title("Confusion matrix (test)", title))
    fig.tight_layout()
    _save_fig(fig, out / CONFUSION_PNG)
    plt.close(fig)


def _title(what: str, title: str) -> str:
    return f"{what}\n{title}" if title else what


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def write_history(out: Path, history: list[dict[str, Any]], title: str = "",
                  metric: str | None = None) -> None:
    """history.csv, and loss_curve.png: training and validation loss per epoch and, beside it,
    the headline `metric` per epoch (train and validation, where the history has them)."""
    frame = pd.DataFrame(history)
    write_csv(out / HISTORY, frame)
    plt = _plt()
    metric_cols = [c for c in (f"train_{metric}", f"val_{metric}") if metric and c in frame]
    fig, axes = plt.subplots(1, 2 if metric_cols else 1, figsize=(11 if metric_cols else 6.4, 4.2),
                             squeeze=False)
    panels = [(axes[0][0], [c for c in ("train_loss", "val_loss") if c in frame], "loss")]
    if metric_cols:
        panels.append((axes[0][1], metric_cols, metric))
    for ax, cols, label in panels:
        for col in cols:
            style = "-" if col.startswith("val") else "--"
            ax.plot(frame["epoch"], frame[col], style, marker="o" if len(frame) <= 30 else None,
                    markersize=3, label=col.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        if cols:
            ax.legend()
    fig.suptitle(_title("Training curves", title))
    fig.tight_layout()
    _save_fig(fig, out / LOSS_CURVE)
    plt.close(fig)


def write_regression(out: Path, y_true: np.ndarray, y_pred: np.ndarray, title: str = "") -> None:
    """regression.png: predicted against actual (the diagonal is a perfect model) and the
    residuals against the prediction, on the test split."""
    plt = _plt()
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    alpha = 0.6 if len(y_true) <= 2000 else 0.2
    a.scatter(y_true, y_pred, s=8, alpha=alpha)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    a.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="predicted = actual")
    a.set_xlabel("actual")
    a.set_ylabel("predicted")
    a.legend()
    a.set_title("predicted vs actual")
    residual = y_pred - y_true
    b.scatter(y_pred, residual, s=8, alpha=alpha)
    b.axhline(0, color="k", linestyle="--", linewidth=1)
    b.set_xlabel("predicted")
    b.set_ylabel("residual (predicted - actual)")
    b.set_title("residuals")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle(_title("Regression (test)", title))
    fig.tight_layout()
    _save_fig(fig, out / REGRESSION_PNG)
    plt.close(fig)


def write_sweep_report(out: Path, sweep: SweepSummary, title: str = "") -> None:
    """sweep.csv (one row per trial: its overrides, then its metrics) and sweep.png (the headline
    metric per trial, validation and test, the best trial marked)."""
    metric = sweep.selection.removeprefix("val_") if sweep.selection != "train_loss" else None
    rows = []
    for r in sweep.trials:
        row: dict[str, Any] = {"trial": r.trial, **r.overrides}
        m = r.metrics
        row["state"] = "ok" if m else "failed"
        if m:
            for split in ("train", "val", "test"):
                for name, value in (getattr(m, split, None) or {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        row[f"{split}_{name}"] = value
            row["train_loss"] = m.train_loss
        row["best"] = bool(sweep.best and sweep.best.trial == r.trial)
        rows.append(row)
    write_csv(out / SWEEP_CSV, pd.DataFrame(rows))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(rows) + 3), 4.2))
    labels = [", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in r.overrides.items()) or str(r.trial)
              for r in sweep.trials]
    x = np.arange(len(rows))
    shown = [("val", "validation"), ("test", "test")] if metric else [("train", "training")]
    width = 0.8 / len(shown)
    for k, (split, name) in enumerate(shown):
        key = f"{split}_{metric}" if metric else "train_loss"
        values = [np.nan if row.get(key) is None else row[key] for row in rows]  # a trial without it: no bar
        ax.bar(x + (k - (len(shown) - 1) / 2) * width, values, width, label=name)
    if sweep.best is not None:  # over the best trial's bars
        at = [r.trial for r in sweep.trials].index(sweep.best.trial)
        key = f"{shown[0][0]}_{metric}" if metric else "train_loss"
        top = np.nanmax([rows[at].get(f"{split}_{metric}" if metric else key, np.nan)
                         for split, _ in shown] + [0.0])
        ax.annotate("best", (at, top), xytext=(0, 4), textcoords="offset points", ha="center",
                    fontweight="bold", color="darkgreen")
    ax.set_xticks(x, labels, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric or "training loss")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    best = (f"best: trial {sweep.best.trial}, chosen on {sweep.selection}" if sweep.best
            else "no trial chosen: nothing to compare them on" if any(r.metrics for r in sweep.trials)
            else "no trial finished")
    ax.set_title(_title(f"Sweep ({best})", title))
    fig.tight_layout()
    _save_fig(fig, out / SWEEP_PNG)
    plt.close(fig)


def plot_curves(path: Path, runs: list[tuple[str, Path]], metric: str, title: str = "") -> int:
    """The validation loss and `metric` per epoch of several runs on one figure (the training
    loss, dashed, for a run without a validation split).  Returns how many runs had a history."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = 0
    for label, history in runs:
        if not history.is_file():
            continue
        frame = pd.read_csv(history)
        loss = "val_loss" if "val_loss" in frame else "train_loss"
        line, = a.plot(frame["epoch"], frame[loss], "-" if loss == "val_loss" else "--",
                       label=f"{label}" + ("" if loss == "val_loss" else " (train)"))
        for col in (f"val_{metric}", f"train_{metric}"):
            if col in frame:
                b.plot(frame["epoch"], frame[col], "-" if col.startswith("val") else "--",
                       color=line.get_color(), label=label + ("" if col.startswith("val") else " (train)"))
                break
        drawn += 1
    for ax, name in ((a, "validation loss"), (b, f"validation {metric}")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
    fig.suptitle(_title("Compared runs", title))
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)
    return drawn


def figure_texts(fig) -> dict[str, Any]:
    """Every text a reader sees on the figure: its title, and per panel the title, axis labels,
    tick labels and legend entries.  Saved in the PNG (its Description) for screen readers,
    search, and tests that read what a plot says rather than its pixels."""
    fig.draw_without_rendering()  # lays out ticks and legends without rasterising
    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    panels = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        legend = ax.get_legend()
        lo, hi = sorted(ax.get_xlim())
        ticks = [label.get_text() for pos, label in zip(ax.get_xticks(), ax.get_xticklabels())
                 if lo <= pos <= hi and label.get_text()]
        panels.append({
            "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "xticks": ticks,
            "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
            "texts": [t.get_text() for t in ax.texts],
        })
    return {"title": title, "axes": panels}


def _save_fig(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    texts = figure_texts(fig)
    fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight",
                metadata={"Title": texts["title"] or (texts["axes"][0]["title"] if texts["axes"] else ""),
                          "Description": json.dumps(texts), "Software": "qtrain"})
    os.replace(tmp, path)


def versions() -> dict[str, str]:
    import platform

    import numpy as np
    import pydantic
    import sklearn
    import torch

    from runner import __version__

    return {"qtrain": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
            "pydantic": pydantic.__version__}


def plot_title(job_name: str, out_dir: Path, trial: int | None = None,
               overrides: dict[str, Any] | None = None) -> str:
    """What every plot is titled with: the job, the run (the store's id on a backend, else the
    results folder) and the trial."""
    from jobs import settings
    from jobs.load import format_trial

    run = settings.task().run_id or (out_dir.parent.name if trial is not None else out_dir.name)
    text = f"{job_name} · run {run}"
    if trial is not None:
        text += f" · trial {trial}" + (f" ({format_trial(overrides)})" if overrides else "")
    return text

