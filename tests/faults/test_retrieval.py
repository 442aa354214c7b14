"""Faults of retrieval: fetches of one run at once, result keys that cannot be files here, and a
bucket changed after the run was retrieved.  Retrieval never crashes on them, never leaves a half
file, and never silently replaces what a finished run brought home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from submit.backends.qarnot import results_bucket
from submit.store import Store

pytestmark = pytest.mark.faults


def _ended_unfetched(world) -> dict:
    run = world.cli("run", world.job(), "--detach", "--json").json()
    assert world.wait_task(run["task_uuid"]) == "Success"
    return run


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_three_concurrent_fetches_of_one_run_all_succeed_with_whole_files(world):
    run = _ended_unfetched(world)
    bucket = world.s3().get_object(Bucket=results_bucket(run["run_id"]), Key="out/metrics.json")["Body"].read()
    fetches = [world.popen("fetch", run["run_id"], "--json") for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0] for p in fetches]
    for proc, out in zip(fetches, outputs):
        assert proc.returncode == 0 and "Traceback" not in out, out
        assert json.loads(out.strip().splitlines()[-1])["state"] == "succeeded"
    folder = Path(run["artifacts_dir"])
    assert (folder / "metrics.json").read_bytes() == bucket  # verified, then deleted from the account (issue 42)
    assert results_bucket(run["run_id"]) not in {b["Name"] for b in world.s3().list_buckets()["Buckets"]}
    assert Store(world.store).get(run["run_id"]).metrics[-1] == json.loads(bucket)
    assert _leftovers(folder) == []


def test_odd_result_keys_are_skipped_with_one_warning_each_and_the_rest_retrieved(world):
    run = _ended_unfetched(world)
    s3, bucket = world.s3(), results_bucket(run["run_id"])
    # (SeaweedFS itself refuses `..`, names over 255 bytes and strips a leading /: those are
    # tested on `plan_download` in tests/submit/run/test_retrieve.py)
    odd = {"out/history.csv/inner.txt": "below out/history.csv", "out/model.pt/x/y.txt": "below out/model.pt"}
    for key in odd:
        s3.put_object(Bucket=bucket, Key=key, Body=b"odd")
    fetched = world.cli("fetch", run["run_id"], "--json")
    assert fetched.code == 0 and "Traceback" not in fetched.err, fetched.err
    warnings = [line for line in fetched.err.splitlines() if line.startswith("warning:") and "skipped" in line]
    assert len(warnings) == len(odd), fetched.err
    assert "its task and result bucket are kept on the account" in fetched.err  # what the store lacks stays there
    for key, why in odd.items():
        assert any(repr(key)[:40] in line and why in line for line in warnings), (key, warnings)
    folder = Path(fetched.json()["artifacts_dir"])
    assert (folder / "history.csv").is_file() and (folder / "model.pt").is_file()
    assert fetched.json()["metrics"]["test"]["accuracy"] > 0.5
    assert _leftovers(folder) == []


def test_a_refetch_of_a_finished_run_keeps_its_files_and_reports_a_changed_bucket(world):
    world.env["QTRAIN_KEEP_REMOTE"] = "1"  # its bucket stays after retrieval, to change under it
    run = _ended_unfetched(world)
    first = world.cli("fetch", run["run_id"], "--json")
    assert first.code == 0, first.err
    folder = Path(first.json()["artifacts_dir"])
    kept = (folder / "metrics.json").read_bytes()
    s3, bucket = world.s3(), results_bucket(run["run_id"])
    forged = json.loads(kept)
    forged["test"]["accuracy"] = 0.01
    s3.put_object(Bucket=bucket, Key="out/metrics.json", Body=json.dumps(forged).encode())
    s3.delete_object(Bucket=bucket, Key="out/history.csv")
    (folder / "model.pt").unlink()  # a file the user removed comes back (that replaces nothing)

    again = world.cli("fetch", run["run_id"], "--json")
    assert again.code == 0, again.err
    assert "differs from what was retrieved" in again.err and "out/metrics.json" in again.err
    assert (folder / "metrics.json").read_bytes() == kept  # never silently replaced
    assert again.json()["metrics"] == first.json()["metrics"]  # nor the index
    assert (folder / "model.pt").is_file() and (folder / "history.csv").is_file()
