"""What a run leaves on the account, and what frees it.

Each run's task writes its results into a bucket of its own (`qtrain-<run id>`): Qarnot's task API
takes a result bucket, not a prefix in a shared one (snapshots alone take a prefix), so one bucket a
run it is.  The account limits buckets (`/info` maxBucket: 100 on the emulator) and tasks (maxTask),
so a run that has been retrieved, every file verified in the store against the bucket (size and
checksum), has its task and result bucket deleted (`release`).  What is kept: a run not yet
retrieved, and one whose files could not all be verified (said, and tried again at the next
fetch).  A failed or cancelled run resumes from the checkpoint in the store, so nothing of it needs
to stay either.  The data bucket (`qtrain-data`) is shared and content-addressed: it stays.

`check_room` is what `run` asks before it sends anything; `leftovers` and `delete_leftovers` are
`results gc --remote`; `results rm` deletes a run's remote copy with its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs import settings
from jobs.errors import QtrainError
from submit.backends import Backend
from submit.backends.base import Remote
from submit.store import RunRecord, Store
from submit.ui import Ui

GC_HINT = "qtrain results gc --remote lists what no run in the store needs; --yes deletes it"


def release(run: RunRecord, uuid: str, backend: Backend, store: Store, ui: Ui, incoming: Path,
            trouble: bool = False) -> RunRecord:
    """An ended run whose every result file the store holds as the bucket does (size and
    checksum): its task and result bucket are deleted from the account, which limits both
    (`maxBucket`, `maxTask`), and the run says so.  Anything unverified keeps them, said in one
    line; a failure to delete is a warning, never a failed run (`results gc --remote` finds it)."""
    if settings.submission().keep_remote:
        return run
    try:
        missing = backend.unverified(uuid, incoming)
        if missing or trouble:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            ui.warn(f"run {run.run_id}: its task and result bucket are kept on the account: "
                    + (f"{len(missing)} result file(s) are not in the store as the bucket has them ({shown})"
                       if missing else "some result files could not be stored (above)")
                    + f"; qtrain fetch {run.run_id} tries again")
            return run
        deleted = backend.delete_remote(uuid, run.run_id)
    except QtrainError as exc:
        ui.warn(f"run {run.run_id}: its task and result bucket could not be deleted ({exc.one_line()}); "
                f"qtrain results gc --remote lists what is left")
        return run
    store.update(run.run_id, info={"remote": "deleted"})
    if deleted:
        ui.say(f"verified in the store; deleted from the account: {', '.join(deleted)}", style="dim")
    return store.get(run.run_id)


def check_room(backend: Backend, ui: Ui) -> None:
    """Before anything is sent: the account can take the run's buckets (its result bucket, and
    the data bucket when it is new).  Near the limit (QTRAIN_BUCKET_WARNING of maxBucket) a warning;
    at it, one line naming what holds the buckets and what frees them."""
    usage = backend.usage()
    if usage.buckets is None or not usage.max_buckets:
        return
    needed = 1
    if usage.buckets + 2 > usage.max_buckets * settings.submission().bucket_warning:  # near: count exactly
        needed += not backend.has_bucket(settings.submission().data_bucket)
    if usage.buckets + needed > usage.max_buckets:
        ours = sum(1 for r in backend.remotes() if r.kind == "bucket")
        raise QtrainError(f"the account holds {usage.buckets} of its {usage.max_buckets} buckets (maxBucket), "
                          f"and a run needs {needed} more: {ours} are qtrain result buckets, "
                          f"{usage.buckets - ours} others; nothing was sent", hint=GC_HINT)
    if usage.buckets + needed > settings.submission().bucket_warning * usage.max_buckets:
        ui.warn(f"the account holds {usage.buckets} of its {usage.max_buckets} buckets (maxBucket): {GC_HINT}")
    if usage.tasks is not None and usage.max_tasks and usage.tasks + 1 > usage.max_tasks:
        raise QtrainError(f"the account holds {usage.tasks} of its {usage.max_tasks} tasks (maxTask); nothing was "
                          f"sent", hint=GC_HINT)


@dataclass(frozen=True)
class Leftover:
    remote: Remote
    why: str  # why no run in the store needs it


def leftovers(backend: Backend, store: Store) -> list[Leftover]:
    """The result buckets and qtrain tasks on the account that no run in the store needs: owned by
    no run in it, or by a run retrieved (its files in the store) whose remote copy was kept."""
    from submit.backends.qarnot import results_bucket

    runs = {r.run_id: r for r in store.list()}
    buckets = {results_bucket(run_id): run for run_id, run in runs.items()}
    tasks = {r.task_uuid: r for r in runs.values() if r.task_uuid}
    found = []
    for remote in backend.remotes():
        run = buckets.get(remote.name) if remote.kind == "bucket" else tasks.get(remote.name) or runs.get(remote.run_id)
        if run is None:
            found.append(Leftover(remote, "no run in the store owns it"))
        elif run.done and run.retrieved:
            found.append(Leftover(remote, f"its run {run.run_id} is retrieved"))
    return found


def delete_leftovers(backend: Backend, store: Store, found: list[Leftover]) -> list[str]:
    """Delete what `leftovers` found; returns what was deleted, in words."""
    from submit.backends.qarnot import results_bucket

    deleted = []
    by_bucket = {results_bucket(r.run_id): r for r in store.list()}
    for item in found:
        remote = item.remote
        if remote.kind == "task":
            deleted += backend.delete_remote(remote.name, "")  # the task alone
        else:
            run = by_bucket.get(remote.name)
            deleted += backend.delete_remote(None, run.run_id if run else remote.name, bucket=remote.name)
            if run is not None:
                store.update(run.run_id, info={"remote": "deleted"})
    return deleted


def forget_remote(run: RunRecord, backend: Backend) -> list[str]:
    """`results rm`: the run's task and result bucket, whichever are still on the account."""
    if run.info.get("remote") == "deleted" or (not run.task_uuid and run.state != "submitting"):
        return []
    return backend.delete_remote(run.task_uuid, run.run_id)
