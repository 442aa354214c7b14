"""`qtrain results compare`: runs side by side, or a sweep's trials side by side.

Each column is a model: a run's own, or, for a sweep, the trial chosen on validation by
`jobs.results.select_best` (the same trial `results show`, `results list` and `predict` use),
with that trial's settings.  `results compare SWEEP_RUN` alone compares the sweep's trials.
Settings that differ between the columns are marked, and so is the best value of each metric.
A setting is `none` when it is empty and `n/a` when the column's model has no such setting.

A script job's column has a script job's settings only (`query.own_settings`: its script, data.path,
seed, device, threads, resources), every metric of the splits it logged predictions for, and what
it reported itself (`reported NAME`: log_metrics' values, as they are).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.results import HISTORY, headline
from jobs.load import format_trial, sweep_trials
from submit.backends.footprint import FIELDS as FOOTPRINT_FIELDS
from submit.results.query import flatten, known_direction, lower_is_better, own_settings, user_job
from submit.store import RunRecord, Store

# Always shown, even when equal: what a reader looks for first.
KEY_SETTINGS = ("name", "data.path", "model.kind", "train.epochs", "train.batch_size",
                "train.optimizer", "train.lr", "script.path")
NOT_APPLICABLE = "n/a"


@dataclass
class Column:
    label: str  # short: a sweep's "trial 3", a run's id without its date (JSON: the full id)
    run: RunRecord
    trial: int | None
    metrics: dict[str, Any]
    job: dict[str, Any]
    folder: Path

    @property
    def script(self) -> bool:
        return bool(self.job.get("script"))


def columns(records: list[RunRecord], store: Store) -> list[Column]:
    """One column per run (a sweep: its chosen trial); one sweep alone: one per trial."""
    if len(records) == 1 and records[0].trials:
        run = records[0]
        return [Column(f"trial {i}", run, i, run.metrics.get(i) or {}, user_job(run, i),
                       store.artifacts_dir(run.run_id, i)) for i in range(run.trials)]
    out = []
    for run in records:
        trial, metrics = run.chosen()
        label = run.run_id if trial is None else f"{run.run_id} (trial {trial})"
        out.append(Column(label, run, trial, metrics or {}, user_job(run, trial),
                          store.artifacts_dir(run.run_id, trial)))
    return out


def short(label: str) -> str:
    """A run id without its date and time (20261124-173551-penguins-03d498 -> penguins-03d498)."""
    parts = label.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() else label


def compare_runs(records: list[RunRecord], store: Store) -> dict[str, Any]:
    cols = columns(records, store)
    metrics: dict[str, list[Any]] = {}
    if len(records) > 1 and any(r.trials for r in records):
        sweeps = [r.sweep() for r in records]
        metrics["trial"] = [None if s is None else (s.best.trial if s.best else None) for s in sweeps]
        metrics["chosen on"] = [None if s is None else s.selection for s in sweeps]
    head = headline(records[0].task).metric
    for split in ("val", "test", "train"):  # a model's: its validation headline and test metrics
        names: list[str] = []
        for c in cols:
            values = c.metrics.get(split) or {}
            if split == "test" or c.script:
                names += [k for k, v in values.items() if _number(v) and k not in names]
            elif split == "val" and _number(values.get(head)) and head not in names:
                names.append(head)
        for name in names:
            metrics[f"{split} {name}"] = [(c.metrics.get(split) or {}).get(name) for c in cols]
    reported: list[str] = []
    for c in cols:
        reported += [k for k in c.metrics.get("reported") or {} if k not in reported]
    for name in reported:
        metrics[f"reported {name}"] = [(c.metrics.get("reported") or {}).get(name) for c in cols]
    timings = [c.metrics.get("timings") or {} for c in cols]
    optional = {"epochs run": [c.metrics.get("epochs_run") for c in cols],
                "train seconds": [t.get("train_seconds") for t in timings]}
    if any(t.get("train_seconds") is None and t.get("total_seconds") is not None for t in timings):
        optional["total seconds"] = [t.get("total_seconds") for t in timings]  # a script's: its whole run
    metrics.update({name: values for name, values in optional.items() if any(v is not None for v in values)})
    if len({id(c.run) for c in cols}) == len(cols):  # what each run cost (a sweep's trials share one task)
        prints = [c.run.info.get("footprint") or {} for c in cols]
        if any(prints):
            for name in FOOTPRINT_FIELDS:
                metrics[name] = [p.get(name) for p in prints]
    best = {name: best_of(name, values) for name, values in metrics.items()
            if (name.startswith(("val ", "test ", "train ", "total seconds")) or name in FOOTPRINT_FIELDS
                or (name.startswith("reported ") and known_direction(name.replace(" ", "_"))))
            and not name.endswith(" n")}

    flat = [flatten({k: v for k, v in own_settings(c.job).items() if k != "description"}) for c in cols]
    keys = sorted(set().union(*flat), key=lambda k: (k not in KEY_SETTINGS, k))
    settings: dict[str, list[Any]] = {}
    differs = []
    for key in keys:
        values = [f[key] if key in f else NOT_APPLICABLE for f in flat]
        if any(v != values[0] for v in values):
            differs.append(key)
        if key in KEY_SETTINGS or key in differs:
            settings[key] = values
    if len(records) > 1:
        settings["state"] = [r.state for r in records]
        settings["backend/profile"] = [f"{r.backend}/{r.profile}" for r in records]
        codes = [(r.info.get("code_hash") or "")[:12] or None for r in records]
        if any(codes):  # a module's or script's code: the same settings may run other code
            settings["code"] = codes
        for key in ("state", "backend/profile", "code"):
            if key not in settings:
                continue
            if any(v != settings[key][0] for v in settings[key]):
                differs.append(key)
    return {"runs": [c.label for c in cols], "metrics": metrics, "settings": settings,
            "best": {k: v for k, v in best.items() if v}, "differs": differs}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def best_of(name: str, values: list[Any]) -> list[int]:
    """The columns holding the best value of a metric (all of them on a tie; none if fewer
    than two columns have a value)."""
    numbers = [(i, v) for i, v in enumerate(values) if _number(v)]
    if len(numbers) < 2:
        return []
    pick = min if lower_is_better(name.replace(" ", "_")) else max
    target = pick(v for _, v in numbers)
    return [i for i, v in numbers if v == target]


def curves(records: list[RunRecord], store: Store) -> list[tuple[str, Path]]:
    """(label, history.csv) of each column, for `--plot`."""
    out = []
    for c in columns(records, store):
        label = short(c.label)
        if c.trial is not None:
            overrides = sweep_trials(c.run.job.get("sweep") or {})
            if c.trial < len(overrides):
                label += f" ({format_trial(overrides[c.trial])})"
        out.append((label, c.folder / HISTORY))
    return out
