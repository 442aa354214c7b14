"""Faults during submission: the run is recorded as an intent (`submitting`) before anything is
sent, its task carries the run's tags, and whatever stops the submitter (Ctrl-C before or after the
task exists, kill -9) leaves a run that `status`/`fetch`/`cancel`/`results list` resolve: found by
its tags and fetched, or failed with nothing running.  Never a task that qtrain cannot reach."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest

from jobs.errors import RunError
from jobs.load import load_job
from submit.backends import get_backend
from submit.run.submission import recover, submission_tags, submit_run
from submit.store import Store
from submit.ui import Ui
from tests import datagen
from tests.helpers import wait_for

pytestmark = pytest.mark.faults


class Interrupting:
    """The real backend, with an interrupt (or another exception) injected at one point of
    `submit`: `before` the task is created, `inside` (created on the backend, its uuid never
    handed back: the window that a kill -9 also hits) or `after` submit() returned."""

    def __init__(self, backend, where: str, exc: BaseException = KeyboardInterrupt()):
        self.backend, self.where, self.exc = backend, where, exc
        self.created: list[str] = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def submit(self, package, request, on_created=None):
        if self.where == "before":
            raise self.exc

        def created(uuid):
            self.created.append(uuid)
            if self.where == "inside":
                raise self.exc
            on_created(uuid)

        uuid = self.backend.submit(package, request, on_created=created)
        raise self.exc if self.where == "after" else AssertionError(uuid)


def _job(tmp_path, epochs: int = 3):
    datagen.small_table(tmp_path / "table.csv")
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({**datagen.SMALL_JOB, "train": {**datagen.SMALL_JOB["train"], "epochs": epochs}}))
    return load_job(path)


@pytest.mark.parametrize("where", ["before", "inside", "after"])
def test_ctrl_c_during_submission_leaves_a_run_that_can_be_fetched_or_nothing_running(
        where, emulator, conn, tmp_path, store_dir, qtrain, capfd):
    store = Store(store_dir)
    backend = Interrupting(get_backend("local"), where)
    with pytest.raises(KeyboardInterrupt):  # an interrupt stays an interrupt (exit 130 in the CLI)
        submit_run(_job(tmp_path), backend, store, Ui())
    err = capfd.readouterr().err
    [run] = store.list()
    assert run.run_id in err and "Traceback" not in err
    if where == "before":  # nothing was created: the run says so, and nothing runs
        assert run.state == "failed" and not run.task_uuid and "interrupted" in run.error
        assert "no task was created" in err
        assert not list(conn.all_tasks(tags_intersect=submission_tags(run.run_id)))
        fetched = qtrain("fetch", run.run_id, "--json", "--store", store_dir)
        assert fetched.code == 1 and fetched.json()["state"] == "failed"
        return
    # the task exists: the run knows it (found by its tags when the uuid never came back)
    assert run.state == "submitted" and run.task_uuid == backend.created[0]
    assert f"qtrain fetch {run.run_id}" in err
    assert [t.uuid for t in conn.all_tasks(tags_intersect=submission_tags(run.run_id))] == [run.task_uuid]
    fetched = qtrain("fetch", run.run_id, "--json", "--store", store_dir)
    assert fetched.code == 0, fetched.err
    assert fetched.json()["state"] == "succeeded" and fetched.json()["metrics"]["epochs_run"] == 3


def test_a_failure_after_the_task_exists_exits_3_naming_the_run(emulator, tmp_path, store_dir):
    store = Store(store_dir)
    backend = Interrupting(get_backend("local"), "after", ConnectionResetError("the network went away"))
    with pytest.raises(RunError) as caught:
        submit_run(_job(tmp_path), backend, store, Ui())
    [run] = store.list()
    assert caught.value.exit_code == 3 and run.run_id in caught.value.one_line()
    assert "the network went away" in caught.value.one_line()
    assert run.state == "submitted" and run.task_uuid == backend.created[0]


def test_a_submission_under_way_elsewhere_is_left_alone(emulator, tmp_path, store_dir):
    """`recover` must not fail a run whose submitter is alive (it holds the run's submit lock)."""
    store = Store(store_dir)
    run = store.create_run(job_name="x", job_hash="h", dataset_hash="d", backend="local", profile="docker-batch",
                           job={}, state="submitting")
    backend = get_backend("local")
    with store.run_lock(run.run_id, "submit"):
        assert recover(store.get(run.run_id), backend, store).state == "submitting"
    gone = recover(store.get(run.run_id), backend, store)  # its submitter is gone, no task has its tags
    assert gone.state == "failed" and gone.retrieved and "nothing runs" in gone.error


def _submitting_rows(store_dir) -> list[str]:
    index = store_dir / "index.sqlite"
    if not index.exists():
        return []
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=0.05) as db:
            return [r[0] for r in db.execute("SELECT run_id FROM runs WHERE state='submitting'")]
    except sqlite3.OperationalError:  # being created or written
        return []


@pytest.mark.parametrize("when", ["recorded", "task-made"])
def test_kill9_of_the_submitter_is_resolved_by_the_next_command(world, when):
    """kill -9 while the run is `submitting` (during the upload, or just as the task is made):
    whichever it hit, `results list` / `status` end with a run that matches the backend, a task
    found by its tags, or a failed run and no task."""
    job = world.job(data_name="big.csv")
    datagen.small_table(world.root / "big.csv", rows=60_000)  # a few MB: the upload is a window worth hitting
    assert world.cli("emulator", "start").code == 0
    submitter = world.popen("run", job, "--detach")
    run_id = wait_for(lambda: (_submitting_rows(world.store) or [None])[0], 120, every=0.005)
    if when == "task-made":  # as soon as the backend has the task (the store may not know it yet)
        wait_for(lambda: _tagged(world, run_id), 120, every=0.01)
    submitter.send_signal(signal.SIGKILL)
    submitter.wait(30)

    listed = world.cli("results", "list", "--json")
    assert listed.code == 0, listed.err
    [row] = [r for r in json.loads(listed.out.strip().splitlines()[-1]) if r["run_id"] == run_id]
    assert row["state"] != "submitting"
    tasks = _tagged(world, run_id)
    assert bool(tasks) == (when == "task-made")
    if row["task_uuid"]:
        assert [t["uuid"] for t in tasks] == [row["task_uuid"]]
        fetched = world.cli("fetch", run_id, "--json")
        assert fetched.code == 0 and fetched.json()["state"] == "succeeded", fetched.err
    else:  # the kill came before the task: nothing runs, and the run says so
        assert tasks == [] and row["state"] == "failed"
        status = world.cli("status", run_id)
        assert status.code == 1 and "nothing runs" in status.out  # a failed run: exit 1
        assert world.cli("cancel", run_id).code == 1  # already ended: nothing to abort, no traceback


def _tagged(world, run_id: str) -> list[dict]:
    return [t for t in world.api("/tasks/summaries").json() if run_id in t.get("tags", [])]


def test_a_run_left_submitting_with_its_task_made_is_found_by_its_tags(world):
    """The exact state a kill -9 between the task's creation and the store's update leaves: a
    `submitting` run with no uuid and a task carrying its tags.  Each command resolves it."""
    import qarnot

    world.env["QTRAIN_KEEP_REMOTE"] = "1"  # the tasks are looked at after each command
    assert world.cli("emulator", "start").code == 0
    daemon = world.daemon()
    conn = qarnot.connection.Connection(client_token=world.token(), cluster_url=daemon["url"],
                                        storage_url=daemon["s3_url"])
    for command in ("status", "fetch", "cancel", "results"):
        store = Store(world.store)
        run = store.create_run(job_name="table", job_hash="h", dataset_hash="d", backend="local",
                               profile="docker-batch", job={}, state="submitting")
        task = conn.create_task(f"orphan-{command}", "docker-batch", 1)
        task.constants["DOCKER_CMD"] = "sleep 60" if command == "cancel" else "true"
        task.tags = submission_tags(run.run_id)
        task.submit()
        args = ("results", "list") if command == "results" else (command, run.run_id)
        result = world.cli(*args, "--json")
        assert "Traceback" not in result.err, result.err
        record = Store(world.store).get(run.run_id)
        assert record.task_uuid == task.uuid and record.state != "submitting", (command, record.state)
        if command == "cancel":
            assert world.task_state(task.uuid) == "Cancelled" and record.state == "cancelled"
        world.wait_task(task.uuid)
