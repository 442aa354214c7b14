"""One training run, top to bottom: load -> prepare -> build -> train -> evaluate -> write.

`run_job` is what `python -m runner` (inside the container) and `qtrain train` (locally) call;
`check_job` is the preflight that does every step once on a small batch.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from jobs import settings
from jobs.errors import DataError, QtrainError, TimeLimitReached
from jobs.code import find_code
from jobs.files import job_files
from jobs.load import LoadedJob, format_trial
from jobs.results import (CHECKPOINT, METRICS, MODEL, PREDICTIONS, RUN_INFO, SWEEP, Metrics, RunInfo,
                          TrialResult, dataset_hash, headline, job_hash, select_best, trial_dir)
from runner import log
from runner.audit import Finding, audit_table
from runner.data import Dataset, Table, describe, load_dataset
from runner.evaluate import baseline, confusion, split_metrics, to_predictions
from runner.models import (MODEL_FORMAT, Net, build_from_arch, count_parameters, make_arch, materialize, save_code,
                           storable_arch)
from runner.prepare import Prepared, prepare
from runner.report import (plot_title, versions, write_confusion, write_csv, write_history, write_json, write_regression,
                           write_sweep_report)
from runner.batches import predict_raw
from runner import distributed, refit
from runner.train import Trainer, TrainResult, keep_freed_memory, seed_everything, select_device, set_threads




# ------------------------------------------------------------------------------------- build
@dataclass
class Built:
    data: Dataset
    prepared: Prepared
    arch: dict[str, Any]
    model: Net
    device: torch.device
    timings: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)  # the data's warnings (runner.audit)


def build(loaded: LoadedJob) -> Built:
    job = loaded.job
    t0 = time.perf_counter()
    data = load_dataset(job, loaded.base_dir)
    findings = audit(data, job)
    prepared = prepare(data, job)
    t1 = time.perf_counter()
    device = select_device(job.train.device)
    seed_everything(job.train.seed)
    set_threads(job.train)
    keep_freed_memory()
    arch = make_arch(job.model, prepared.input_shape, prepared.n_outputs, loaded.base_dir,
                     classification=prepared.classes is not None)
    model = materialize(build_from_arch(arch), prepared.x["train"])
    return Built(data, prepared, arch, model, device, {"load_seconds": t1 - t0}, findings)


def audit(data: Dataset, job) -> list[Finding]:
    """The table judged against the task (`runner.audit`): the first error stops everything,
    warnings are printed and returned."""
    if not isinstance(data, Table):
        return []
    findings = audit_table(data.frame, data.features, data.target, job, f"data.path {job.data.path}")
    for f in findings:
        if f.level == "error":
            raise DataError(f.message, hint=f.hint)
    for f in findings:
        log.warn(f.line())
    return findings


# ---------------------------------------------------------------------------------- evaluate
def predict_split(model: Net, prepared: Prepared, x: torch.Tensor):
    """(predictions, probabilities or None) for a split's inputs, in the target's own units."""
    return to_predictions(predict_raw(model, x), prepared.classes, prepared.state.get("target"))


def evaluate_all(b: Built, job, inputs: dict[str, torch.Tensor],
                 splits: tuple[str, ...] = ("train", "val", "test")) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics per split of `splits` + baseline, test predictions); `inputs` are the trainer's
    device tensors."""
    p = b.prepared
    result: dict[str, Any] = {}
    test_out: dict[str, Any] = {}
    for split in splits:
        if split not in p.splits:
            continue
        pred, proba = predict_split(b.model, p, inputs[split])
        result[split] = split_metrics(p.y[split], pred, proba, p.classes)
        if split == "test":
            test_out = {"pred": pred, "proba": proba}
    if "test" in p.splits and "test" in splits:
        result["baseline"] = baseline(job.task, p.y["train"], p.y["test"], p.classes, p.today)
    return result, test_out


def predictions_frame(p: Prepared, pred: np.ndarray, proba: np.ndarray | None) -> pd.DataFrame:
    frame = pd.DataFrame({"row": p.rows["test"]})
    if p.classes is not None:
        names = np.array(p.classes, dtype=object)
        frame["true"] = names[p.y["test"]]
        frame["predicted"] = names[pred]
        for i, c in enumerate(p.classes):
            frame[f"prob_{c}"] = proba[:, i]
    else:
        frame["true"] = p.y["test"]
        frame["predicted"] = pred
    return frame


# ---------------------------------------------------------------------------------------- run
def run_job(loaded: LoadedJob, out_dir: Path, *, resume: bool = False,
            trial: int | None = None, deadline: float | None = None) -> dict[str, Any]:
    """Train and write the results contract to `out_dir`; returns metrics.json's content.

    A job with a sweep runs trial `trial` (the Qarnot INSTANCE_ID) into `out_dir`, or, with
    `trial=None`, every trial in turn into `out_dir/trial-<i>` plus a `sweep.json` summary.
    `deadline` (time.monotonic()): training stops before an epoch that would end past it, its
    results and checkpoint written, then TimeLimitReached.
    """
    if loaded.trials and trial is None:
        return run_sweep(loaded, out_dir, resume=resume, deadline=deadline)
    # the hashes are those of the job as submitted (a sweep's, sweep included): as in the store
    files = job_files(loaded.job, loaded.base_dir)
    code = find_code(loaded.job, loaded.base_dir, loaded.source)  # in the task: code/, as the submitter hashed it
    code_hash = code.hash() if code else None
    jhash, dhash = job_hash(loaded.job, code_hash), dataset_hash(loaded.job, files)
    overrides = None
    if loaded.trials:
        overrides = loaded.trials[trial]
        log.info(f"sweep trial {trial}/{len(loaded.trials) - 1}: {format_trial(overrides)}")
        loaded = loaded.trial(trial)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = loaded.job
    # a checkpoint may be resumed with more epochs or another checkpoint cadence
    resume_hash = job_hash(job.model_copy(update={"train": job.train.model_copy(
        update={"epochs": 1, "checkpoint_every": 0, "checkpoint_minutes": 0})}), code_hash)
    t_start = time.perf_counter()
    b = build(loaded)
    p = b.prepared
    total, trainable = count_parameters(b.model)
    log.info(f"job {job.name}: {job.task}, {describe(b.data)['rows']} rows -> "
             f"train {len(p.y['train'])} / val {len(p.y.get('val', []))} / test "
             f"{len(p.y.get('test', []))}, {len(p.feature_names)} features, {trainable} trainable "
             f"parameters, device {b.device}")
    checkpoint = out_dir / CHECKPOINT
    t_choose = time.perf_counter()
    choice, fit_job = choose(b, job), job
    if choice is not None:  # the final model: the chosen one, on train + validation
        log.info(choice.record()["text"])
        seed_everything(job.train.seed)
        b.arch, b.model, b.prepared = choice.arch, build_from_arch(choice.arch), refit.pooled(p)
        p, fit_job = b.prepared, refit.refit_job(job, choice)
    choose_seconds = time.perf_counter() - t_choose
    trainer = Trainer(b.model, p, fit_job, b.device, resume_hash, checkpoint, deadline=deadline)
    result = trainer.fit(resume_from=checkpoint if resume else None)
    if not trainer.rank.main:  # rank 0 evaluates and writes; the others' work is done
        return {}
    if choice is not None:
        result.history = refit.merge_history(result.history, choice.curve)
        result.best_epoch = choice.epochs
    t_eval = time.perf_counter()
    metrics, test_out = evaluate_all(b, job, trainer.data.x)
    if choice is not None:
        if choice.val_metrics is not None:
            metrics["val"] = choice.val_metrics
        metrics["refit"] = choice.record()
    timings = {
        "load_seconds": b.timings["load_seconds"],
        "train_seconds": result.train_seconds,
        "evaluate_seconds": time.perf_counter() - t_eval,
        "samples_per_second": result.samples_per_second,
    }
    if choice is not None:
        timings["choose_seconds"] = choose_seconds  # cross-validation, or the run on the validation split
    head = headline(job.task).metric
    metrics.update({
        "task": job.task, "headline": head, "train_loss": kept_train_loss(result, job),
        "device": str(b.device),
        "epochs_run": result.epochs_run, "epochs": job.train.epochs, "batch_size": trainer.batch_size,
        "best_epoch": result.best_epoch, "early_stop_epoch": result.early_stop_epoch,
        "monitor": trainer.monitor if choice is None else choice.monitor,
        "resumed_from_epoch": result.resumed_from,
        "parameters": {"total": total, "trainable": trainable},
        "timings": timings,
    })
    if trainer.sampler is not None:
        metrics["distributed"] = distributed.describe(job, trainer.rank, trainer.batch_size,
                                                      torch.distributed.get_backend())
    title = plot_title(job.name, out_dir, trial, overrides)
    stopped = (f"stopped by resources.max_minutes ({job.resources.max_minutes:g} min) after epoch "
               f"{result.time_limited} of {job.train.epochs}" if result.time_limited else None)
    notes = [n for n in (imbalance_note(metrics, p, job), stopped) if n]
    if notes:
        metrics["notes"] = notes
        for note in notes:
            log.warn(note)
    if p.classes is not None and "test" in p.splits:
        write_confusion(out_dir, confusion(p.y["test"], test_out["pred"], len(p.classes)), p.classes,
                        title)
    if "test" in p.splits:
        write_csv(out_dir / PREDICTIONS, predictions_frame(p, test_out["pred"], test_out["proba"]))
        if p.classes is None and len(p.y["test"]):
            write_regression(out_dir, p.y["test"], test_out["pred"], title)
    write_history(out_dir, result.history, title, head)
    save_model(out_dir / MODEL, b, loaded)
    timings["total_seconds"] = time.perf_counter() - t_start
    Metrics.model_validate(metrics)  # the contract, checked where it is written
    write_json(out_dir / METRICS, metrics)
    env = settings.task()
    info = RunInfo(
        job_name=job.name, job_hash=jhash, dataset_hash=dhash,
        dataset_files=[f.remote for f in files], trial=trial, overrides=overrides,
        seed=job.train.seed, device=str(b.device), threads=torch.get_num_threads(),
        cuda=torch.cuda.get_device_name(0) if b.device.type == "cuda" else None,
        host=socket.gethostname(), image_digest=_image_digest(),
        image_source_digest=env.source_digest, execution=env.execution,
        versions=versions(), timings=timings, job=job.model_dump(mode="json"))
    write_json(out_dir / RUN_INFO, info.model_dump())
    test = metrics.get("test", {})
    base = metrics.get("baseline", {})
    if head in test:
        log.info(f"done: test {head}={test[head]:.4f} (baseline {base.get(head, float('nan')):.4f}) "
                 f"in {timings['total_seconds']:.1f}s -> {out_dir}")
    if result.time_limited:
        raise TimeLimitReached(f"{stopped}: its results and checkpoint are written",
                               hint="qtrain resume continues it; or raise resources.max_minutes")
    return metrics


def choose(b: Built, job) -> "refit.Choice | None":
    """What `train.refit` chooses on held-out rows before the final model trains (runner/refit.py):
    cross-validated on a small table; on a larger one with `refit: true`, early stopping on the
    validation split, its metrics kept as the run's validation metrics."""
    how = refit.mode(job, b.prepared)
    if how == "cv":
        return refit.cross_validate(job, b.prepared, b.arch, b.device)
    if how != "val":
        return None
    first = Trainer(b.model, b.prepared, refit.quiet(job), b.device, "refit")
    result = first.fit()
    choice = refit.from_validation(result.history, result.best_epoch or result.epochs_run, b.arch,
                                   refit.label_of(job.model),
                                   len(b.prepared.y["train"]) + len(b.prepared.y["val"]), result.best_value)
    choice.val_metrics = evaluate_all(b, job, first.data.x, ("val",))[0].get("val")
    return choice


def imbalance_note(metrics: dict[str, Any], p: Prepared, job) -> str | None:
    """When a classification run's test accuracy is within 2 points of always answering the
    majority class while a class is under 10% of the rows, accuracy says little: say so."""
    if p.classes is None or job.train.class_weights != "none":
        return None
    test, base = metrics.get("test") or {}, metrics.get("baseline") or {}
    if "accuracy" not in test or "accuracy" not in base or test["accuracy"] - base["accuracy"] >= 0.02:
        return None
    counts = np.bincount(np.concatenate([p.y[s] for s in p.splits]), minlength=len(p.classes))
    rare = int(np.argmin(counts))
    share = counts[rare] / counts.sum()
    if share >= 0.10:
        return None
    return (f"test accuracy {test['accuracy']:.4f} is within 2 points of always answering the majority "
            f"class ({base['accuracy']:.4f}) while class '{p.classes[rare]}' is {share:.0%} of the rows: "
            f"look at balanced_accuracy ({test.get('balanced_accuracy', float('nan')):.4f}) and f1_macro "
            f"({test.get('f1_macro', float('nan')):.4f}), and try train.class_weights: balanced")




def kept_train_loss(result: TrainResult, job) -> float | None:
    """The training loss of the weights the run keeps: the best epoch's when early stopping
    restored them, else the last epoch's."""
    es = job.train.early_stopping
    epoch = result.best_epoch if (es and es.restore_best and result.best_epoch) else result.epochs_run
    row = next((h for h in result.history if h.get("epoch") == epoch), None)
    return None if row is None else row.get("train_loss")


def run_sweep(loaded: LoadedJob, out_dir: Path, resume: bool = False,
              deadline: float | None = None) -> dict[str, Any]:
    rows = []
    stopped = None
    for i, overrides in enumerate(loaded.trials):
        try:
            metrics = run_job(loaded, out_dir / trial_dir(i), resume=resume, trial=i, deadline=deadline)
        except TimeLimitReached as exc:  # the trials so far summed up, then the sweep stops
            stopped = exc
            metrics = json.loads((out_dir / trial_dir(i) / METRICS).read_text())
        rows.append(TrialResult(trial=i, overrides=overrides, metrics=Metrics.model_validate(metrics)))
        if stopped:
            break
    summary = select_best(loaded.job.task, rows, loaded.job.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / SWEEP, summary.model_dump())
    write_sweep_report(out_dir, summary, plot_title(loaded.job.name, out_dir))
    best = summary.best
    if best is not None:
        log.info(f"sweep done: best trial {best.trial} ({format_trial(best.overrides)}) "
                 f"{summary.selection}={best.value:.4f}")
    if summary.note:
        log.warn(summary.note)
    if stopped is not None:
        raise stopped
    return summary.model_dump()


def forward_check(model: torch.nn.Module, x: torch.Tensor, n_outputs: int, classification: bool,
                  source: str) -> None:
    import inspect

    from runner.usercode import _user_frame, check_output

    from runner.outputs import ACCEPTED, OutputError

    try:
        out = model(x)
    except OutputError as exc:
        raise QtrainError(f"model.class {type(model).__name__}: {exc}", hint=f"qtrain takes {ACCEPTED}") from None
    except Exception as exc:  # noqa: BLE001 - the user's forward failed
        root = Path(inspect.getsourcefile(type(model)) or ".").parent
        raise QtrainError(f"model.class {type(model).__name__}: its forward fails on a batch of shape "
                          f"{tuple(x.shape)}: {_user_frame(exc, root, source)}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}",
                          hint="the batch is what qtrain prepared from the data (see qtrain check)") from None
    check_output(model, out, len(x), n_outputs, classification)


def save_model(path: Path, b: Built, loaded: LoadedJob) -> None:
    job = loaded.job
    state = {
        "format": MODEL_FORMAT,
        "arch": storable_arch(b.arch),
        "model_state": {k: v.detach().cpu() for k, v in b.model.state_dict().items()},
        "preprocess": b.prepared.state,
        "classes": b.prepared.classes,
        "task": job.task,
        "target": job.data.target,
        "feature_names": b.prepared.feature_names,
        "job": json.dumps(job.model_dump(mode="json")),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    if "code" in b.arch:  # the module's code, beside model.pt: the folder rebuilds the model
        from jobs.code import find_code

        save_code([(f.remote, f.local) for f in find_code(job, loaded.base_dir, loaded.source).files], path.parent)


def _image_digest() -> str | None:
    """The runner image's digest: the task constant QTRAIN_IMAGE_DIGEST that `qtrain run` sets
    (the pushed digest, or the local image id), which the emulator's docker executor sets to the
    id of the image it really ran."""
    return settings.task().image_digest


# -------------------------------------------------------------------------------------- check
def check_job(loaded: LoadedJob) -> dict[str, Any]:
    """Every step of a run on a small batch, for each sweep trial.  Raises on the first problem.
    A module job's code is imported as the task will have it: only the files that are shipped."""
    if loaded.job.model.kind == "module" and loaded.job.script is None:
        with tempfile.TemporaryDirectory(prefix="qtrain-check-") as staged:
            try:
                return _check_job(staged_code(loaded, Path(staged)))
            except QtrainError as exc:  # said of the user's files, not of their staged copies
                origin = Path(loaded.job.model.source)
                shown = f"{origin.parent}/" if origin.suffix == ".py" else f"{origin}/"
                exc.message = exc.message.replace(f"{Path(staged) / 'code'}/", "" if shown == "./" else shown)
                raise QtrainError(exc.message, hint=exc.hint) from None
    return _check_job(loaded)


def staged_code(loaded: LoadedJob, folder: Path) -> LoadedJob:
    """The job with its module's code copied into `folder` as the task gets it (`code/...`)."""
    from jobs.code import find_code, portable

    code = find_code(loaded.job, loaded.base_dir, loaded.source)
    save_code([(f.remote, f.local) for f in code.files], folder)
    model = loaded.job.model.model_copy(update={"source": str(folder / portable(loaded.job)["model.source"])})
    return LoadedJob(loaded.job.model_copy(update={"model": model}), loaded.base_dir, loaded.source, loaded.raw)


def _check_job(loaded: LoadedJob) -> dict[str, Any]:
    jobs = [loaded.trial(i) for i in range(len(loaded.trials))] or [loaded]
    report: dict[str, Any] = {"job": loaded.job.name, "task": loaded.job.task,
                              "trials": len(loaded.trials)}
    cache: dict[str, Built] = {}
    for i, lj in enumerate(jobs):
        job = lj.job
        key = json.dumps([job.data.model_dump(), job.preprocess.model_dump(),
                          job.split.model_dump()], sort_keys=True, default=str)
        t_build = time.perf_counter()
        if key in cache:
            prev = cache[key]
            arch = make_arch(job.model, prev.prepared.input_shape, prev.prepared.n_outputs, lj.base_dir,
                             classification=prev.prepared.classes is not None)
            b = Built(prev.data, prev.prepared, arch, build_from_arch(arch),
                      select_device(job.train.device))
            prepare_seconds = report["models"][0]["prepare_seconds"]  # a trial loads the same data
        else:
            b = cache[key] = build(lj)
            prepare_seconds = time.perf_counter() - t_build
        p = b.prepared
        trainer = Trainer(b.model, p, job, b.device, "check")
        n = min(len(p.y["train"]), 32)
        xb = trainer.data.x["train"][:n]
        yb = trainer.data.y["train"][:n]
        if job.model.kind == "module":  # your forward, on a real batch: one line when it fails
            forward_check(b.model, xb, p.n_outputs, p.classes is not None, job.model.source)
        loss = trainer.check_step(xb, yb)
        if not np.isfinite(loss):
            raise QtrainError(f"check: the first training step gave loss {loss}",
                              hint="lower train.lr or check the data for extreme values")
        # steps at the training's batch size, timed: the fastest of 2 to 5 within 0.2 s (the first
        # pays one-off costs, and a busy machine slows some) is what `qtrain run --estimate` scales
        # on one thread: threads that wait on each other make a step on a busy machine 100x slower,
        # where one thread is at most as many times slower as the training has threads
        timed: list[float] = []
        batch = trainer.batch_size  # the training's own batch: a step's fixed costs do not scale
        xt, yt = trainer.data.x["train"][:batch], trainer.data.y["train"][:batch]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            budget = time.perf_counter() + 0.2
            while len(timed) < 5 and (len(timed) < 2 or time.perf_counter() < budget):
                t_step = time.perf_counter()
                trainer.check_step(xt, yt)
                timed.append(time.perf_counter() - t_step)
        finally:
            torch.set_num_threads(threads)
        step_seconds = min(timed)
        t_eval = time.perf_counter()  # what the run's final evaluation costs, on every split
        for split in p.splits:
            predict_split(b.model, p, trainer.data.x[split])
        evaluate_seconds = time.perf_counter() - t_eval
        total, trainable = count_parameters(b.model)
        if i == 0:
            report.update(_describe_prepared(b, loaded))
            report["refit"] = refit.plan(job, p)
            report["warnings"] = [f.line() for f in b.findings] + _link_warnings(loaded)
        report.setdefault("models", []).append({
            "trial": i if loaded.trials else None,
            "overrides": loaded.trials[i] if loaded.trials else None,
            "parameters": total, "trainable": trainable, "first_step_loss": loss,
            "step_seconds": step_seconds, "step_rows": int(len(xt)),
            "prepare_seconds": prepare_seconds, "evaluate_seconds": evaluate_seconds})
        report["device"] = str(b.device)
    return report


def _link_warnings(loaded: LoadedJob) -> list[str]:
    """data.follow_symlinks: each link out of a data folder is said, never sent unseen."""
    lines = [f"{f.field}: {f.local} is a link to {f.outside}, outside the folder: that file is sent "
             f"(data.follow_symlinks: true)" for f in job_files(loaded.job, loaded.base_dir) if f.outside]
    for line in lines:
        log.warn(line)
    return lines


def _describe_prepared(b: Built, loaded: LoadedJob) -> dict[str, Any]:
    p = b.prepared
    out: dict[str, Any] = {
        "data": describe(b.data),
        "dataset_hash": dataset_hash(loaded.job, job_files(loaded.job, loaded.base_dir)),
        "splits": {s: int(len(p.y.get(s, []))) for s in ("train", "val", "test")},
        "input_shape": list(p.input_shape), "features": len(p.feature_names),
        "feature_names": p.feature_names[:50],
    }
    if p.classes is not None:
        all_y = np.concatenate([p.y[s] for s in p.splits])
        counts = np.bincount(all_y, minlength=len(p.classes))
        out["classes"] = {c: int(counts[i]) for i, c in enumerate(p.classes)}
    else:
        y = np.concatenate([p.y[s] for s in p.splits])
        out["target"] = {"mean": float(y.mean()), "std": float(y.std()),
                         "min": float(y.min()), "max": float(y.max())}
    return out
