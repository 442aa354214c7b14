"""The results store as a workbench: truthful states, names, tags and notes, rm and gc, --where
and --sort, compare, closed pipes.  A real SQLite store, the real CLI, and (for states) the real
emulator daemon over HTTP."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from submit.store import Store
from tests.helpers import kill_instance, wait_for


def make_run(store: Store, name: str = "penguins", state: str = "succeeded", metrics=None, task="classification",
             tags=None, job=None, trials: int = 0):
    run = store.create_run(job_name=name, job_hash="a" * 64, dataset_hash="b" * 64, backend="local",
                           profile="cpu", job=job or {"name": name, "task": task,
                                                      "data": {"path": "x.csv", "target": "y"}},
                           trials=trials, tags=tags)
    store.update(run.run_id, task_uuid=f"uuid-{run.run_id}", retrieved=state != "running")
    if metrics is not None:
        store.set_metrics(run.run_id, metrics)
    store.set_state(run.run_id, state)
    time.sleep(0.002)  # distinct creation times
    return store.get(run.run_id)


def classification(acc: float, f1: float) -> dict:
    return {"task": "classification", "test": {"accuracy": acc, "f1_macro": f1}}


def regression(r2: float, rmse: float) -> dict:
    return {"task": "regression", "test": {"r2": r2, "rmse": rmse}}


# ------------------------------------------------------------------------------------ names
def test_a_run_is_named_by_job_job_n_tag_prefix_or_suffix(tmp_path, qtrain):
    store = Store(tmp_path)
    old = make_run(store, "penguins")
    mid = make_run(store, "penguins", tags={"baseline": ""})
    new = make_run(store, "penguins", tags={"owner": "ana"})
    other = make_run(store, "digits")
    assert store.resolve("penguins") == new.run_id
    assert store.resolve("penguins~0") == new.run_id
    assert store.resolve("penguins~1") == mid.run_id and store.resolve("penguins~2") == old.run_id
    assert store.resolve("@baseline") == mid.run_id and store.resolve("@owner=ana") == new.run_id
    assert store.resolve("digits") == other.run_id and store.resolve(other.run_id[-6:]) == other.run_id

    shown = qtrain("results", "show", "penguins~1", "--json", "--store", tmp_path)
    assert shown.code == 0 and shown.json()["run_id"] == mid.run_id
    too_far = qtrain("results", "show", "penguins~3", "--store", tmp_path)
    assert too_far.code == 2 and "penguins has 3 run(s)" in too_far.err and "Traceback" not in too_far.err
    assert "no run is tagged owner=bob" in qtrain("status", "@owner=bob", "--store", tmp_path).err
    make_run(store, "digits")
    ambiguous = qtrain("results", "show", old.run_id[:4], "--store", tmp_path)
    assert ambiguous.code == 2
    line = ambiguous.err.strip()
    assert "\n" not in line and "ambiguous, 5 runs match" in line and new.run_id in line
    assert line.endswith("and 1 more (give more of the id, a job name, JOB~N or @TAG)")


# --------------------------------------------------------------------------------- organise
def test_tag_untag_and_note_round_trip(tmp_path, qtrain):
    store = Store(tmp_path)
    run = make_run(store)
    assert qtrain("results", "tag", "penguins", "best", "lr=0.01", "--store", tmp_path).code == 0
    assert store.get(run.run_id).tags == {"best": "", "lr": "0.01"}
    assert qtrain("results", "show", "@best", "--json", "--store", tmp_path).json()["tags"] == {"best": "", "lr": "0.01"}
    bad = qtrain("results", "tag", "penguins", "no spaces=1", "--store", tmp_path)
    assert bad.code == 2 and "a tag is KEY or KEY=VALUE" in bad.err
    untag = qtrain("results", "untag", "penguins", "best", "nope", "--store", tmp_path)
    assert untag.code == 0 and "had no tag nope" in untag.err
    assert store.get(run.run_id).tags == {"lr": "0.01"}
    qtrain("results", "note", "penguins", "lr from the paper", "--store", tmp_path)
    assert store.get(run.run_id).note == "lr from the paper"
    assert "lr from the paper" in qtrain("results", "show", "penguins", "--store", tmp_path).out
    qtrain("results", "note", "penguins", "", "--store", tmp_path)
    assert store.get(run.run_id).note is None


def _agree(store: Store) -> None:
    """The index and the folders describe the same runs."""
    ids = {r.run_id for r in store.list()}
    folders = {p.name for p in (store.root / "runs").iterdir() if not p.name.startswith(".")}
    assert ids == folders
    with sqlite3.connect(store.db_path) as db:
        for table in ("states", "metrics", "tags"):
            orphans = db.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id NOT IN (SELECT run_id FROM runs)")
            assert orphans.fetchone()[0] == 0, table


def test_rm_removes_the_index_rows_and_the_folder_and_refuses_running_runs(tmp_path, qtrain):
    store = Store(tmp_path)
    keep, gone, running = make_run(store, "a"), make_run(store, "b", metrics=classification(0.9, 0.9)), \
        make_run(store, "c", state="running")
    store.tag(gone.run_id, {"x": "1"})
    refused = qtrain("results", "rm", "c", "--yes", "--store", tmp_path)
    assert refused.code == 2 and "not ended yet" in refused.err and "qtrain cancel" in refused.err
    no_terminal = qtrain("results", "rm", "b", "--store", tmp_path)  # stdin is not a terminal here
    assert no_terminal.code == 2 and "--yes" in no_terminal.err
    assert store.artifacts_dir(gone.run_id).is_dir()
    removed = qtrain("results", "rm", "b", "--yes", "--store", tmp_path)
    assert removed.code == 0, removed.err
    assert not store.artifacts_dir(gone.run_id).exists()
    assert {r.run_id for r in store.list()} == {keep.run_id, running.run_id}
    _agree(store)


def _busy_writer(root: str, stop_after: float) -> None:
    store = Store(Path(root))
    end = time.monotonic() + stop_after
    i = 0
    while time.monotonic() < end:
        run = make_run(store, f"writer-{i}", metrics=classification(0.5, 0.5))
        store.tag(run.run_id, {"n": str(i)})
        i += 1


def test_rm_while_another_process_writes_keeps_index_and_folders_in_step(tmp_path):
    store = Store(tmp_path)
    doomed = [make_run(store, f"old-{i}", metrics=classification(0.7, 0.7), tags={"t": str(i)}) for i in range(20)]
    writer = mp.get_context("spawn").Process(target=_busy_writer, args=(str(tmp_path), 3.0))
    writer.start()
    try:
        for run in doomed:
            store.remove(run.run_id)
    finally:
        writer.join(30)
    assert writer.exitcode == 0
    names = {r.job_name for r in store.list()}
    assert not any(n.startswith("old-") for n in names) and any(n.startswith("writer-") for n in names)
    _agree(store)


def test_gc_removes_orphans_stale_temporary_files_and_half_written_runs(tmp_path, qtrain):
    store = Store(tmp_path)
    good = make_run(store, "good")
    orphan = tmp_path / "runs" / "20200101-000000-lost-abcdef"
    (orphan / "out").mkdir(parents=True)
    (orphan / "out" / "x").write_text("x")
    stale = store.artifacts_dir(good.run_id) / ".metrics.json.tmp"
    stale.write_text("{")
    fresh = store.artifacts_dir(good.run_id) / ".history.csv.tmp"  # a retrieval going on now
    fresh.write_text("epoch")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    half = store.create_run(job_name="half", job_hash="a" * 64, dataset_hash="b" * 64, backend="local",
                            profile="cpu", job={"name": "half"})
    with sqlite3.connect(store.db_path) as db:  # submitted two hours ago, never given a task
        db.execute("UPDATE runs SET created='2000-01-01T00:00:00.000000Z' WHERE run_id=?", (half.run_id,))

    dry = qtrain("results", "gc", "--dry-run", "--json", "--store", tmp_path).json()
    assert dry["orphan_folders"] == [str(orphan)] and dry["temporary_files"] == [str(stale)]
    assert dry["half_written_runs"] == [half.run_id] and orphan.is_dir()
    done = qtrain("results", "gc", "--yes", "--store", tmp_path)
    assert done.code == 0 and "removed 3 item(s)" in done.out
    assert not orphan.exists() and not stale.exists() and fresh.exists()
    assert [r.run_id for r in store.list()] == [good.run_id]
    _agree(store)
    assert "nothing to clean" in qtrain("results", "gc", "--yes", "--store", tmp_path).out


# ----------------------------------------------------------------------------- where / sort
def test_list_filters_and_sorts_classification_and_regression_runs(tmp_path, qtrain):
    store = Store(tmp_path)
    c1 = make_run(store, "cls", metrics=classification(0.91, 0.80), tags={"owner": "ana"})
    c2 = make_run(store, "cls", metrics=classification(0.85, 0.84))
    r1 = make_run(store, "reg", metrics=regression(0.95, 1.2), task="regression")
    r2 = make_run(store, "reg", metrics=regression(0.80, 2.5), task="regression", tags={"owner": "ana"})
    failed = make_run(store, "reg", state="failed", task="regression")

    def ids(*args):
        result = qtrain("results", "list", "--no-refresh", "--json", "--store", tmp_path, *args)
        assert result.code == 0, result.err
        return [r["run_id"] for r in result.json()]

    assert ids("--where", "test.r2>0.9") == [r1.run_id]
    assert ids("--where", "test.rmse<=2.5", "--sort", "test.rmse") == [r1.run_id, r2.run_id]
    assert ids("--sort", "-test.f1_macro", "--job", "cls") == [c2.run_id, c1.run_id]
    assert ids("--sort", "-test.accuracy", "--limit", "1") == [c1.run_id]
    assert ids("--sort", "test.accuracy")[:2] == [c2.run_id, c1.run_id]  # runs without it come last
    assert ids("--tag", "owner=ana") == [r2.run_id, c1.run_id]
    assert ids("--tag", "owner", "--job", "reg") == [r2.run_id]
    assert ids("--where", "state=failed") == [failed.run_id]
    assert ids("--where", "state!=failed", "--where", "job~re") == [r2.run_id, r1.run_id]
    assert ids("--where", "data.target=y", "--job", "cls") == [c2.run_id, c1.run_id]  # a job setting

    typo = qtrain("results", "list", "--where", "test.R2>0.9", "--store", tmp_path)
    assert typo.code == 2 and "did you mean test.r2" in typo.err
    bad = qtrain("results", "list", "--where", "test.r2", "--store", tmp_path)
    assert bad.code == 2 and "expected FIELD OP VALUE" in bad.err

    only_cls = qtrain("results", "list", "--no-refresh", "--job", "cls", "--store", tmp_path).out
    assert "accuracy" in only_cls and "f1_macro" in only_cls and "rmse" not in only_cls
    only_reg = qtrain("results", "list", "--no-refresh", "--job", "reg", "--store", tmp_path).out
    assert "rmse" in only_reg and "accuracy" not in only_reg
    rows = qtrain("results", "list", "--no-refresh", "--json", "--job", "reg", "--store", tmp_path).json()
    assert rows[-1]["test"] == {"r2": 0.95, "rmse": 1.2}


def test_an_old_store_is_migrated_and_its_ended_runs_count_as_retrieved(tmp_path):
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.executescript("""
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, created TEXT NOT NULL, job_name TEXT NOT NULL,
              job_hash TEXT NOT NULL, dataset_hash TEXT NOT NULL, backend TEXT NOT NULL,
              profile TEXT NOT NULL, task_uuid TEXT, state TEXT NOT NULL, error TEXT,
              trials INTEGER NOT NULL DEFAULT 0, uploaded_bytes INTEGER NOT NULL DEFAULT 0,
              job_json TEXT NOT NULL);
            INSERT INTO runs VALUES ('r1', '2026-01-01T00:00:00.000000Z', 'old', 'a', 'b', 'local',
              'cpu', 'u1', 'succeeded', NULL, 0, 0, '{}');
            INSERT INTO runs VALUES ('r2', '2026-01-02T00:00:00.000000Z', 'old', 'a', 'b', 'local',
              'cpu', 'u2', 'running', NULL, 0, 0, '{}');""")
    store = Store(tmp_path)
    assert store.get("r1").retrieved and not store.get("r2").retrieved and store.get("r2").pending
    store.tag("r1", {"k": "v"})
    assert store.resolve("@k") == "r1" and store.resolve("old") == "r2"


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    store = Store(tmp_path)
    for i in range(250):
        make_run(store, f"job-{i}", metrics=classification(0.5, 0.5))
    proc = subprocess.Popen([sys.executable, "-m", "submit", "results", "list", "--json", "--limit", "0",
                             "--no-refresh", "--store", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(400).startswith(b"[{")
    proc.stdout.close()  # as `| head -c 400` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "internal error" not in err and "Traceback" not in err and "BrokenPipe" not in err, err


# ------------------------------------------------------------------- truthful states (real)
@pytest.mark.usefixtures("emulator")
def test_a_detached_run_that_ended_reads_succeeded_without_fetch(qtrain, store_dir):
    run = qtrain("run", "penguins", "--set", "train.epochs=2", "--set", "name=quick", "--detach", "--tag", "exp=1", "--note", "first", "--json", "--store", store_dir).json()
    assert run["tags"] == {"exp": "1"} and run["note"] == "first"
    wait_for(lambda: "done:" in qtrain("logs", run["run_id"], "--store", store_dir).out)
    time.sleep(0.5)
    status = qtrain("status", run["run_id"], "--json", "--store", store_dir)
    assert status.code == 0, status.err
    data = status.json()
    assert data["state"] == "succeeded" and data["retrieved"] is True
    assert data["metrics"]["test"]["accuracy"] > 0.5
    assert (Path(data["artifacts_dir"]) / "metrics.json").is_file()
    assert data["info"]["execution"] and data["info"]["data"] == {"data.path": "palmerpenguins"}
    assert qtrain("status", "quick", "--json", "--store", store_dir).json()["state"] == "succeeded"


@pytest.mark.usefixtures("emulator")
def test_results_list_retrieves_every_ended_run_failed_and_cancelled_too(qtrain, store_dir, csv_job, conn):
    ok = qtrain("run", csv_job, "--detach", "--json", "--store", store_dir).json()
    long = ["--set", "train.epochs=100000", "--set", "train.early_stopping=null", "--set",
            "train.checkpoint_every=1", "--detach", "--json",
            "--store", store_dir]
    doomed = qtrain("run", csv_job, *long).json()
    stopped = qtrain("run", csv_job, *long).json()
    for run in (doomed, stopped):
        wait_for(lambda r=run: "epoch=" in qtrain("logs", r["run_id"], "--store", store_dir).out)
    kill_instance(doomed["task_uuid"])  # as if the machine ran out of memory
    conn.retrieve_task(stopped["task_uuid"]).abort()  # from the Qarnot console, say
    wait_for(lambda: all(conn.retrieve_task(r["task_uuid"]).state in ("Success", "Failure", "Cancelled")
                          for r in (ok, doomed, stopped)))

    before = {r.run_id: r for r in Store(store_dir).list()}
    assert not any(r.retrieved for r in before.values())  # nobody fetched anything
    listed = qtrain("results", "list", "--json", "--store", store_dir)
    assert listed.code == 0, listed.err
    states = {r["run_id"]: (r["state"], r["retrieved"]) for r in listed.json()}
    assert states == {ok["run_id"]: ("succeeded", True), doomed["run_id"]: ("failed", True),
                      stopped["run_id"]: ("cancelled", True)}
    for run_id in states:
        assert (Store(store_dir).artifacts_dir(run_id) / "task-stdout.txt").is_file()
    assert json.loads(qtrain("status", doomed["run_id"], "--json", "--store", store_dir).out
                      .strip().splitlines()[-1])["state"] == "failed"
    # fetch stays, and changes nothing
    again = qtrain("fetch", ok["run_id"], "--json", "--store", store_dir)
    assert again.code == 0 and again.json()["state"] == "succeeded"


# ------------------------------------------------------------------------------ reindex
def test_a_damaged_index_is_one_line_and_reindex_rebuilds_it_from_the_run_folders(tmp_path, qtrain):
    store = Store(tmp_path)
    a = make_run(store, "cls", metrics=classification(0.91, 0.80), tags={"owner": "ana"})
    store.set_note(a.run_id, "the good one")
    b = make_run(store, "reg", metrics=regression(0.95, 1.2), task="regression", state="failed")
    store.update(b.run_id, info={"executor": "emulator/process"})
    removed = make_run(store, "gone")
    store.remove(removed.run_id)
    before = {r.run_id: r for r in Store(tmp_path).list()}
    histories = {run_id: Store(tmp_path).get(run_id).history for run_id in before}

    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)  # truncated, overwritten
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    broken = qtrain("results", "list", "--store", tmp_path)
    assert broken.code == 2 and "Traceback" not in broken.err
    assert "the index cannot be read" in broken.err and "qtrain results reindex" in broken.err

    rebuilt = qtrain("results", "reindex", "--yes", "--json", "--store", tmp_path)
    assert rebuilt.code == 0, rebuilt.err
    assert rebuilt.json()["runs"] == 2 and Path(rebuilt.json()["backup"]).is_file()
    after = {r.run_id: r for r in Store(tmp_path).list()}
    assert set(after) == set(before)
    for run_id, old in before.items():
        new = Store(tmp_path).get(run_id)
        for name in ("state", "job_name", "task_uuid", "retrieved", "note", "tags", "info", "metrics", "trials"):
            assert getattr(new, name) == getattr(old, name), name
        assert new.history == histories[run_id]
    assert Store(tmp_path).resolve("@owner=ana") == a.run_id
    _agree(Store(tmp_path))


@pytest.mark.usefixtures("emulator")
def test_a_task_gone_before_retrieval_fails_a_running_run_but_not_an_ended_one(tmp_path, qtrain):
    store = Store(tmp_path)
    running = make_run(store, "lost", state="running")  # a task uuid the emulator never had
    ended = make_run(store, "done", state="succeeded")
    store.update(ended.run_id, retrieved=False)
    listed = {r["run_id"]: (r["state"], r["retrieved"])
              for r in qtrain("results", "list", "--json", "--store", tmp_path).json()}
    assert listed == {running.run_id: ("failed", True), ended.run_id: ("succeeded", True)}
    assert "the task is gone" in Store(tmp_path).get(running.run_id).error
