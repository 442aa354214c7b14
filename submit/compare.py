"""`qtrain results compare`: runs side by side (test metrics, and the job settings that matter)."""

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


def best_metrics(run: RunRecord) -> dict[str, Any]:
    """The run's metrics (a sweep's: the trial with the best test headline)."""
    if -1 in run.metrics or not run.metrics:
        return run.metrics.get(-1, {})
    name, mode = ("accuracy", max) if run.job.get("task") == "classification" else ("rmse", min)
    scored = [m for m in run.metrics.values() if isinstance(m.get("test", {}).get(name), (int, float))]
    return mode(scored, key=lambda m: m["test"][name]) if scored else {}


def compare_runs(runs: list[RunRecord]) -> dict[str, Any]:
    metrics: dict[str, list[Any]] = {}
    per_run = [best_metrics(r) for r in runs]
    names: list[str] = []
    for m in per_run:
        names += [k for k, v in m.get("test", {}).items() if isinstance(v, (int, float)) and k not in names]
    for name in names:
        metrics[f"test {name}"] = [m.get("test", {}).get(name) for m in per_run]
    metrics["epochs run"] = [m.get("epochs_run") for m in per_run]
    metrics["train seconds"] = [m.get("timings", {}).get("train_seconds") for m in per_run]
    flat = [flatten({k: v for k, v in r.job.items() if k != "description"}) for r in runs]
    keys = sorted(set().union(*flat), key=lambda k: (k not in KEY_SETTINGS, k))
    settings = {}
    for key in keys:
        values = [f.get(key) for f in flat]
        if key in KEY_SETTINGS or any(v != values[0] for v in values):
            settings[key] = values
    settings["state"] = [r.state for r in runs]
    settings["backend/profile"] = [f"{r.backend}/{r.profile}" for r in runs]
    return {"runs": [r.run_id for r in runs], "metrics": metrics, "settings": settings}
