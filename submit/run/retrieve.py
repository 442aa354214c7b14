"""A run's results brought home: its task's final state recorded, its files downloaded into the
store (idempotent: what is there is skipped, a retrieved run's files are never replaced), its
metrics indexed, what it cost read.  `refresh` does this for a pending run, `refresh_all` for
what `status` and `results list` show, so a detached run lands without `fetch`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from jobs import settings
from jobs.errors import QtrainError
from jobs.results import METRICS, OUT, RUN_INFO, SWEEP, atomic_write, parse_metrics, read_json, write_record
from runner.api import write_sweep_report
from submit.backends import Backend, get_backend
from submit.backends.base import UNWRITABLE, BackendUnreachable, TaskNotFound, TaskStatus
from submit.run.account import release
from submit.run.follow import follow, task_uuid
from submit.run.submission import recover
from submit.store import RunRecord, Store
from jobs.files import human_bytes
from submit.ui import Ui

RESULTS_PREFIX = f"{OUT}/"  # where the runner writes in the task's working directory
LOG_FILES = {"stdout": "task-stdout.txt", "stderr": "task-stderr.txt"}


def retrieve(run: RunRecord, backend: Backend, store: Store, ui: Ui,
             status: TaskStatus | None = None) -> RunRecord:
    """Record the task's state (final as soon as it has ended), download the results into the
    store (files already there are skipped), index the metrics and what ran (run.json), and mark
    the run retrieved once its task has ended.  Safe to repeat."""
    uuid = task_uuid(run)
    with store.run_lock(run.run_id, "fetch", wait=False) as free:
        if not free:
            ui.say(f"another qtrain is retrieving run {run.run_id}: waiting for it", style="dim")
    with store.run_lock(run.run_id, "fetch"):  # one retrieval of a run at a time: no shared file
        return _retrieve(store.get(run.run_id), uuid, backend, store, ui, status)


def _retrieve(run: RunRecord, uuid: str, backend: Backend, store: Store, ui: Ui,
              status: TaskStatus | None) -> RunRecord:
    if run.done and run.retrieved and run.info.get("remote") == "deleted":
        ui.say(f"run {run.run_id} is in the store: its task and result bucket were deleted once its files "
               f"were verified there", style="dim")
        return run
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
    if final:  # retrieved before, its remote copy kept then (unverified, or not deleted): again now
        return release(store.get(run.run_id), uuid, backend, store, ui, incoming,
                       trouble=bool(got.refused or got.differing))
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
    if status.done and settings.submission().mlflow_export:
        _auto_export(record, store, ui)
    if status.done:
        record = release(record, uuid, backend, store, ui, incoming, trouble=bool(got.refused or got.differing))
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
    write_sweep_report(dest, sweep, title=f"{run.job_name} · {run.run_id}")


def _auto_export(record: RunRecord, store: Store, ui: Ui) -> None:
    """QTRAIN_MLFLOW_EXPORT=1: the run goes to MLflow once retrieved; a failure is a warning,
    never a failed run."""
    from submit.results.export import export_run  # MLflow's client: only when asked for

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
    had not ended fails with that reason; one that had keeps its state (its task did end so).
    Another qtrain may have retrieved it meanwhile and deleted its task (`account.release`): the
    store's own record says so, and stands."""
    run = store.get(run.run_id)
    if run.done and run.retrieved:
        return run
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


def backend_for(run: RunRecord, start: bool = True) -> Backend:
    return get_backend(run.backend, start=start)


# ------------------------------------------------------------------------------------ cancel
def cancel(run: RunRecord, backend: Backend, store: Store, ui: Ui) -> RunRecord:
    uuid = task_uuid(run)
    backend.abort(uuid)
    ui.say(f"abort sent to task {uuid}")
    status = follow(run, backend, store, ui, quiet=True)
    return retrieve(run, backend, store, ui, status)


