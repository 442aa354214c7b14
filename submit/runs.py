"""A run's life on a backend: check -> package -> upload -> submit -> follow -> retrieve.

Read top to bottom:
    submit_run   preflight (nothing leaves the machine when it fails), upload, record, submit
    follow       poll the task: state changes and the runner's lines, live
    retrieve     final state recorded, results into the store (idempotent), metrics indexed
    refresh      what `status` and `results list` do for runs still pending: ask the task,
                 retrieve the ended ones (so a detached run lands without `fetch`)
    cancel       abort the task, then retrieve what it left
    summary      the JSON object `run`, `status` and `fetch` print

The run is in the store from the moment it is submitted, so a `qtrain run` that is killed loses
nothing: `qtrain fetch RUN` picks it up from any shell.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from jobs.errors import QtrainError, RunError
from jobs.files import JOB_FILE, PATH_FIELDS, get_dotted, local_value, resolve
from jobs.load import LoadedJob
from jobs.results import (METRICS, OUT, PREFIX, RUN_INFO, SWEEP, atomic_write, parse_epoch_line,
                          parse_metrics, read_json, write_record)
from submit import config
from submit.backends import Backend, get_backend
from submit.backends.base import BackendUnreachable, TaskRequest, TaskStatus
from submit.image import image_digest, stale_image
from submit.package import Package, build_package
from submit.store import RunRecord, Store
from submit.ui import Ui, human_bytes

COMMAND = "python -m runner"  # the runner image's entrypoint, also DOCKER_CMD
RESULTS_PREFIX = f"{OUT}/"  # where the runner writes in the task's working directory
LOG_FILES = {"stdout": "task-stdout.txt", "stderr": "task-stderr.txt"}


# ------------------------------------------------------------------------------------ submit
def submit_run(loaded: LoadedJob, backend: Backend, store: Store, ui: Ui,
               profile: str | None = None, recheck: bool = False,
               tags: dict[str, str] | None = None, note: str | None = None,
               resume: RunRecord | None = None, max_cost: float | None = None) -> RunRecord:
    job = loaded.job
    store.ensure_writable()  # before anything is uploaded
    backend.check_image(job.resources.image)
    backend.warm_up()  # e.g. the emulator's daemon starts while the job is checked
    package = prepare(loaded, ui, recheck)
    if resume is not None:
        package.extras = resume_checkpoints(resume, store)
    if backend.runs_images() and stale_image(job.resources.image):
        ui.warn(f"the image {job.resources.image} was built from other code than this checkout's: "
                f"qtrain image build (and push) to run your changes")
    profile_name, gpu = backend.resolve_profile(profile or job.resources.profile,
                                                config.PROFILE_CPU, config.PROFILE_GPU)
    backend.check_capacity(max(1, package.trials), gpu)
    est, _ = estimate_run(loaded, package, backend, gpu, ui, max_cost)
    constants = image_constants(job.resources.image)
    info = {"data": user_paths(loaded), "image": job.resources.image,
            "image_digest": constants.get("QTRAIN_IMAGE_DIGEST"), "where": backend.describe(),
            "executor": backend.executor_name(),
            "resumed_from": resume.run_id if resume is not None else None,
            "footprint": {"estimate": est.record()}}
    # the intent first: from here on, whatever happens, the run is in the store under its id, and
    # its task (if one was made) carries the run's tags, by which `recover` finds it
    run = store.create_run(job_name=job.name, job_hash=package.job_hash,
                           dataset_hash=package.dataset_hash, backend=backend.name,
                           profile=profile_name, job=package.job, trials=package.trials,
                           tags=tags, note=note, info=info, state="submitting")
    request = TaskRequest(
        run_id=run.run_id, name=f"qtrain-{job.name}", profile=profile_name, gpu=gpu,
        instances=max(1, package.trials), image=job.resources.image, command=COMMAND,
        constants={"QTRAIN_RUN_ID": run.run_id, **constants},
        tags=submission_tags(run.run_id), results_whitelist=f"(^|/){RESULTS_PREFIX}")

    def created(uuid: str) -> None:
        store.update(run.run_id, task_uuid=uuid)
        store.set_state(run.run_id, "submitted")

    with store.run_lock(run.run_id, "submit"):
        try:
            total = package.dataset_bytes + len(package.job_json)
            with ui.transfer(f"uploading {job.name}", total) as bar:
                uploaded = backend.upload(package, bar.advance)
            store.update(run.run_id, uploaded_bytes=uploaded)
            if package.files:
                what = ("uploaded " + human_bytes(uploaded)) if uploaded > len(package.job_json) \
                    else "dataset already uploaded"
                ui.say(f"{what} ({len(package.files)} file(s), {human_bytes(package.dataset_bytes)}, "
                       f"dataset {package.dataset_hash[:12]})", style="dim")
            uuid = backend.submit(package, request, on_created=created)
        except BaseException as exc:  # noqa: BLE001 - the run's fate is recorded, then it goes on up
            _submission_interrupted(store.get(run.run_id), backend, store, ui, exc)
            raise
    ui.say(f"submitted run {run.run_id} to {backend.describe()} (task {uuid}, profile "
           f"{profile_name}{', ' + str(request.instances) + ' instances' if request.instances > 1 else ''})")
    return store.get(run.run_id)


def estimate_run(loaded: LoadedJob, package: Package, backend: Backend, gpu: bool, ui: Ui,
                 max_cost: float | None = None):
    """(the run's estimate, the account's credits left or None), said in one line; refused
    (nothing sent) over `max_cost` or the credits left."""
    from submit.estimate import estimate, refuse_over

    est = estimate(loaded, package.check, gpu, local=backend.name == "local")
    credits = backend.credits_left()
    ui.say(est.line() + (f"; credits left {credits:.4g} EUR" if credits is not None else ""), style="dim")
    refuse_over(est, max_cost, credits)
    return est, credits


def prepare(loaded: LoadedJob, ui: Ui, recheck: bool = False) -> Package:
    """Check the job (a verdict remembered for this job, data and code is not redone) and
    package it.  Nothing leaves the machine: every mistake is caught here, before any upload."""
    from submit.checks import check

    report, remembered = check(loaded, recheck)
    how = "passed before with this job, data and code" if remembered else "checked"
    for line in report.get("warnings") or [] if remembered else []:  # a fresh check printed them
        ui.warn(line)
    ui.say(f"{how}: {loaded.job.name}, {report['splits']['train']} training rows, "
           f"{len(loaded.trials) or 1} trial(s)", style="dim")
    package = build_package(loaded)
    package.check = report
    return package


def upload_plan(package: Package) -> dict[str, Any]:
    """Every file and byte an upload of `package` sends at most (what the backend already has
    is skipped then): `qtrain run --dry-run`."""
    files = [{"path": f.remote, "bytes": f.size, "from": str(f.local),
              **({"link_to": str(f.outside)} if f.outside else {})} for f in package.files + package.extras]
    files.append({"path": JOB_FILE, "bytes": len(package.job_json), "from": None})
    return {"job": package.job_name, "dataset_hash": package.dataset_hash, "job_hash": package.job_hash,
            "trials": package.trials, "files": files, "total_bytes": sum(f["bytes"] for f in files)}


def submission_tags(run_id: str) -> list[str]:
    """The tags of a run's task: how an interrupted submission finds it (all of them must match)."""
    return ["qtrain", run_id]


def _submission_interrupted(run: RunRecord, backend: Backend, store: Store, ui: Ui, exc: BaseException) -> None:
    """`submit_run` stopped between recording the run and knowing its task: record what is known
    (asking the backend for a task with the run's tags), name the run, and turn a failure into a
    RunError (exit status 3) that says so.  An interrupt (Ctrl-C) stays an interrupt."""
    reason = (exc.one_line() if isinstance(exc, QtrainError) else
              "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}")
    try:
        run = recover(run, backend, store, reason=f"submission failed: {reason}", own=True)
    except (QtrainError, OSError) as lookup:  # cannot ask: the next status/fetch/list does
        ui.err.print(f"run {run.run_id}: {reason}; whether its task was created is not known yet "
                     f"({lookup}); qtrain status {run.run_id} finds out", style="red", markup=False)
        if not isinstance(exc, KeyboardInterrupt):
            raise RunError(f"run {run.run_id}: {reason}", hint=f"qtrain status {run.run_id}") from exc
        return
    if run.task_uuid:
        message = (f"run {run.run_id} was submitted (task {run.task_uuid}) before: {reason}; "
                   f"qtrain fetch {run.run_id} follows it, qtrain cancel {run.run_id} stops it")
    else:
        message = f"run {run.run_id}: {reason}; no task was created, nothing runs"
    ui.err.print(message, style="yellow" if run.task_uuid else "red", markup=False, highlight=False)
    if not isinstance(exc, KeyboardInterrupt):
        if run.task_uuid:
            raise RunError(f"run {run.run_id}: submitted as task {run.task_uuid}, then {reason}",
                           hint=f"qtrain fetch {run.run_id}") from exc
        raise RunError(f"run {run.run_id}: {reason}; no task was created",
                       hint="fix the cause, then qtrain run again") from exc


def recover(run: RunRecord, backend: Backend, store: Store, reason: str | None = None,
            own: bool = False) -> RunRecord:
    """A run still `submitting` whose submitter is gone (killed, interrupted): its task found by
    the run's tags and recorded, or, when the backend has none, the run failed (nothing runs, so
    nothing is lost).  A submission still under way elsewhere (its lock held) is left alone;
    `own`: the caller is that submitter."""
    if run.state != "submitting":
        return run
    if not run.task_uuid and not own and store.lock_held(run.run_id, "submit"):
        return run
    found = [run.task_uuid] if run.task_uuid else backend.find_tasks(submission_tags(run.run_id))
    if found:
        store.update(run.run_id, task_uuid=found[0])
        store.set_state(run.run_id, "submitted", detail="found by its tags" if not run.task_uuid else None)
    else:
        store.set_state(run.run_id, "failed", error=reason or "the submission was interrupted before its "
                                                              "task was created: nothing runs")
        store.update(run.run_id, retrieved=True)
    return store.get(run.run_id)


# ------------------------------------------------------------------------------------ resume
def resume_job(run: RunRecord, epochs: int | None = None) -> LoadedJob:
    """The job a run ran, read again from the user's own files (the store keeps where they were);
    refused when those files changed since (the checkpoint was trained on the old data)."""
    import copy

    from jobs.files import job_files
    from jobs.load import load_job_dict, set_dotted
    from jobs.results import dataset_hash

    if not run.done:
        raise QtrainError(f"run {run.run_id}: it is {run.state}; a run can be resumed once it has "
                          "ended", hint=f"qtrain cancel {run.run_id} first, or wait for it")
    raw = copy.deepcopy(run.job)
    for key, path in (run.info.get("data") or {}).items():
        set_dotted(raw, key, path)
    if epochs is not None:
        set_dotted(raw, "train.epochs", epochs)
    loaded = load_job_dict(raw, Path.cwd(), source=f"run {run.run_id}")
    now = dataset_hash(loaded.job, job_files(loaded.job, loaded.base_dir))
    if now != run.dataset_hash:
        raise QtrainError(f"run {run.run_id}: its data changed since it ran (dataset {now[:12]}, "
                          f"was {run.dataset_hash[:12]}); its checkpoint belongs to the old data",
                          hint="qtrain run JOB trains afresh on the new data")
    return loaded


def resume_checkpoints(run: RunRecord, store: Store):
    """The run's retrieved checkpoints, as files the new task finds where the runner resumes
    from (out/checkpoint.pt, out/trial-<i>/checkpoint.pt)."""
    from jobs.results import CHECKPOINT, trial_dir
    from submit.package import extra_file

    found = []
    for trial in range(run.trials) if run.trials else [None]:
        local = store.artifacts_dir(run.run_id, trial) / CHECKPOINT
        if local.is_file():
            where = OUT if trial is None else f"{OUT}/{trial_dir(trial)}"
            found.append(extra_file(f"{where}/{CHECKPOINT}", local))
    if not found:
        raise QtrainError(f"run {run.run_id}: no checkpoint in the store to resume from",
                          hint=f"qtrain fetch {run.run_id} retrieves what its task uploaded; "
                               "train.checkpoint_minutes / checkpoint_every make them")
    return found


def user_paths(loaded: LoadedJob) -> dict[str, str]:
    """The job's path fields as the user's machine has them (the task sees `data/<name>`)."""
    dumped = loaded.job.model_dump(mode="json")
    out = {}
    for key in PATH_FIELDS:
        value = get_dotted(dumped, key)
        if value:
            out[key] = str(resolve(value, loaded.base_dir)) if local_value(value) else str(value)
    return out


def image_constants(image: str) -> dict[str, str]:
    """Task constants about the image: its digest when this machine has it (recorded in run.json),
    and a private registry's server and login from the environment (never from the job)."""
    constants = {}
    digest = image_digest(image)
    if digest:
        constants["QTRAIN_IMAGE_DIGEST"] = digest
    for env, key in (("QTRAIN_DOCKER_SRV", "DOCKER_SRV"), ("QTRAIN_REGISTRY_LOGIN", "DOCKER_REGISTRY_LOGIN"),
                     ("QTRAIN_REGISTRY_PASSWORD", "DOCKER_REGISTRY_PASSWORD")):
        if os.environ.get(env):
            constants[key] = os.environ[env]
    return constants


# ------------------------------------------------------------------------------------ follow
class LineBuffer:
    """Fresh output arrives in chunks; hand out whole lines only."""

    def __init__(self) -> None:
        self.partial = ""

    def feed(self, text: str) -> list[str]:
        text = self.partial + text
        *lines, self.partial = text.split("\n")
        return lines

    def flush(self) -> list[str]:
        rest, self.partial = self.partial, ""
        return [rest] if rest else []


class LineShow:
    """Prints the task's lines: every line but epoch lines, which come at most one a second per
    instance (and always the last epoch), so a 500-epoch job stays readable.  `qtrain logs` has
    every line."""

    EVERY = 1.0

    def __init__(self, ui: Ui):
        self.ui = ui
        self.shown: dict[str, float] = {}  # instance prefix -> when its last epoch line was shown
        self.held: dict[str, str] = {}  # instance prefix -> newest epoch line not shown yet

    def line(self, line: str, stream: str) -> None:
        if not line.strip():
            return
        epoch = parse_epoch_line(line)
        if epoch is not None:
            key = line[:line.find(PREFIX)]  # "" or a multi-instance task's "3> "
            done, _, total = epoch.get("epoch", "").partition("/")
            now = time.monotonic()
            if done == total or now - self.shown.get(key, 0.0) >= self.EVERY:
                self.ui.say(line.rstrip())
                self.shown[key] = now
                self.held.pop(key, None)
            else:
                self.held[key] = line
        elif PREFIX in line:
            self.ui.say(line.rstrip(), style="red" if stream == "stderr" and "error" in line else None)
        else:
            self.ui.say(line.rstrip(), style="dim")

    def flush(self) -> None:
        for line in self.held.values():
            self.ui.say(line.rstrip())
        self.held.clear()


T = TypeVar("T")


class Retry:
    """Calls through a lost connection: waits 0.5, 1, 2 ... (at most 10) seconds between tries,
    saying so, and gives up `limit` seconds after the connection was lost."""

    def __init__(self, ui: Ui, what: str, limit: float | None = None, sleep=time.sleep):
        self.ui, self.what, self.sleep = ui, what, sleep
        self.limit = config.FOLLOW_RETRY_SECONDS if limit is None else limit

    def __call__(self, fn: Callable[[], T]) -> T:
        lost_at, delay = None, 0.5
        while True:
            try:
                value = fn()
            except BackendUnreachable as exc:
                now = time.monotonic()
                lost_at = lost_at or now
                if now - lost_at + delay > self.limit:
                    raise BackendUnreachable(f"{exc.message}; gave up after {now - lost_at:.0f}s",
                                             hint=f"the task goes on: {self.what}") from exc
                self.ui.warn(f"{exc.message}; trying again in {delay:g}s")
                self.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if lost_at is not None:
                self.ui.say("connection back", style="dim")
            return value


def follow(run: RunRecord, backend: Backend, store: Store, ui: Ui, quiet: bool = False,
           retry: Retry | None = None) -> TaskStatus:
    """Poll until the task ends, showing state changes and the runner's lines as they come.  A
    lost connection is retried (`Retry`) rather than ending the follow."""
    uuid = _uuid(run)
    poll = config.POLL_SECONDS or backend.poll_seconds
    buffers = {"stdout": LineBuffer(), "stderr": LineBuffer()}
    show = LineShow(ui)
    retry = retry or Retry(ui, f"qtrain fetch {run.run_id}")
    last = last_counts = None
    while True:
        status = retry(lambda: backend.status(uuid))
        out, err = retry(lambda: backend.fresh_output(uuid))
        if not quiet:
            for name, text in (("stdout", out), ("stderr", err)):
                for line in buffers[name].feed(text) + (buffers[name].flush() if status.done else []):
                    show.line(line, name)
            if status.done:
                show.flush()
        if run.trials and not quiet and not status.done:
            counts = trial_counts(status, run.trials)
            if counts != last_counts:
                ui.say(f"[{time.strftime('%H:%M:%S')}] trials: {counts[0]} done, {counts[1]} "
                       f"running, {counts[2]} queued", style="cyan")
                last_counts = counts
        if status.state != last:
            if not quiet:
                ui.say(f"[{time.strftime('%H:%M:%S')}] task {status.state}", style="cyan")
            if not status.done:
                store.set_state(run.run_id, status.run_state, detail=status.state)
            last = status.state
        if status.done:
            return status
        time.sleep(poll)


def trial_counts(status: TaskStatus, trials: int) -> tuple[int, int, int]:
    """A sweep's trials (instances): (done, running, queued)."""
    done = len(status.instances)
    running = min(status.running, trials - done)
    return done, running, trials - done - running


# ---------------------------------------------------------------------------------- retrieve
def retrieve(run: RunRecord, backend: Backend, store: Store, ui: Ui,
             status: TaskStatus | None = None) -> RunRecord:
    """Record the task's state (final as soon as it has ended), download the results into the
    store (files already there are skipped), index the metrics and what ran (run.json), and mark
    the run retrieved once its task has ended.  Safe to repeat."""
    uuid = _uuid(run)
    with store.run_lock(run.run_id, "fetch", wait=False) as free:
        if not free:
            ui.say(f"another qtrain is retrieving run {run.run_id}: waiting for it", style="dim")
    with store.run_lock(run.run_id, "fetch"):  # one retrieval of a run at a time: no shared file
        return _retrieve(store.get(run.run_id), uuid, backend, store, ui, status)


def _retrieve(run: RunRecord, uuid: str, backend: Backend, store: Store, ui: Ui,
              status: TaskStatus | None) -> RunRecord:
    final = run.done and run.retrieved  # its results are in the store: kept, never replaced
    status = status or backend.status(uuid)
    error = None
    if status.state == "Failure":
        error = "; ".join(status.errors) or "the task failed"
    if not final:
        store.set_state(run.run_id, status.run_state, detail=status.state, error=error)
    dest = store.artifacts_dir(run.run_id)
    dest.mkdir(parents=True, exist_ok=True)
    incoming = dest / ".incoming"  # the bucket's layout; results are moved out of out/ below
    for stale in incoming.rglob(".qtrain-*.part") if incoming.is_dir() else []:
        stale.unlink(missing_ok=True)  # left by a retrieval that was killed (this one holds the lock)
    with ui.transfer(f"retrieving {run.run_id}") as bar:
        got = backend.download(uuid, incoming, bar.advance, on_total=bar.set_total, replace=not final)
    for key, why in got.refused:
        ui.warn(f"run {run.run_id}: result {key!r} skipped: {why}")
    if got.differing:
        shown = ", ".join(got.differing[:5]) + (f" and {len(got.differing) - 5} more" if len(got.differing) > 5 else "")
        ui.warn(f"run {run.run_id}: its results bucket now differs from what was retrieved when it ended "
                f"({shown}): the retrieved files are kept")
    for rel, why in _promote(incoming / RESULTS_PREFIX.rstrip("/"), dest):
        ui.warn(f"run {run.run_id}: result {rel!r} skipped: {why}")
    if got.files:
        ui.say(f"retrieved {got.files} file(s), {human_bytes(got.bytes)} -> {dest}", style="dim")
    if final:
        return store.get(run.run_id)
    _save_logs(backend, uuid, dest)
    for trial in range(run.trials) if run.trials else [None]:
        folder = store.artifacts_dir(run.run_id, trial)
        raw = read_json(folder / METRICS)
        if parse_metrics(raw) is not None:
            store.set_metrics(run.run_id, raw, trial=trial)
    info = read_json(dest / RUN_INFO) or read_json(store.artifacts_dir(run.run_id, 0) / RUN_INFO) or {}
    store.update(run.run_id, retrieved=status.done or None,
                 info={k: info.get(k) for k in ("execution", "image_digest", "host", "device", "threads",
                                                "cuda") if info.get(k)})
    if status.done:
        _record_footprint(run, uuid, backend, store, ui)
    if run.trials:
        sweep = store.get(run.run_id).sweep()
        if any(r.metrics for r in sweep.trials):
            write_record(dest / SWEEP, sweep)
            _sweep_report(dest, sweep, run)
    record = store.get(run.run_id)
    if status.done and config.mlflow_export_enabled():
        _auto_export(record, store, ui)
    return record


def _record_footprint(run: RunRecord, uuid: str, backend: Backend, store: Store, ui: Ui) -> None:
    """What the ended task cost and emitted, into the run's info (unknown figures stay None)."""
    try:
        footprint = backend.footprint(uuid)
    except QtrainError as exc:  # a backend that cannot say: the run is not the worse for it
        ui.warn(f"run {run.run_id}: its cost and carbon figures could not be read ({exc.one_line()})")
        return
    if footprint is not None:
        estimate = (run.info.get("footprint") or {}).get("estimate")
        store.update(run.run_id, info={"footprint": {**footprint, **({"estimate": estimate} if estimate else {})}})


def _sweep_report(dest: Path, sweep, run: RunRecord) -> None:
    """sweep.csv and sweep.png, as `qtrain train` of a sweep writes them."""
    from runner.report import write_sweep_report

    write_sweep_report(dest, sweep, title=f"{run.job_name} · {run.run_id}")


def _auto_export(record: RunRecord, store: Store, ui: Ui) -> None:
    """QTRAIN_MLFLOW_EXPORT=1: the run goes to MLflow once retrieved; a failure is a warning,
    never a failed run."""
    from submit.mlflow_export import export_run

    try:
        exported = export_run(record, store)
        ui.say(f"exported to MLflow: experiment {exported.experiment}, run {exported.mlflow_run_id}",
               style="dim")
    except QtrainError as exc:
        ui.warn(f"MLflow export: {exc.one_line()}")


# ----------------------------------------------------------------------------------- refresh
def refresh(run: RunRecord, backend: Backend, store: Store, ui: Ui) -> RunRecord:
    """A pending run brought up to date: its task's state recorded, and, once the task has
    ended, its results retrieved.  A task the backend no longer has ends the run as failed."""
    from submit.backends.base import TaskNotFound

    if not run.pending:
        return run
    run = recover(run, backend, store)
    if not run.task_uuid:
        return run
    try:
        status = backend.status(run.task_uuid or "")
    except TaskNotFound as exc:
        return task_gone(run, store, exc)
    if not status.done:
        store.set_state(run.run_id, status.run_state, detail=status.state)
        return store.get(run.run_id)
    return retrieve(run, backend, store, ui, status)


def task_gone(run: RunRecord, store: Store, exc: QtrainError) -> RunRecord:
    """The backend no longer has the run's task: nothing more can ever be retrieved.  A run that
    had not ended fails with that reason; one that had keeps its state (its task did end so)."""
    if not run.done:
        store.set_state(run.run_id, "failed", error=f"the task is gone: {exc.message}")
    store.update(run.run_id, retrieved=True)
    return store.get(run.run_id)


def refresh_all(runs: list[RunRecord], store: Store, ui: Ui) -> tuple[list[RunRecord], list[str]]:
    """`refresh` for every pending run in `runs`, one backend connection each, with a progress
    bar on a terminal.  A backend that cannot be reached leaves its runs as they were (and says
    why, once); the local emulator is not started for this.  Returns (the runs, notes)."""
    pending = [r for r in runs if r.pending]
    if not pending:
        return runs, []
    notes: list[str] = []
    backends: dict[str, Backend | None] = {}
    fresh: dict[str, RunRecord] = {}
    with ui.steps(f"updating {len(pending)} run(s)", len(pending)) as step:
        for run in pending:
            if run.backend not in backends:
                backends[run.backend] = _reachable(run.backend, notes)
            be = backends[run.backend]
            if be is not None:
                try:
                    fresh[run.run_id] = refresh(run, be, store, ui)
                except QtrainError as exc:
                    notes.append(f"{run.run_id}: not updated ({exc.one_line()})")
                    if isinstance(exc, BackendUnreachable):
                        backends[run.backend] = None
            step()
    return [fresh.get(r.run_id, r) for r in runs], notes


def _reachable(name: str, notes: list[str]) -> Backend | None:
    try:
        be = get_backend(name, start=False)
        be.conn  # noqa: B018 - connect now, so that a failure is one note, not one per run
        return be
    except QtrainError as exc:
        notes.append(f"runs on {name} not updated: {exc.one_line()}")
        return None


def _promote(src: Path, dest: Path) -> list[tuple[str, str]]:
    """Move downloaded results from the bucket layout (out/...) into the run's folder, keeping
    the downloaded copy's name so that a second fetch can skip what is unchanged.  Returns the
    files that could not take their place (path, why): a folder already there by that name."""
    from submit.backends.base import UNWRITABLE

    skipped: list[tuple[str, str]] = []
    if not src.is_dir():
        return skipped
    for path in sorted(src.rglob("*")):
        if not path.is_file() or (path.name.startswith(".qtrain-") and path.name.endswith(".part")):
            continue
        rel = path.relative_to(src)
        target = dest / rel
        try:
            if target.is_file() and os.path.samefile(path, target):
                continue  # promoted by an earlier fetch (rename() onto the same inode is a no-op)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".qtrain-{os.getpid()}-{time.monotonic_ns()}.tmp"
            try:
                os.link(path, tmp)  # no second copy of the bytes on disk
            except OSError:
                shutil.copy2(path, tmp)
            try:
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            if exc.errno not in UNWRITABLE:
                raise
            skipped.append((rel.as_posix(), f"cannot take its place in the run's folder: {exc.strerror}"))
    return skipped


def _save_logs(backend: Backend, uuid: str, dest: Path) -> None:
    for stream, name in LOG_FILES.items():
        try:
            atomic_write(dest / name, backend.output(uuid, stderr=stream == "stderr"))
        except QtrainError:
            pass  # logs are a convenience; the results are what matters


def _uuid(run: RunRecord) -> str:
    if not run.task_uuid:
        if run.state == "submitting":
            raise QtrainError(f"run {run.run_id}: its submission is still under way in another qtrain",
                              hint="wait for it, then try again")
        raise QtrainError(f"run {run.run_id}: it has no task ({run.error or 'its submission failed'})")
    return run.task_uuid


def backend_for(run: RunRecord, start: bool = True) -> Backend:
    return get_backend(run.backend, start=start)


# ------------------------------------------------------------------------------------ cancel
def cancel(run: RunRecord, backend: Backend, store: Store, ui: Ui) -> RunRecord:
    uuid = _uuid(run)
    backend.abort(uuid)
    ui.say(f"abort sent to task {uuid}")
    status = follow(run, backend, store, ui, quiet=True)
    return retrieve(run, backend, store, ui, status)


# ----------------------------------------------------------------------------------- summary
def failure_report(run: RunRecord, backend: Backend, status: TaskStatus, lines: int = 15) -> list[str]:
    """The error and the tail of stderr, for a failed task."""
    out = [f"task {status.state}: " + ("; ".join(e.splitlines()[0] for e in status.errors)
                                        or "no error reported")]
    try:
        tail = backend.output(_uuid(run), stderr=True).rstrip().splitlines()[-lines:]
    except QtrainError:
        tail = []
    if tail:
        out.append(f"last {len(tail)} line(s) of stderr:")
        out += [f"  {line}" for line in tail]
    else:
        out.append("stderr: (empty)")
    return out


def summary(run: RunRecord, store: Store) -> dict[str, Any]:
    """The JSON object of a run (the last line of `run/status/fetch --json`)."""
    data: dict[str, Any] = {
        "run_id": run.run_id, "state": run.state, "backend": run.backend, "profile": run.profile,
        "task_uuid": run.task_uuid, "uploaded_bytes": run.uploaded_bytes,
        "job_name": run.job_name, "created": run.created, "job_hash": run.job_hash,
        "dataset_hash": run.dataset_hash, "error": run.error, "retrieved": run.retrieved,
        "tags": run.tags, "note": run.note, "info": run.info, "resumed_from": run.info.get("resumed_from"),
        "footprint": run.info.get("footprint"),
        "metrics": run.metrics.get(-1), "artifacts_dir": str(store.artifacts_dir(run.run_id)),
        "history": run.history,
    }
    if run.trials:
        sweep = run.sweep()
        data["trials"] = [{"trial": i, "metrics": run.metrics.get(i),
                           "artifacts_dir": str(store.artifacts_dir(run.run_id, i))}
                          for i in range(run.trials)]
        data["best"] = sweep.best.model_dump(mode="json") if sweep.best else None
        data["selection"] = sweep.selection  # what chose the best trial, e.g. val_accuracy
        data["selection_note"] = sweep.note
        data["metrics"] = run.chosen()[1]
    return data
