"""The results contract: what a run writes, where, how it is read, and which trial is the best.

The output twin of `jobs/spec.py`, shared by the runner (which writes it inside the container) and
the submitter (which retrieves, indexes, lists, compares and predicts from it).  No torch here.

    out/                      $QARNOT_RESULTS_DIRECTORY/out: the only folder that comes back
      metrics.json            `Metrics`: train/val/test/baseline metrics, timings, device, epochs
      run.json                `RunInfo`: job and dataset hashes, versions, device, seed, the job
      history.csv, loss_curve.png
      predictions.csv         test rows: row id, true, predicted (+ one probability per class)
      confusion_matrix.csv, confusion_matrix_pct.csv, confusion_matrix.png   (classification)
      model.pt                weights + arch + fitted preprocessing (runner.predict)
      checkpoint.pt           what `resume` needs
    a sweep: out/trial-<i>/ (the files above, one folder per trial) + out/sweep.json (`SweepSummary`)

The selection rule (`select_best`): a sweep's best trial is the one with the best *validation*
headline; a job without a validation split is compared on the training loss, and the summary says
so.  The test split is never used to choose: its numbers are reported for the chosen trial only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, NamedTuple, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from jobs import code
from jobs.files import PATH_FIELDS, JobFile, get_dotted, local_value, portable_path
from jobs.spec import Job, Task

# ------------------------------------------------------------------------------------ layout
OUT = "out"  # under $QARNOT_RESULTS_DIRECTORY; the results whitelist of every task
METRICS = "metrics.json"
RUN_INFO = "run.json"
SWEEP = "sweep.json"
HISTORY = "history.csv"
LOSS_CURVE = "loss_curve.png"
PREDICTIONS = "predictions.csv"
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_INFO = "checkpoint.json"  # beside a script's checkpoint.pt: the epoch it was written after
CONFUSION = "confusion_matrix.csv"
CONFUSION_PCT = "confusion_matrix_pct.csv"
CONFUSION_PNG = "confusion_matrix.png"
REGRESSION_PNG = "regression.png"  # predicted vs actual, and residuals (test split)
SWEEP_CSV = "sweep.csv"  # one row per trial: its overrides and metrics
SWEEP_PNG = "sweep.png"  # the headline metric per trial, the best marked
RESULT_FILES = (METRICS, HISTORY, LOSS_CURVE, PREDICTIONS, MODEL, CHECKPOINT, RUN_INFO)
CLASSIFICATION_FILES = (CONFUSION, CONFUSION_PCT, CONFUSION_PNG)
REGRESSION_FILES = (REGRESSION_PNG,)
SWEEP_FILES = (SWEEP, SWEEP_CSV, SWEEP_PNG)
TRIAL_PREFIX = "trial-"


def trial_dir(trial: int) -> str:
    """The folder of sweep trial `trial` (= the Qarnot INSTANCE_ID) inside a run's results."""
    return f"{TRIAL_PREFIX}{int(trial)}"


def trial_of(name: str) -> int | None:
    """`trial-3` -> 3; anything else -> None."""
    if name.startswith(TRIAL_PREFIX) and name[len(TRIAL_PREFIX):].isdigit():
        return int(name[len(TRIAL_PREFIX):])
    return None


# ---------------------------------------------------------------------------------- headline
class Headline(NamedTuple):
    metric: str  # the metric a run is judged by
    mode: Literal["max", "min"]  # bigger is better, or smaller


HEADLINES: dict[str, Headline] = {"classification": Headline("accuracy", "max"),
                                  "regression": Headline("rmse", "min")}


def headline(task: str) -> Headline:
    return HEADLINES[task]


# ----------------------------------------------------------------------------------- records
class Record(BaseModel):
    """Base of the files' records: known fields typed, unknown ones kept (newer runners)."""

    model_config = ConfigDict(extra="allow")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Metrics(Record):
    """metrics.json: one trained model's numbers."""

    task: Task | None  # null: a script job that reported no predictions (its own numbers only)
    headline: str = ""
    train: dict[str, Any] = {}
    val: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    train_loss: float | None = None  # the training loss of the weights kept (selection w/o val)
    device: str | None = None
    epochs_run: int | None = None
    epochs: int | None = None
    batch_size: int | None = None  # samples per step, as resolved (train.batch_size auto/full)
    best_epoch: int | None = None
    early_stop_epoch: int | None = None
    monitor: str | None = None
    resumed_from_epoch: int | None = None
    parameters: dict[str, int] = {}
    timings: dict[str, float | None] = {}
    notes: list[str] = []  # what the numbers hide, e.g. accuracy near the majority baseline
    reported: dict[str, Any] = {}  # a script job's own final numbers (runner.script.log_metrics)
    trained_by: str | None = None  # "script": a script job's numbers, as it reported them

    def model_post_init(self, _context: Any) -> None:
        if not self.headline and self.task is not None:
            self.headline = headline(self.task).metric

    def score(self, split: str, metric: str | None = None) -> float | None:
        """A finite number from one split (`train`, `val`, `test`, `baseline`), or None."""
        values = getattr(self, split, None) or {}
        return _number(values.get(metric or self.headline))


class Best(Record):
    trial: int
    overrides: dict[str, Any] = {}
    value: float | None = None  # the selection value (validation headline, or training loss)


class TrialResult(Record):
    trial: int
    overrides: dict[str, Any] = {}
    metrics: Metrics | None = None  # None: the trial failed or its results are missing


class SweepSummary(Record):
    """sweep.json, and what every reader of a sweep shows."""

    job_name: str = ""
    selection: str  # what chose the best trial: "val_accuracy", "val_rmse" or "train_loss"
    note: str | None = None  # why, when it is not the validation headline
    trials: list[TrialResult] = []
    best: Best | None = None


class RunInfo(Record):
    """run.json: what ran, on what, from which job and data."""

    job_name: str
    job_hash: str  # `job_hash` of the job as submitted (a sweep's, sweep included)
    dataset_hash: str  # `dataset_hash` of the files it read
    dataset_files: list[str] = []  # their paths in the task's working directory
    trial: int | None = None
    overrides: dict[str, Any] | None = None
    seed: int | None = None
    device: str | None = None
    threads: int | None = None  # torch's CPU threads
    cuda: str | None = None
    host: str | None = None
    image_digest: str | None = None
    image_source_digest: str | None = None
    # how the emulator ran it: docker (a fresh container), docker-warm (forked in a warm container
    # of the same image), process or process-warm; None on Qarnot
    execution: str | None = None
    versions: dict[str, str] = {}
    timings: dict[str, float | None] = {}
    job: dict[str, Any] = {}  # the trial's resolved job


# --------------------------------------------------------------------------------- selection
NO_VALIDATION = ("no validation split: trials compared on their training loss; set split.val_size "
                 "(e.g. 0.15) to choose on held-out data")
SCRIPT_NO_VALIDATION = ("the script reports no validation metric: trials compared on their training loss; report one "
                        "(runner.script.log_epoch(epoch, val_accuracy=...), or script.metrics: {val_accuracy: REGEX} "
                        "on what it prints) to choose on held-out data")
SCRIPT_NOTHING = ("the script reports no metric to compare its trials on: report a validation metric "
                  "(runner.script.log_epoch(epoch, val_accuracy=...), or script.metrics: {val_accuracy: REGEX})")
# a metric a script reports, when its job names no task: the first of these it has, else any
PREFERRED = ("accuracy", "f1_macro", "r2", "rmse", "mae", "loss")
SMALLER_IS_BETTER = ("loss", "rmse", "mae", "mse", "error", "err", "perplexity", "wer", "cer")


def better(metric: str) -> Literal["max", "min"]:
    """Whether a metric is better bigger or smaller, by its name (loss, rmse, *_error: smaller)."""
    words = re.split(r"[_.\-]", metric.lower())
    return "min" if any(w in SMALLER_IS_BETTER for w in words) else "max"


def select_best(task: str | None, trials: Iterable[TrialResult], job_name: str = "") -> SweepSummary:
    """The sweep summary of `trials`, with the best one chosen on the validation headline (a
    script job without a task: the validation metric it reports, PREFERRED first), else on the
    training loss, and `note` says so."""
    rows = sorted(trials, key=lambda r: r.trial)
    scored = [r for r in rows if r.metrics is not None]
    script = any(r.metrics.trained_by == "script" for r in scored)
    shared = set.intersection(*(set((r.metrics.val or {})) for r in scored)) if scored else set()
    names = ([headline(task).metric] if task else []) + \
        ([*[m for m in PREFERRED if m in shared], *sorted(shared)] if script or not task else [])
    metric = next((m for m in names if all(r.metrics.score("val", m) is not None for r in scored)), None)
    if scored and metric is not None:
        selection, note = f"val_{metric}", None
        mode = headline(task).mode if task and metric == headline(task).metric else better(metric)

        def value(r: TrialResult) -> float | None:
            return r.metrics.score("val", metric)
    else:
        selection, mode = "train_loss", "min"
        note = (SCRIPT_NO_VALIDATION if script else NO_VALIDATION) if scored else None
        if script and not any(_number(r.metrics.train_loss) is not None for r in scored):
            note = SCRIPT_NOTHING

        def value(r: TrialResult) -> float | None:
            return _number(r.metrics.train_loss)
    candidates = [r for r in scored if value(r) is not None]
    best = None
    if candidates:  # ties: the lowest trial number
        pick = (max if mode == "max" else min)(candidates, key=value)
        best = Best(trial=pick.trial, overrides=pick.overrides, value=value(pick))
    return SweepSummary(job_name=job_name, selection=selection, note=note, trials=rows, best=best)


def summarize(task: str | None, metrics: Mapping[int, Metrics | dict[str, Any] | None],
              overrides: Sequence[dict[str, Any]] = (), job_name: str = "") -> SweepSummary:
    """`select_best` over {trial: metrics} (records or plain dicts, e.g. from the store's index);
    `overrides[i]` is what trial i changed; trials without metrics are listed as failed."""
    count = max([len(overrides), *(t + 1 for t in metrics)], default=0)
    rows = []
    for i in range(count):
        m = metrics.get(i)
        rows.append(TrialResult(trial=i, overrides=overrides[i] if i < len(overrides) else {},
                                metrics=parse_metrics(m) if isinstance(m, dict) else m))
    return select_best(task, rows, job_name)


def parse_metrics(data: dict[str, Any] | None) -> Metrics | None:
    """A metrics.json object as a record; None when it is not one (a truncated or foreign file)."""
    if not isinstance(data, dict):
        return None
    try:
        return Metrics.model_validate(data)
    except ValidationError:
        return None


# ------------------------------------------------------------------------------------ hashes
def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


# fields added since the first version: left out of the job hash at their default, so the hash
# of a job written before them (its check verdict, its checkpoints' resume key) is unchanged
ADDED_AT_DEFAULT: dict[str, Any] = {"data.follow_symlinks": False, "data.encoding": "utf-8", "script": None,
                                    "resources.requirements": None, "resources.max_minutes": None,
                                    "data.image_column": None, "data.image_size": None, "data.strict": False,
                                    "preprocess.augment": {"flip": False, "crop": 1.0, "jitter": 0.0}, "train.refit": "auto",
                                    "resources.nodes": 1, "resources.procs_per_node": "auto",
                                    "data.max_image_pixels": 40_000_000, "script.metrics": {}}


def job_hash(job: Job, code_hash: str | None = None) -> str:
    """sha256 of the job's fields, its local paths written as in the task (`data/<name>`,
    `code/...`), and of its code (`code_hash`: `jobs.code.Code.hash`, for a module or script
    job): the same job has the same hash on a laptop, in the store and in the task's run.json,
    and changed code is a changed job."""
    dumped = job.model_dump(mode="json")
    for field in PATH_FIELDS:
        value = get_dotted(dumped, field)
        if local_value(value):
            section, _, key = field.partition(".")
            dumped[section][key] = portable_path(field, value)
    for field, value in code.portable(job).items():
        section, _, key = field.partition(".")
        dumped[section][key] = value
    for field, default in ADDED_AT_DEFAULT.items():  # jobs that do not use them keep their hash
        section, _, key = field.rpartition(".")
        holder = dumped.get(section) if section else dumped
        if isinstance(holder, dict) and key in holder and holder[key] == default:
            del holder[key]
    if code_hash is not None:
        dumped["code"] = code_hash
    return hashlib.sha256(_canonical(dumped)).hexdigest()


def dataset_hash(job: Job, files: Sequence[JobFile]) -> str:
    """sha256 over every local file the job reads (its path in the task, and its sha256); for a
    built-in dataset, over its name and options."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.remote):
        h.update(f"{f.remote}\0{f.sha256}\n".encode())
    if not files and job.data is not None:
        h.update(_canonical({"path": job.data.path, "options": job.data.options}))
    return h.hexdigest()


# ------------------------------------------------------------------------------------ reader
def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is missing or not whole."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def atomic_write(path: Path, data: bytes | str, mode: int = 0o666) -> None:
    """Write to a temporary name beside `path`, then rename: a reader never sees half a file.  The
    file is created with `mode` (less the umask), so a secret (0o600) is never readable by others,
    not even for the moment before a chmod."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        if mode & 0o077 == 0:
            os.chmod(tmp, mode)  # an existing leftover tmp keeps its old mode otherwise
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_record(path: Path, record: BaseModel) -> None:
    atomic_write(path, record.model_dump_json(indent=2) + "\n")


class RunResults:
    """One run's results folder (a task's out/, a store's runs/<id>/, `qtrain train --out`)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def trials(self) -> list[int]:
        """The sweep trials that have a folder here, in order ([] for a single run)."""
        if not self.root.is_dir():
            return []
        found = (trial_of(p.name) for p in self.root.iterdir() if p.is_dir())
        return sorted(t for t in found if t is not None)

    @property
    def is_sweep(self) -> bool:
        return bool(self.trials) or (self.root / SWEEP).is_file()

    def folder(self, trial: int | None = None) -> Path:
        return self.root if trial is None else self.root / trial_dir(trial)

    def metrics(self, trial: int | None = None) -> Metrics | None:
        return parse_metrics(read_json(self.folder(trial) / METRICS))

    def best_trial(self) -> int | None:
        """The trial `select_best` chooses (None for a single run, or a sweep with no results)."""
        if not self.is_sweep:
            return None
        metrics = {t: self.metrics(t) for t in self.trials}
        if not any(m is not None for m in metrics.values()):
            return None
        best = summarize(next((m.task for m in metrics.values() if m is not None and m.task), None), metrics).best
        return best.trial if best else None


# ---------------------------------------------------------------------------- runner's lines
PREFIX = "[qtrain]"  # every line the runner prints starts with it
SKIPPED = "of output skipped"  # the emulator's line, in a fresh read, for lines it dropped unread


def epoch_line(fields: dict[str, object]) -> str:
    """`[qtrain] epoch=3/20 train_loss=0.4123 val_loss=... elapsed=1.23s`: key=value pairs."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.3f}s" if key == "elapsed" else f"{value:.6g}"
        parts.append(f"{key}={value}")
    return f"{PREFIX} " + " ".join(parts)


def parse_epoch_line(line: str) -> dict[str, str] | None:
    """The inverse of `epoch_line` (tolerates a Qarnot per-instance `N> ` prefix)."""
    start = line.find(f"{PREFIX} epoch=")
    if start < 0:
        return None
    fields = {}
    for token in line[start + len(PREFIX):].split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields
