"""The store never deletes what it cannot read (issue 28): `reindex` keeps every run folder it
finds, rebuilding a missing or damaged record from the folder's own files or listing it as needing
attention; it replaces a healthy index only with one that holds every run the old one held, and
keeps one backup; `gc` never removes a folder that holds results; `rm` and `fetch` share the run's
lock."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jobs.results import METRICS, MODEL, RUN_INFO, RunInfo
from submit.store import Store
from submit.store.mirror import RECORD
from tests.helpers import run_lock_held

METRICS_OK = {"test": {"n": 10, "accuracy": 0.9}, "task": "classification", "epochs_run": 3}


def _finished_run(store: Store, name: str) -> str:
    run = store.create_run(job_name=name, job_hash="a" * 64, dataset_hash="b" * 64, backend="local",
                           profile="docker-batch", job={"name": name, "task": "classification"},
                           tags={"batch": name})
    folder = store.artifacts_dir(run.run_id)
    (folder / MODEL).write_bytes(b"weights of " + name.encode())
    (folder / METRICS).write_text(json.dumps(METRICS_OK))
    (folder / RUN_INFO).write_text(RunInfo(job_name=name, job_hash="a" * 64, dataset_hash="b" * 64,
                                           job={"name": name, "task": "classification"}).model_dump_json())
    store.set_metrics(run.run_id, METRICS_OK)
    store.set_state(run.run_id, "succeeded")
    store.update(run.run_id, task_uuid=f"uuid-{name}", retrieved=True)
    return run.run_id


def _damage(folder: Path, how: str) -> None:
    record = folder / RECORD
    good = json.loads(record.read_text())
    if how == "missing":
        record.unlink()
    elif how == "garbled":
        record.write_text(record.read_text()[:40])
    elif how == "a list":
        record.write_text("[1, 2, 3]")
    elif how == "wrong types":
        record.write_text(json.dumps({**good, "run": "not an object", "metrics": [1], "states": "x"}))
    elif how == "sql in the keys":
        good["run"]["x) VALUES (1); DROP TABLE runs; --"] = 1
        record.write_text(json.dumps(good))


DAMAGES = ("missing", "garbled", "a list", "wrong types", "sql in the keys")


@pytest.mark.parametrize("index", ["healthy", "lost"])
def test_fifty_runs_five_records_damaged_five_ways_all_fifty_survive_reindex_and_gc(tmp_path, qtrain, index):
    store = Store(tmp_path)
    ids = [_finished_run(store, f"job{i}") for i in range(50)]
    damaged = {ids[i * 10]: how for i, how in enumerate(DAMAGES)}
    for run_id, how in damaged.items():
        _damage(store.artifacts_dir(run_id), how)
    if index == "lost":
        (tmp_path / "index.sqlite").unlink()

    rebuilt = qtrain("results", "reindex", "--store", tmp_path, "--json")
    assert rebuilt.code == 0, rebuilt.err
    found = rebuilt.json()
    assert found["runs"] == 50
    listed = json.loads(qtrain("results", "list", "--no-refresh", "--limit", "0", "--json", "--store", tmp_path).out)
    assert sorted(r["run_id"] for r in listed) == sorted(ids)
    rows = {r["run_id"]: r for r in listed}
    if index == "healthy":  # the index knew them: their rows as they were, their records written again
        assert sorted(found["repaired"]) == sorted(damaged) and found["needs_attention"] == []
        for run_id in damaged:
            assert rows[run_id]["job_name"].startswith("job") and rows[run_id]["tags"] == {
                "batch": rows[run_id]["job_name"]} and rows[run_id]["task_uuid"].startswith("uuid-")
    else:  # rebuilt from the folder's own files, and flagged
        assert sorted(found["needs_attention"]) == sorted(damaged) and found["repaired"] == []
        for run_id in damaged:
            assert rows[run_id]["job_name"].startswith("job") and rows[run_id]["state"] == "succeeded"
            assert rows[run_id]["test"]["accuracy"] == 0.9 and "needs-attention" in rows[run_id]["tags"]

    collected = qtrain("results", "gc", "--yes", "--store", tmp_path)
    assert collected.code == 0, collected.err
    for run_id in ids:
        assert (store.artifacts_dir(run_id) / MODEL).is_file(), run_id
    again = qtrain("results", "reindex", "--store", tmp_path, "--json").json()
    assert again["runs"] == 50 and again["needs_attention"] == [] and again["repaired"] == []  # records whole


def test_reindex_keeps_one_backup_and_every_run_the_old_index_held(tmp_path, qtrain):
    store = Store(tmp_path)
    ids = [_finished_run(store, f"job{i}") for i in range(3)]
    folderless = store.create_run(job_name="submitting", job_hash="h", dataset_hash="d", backend="local",
                                  profile="docker-batch", job={}, state="submitting").run_id
    import shutil

    shutil.rmtree(store.artifacts_dir(folderless))  # a run the index holds and no folder does
    for _ in range(12):
        assert qtrain("results", "reindex", "--store", tmp_path).code == 0
    left = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in left if n.startswith("index.sqlite")] == ["index.sqlite", "index.sqlite.bak"], left
    assert not [n for n in left if n.startswith(".index.sqlite")], left
    assert sorted(r.run_id for r in Store(tmp_path).list()) == sorted(ids + [folderless])


def test_gc_never_removes_a_folder_that_holds_results(tmp_path, qtrain):
    store = Store(tmp_path)
    _finished_run(store, "kept")
    orphan = tmp_path / "runs" / "20250101-000000-lost-abcdef"  # no index row, no record
    (orphan / "trial-0").mkdir(parents=True)
    (orphan / "trial-0" / "checkpoint.pt").write_bytes(b"ckpt")
    junk = tmp_path / "runs" / "not-a-run"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    stale = tmp_path / ".index.sqlite.abc123"  # a reindex that died
    stale.write_text("")
    old = time.time() - 7200
    import os

    os.utime(stale, (old, old))
    plan = qtrain("results", "gc", "--dry-run", "--store", tmp_path, "--json").json()
    assert str(junk) in plan["orphan_folders"] and str(orphan) not in plan["orphan_folders"]
    assert str(orphan) in plan["kept_with_results"] and str(stale) in plan["temporary_files"]
    assert qtrain("results", "gc", "--yes", "--store", tmp_path).code == 0
    assert (orphan / "trial-0" / "checkpoint.pt").is_file() and not junk.exists() and not stale.exists()


def test_rm_refuses_a_run_being_retrieved_and_a_fetch_of_a_removed_run_is_one_line(tmp_path, qtrain):
    store = Store(tmp_path)
    run_id = _finished_run(store, "busy")
    with run_lock_held(tmp_path, run_id, "fetch"):
        refused = qtrain("results", "rm", run_id, "--yes", "--store", tmp_path)
        assert refused.code == 2 and "being retrieved" in refused.err and "Traceback" not in refused.err
        assert (store.artifacts_dir(run_id) / MODEL).is_file()
    assert qtrain("results", "rm", run_id, "--yes", "--store", tmp_path).code == 0
    gone = qtrain("fetch", run_id, "--store", tmp_path)
    assert gone.code == 2 and len(gone.err.strip().splitlines()) == 1 and "Traceback" not in gone.err
