"""`qtrain results compare`: runs side by side (test metrics, and the job settings that matter).

A sweep stands for its best trial, chosen on validation by `jobs.results.select_best` (the same
trial `results show`, `results list` and `predict` use); its test numbers are that trial's."""

from __future__ import annotations

from typing import Any

from submit.store import RunRecord

# Always shown, even when equal: what a reader looks for first.
KEY_SETTINGS = ("name", "data.path", "model.kind", "train.epochs", "train.batch_size",
                "train.optimizer", "train.lr")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def resolved(job: dict[str, Any]) -> dict[str, Any]:
    """The job with every default filled in (a setting left out is shown with its value)."""
    from pydantic import ValidationError

    from jobs.spec import Job

    try:
        return Job.model_validate(job).model_dump(mode="json")
    except ValidationError:  # a job stored by another version of qtrain: as it was written
        return job


def compare_runs(runs: list[RunRecord]) -> dict[str, Any]:
    metrics: dict[str, list[Any]] = {}
    chosen = [r.chosen() for r in runs]
    per_run = [m or {} for _, m in chosen]
    if any(r.trials for r in runs):
        sweeps = [r.sweep() for r in runs]
        metrics["trial"] = [None if s is None else (s.best.trial if s.best else None) for s in sweeps]
        metrics["chosen on"] = [None if s is None else s.selection for s in sweeps]
    names: list[str] = []
    for m in per_run:
        names += [k for k, v in (m.get("test") or {}).items() if isinstance(v, (int, float)) and k not in names]
    for name in names:
        metrics[f"test {name}"] = [(m.get("test") or {}).get(name) for m in per_run]
    metrics["epochs run"] = [m.get("epochs_run") for m in per_run]
    metrics["train seconds"] = [(m.get("timings") or {}).get("train_seconds") for m in per_run]
    flat = [flatten({k: v for k, v in resolved(r.job).items() if k != "description"}) for r in runs]
    keys = sorted(set().union(*flat), key=lambda k: (k not in KEY_SETTINGS, k))
    settings = {}
    for key in keys:
        values = [f.get(key) for f in flat]
        if key in KEY_SETTINGS or any(v != values[0] for v in values):
            settings[key] = values
    settings["state"] = [r.state for r in runs]
    settings["backend/profile"] = [f"{r.backend}/{r.profile}" for r in runs]
    return {"runs": [r.run_id for r in runs], "metrics": metrics, "settings": settings}
