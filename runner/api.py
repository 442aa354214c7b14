"""The runner's public door: everything the submitter (`submit/`) may use of the runner, and nothing
else of it (`tests/test_architecture.py` holds `submit/` to this module).

Importing it is cheap: each call imports what it needs (torch, pandas, scikit-learn) the fast way
(`runner.imports.heavy_imports`) when it is first made, so a command that never trains never pays
for them.

    check_job(loaded)              the preflight: data, preprocessing, model, one timed step
    run_job(loaded, out, ...)      train here, writing the results contract into `out`
    load_model(path), read_input   a run's model.pt as a predictor, and the data it predicts on
    write_sweep_report, plot_curves   the sweep's table and plot, validation curves side by side
    checkpoint_epoch(path)         the epoch a checkpoint.pt was written after
    heavy_imports, exit_fast       import the heavy libraries fast; skip the last collections at exit
    PRELOAD_MODULE                 what a fork server imports before it forks instances
    become, signal_instance        run an instance in a forked warm interpreter; signal it
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.imports import exit_fast, heavy_imports
from runner.warm import become, signal_instance

if TYPE_CHECKING:
    from jobs.load import LoadedJob
    from jobs.results import SweepSummary

PRELOAD_MODULE = "runner.preloaded"

__all__ = ["PRELOAD_MODULE", "become", "check_job", "checkpoint_epoch", "exit_fast", "heavy_imports", "load_model",
           "plot_curves", "read_input", "run_job", "signal_instance", "write_sweep_report"]


def check_job(loaded: "LoadedJob") -> dict[str, Any]:
    """The check's report (splits, shapes, each trial's model and timed step, warnings); raises
    the first problem as a QtrainError."""
    with heavy_imports():
        from runner.run import check_job as check

    return check(loaded)


def run_job(loaded: "LoadedJob", out_dir: Path, *, resume: bool = False, trial: int | None = None) -> dict[str, Any]:
    """Train the job (every trial of a sweep when `trial` is None) into `out_dir`."""
    with heavy_imports():
        from runner.run import run_job as run

    return run(loaded, out_dir, resume=resume, trial=trial)


def load_model(path: str | Path):
    """A run's `model.pt` (or the folder holding it) as a `runner.predict.Predictor`."""
    with heavy_imports():
        from runner.predict import load_model as load

    return load(path)


def read_input(path: Path, na_values: list[str] | None = None):
    """New data for `predict`: a table (CSV, Parquet) or an array of images (.npy)."""
    with heavy_imports():
        from runner.predict import read_input as read

    return read(path, na_values)


def write_sweep_report(out: Path, sweep: "SweepSummary", title: str = "") -> None:
    """sweep.csv and sweep.png of a sweep's trials."""
    with heavy_imports():
        from runner.report import write_sweep_report as write

    write(out, sweep, title=title)


def plot_curves(path: Path, runs: list[tuple[str, Path]], metric: str, title: str = "") -> int:
    """The validation curves of `runs` (label, results folder) on one plot; returns how many."""
    with heavy_imports():
        from runner.report import plot_curves as plot

    return plot(path, runs, metric, title=title)


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint was written after (None when it is not a qtrain checkpoint), read
    with `weights_only=True`: nothing in the file runs."""
    with heavy_imports():
        import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a checkpoint this runner wrote
        return None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return epoch if isinstance(epoch, int) else None
