"""The hundredth run works too (issue 42): a run's task and result bucket are deleted from the
account once its files are verified in the store, `results rm` and `results gc --remote` free what
is left, and a full account is one line before anything is sent.  On real emulators (their account
limits lowered) through the real SDK and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from submit.emulator import daemon
from submit.store import Store

QUICK = ["--set", "train.epochs=3"]


@pytest.fixture
def small_account(tmp_path_factory):
    """An emulator whose account may hold 5 buckets (the data bucket among them) and 12 tasks."""
    env = {"QTRAIN_EMULATOR_LIMITS": "max_buckets=5,max_tasks=12", "QTRAIN_EMULATOR_REQUEST_TIMEOUT": "5",
           "QARNOT_CLIENT_TOKEN": None}
    with daemon.isolated(tmp_path_factory.mktemp("small-account"), "process", env) as endpoint:
        yield endpoint


def _sdk(endpoint):
    import qarnot

    return qarnot.connection.Connection(client_token=endpoint.token, cluster_url=endpoint.url,
                                        storage_url=endpoint.s3_url)


def _buckets(conn) -> list[str]:
    return sorted(b.uuid for b in conn.buckets())


def test_three_times_the_account_s_buckets_of_runs_sweeps_and_resumes_all_succeed(small_account, qtrain, tmp_path):
    conn, store = _sdk(small_account), tmp_path / "store"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "small-sweep", "task": "classification",
                                     "data": {"path": "sklearn:iris", "target": "target"},
                                     "train": {"epochs": 3}, "sweep": {"model.hidden": [[4], [8]]}}))
    runs = []
    for i in range(15):  # 3 x maxBucket: 11 penguins, 2 sweeps, 2 resumes
        if i in (4, 9):
            result = qtrain("run", sweep, "--json", "--store", store)
        elif i in (6, 12):
            result = qtrain("resume", runs[-1], "--epochs", "5", "--json", "--store", store)
        else:
            result = qtrain("run", "penguins", *QUICK, "--json", "--store", store)
        assert result.code == 0, (i, result.err[-2000:])
        run = result.json()
        assert run["state"] == "succeeded" and run["retrieved"], run
        runs.append(run["run_id"])
        assert "verified in the store; deleted from the account" in result.out + result.err
        assert len(conn.buckets()) <= 2 and conn.user_info.task_count == 0  # the data bucket, and none of a run's
    for run_id in runs:  # every file is in the store, and says what it is
        folder = Store(store).artifacts_dir(run_id)
        metrics = list(folder.rglob("metrics.json"))
        assert metrics and (folder / "task-stdout.txt").is_file(), run_id
        assert all(json.loads(m.read_text())["test"]["accuracy"] > 0 for m in metrics)
    fetched = qtrain("fetch", runs[0], "--store", store)  # what a later fetch of a cleaned run says
    assert fetched.code == 0 and "its task and result bucket were deleted" in fetched.out + fetched.err
    logs = qtrain("logs", runs[0], "--store", store)
    assert logs.code == 0 and "epoch=3/3" in logs.out


def test_a_full_account_is_refused_in_one_line_before_anything_is_sent(small_account, qtrain, tmp_path):
    conn = _sdk(small_account)
    for i in range(5 - len(conn.buckets())):
        conn.create_bucket(f"someone-else-{i}")
    before = _buckets(conn)
    result = qtrain("run", "penguins", *QUICK, "--store", tmp_path / "store")
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert result.code == 2 and len(errors) == 1, result.err
    assert "holds 5 of its 5 buckets (maxBucket)" in errors[0] and "5 others" in errors[0]
    assert "qtrain results gc --remote" in errors[0] and "Traceback" not in result.err
    assert _buckets(conn) == before and conn.user_info.task_count == 0  # nothing uploaded, nothing submitted
    dry = qtrain("run", "penguins", "--dry-run", "--store", tmp_path / "store")
    assert dry.code == 2 and "holds 5 of its 5 buckets" in dry.err  # refused as run refuses it
    conn.retrieve_bucket("someone-else-0").delete()  # 4 of 5 held: the data bucket and a result bucket do not fit
    assert qtrain("run", "penguins", *QUICK, "--store", tmp_path / "store").code == 2
    conn.retrieve_bucket("someone-else-1").delete()
    warned = qtrain("run", "penguins", *QUICK, "--store", tmp_path / "store")
    assert warned.code == 0 and "warning: the account holds 3 of its 5 buckets" in warned.err, warned.err
    assert _buckets(conn) == sorted(set(before) - {"someone-else-0", "someone-else-1"} | {"qtrain-data"})


def test_rm_and_gc_remote_free_what_qtrain_left_and_nothing_else(small_account, qtrain, tmp_path, monkeypatch):
    conn, store = _sdk(small_account), tmp_path / "store"
    monkeypatch.setenv("QTRAIN_KEEP_REMOTE", "1")  # runs keep their task and bucket, as a killed fetch leaves them
    kept = [qtrain("run", "penguins", *QUICK, "--json", "--store", store).json()["run_id"] for _ in range(2)]
    conn.create_bucket("someone-else")
    orphan = [b for b in _buckets(conn) if kept[1].lower() in b]
    assert len(orphan) == 1 and conn.user_info.task_count == 2
    Store(store).remove(kept[1])  # a run the store no longer has: its bucket and task are orphans
    removed = qtrain("results", "rm", kept[0], "--yes", "--store", store)
    assert removed.code == 0 and f"bucket qtrain-{kept[0].lower()}" in removed.out
    assert conn.user_info.task_count == 1
    listed = qtrain("results", "gc", "--remote", "--json", "--store", store)
    found = listed.json()["found"]
    assert sorted((f["kind"], f["why"]) for f in found) == [("bucket", "no run in the store owns it"),
                                                            ("task", "no run in the store owns it")]
    assert listed.json()["deleted"] == [] and orphan[0] in _buckets(conn)  # listed, not deleted
    freed = qtrain("results", "gc", "--remote", "--yes", "--store", store)
    assert freed.code == 0 and "deleted 2 item(s)" in freed.out
    assert _buckets(conn) == ["qtrain-data", "someone-else"] and conn.user_info.task_count == 0
    again = qtrain("results", "gc", "--remote", "--store", store)
    assert "nothing of qtrain's to clean" in again.out
