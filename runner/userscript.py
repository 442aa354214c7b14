"""A script job (`script: {path, args}`), run and checked.

The script runs in a process of its own, with the task's working folders: its code in `code/`,
the job's data in `data/`, its working folder the output folder (what it writes there comes home),
and what it is told in its environment (`jobs.settings.ScriptEnv`: QTRAIN_DATA, QTRAIN_OUTPUT_DIR,
QTRAIN_CHECKPOINT, QTRAIN_PARAMS, ...).  Its arguments are `script.args` on its command line, a
`${NAME}` in a value replaced by that variable (`--data ${QTRAIN_DATA}`).  Once it ends, what it
reported through `runner.script` becomes qtrain's results: metrics.json (its predictions scored as
qtrain scores its own models, its own numbers kept as `reported`), the confusion matrix or the
regression plot, the training curves, run.json.  It fails the run only by failing itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from jobs import settings
from jobs.code import find_code
from jobs.errors import JobError, TimeLimitReached
from jobs.files import job_files, local_value, resolve
from jobs.load import LoadedJob, format_trial
from jobs.spec import STOP_GRACE_SECONDS
from jobs.results import (CHECKPOINT, HISTORY, METRICS, RUN_INFO, SWEEP, Metrics, RunInfo, dataset_hash, headline, job_hash,
                          summarize, write_record)
from runner import distributed, log
from runner.procs import die_with_parent
from runner.scriptlogs import Found, OutputMetrics, history_finals, read_files
from runner.script import REPORTS

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # as Qarnot's DOCKER_CMD: ${NAME}


class ScriptFailed(JobError):
    """The script exited non-zero (its results were written all the same)."""

    exit_code = 1

    def __init__(self, code: int, stderr: list[str] = ()):  # type: ignore[assignment]
        last = next((line.strip() for line in reversed(stderr) if line.strip()), "")
        why = f" ({_signal_name(-code)})" if code < 0 else " (it ran past its time)" if code == 124 else ""
        hint = "its stderr says why (qtrain logs RUN --stderr)"
        if code == -6 and "terminate called without an active exception" in last and distributed.current().active:
            hint = ("torch's gloo aborts at exit when the process group is destroyed while a DistributedDataParallel "
                    "model still holds it: `del model` before dist.destroy_process_group()")
        super().__init__(f"the script exited with status {code}{why}" + (f": {last[:300]}" if last else ""), hint=hint)
        self.code = code if code > 0 else 1
        self.stderr = list(stderr)


def _signal_name(number: int) -> str:
    import signal

    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:
        return f"killed by signal {number}"


def script_argv(args: dict[str, Any] | list[str], env: dict[str, str]) -> list[str]:
    """script.args as a command line: --name value; true: --name; false or null: left out; a list:
    --name a b.  A list of words (`qtrain run train.py -- ARGS`) is the command line as it is.
    `${NAME}` in a value becomes that variable of the script's environment."""
    out: list[str] = []

    def word(value: Any) -> str:
        return REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), str(value))

    if isinstance(args, list):
        return [word(v) for v in args]
    for name, value in args.items():
        if value is None or value is False:
            continue
        out.append(f"--{name}")
        if value is True:
            continue
        out += [word(v) for v in value] if isinstance(value, list) else [word(value)]
    return out


def run_script(loaded: LoadedJob, out_dir: Path, *, trial: int | None = None, resume: bool = False,
               smoke_steps: int | None = None, deadline: float | None = None,
               site: Path | None = None) -> dict[str, Any]:
    """Run the script (a sweep: every trial in turn, or trial `trial`) into `out_dir`; returns
    metrics.json's content.  ScriptFailed when the script exits non-zero, TimeLimitReached when it
    runs past `deadline` (time.monotonic(): it is sent SIGTERM, and SIGKILL GRACE_SECONDS later);
    either way its results are written."""
    if loaded.trials and trial is None:
        return _sweep(loaded, out_dir, resume, smoke_steps, deadline, site)
    files = job_files(loaded.job, loaded.base_dir)
    code = find_code(loaded.job, loaded.base_dir, loaded.source)
    jhash, dhash = job_hash(loaded.job, code.hash() if code else None), dataset_hash(loaded.job, files)
    overrides = None
    if loaded.trials:
        overrides = loaded.trials[trial]
        log.info(f"sweep trial {trial}/{len(loaded.trials) - 1}: {format_trial(overrides)}")
        loaded = loaded.trial(trial)
    job = loaded.job
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / CHECKPOINT
    rank = distributed.current()
    if not rank.main:  # a distributed script: rank 0's output folder comes home, the others' not
        out_dir = distributed.shard_path()
    script = resolve(job.script.path, loaded.base_dir)
    data = job.data.path if job.data is not None else None
    data_path = resolve(data, loaded.base_dir) if local_value(data) else None
    task_env = settings.task()
    facts = {"data": data_path or data, "data_dir": data_path.parent if data_path and data_path.is_file() else data_path,
             "output_dir": out_dir.resolve(), "checkpoint": checkpoint.resolve() if checkpoint.is_file() else None,
             "trial": trial, "params": job.script.args if isinstance(job.script.args, dict) else {}, "threads": job.train.threads or task_env.threads,
             "device": _device(job.train.device), "seed": job.train.seed,
             "smoke": smoke_steps is not None, "max_steps": smoke_steps}
    env = settings.script_environment({k: v for k, v in os.environ.items() if k not in settings.secret_names()}, facts)
    site = site or task_env.site
    if site is not None:  # the job's own packages (resources.requirements), first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")  # its lines as it prints them, as in a terminal (and script.metrics live)
    argv = [sys.executable, str(script.resolve()), *script_argv(job.script.args, env)]
    log.info(f"job {job.name}: script {job.script.path}" + (f" {' '.join(argv[2:])}" if argv[2:] else "")
             + (" (resumed from its checkpoint)" if facts["checkpoint"] else ""))
    matcher = OutputMetrics(job.script.metrics, say=_say) if rank.main else None
    started = time.perf_counter()
    code_, late, tail = _call(argv, out_dir, env, deadline, matcher)
    elapsed = time.perf_counter() - started
    if not rank.main:
        shutil.rmtree(out_dir, ignore_errors=True)
        if code_ != 0:
            raise ScriptFailed(code_, tail)
        return {}
    found = matcher.close() if matcher else Found()
    metrics = finalize(loaded, out_dir, elapsed, trial=trial, overrides=overrides, job_hash=jhash,
                       dataset_hash=dhash, files=[f.remote for f in files], status=code_,
                       note=_limit_note(job, smoke_steps) if late else None, found=found)
    if late:
        if smoke_steps is not None:
            raise JobError(f"the smoke run took over {_limit_note(job, smoke_steps)}",
                           hint="honour QTRAIN_MAX_STEPS (runner.script.max_steps()) so that it stops early")
        raise TimeLimitReached(f"the script was stopped at resources.max_minutes ({job.resources.max_minutes:g} min): "
                               "its output folder and last checkpoint are kept",
                               hint="qtrain resume continues it from its checkpoint; or raise resources.max_minutes")
    if code_ != 0:
        raise ScriptFailed(code_, tail)
    return metrics


def _say(line: str) -> None:
    print(line, flush=True)


GRACE_SECONDS = STOP_GRACE_SECONDS  # between SIGTERM and SIGKILL: time for a script's last checkpoint


def _call(argv: list[str], cwd: Path, env: dict[str, str], deadline: float | None,
          matcher: OutputMetrics | None = None) -> tuple[int, bool, list[str]]:
    """(exit status, stopped at the deadline?, the last lines of its stderr).  Its output is passed
    on line by line as it comes, through `matcher` (script.metrics)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=die_with_parent if sys.platform == "linux" else None)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, matcher, None), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, matcher, tail), daemon=True)]
    for pump in pumps:
        pump.start()
    try:
        try:
            return proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic())), False, \
                _joined(pumps, tail)
        except subprocess.TimeoutExpired:
            log.warn(f"the script runs past its time limit: stopping it (SIGTERM; SIGKILL in {GRACE_SECONDS:.0f} s)")
            proc.terminate()
            try:
                proc.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return 124, True, _joined(pumps, tail)
    except BaseException:  # interrupted (Ctrl-C, the task cancelled): the script goes too
        proc.kill()
        proc.wait()
        raise


TAIL_LINES = 20  # of the script's stderr, kept for the line that says why it failed


CHUNK = 1 << 16  # bytes read at a time: what a pipe holds, passed on as it arrives


def _pump(source: Any, sink: Any, matcher: OutputMetrics | None, tail: deque | None) -> None:
    """Pass a stream of the script's on to `sink` (the runner's own stream) as it comes, and its
    whole lines to `matcher` (script.metrics) and `tail` (the last lines of stderr)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    partial, fd = "", source.fileno()
    while True:
        chunk = os.read(fd, CHUNK)
        text = decoder.decode(chunk, final=not chunk)
        if text:
            try:
                sink.write(text)
                sink.flush()
            except (OSError, ValueError):  # our own stream closed: keep draining the script's
                pass
        if matcher or tail is not None:
            text = partial + text
            cut = len(text) if not chunk else text.rfind("\n") + 1
            lines, partial = text[:cut], text[cut:]
            if lines and matcher:
                matcher.feed(lines)
            if lines and tail is not None:
                tail.extend(line.rstrip() for line in lines.splitlines()[-TAIL_LINES:] if line.strip())
        if not chunk:
            break
    source.close()


def _joined(pumps: list[threading.Thread], tail: deque) -> list[str]:
    """The last stderr lines, once both streams are drained (a grandchild that keeps them open is
    not waited for past a few seconds)."""
    for pump in pumps:
        pump.join(timeout=5)
    return list(tail)


def _limit_note(job: Any, smoke_steps: int | None) -> str:
    return ("its time limit" if smoke_steps is not None
            else f"stopped by resources.max_minutes ({job.resources.max_minutes:g} min)")


def _sweep(loaded: LoadedJob, out_dir: Path, resume: bool, smoke_steps: int | None,
           deadline: float | None, site: Path | None) -> dict[str, Any]:
    from jobs.results import trial_dir

    results: dict[int, dict[str, Any]] = {}
    stopped: JobError | None = None
    for i in range(len(loaded.trials)):  # here one after the other (in a task: one instance each)
        try:
            results[i] = run_script(loaded, out_dir / trial_dir(i), trial=i, resume=resume,
                                    smoke_steps=smoke_steps, deadline=deadline, site=site)
        except (ScriptFailed, TimeLimitReached) as exc:  # its results are written: summed up, then raised
            stopped = exc
            results[i] = json.loads((out_dir / trial_dir(i) / METRICS).read_text())
            break
    task = next((m.get("task") for m in results.values() if m.get("task")), None)
    summary = summarize(task, results, loaded.trials, loaded.job.name)
    write_record(out_dir / SWEEP, summary)
    if summary.note:
        log.warn(summary.note)
    if stopped is not None:
        raise stopped
    return {"trials": len(results)}


def _device(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------- results
def finalize(loaded: LoadedJob, out_dir: Path, elapsed: float, *, trial: int | None, overrides: Any,
             job_hash: str, dataset_hash: str, files: list[str], status: int = 0,
             note: str | None = None, found: Found | None = None) -> dict[str, Any]:
    """What the script reported, as qtrain's results in `out_dir`: through runner.script first, then
    what `found` holds (script.metrics on its output), then its TensorBoard and CSV logger files
    (`runner.scriptlogs`).  Whatever it did not report is left out; none of it: a note says so."""
    import numpy as np

    from runner.evaluate import classification_metrics, confusion, regression_metrics
    from runner.report import write_confusion, write_history, write_json, write_regression
    from runner.report import plot_title, versions

    job = loaded.job
    reports = out_dir / REPORTS
    reported = json.loads((reports / "reported.json").read_text()) if (reports / "reported.json").is_file() else {}
    predictions = {split: dict(np.load(path, allow_pickle=False))
                   for split in ("train", "val", "test") if (path := reports / f"predictions-{split}.npz").is_file()}
    task = job.task or ("classification" if any("classes" in p or "proba" in p for p in predictions.values())
                        else "regression" if predictions else None)
    metrics: dict[str, Any] = {"task": task, "trained_by": "script", "reported": reported,
                               "timings": {"total_seconds": elapsed}, "notes": []}
    title = plot_title(job.name, out_dir, trial, overrides)
    classes = _classes(predictions) if task == "classification" and predictions else None
    for split, p in predictions.items():
        if classes is not None:
            y_true, y_pred = _indices(p["y_true"], classes), _indices(p["y_pred"], classes)
            proba = p.get("proba")
            metrics[split] = classification_metrics(y_true, y_pred, classes,
                                                    proba if proba is not None and proba.shape[-1] == len(classes) else None)
            if split == "test":
                write_confusion(out_dir, confusion(y_true, y_pred, len(classes)), classes, title)
        else:
            y_true, y_pred = p["y_true"].astype(np.float64).ravel(), p["y_pred"].astype(np.float64).ravel()
            metrics[split] = regression_metrics(y_true, y_pred)
            if split == "test":
                write_regression(out_dir, y_true, y_pred, title)
    extra = read_files(out_dir)  # its loggers' files, then what script.metrics found in its output
    extra.merge(found or Found())
    history = _merged(_history(out_dir / HISTORY), extra.rows)
    finals = history_finals(history)
    for split, values in extra.finals.items():
        finals.setdefault(split, {}).update(values)
    for split, values in finals.items():  # the metrics qtrain computed from predictions come first
        metrics[split] = {**values, **(metrics.get(split) or {})}
    if history:
        write_history(out_dir, history, title, headline(task).metric if task else _plotted(history))
        metrics["epochs_run"] = int(history[-1]["epoch"])
        losses = [r["train_loss"] for r in history if "train_loss" in r]
        if losses:
            metrics["train_loss"] = losses[-1]
    if isinstance(job.script.args, dict) and isinstance(job.script.args.get("epochs"), int):
        metrics["epochs"] = job.script.args["epochs"]
    if note:
        metrics["notes"].append(note)
    metrics["notes"] += extra.notes
    if not predictions and not reported and not history and not finals and status == 0:
        metrics["notes"].append(NOTHING_REPORTED)  # (a script that failed says why already)
    Metrics.model_validate(metrics)  # the contract, checked where it is written
    write_json(out_dir / METRICS, metrics)
    env = settings.task()
    info = RunInfo(job_name=job.name, job_hash=job_hash, dataset_hash=dataset_hash, dataset_files=files,
                   trial=trial, overrides=overrides, seed=job.train.seed, device=_device(job.train.device),
                   threads=job.train.threads or env.threads, host=os.uname().nodename,
                   image_digest=env.image_digest, image_source_digest=env.source_digest,
                   execution=env.execution, versions=versions(), timings={"total_seconds": elapsed},
                   job=job.model_dump(mode="json"))
    write_json(out_dir / RUN_INFO, info.model_dump())
    shown = {k: v for k, v in (metrics.get("test") or metrics.get("val") or reported).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"}
    ended = "done" if status == 0 else f"the script ended with status {status}"
    log.info(f"{ended}: {', '.join(f'{k}={v:.4g}' for k, v in shown.items())[:200]} in {elapsed:.1f}s -> {out_dir}"
             if shown else f"{ended} in {elapsed:.1f}s (no metrics reported) -> {out_dir}")
    return metrics


NOTHING_REPORTED = ("no metrics reported: the script called none of runner.script's log_epoch, log_predictions or "
                    "log_metrics, printed nothing that script.metrics matches and wrote no TensorBoard or CSV logger "
                    "files (its output folder came home)")


def _merged(history: list[dict[str, Any]], rows: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """log_epoch's history with the rows found elsewhere (log_epoch's values win), by epoch."""
    by_epoch = {int(r["epoch"]): dict(r) for r in history}
    for epoch, row in rows.items():
        by_epoch[epoch] = {**row, **by_epoch.get(epoch, {}), "epoch": epoch}
    return [{"epoch": e, **{k: v for k, v in by_epoch[e].items() if k != "epoch"}} for e in sorted(by_epoch)]


def _plotted(history: list[dict[str, Any]]) -> str | None:
    """The metric beside the loss in a script's curves when its job names no task."""
    names = sorted({k.split("_", 1)[1] for r in history for k in r if k.startswith(("train_", "val_"))} - {"loss"})
    return "accuracy" if "accuracy" in names else (names[0] if names else None)


def _classes(predictions: dict[str, dict[str, Any]]) -> list[str]:
    import numpy as np

    for p in predictions.values():
        if "classes" in p:
            return [str(c) for c in p["classes"]]
    values = np.concatenate([np.concatenate([p["y_true"].ravel(), p["y_pred"].ravel()]) for p in predictions.values()])
    return [str(v) for v in sorted(set(values.tolist()), key=lambda v: (str(type(v)), v))]


def _indices(values: Any, classes: list[str]) -> Any:
    """Labels (or their indices into `classes`) as indices."""
    import numpy as np

    values = np.asarray(values).ravel()
    if values.dtype.kind in "iu" and (len(values) == 0 or (values.min() >= 0 and values.max() < len(classes))) \
            and not all(c.lstrip("-").isdigit() for c in classes):
        return values.astype(np.int64)
    position = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in values.tolist()} - set(position))
    if unknown:
        raise JobError(f"the script's predictions hold {', '.join(unknown[:3])}, which are not among its classes "
                       f"({', '.join(classes[:6])})", hint="pass classes= to log_predictions, or labels from them")
    return np.asarray([position[str(v)] for v in values.tolist()], dtype=np.int64)


def _history(path: Path) -> list[dict[str, Any]]:
    import csv

    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: (float(v) if k != "epoch" else int(float(v))) for k, v in row.items() if v not in ("", None)})
    return rows
