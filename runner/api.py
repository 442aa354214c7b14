"""The runner's public door: everything the submitter (`submit/`) may use of the runner, and nothing
else of it (`tests/test_architecture.py` holds `submit/` to this module).

Importing it is cheap: each call imports what it needs (torch, pandas, scikit-learn) the fast way
(`runner.imports.heavy_imports`) when it is first made, so a command that never trains never pays
for them.

    check_job(loaded)              the preflight: data, preprocessing, model, one timed step
    run_job(loaded, out, ...)      train here, writing the results contract into `out`
    load_model(path), read_input   a run's model.pt as a predictor, and the data it predicts on
    output_hook()                  the module of a module model's output hook (pickled by value on export)
    write_sweep_report, plot_curves   the sweep's table and plot, validation curves side by side
    checkpoint_epoch(path)         the epoch a checkpoint.pt was written after
    heavy_imports, exit_fast       import the heavy libraries fast; skip the last collections at exit
    PRELOAD_MODULE                 what a fork server imports before it forks instances
    become, signal_instance        run an instance in a forked warm interpreter; signal it
    prctl, die_with_parent         tie a child's life to its parent's (Linux), as the runner does
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from runner.imports import exit_fast, heavy_imports
from runner.procs import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, die_with_parent, prctl
from runner.warm import become, signal_instance

if TYPE_CHECKING:
    from jobs.load import LoadedJob
    from jobs.results import SweepSummary

PRELOAD_MODULE = "runner.preloaded"

__all__ = ["PRELOAD_MODULE", "PR_SET_CHILD_SUBREAPER", "PR_SET_PDEATHSIG", "become", "check_job", "checkpoint_epoch",
           "die_with_parent", "exit_fast", "heavy_imports", "load_model", "on_path", "output_hook", "plot_curves", "prctl",
           "read_input", "run_job", "signal_instance", "write_sweep_report"]


def check_job(loaded: "LoadedJob", extra_paths: list[Path] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """The check's report (splits, shapes, each trial's model and timed step, warnings; a script
    job: its imports against the job's environment, `extra_paths` its requirements); raises the
    first problem as a QtrainError."""
    if loaded.job.script is not None:
        from runner.scriptcheck import check_script

        return check_script(loaded, extra_paths)
    with heavy_imports():
        from runner.run import check_job as check

    with on_path(extra_paths):  # a module's own packages
        return check(loaded)


@contextmanager
def on_path(folders: Any) -> Iterator[None]:
    """`folders` first on sys.path for the duration (the job's own packages)."""
    import sys

    added = [str(f) for f in folders or () if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for f in added:
            if f in sys.path:
                sys.path.remove(f)


def run_job(loaded: "LoadedJob", out_dir: Path, *, resume: bool = False, trial: int | None = None,
            smoke_steps: int | None = None, time_limit: float | None = None,
            site: Path | None = None) -> dict[str, Any]:
    """Train the job (every trial of a sweep when `trial` is None) into `out_dir`; a script job
    runs its script (`runner.userscript`: ScriptFailed when it fails; `smoke_steps`: a smoke run).
    It stops within `time_limit` seconds, default the job's resources.max_minutes, its results and
    checkpoint written (TimeLimitReached).  `site`: a folder of the job's own packages, first on
    the path (a script's PYTHONPATH)."""
    import time

    minutes = loaded.job.resources.max_minutes
    limit = time_limit if time_limit is not None else (minutes * 60 if minutes else None)
    deadline = time.monotonic() + limit if limit else None
    if loaded.job.script is not None:
        from runner.userscript import run_script

        return run_script(loaded, out_dir, trial=trial, resume=resume, smoke_steps=smoke_steps, deadline=deadline,
                          site=site)
    with heavy_imports():
        from runner.run import run_job as run

    with on_path([site] if site is not None else []):
        return run(loaded, out_dir, resume=resume, trial=trial, deadline=deadline)


def load_model(path: str | Path):
    """A run's `model.pt` (or the folder holding it) as a `runner.predict.Predictor`."""
    with heavy_imports():
        from runner.predict import load_model as load

    return load(path)


def output_hook():
    """The module of the forward hook a module model carries (`runner.outputs`: its output tensor
    from a tuple, a dict or a ModelOutput), for an export to pickle it by value."""
    from runner import outputs

    return outputs


def read_input(path: Path, na_values: list[str] | None = None):
    """New data for `predict`: a table (CSV, Parquet), an array of images (.npy), or a folder of image files."""
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

    import json

    from jobs.results import CHECKPOINT_INFO

    info = Path(path).with_name(CHECKPOINT_INFO)  # a script job's (runner.script.save_checkpoint)
    if info.is_file():
        try:
            epoch = json.loads(info.read_text()).get("epoch")
            return epoch if isinstance(epoch, int) else None
        except (OSError, ValueError, AttributeError):
            return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a checkpoint this runner wrote
        return None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return epoch if isinstance(epoch, int) else None
