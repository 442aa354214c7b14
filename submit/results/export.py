"""Export runs to MLflow, for teams that track there (`pip install 'qtrain[mlflow]'`).

Everything goes through MLflow's own client (`mlflow.MlflowClient`, `mlflow.pytorch.log_model`);
nothing of MLflow's storage format is written here.

    experiment   the job's name
    run          one per qtrain run, found again by its tag `qtrain.run_id` (so exporting twice
                 updates the same MLflow run); a sweep is a parent run with one nested run per
                 trial (tag `qtrain.trial`)
    params       the resolved job, flattened (train.lr, model.hidden, ...): a trial's own
    metrics      per epoch, with the epoch as step (history.csv: train_loss, val_loss,
                 val_accuracy, lr, ...); final ones as SPLIT/METRIC (test/accuracy,
                 val/f1_macro, baseline/accuracy, ...); a sweep's parent has its best trial's
    tags         qtrain.run_id, backend, profile, task uuid, image digest, dataset and job
                 hashes, executor, qtrain's own tags (tag.KEY) and note
    artifacts    the results contract (metrics.json, history.csv, the plots, model.pt, ...)
    model        `model`, logged with mlflow.pytorch so that mlflow.pytorch.load_model loads it
                 (it takes the preprocessed inputs, as the network does)
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from jobs import settings
from jobs.errors import QtrainError
from jobs.code import ROOT as CODE_DIR
from jobs.results import HISTORY, MODEL, parse_metrics
from runner.api import load_model, output_hook
from submit.backends.footprint import FIELDS as FOOTPRINT_FIELDS
from submit.results.query import flatten, job_fields, resolved, trial_job
from submit.store import RunRecord, Store

RUN_TAG = "qtrain.run_id"
TRIAL_TAG = "qtrain.trial"  # "run" for a run (or a sweep's parent), else the trial number
MODEL_TAG = "qtrain.model_logged"
PARAM_LIMIT = 6000  # MLflow's longest param value
STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
SPLITS = ("train", "val", "test", "baseline")


@dataclass
class Exported:
    run_id: str
    experiment: str
    mlflow_run_id: str
    tracking_uri: str
    updated: bool  # the MLflow run existed already
    trial_runs: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise QtrainError("MLflow export needs MLflow, which is not installed",
                          hint="pip install 'qtrain[mlflow]'") from None
    return mlflow


def tracking_uri(uri: str | None) -> str:
    uri = uri or settings.submission().mlflow_tracking_uri
    if not uri:
        raise QtrainError("MLflow export: no tracking URI",
                          hint="give --mlflow URI (e.g. http://mlflow:5000 or sqlite:///mlflow.db) "
                               "or set MLFLOW_TRACKING_URI")
    return uri


# MLflow retries a request 7 times with a doubling backoff by default: minutes before an
# unreachable server is reported.  An export says so in seconds unless the user chose otherwise.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def export_run(record: RunRecord, store: Store, uri: str | None = None) -> Exported:
    """Export one run (a sweep: its parent and trial runs); returns where it went."""
    uri = tracking_uri(uri)
    settings.library_defaults(HTTP_DEFAULTS)
    mlflow = _mlflow()
    if record.pending:
        raise QtrainError(f"run {record.run_id}: its results are not in the store yet ({record.state})",
                          hint=f"qtrain fetch {record.run_id}, then export it")
    try:
        return _export(mlflow, record, store, uri)
    except QtrainError:
        raise
    except Exception as exc:  # MLflow's own errors (server down, refused, bad URI): one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QtrainError(f"MLflow export of {record.run_id} to {uri}: {message}",
                          hint="check the tracking URI and that the server answers") from exc


def _export(mlflow, record: RunRecord, store: Store, uri: str) -> Exported:
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = _experiment(client, record.job_name, uri)
    parent, updated = _run(client, experiment_id, record, "run")
    base = store.artifacts_dir(record.run_id)
    if record.trials:
        sweep = record.sweep()
        best = sweep.best.trial if sweep.best else None
        best_metrics = record.metrics.get(best) if best is not None else None
        _fill(mlflow, client, uri, parent, record, _params(resolved(record.job)), best_metrics, history=None, folder=base, files_only=True, model_folder=None,
              extra_tags={"qtrain.best_trial": "" if best is None else str(best),
                          "qtrain.selection": sweep.selection})
        trials = {}
        for trial in range(record.trials):
            child, _ = _run(client, experiment_id, record, str(trial), parent=parent)
            folder = store.artifacts_dir(record.run_id, trial)
            _fill(mlflow, client, uri, child, record, _params(trial_job(record, trial)),
                  record.metrics.get(trial), history=folder / HISTORY, folder=folder, files_only=False, model_folder=folder,
                  extra_tags={"qtrain.best": str(trial == best).lower()}, trial=trial)
            trials[trial] = child
        return Exported(record.run_id, record.job_name, parent, uri, updated, trials)
    _fill(mlflow, client, uri, parent, record, _params(resolved(record.job)), record.metrics.get(-1),
          history=base / HISTORY,
          folder=base, files_only=False, model_folder=base)
    return Exported(record.run_id, record.job_name, parent, uri, updated)


def _params(job: dict[str, Any]) -> dict[str, Any]:
    """A resolved job as MLflow params: its settings flattened (train.lr, model.hidden, ...; a
    script job: script.args.*, data.path and what it was told)."""
    if job.get("script"):
        return job_fields(job)
    return flatten({k: v for k, v in job.items() if k != "description"})


def _experiment(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the current folder
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _run(client, experiment_id: str, record: RunRecord, trial: str, parent: str | None = None) -> tuple[str, bool]:
    """The MLflow run of this qtrain run (or trial): found by its tags, else created."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{record.run_id}' and tags.`{TRIAL_TAG}` = '{trial}'",
        max_results=1)
    if found:
        return found[0].info.run_id, True
    tags = {RUN_TAG: record.run_id, TRIAL_TAG: trial}
    if parent:
        tags["mlflow.parentRunId"] = parent
    name = record.run_id if trial == "run" else f"{record.run_id} trial {trial}"
    run = client.create_run(experiment_id, start_time=_ms(record.created), tags=tags, run_name=name)
    return run.info.run_id, False


def _fill(mlflow, client, uri: str, run_id: str, record: RunRecord, params: dict[str, Any],
          metrics: dict[str, Any] | None, *, history: Path | None, folder: Path, files_only: bool,
          model_folder: Path | None, extra_tags: dict[str, str] | None = None, trial: int | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    existing = client.get_run(run_id).data
    stamp = _ms(record.history[-1]["at"]) if record.history else _ms(record.created)
    new_params = [Param(k, _param(v)) for k, v in params.items() if k not in existing.params]
    logged = set(existing.metrics)
    series: list[Metric] = []
    for key, step, value in _epochs(history):
        if key not in logged:
            series.append(Metric(key, value, stamp, step))
    m = parse_metrics(metrics)
    if m is not None:
        for split in SPLITS:
            for name, value in (getattr(m, split, None) or {}).items():
                key = f"{split}/{name}"
                if key not in logged and _finite(value):
                    series.append(Metric(key, float(value), stamp, 0))
        for key, value in (("epochs_run", metrics.get("epochs_run")),
                           ("train_seconds", (metrics.get("timings") or {}).get("train_seconds")),
                           *((f"reported/{k}", v) for k, v in m.reported.items())):  # a script's own numbers
            if key not in logged and _finite(value):
                series.append(Metric(key, float(value), stamp, 0))
    if trial is None:  # what the run's task cost and emitted (a sweep: on its parent run); unknown: not logged
        footprint = record.info.get("footprint") or {}
        for name in FOOTPRINT_FIELDS:
            key = f"footprint/{name}"
            if key not in logged and _finite(footprint.get(name)):
                series.append(Metric(key, float(footprint[name]), stamp, 0))
        if footprint.get("source"):
            extra_tags = {**(extra_tags or {}), "qtrain.footprint_source": footprint["source"]}
    tags = [RunTag(k, v) for k, v in {**_tags(record, trial), **(extra_tags or {})}.items()]
    for start in range(0, len(series), 1000):  # MLflow's batch limits: 1000 metrics, 100 params/tags
        client.log_batch(run_id, metrics=series[start:start + 1000])
    for start in range(0, len(new_params), 100):
        client.log_batch(run_id, params=new_params[start:start + 100])
    for start in range(0, len(tags), 100):
        client.log_batch(run_id, tags=tags[start:start + 100])
    for path in sorted(folder.rglob("*") if not files_only else folder.iterdir()):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            parent = relative.parent.as_posix()
            client.log_artifact(run_id, str(path), artifact_path=None if parent == "." else parent)
    # a script job's model.pt is the script's own (an artifact above): only its code can load it
    if model_folder is not None and (model_folder / MODEL).is_file() and MODEL_TAG not in existing.tags \
            and not record.job.get("script"):
        _log_model(mlflow, uri, run_id, model_folder)
        client.set_tag(run_id, MODEL_TAG, "true")
    end = _ms(record.history[-1]["at"]) if record.history else None
    client.set_terminated(run_id, status=STATUS.get(record.state, "FINISHED"), end_time=end)


def _log_model(mlflow, uri: str, run_id: str, folder: Path) -> None:
    import numpy as np
    import torch

    predictor = load_model(folder / MODEL)
    pre = predictor.preprocess
    shape = [len(pre.get("outputs") or [])] if pre.get("kind") == "table" else list(pre.get("shape") or [])
    example = np.zeros([2, *shape], dtype=np.float32)
    # a module model's class lives in its code (code/ beside model.pt): logged with it, each
    # top-level file or package on its own so that it imports as it did in training
    code = folder / CODE_DIR
    code_paths = [str(p) for p in sorted(code.iterdir())] if code.is_dir() else None
    with _tracking(mlflow, uri), mlflow.start_run(run_id=run_id, nested=True), output_hook_by_value():
        mlflow.pytorch.log_model(predictor.model, name="model", input_example=example, code_paths=code_paths,
                                 pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


@contextlib.contextmanager
def output_hook_by_value() -> Iterator[None]:
    """A module model carries the forward hook that takes its output tensor from a tuple, a dict or
    a ModelOutput (`runner.outputs`): pickled by value, so that the model loads without qtrain."""
    import cloudpickle

    hook = output_hook()
    cloudpickle.register_pickle_by_value(hook)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(hook)


@contextlib.contextmanager
def _tracking(mlflow, uri: str) -> Iterator[None]:
    """The fluent API's tracking URI set to `uri` for a moment (log_model has no client form)."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _tags(record: RunRecord, trial: int | None) -> dict[str, str]:
    info = record.info
    tags = {
        RUN_TAG: record.run_id, TRIAL_TAG: "run" if trial is None else str(trial),
        "qtrain.job": record.job_name, "qtrain.task": record.task, "qtrain.state": record.state,
        "qtrain.backend": record.backend, "qtrain.profile": record.profile,
        "qtrain.task_uuid": record.task_uuid or "", "qtrain.dataset_hash": record.dataset_hash,
        "qtrain.job_hash": record.job_hash, "qtrain.image": info.get("image") or "",
        "qtrain.image_digest": info.get("image_digest") or "",
        "qtrain.executor": info.get("execution") or info.get("executor") or "",
    }
    for key, value in record.tags.items():
        tags[f"tag.{key}"] = value
    if record.note:
        tags["mlflow.note.content"] = record.note
    return {k: v for k, v in tags.items() if v != ""}


def _epochs(history: Path | None) -> Iterator[tuple[str, int, float]]:
    if history is None or not history.is_file():
        return
    with open(history, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                step = int(float(row.get("epoch") or ""))
            except ValueError:
                continue
            for key, value in row.items():
                if key == "epoch" or value in ("", None):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    yield key, step, number


def _param(value: Any) -> str:
    text = "None" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:PARAM_LIMIT]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
