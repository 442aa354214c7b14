"""Finding runs by what they are: the fields `results list --where/--sort` name, and a run's
(or a sweep trial's) resolved job.

A field is one of:
    state, job, backend, profile, trials, created, retrieved, executor   the run itself
    tag.KEY                                                              a tag's value
    SPLIT.METRIC   (train|val|test|baseline . accuracy, f1_macro, r2, rmse, loss, ...)
                   of the run's model (a sweep: the trial chosen on validation)
    epochs_run, train_seconds                                            of that model
    cost_eur, energy_wh, co2_g, co2_saved_g                              what the run's task cost
                                                                         and emitted (submit/footprint.py)
    job.PATH or PATH  (train.lr, model.hidden, ...)                      the resolved job setting
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from jobs.errors import QtrainError
from jobs.files import get_dotted
from jobs.load import set_dotted, sweep_trials
from submit.backends.footprint import FIELDS as FOOTPRINT_FIELDS
from submit.backends.footprint import LOWER_IS_BETTER as FOOTPRINT_LOWER_IS_BETTER
from submit.store import RunRecord

SPLITS = ("train", "val", "test", "baseline")
RUN_FIELDS = ("state", "job", "backend", "profile", "trials", "created", "retrieved", "executor",
              "run_id", "note")
LOWER_IS_BETTER = ("loss", "rmse", "mae", "log_loss", "mse", "train_seconds", "total_seconds",
                   *FOOTPRINT_LOWER_IS_BETTER)
HIGHER_IS_BETTER = ("accuracy", "f1", "f1_macro", "f1_positive", "auc", "roc_auc", "r2", "precision",
                    "recall", "precision_macro", "recall_macro", "score")
# The columns `results list` shows per task (test split of the run's model).
TASK_COLUMNS = {"classification": ("accuracy", "f1_macro"), "regression": ("r2", "rmse")}


def resolved(job: dict[str, Any]) -> dict[str, Any]:
    """The job with every default filled in (a setting left out is shown with its value)."""
    from pydantic import ValidationError

    from jobs.spec import Job

    try:
        return Job.model_validate(job).model_dump(mode="json")
    except ValidationError:  # a job stored by another version of qtrain: as it was written
        return job


def trial_job(run: RunRecord, trial: int | None) -> dict[str, Any]:
    """The resolved job trial `trial` of a sweep ran (None: the run's own job), sweep removed."""
    raw = {k: v for k, v in run.job.items() if k != "sweep"}
    if trial is not None:
        trials = sweep_trials(run.job.get("sweep") or {})
        if 0 <= trial < len(trials):
            for key, value in trials[trial].items():
                set_dotted(raw, key, value)
    return resolved(raw)


def user_job(run: RunRecord, trial: int | None) -> dict[str, Any]:
    """`trial_job` with its path fields as the user's machine has them (the task reads
    `data/<name>`; the store keeps where the files came from)."""
    job = trial_job(run, trial)
    for key, path in (run.info.get("data") or {}).items():
        if get_dotted(job, key) is not None:
            set_dotted(job, key, path)
    return job


def own_settings(job: dict[str, Any]) -> dict[str, Any]:
    """The settings a job of its kind has: all of a model job's; of a script job, its name, its
    script (path, source, args), data.path when given, the train fields it is told
    (jobs.spec.SCRIPT_TRAIN) and resources, never the model and training defaults it ignores."""
    from jobs.spec import SCRIPT_TRAIN

    if not job.get("script"):
        return job
    data = (job.get("data") or {}).get("path")
    return {"name": job.get("name"), "script": job["script"], **({"data": {"path": data}} if data else {}),
            "train": {k: v for k, v in (job.get("train") or {}).items() if k in SCRIPT_TRAIN},
            "resources": job.get("resources") or {}}


def job_fields(job: dict[str, Any]) -> dict[str, Any]:
    """The fields of a job that shaped its run (`own_settings`), flattened, its name, description
    and task apart."""
    return flatten({k: v for k, v in own_settings(job).items() if k not in ("name", "description", "task")})


def lower_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] in LOWER_IS_BETTER or _bare(metric) in LOWER_IS_BETTER


def known_direction(metric: str) -> bool:
    """Whether better is known for a metric named so (a script's own `my_rmse`, `val_score`: yes;
    `epoch_time`: no, and no value of it is marked best)."""
    bare = _bare(metric)
    return any(bare == name or bare.endswith("_" + name) for name in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER))


def _bare(metric: str) -> str:
    """`val.accuracy`, `val_accuracy`, `reported_accuracy` -> `accuracy`."""
    bare = metric.rsplit(".", 1)[-1]
    for prefix in ("val_", "test_", "train_", "reported_"):
        bare = bare.removeprefix(prefix)
    return bare


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


class Fields:
    """Field values of runs, with each run's chosen job resolved once."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}

    def job(self, run: RunRecord) -> dict[str, Any]:
        if run.run_id not in self._jobs:
            self._jobs[run.run_id] = trial_job(run, run.chosen()[0])
        return self._jobs[run.run_id]

    def value(self, run: RunRecord, field: str) -> Any:
        if field in ("job", "job_name"):
            return run.job_name
        if field == "executor":
            return run.info.get("execution") or run.info.get("executor")
        if field in RUN_FIELDS:
            return getattr(run, field)
        if field.startswith(("tag.", "tags.")):
            return run.tags.get(field.split(".", 1)[1])
        if field in FOOTPRINT_FIELDS:
            return (run.info.get("footprint") or {}).get(field)
        metrics = run.chosen()[1] or {}
        split, _, name = field.partition(".")
        if split in SPLITS and name and name in (metrics.get(split) or {}):
            return metrics[split][name]
        if split == "reported" and name:  # a script's own numbers (runner.script.log_metrics)
            return (metrics.get("reported") or {}).get(name)
        if field == "epochs_run":
            return metrics.get("epochs_run")
        if field == "train_seconds":
            return (metrics.get("timings") or {}).get("train_seconds")
        return get_dotted(self.job(run), field.removeprefix("job."))

    def known(self, runs: list[RunRecord]) -> list[str]:
        """Every field some run has (for "did you mean")."""
        names = list(RUN_FIELDS) + ["epochs_run", "train_seconds", *FOOTPRINT_FIELDS]
        for run in runs[:50]:
            metrics = run.chosen()[1] or {}
            names += [f"{s}.{k}" for s in (*SPLITS, "reported") for k in (metrics.get(s) or {})]
            names += [f"tag.{k}" for k in run.tags]
            names += list(flatten(self.job(run)))
        return list(dict.fromkeys(names))

    def require(self, runs: list[RunRecord], field: str, option: str) -> None:
        """A field no run has is a typo until proven otherwise: say so, with the closest names."""
        if not runs or any(self.value(r, field) is not None for r in runs):
            return
        known = self.known(runs)
        close = difflib.get_close_matches(field, known, n=3, cutoff=0.6)
        lower = [k for k in known if k.lower() == field.lower()]
        hint = f"did you mean {' or '.join(lower or close)}?" if lower or close else \
            "fields: state, job, tag.KEY, test.accuracy, val.rmse, train.lr, ... (qtrain results list --help)"
        raise QtrainError(f"{option} {field}: no run in the selection has this field", hint=hint)


# ------------------------------------------------------------------------------------ where
CONDITION = re.compile(r"^\s*([A-Za-z_][\w.:/-]*)\s*(>=|<=|!=|==|=|>|<|~)\s*(.*?)\s*$")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "Condition":
        m = CONDITION.match(text)
        if not m or not m.group(3):
            raise QtrainError(f"--where {text!r}: expected FIELD OP VALUE",
                              hint="e.g. --where 'test.r2>0.9' or --where state=succeeded "
                                   "(OP: = != > >= < <= and ~ for 'contains')")
        op = "=" if m.group(2) == "==" else m.group(2)
        return cls(m.group(1), op, m.group(3).strip("'\""))

    def holds(self, value: Any) -> bool:
        if value is None:
            return False
        if self.op == "~":
            return self.value.lower() in str(value).lower()
        a, b = _number(value), _number(self.value)
        if a is None or b is None:
            a, b = str(value).lower() if isinstance(value, bool) else str(value), self.value
        return {"=": a == b, "!=": a != b, ">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[self.op]


def select(runs: list[RunRecord], *, job: str | None = None, tags: list[tuple[str, str | None]] = (),
           where: list[str] = (), sort: str | None = None, limit: int | None = None) -> list[RunRecord]:
    """`results list`'s selection: by job, tags (value None: any value), conditions (all must
    hold), sorted (`-FIELD`: descending; runs without the field last), the first `limit`."""
    fields = Fields()
    if job:
        runs = [r for r in runs if r.job_name == job]
    for key, value in tags:
        runs = [r for r in runs if key in r.tags and (value is None or r.tags[key] == value)]
    for text in where:
        cond = Condition.parse(text)
        fields.require(runs, cond.field, "--where")
        if cond.op in (">", ">=", "<", "<=") and _number(cond.value) is None and any(
                _number(fields.value(r, cond.field)) is not None for r in runs):
            raise QtrainError(f"--where {text!r}: {cond.field} holds numbers, and {cond.value!r} is not a number",
                              hint=f"e.g. --where '{cond.field}{cond.op}0.9'")
        runs = [r for r in runs if cond.holds(fields.value(r, cond.field))]
    if sort:
        field = sort.lstrip("-+")
        fields.require(runs, field, "--sort")
        descending = sort.startswith("-")
        present = [r for r in runs if fields.value(r, field) is not None]
        missing = [r for r in runs if fields.value(r, field) is None]

        def key(r: RunRecord):
            v = fields.value(r, field)
            n = _number(v) if not isinstance(v, str) else None
            return (0, n, "") if n is not None else (1, 0.0, str(v))

        runs = sorted(present, key=key, reverse=descending) + missing
    return runs[:limit] if limit else runs
