"""Faults of the places qtrain writes: the store's disk full during a retrieval, a read-only store,
a locked index.  A clear line, nothing half-written that a later command trips over, and the next
command picks up where the failed one stopped."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.conftest import one_line_error

pytestmark = pytest.mark.faults


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few MB (root only), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_disk_full_during_retrieval_keeps_everything_and_fetch_resumes(world, small_disk):
    world.env["QTRAIN_KEEP_REMOTE"] = "1"  # what the account holds is looked at (issue 42 deletes it)
    world.env["QTRAIN_STORE"] = str(small_disk / "store")
    job = world.job(name="wide")
    job.write_text(job.read_text().replace("- 16", "- 1024\n  - 1024"))  # model.pt ~4 MB, checkpoint ~13
    result = world.cli("run", job, "--json")
    line = one_line_error(result)
    assert result.code == 2 and "no space left" in line and "run this again" in line

    listed = world.cli("results", "list", "--no-refresh", "--json")  # the index is intact
    assert listed.code == 0, listed.err
    (run,) = __import__("json").loads(listed.out.strip().splitlines()[-1])
    assert run["state"] == "succeeded"  # the task's end is recorded before its files come
    folder = small_disk / "store" / "runs" / run["run_id"]
    assert not [p for p in folder.rglob("*.part")]  # no half file left behind

    _remount(small_disk, "size=64m")
    fetched = world.cli("fetch", run["run_id"], "--json")
    assert fetched.code == 0, fetched.err
    assert fetched.json()["retrieved"] and fetched.json()["metrics"]["test"]["accuracy"] > 0.5
    from submit.backends.qarnot import results_bucket

    bucket = results_bucket(run["run_id"])
    for name in ("model.pt", "checkpoint.pt", "metrics.json"):  # what came home is what was sent
        remote = world.s3().get_object(Bucket=bucket, Key=f"out/{name}")["Body"].read()
        assert hashlib.sha256(remote).hexdigest() == _sha256(folder / name), name


def test_a_read_only_store_is_read_and_never_written(world, small_disk):
    world.env["QTRAIN_KEEP_REMOTE"] = "1"  # what the account holds is looked at (issue 42 deletes it)
    store = small_disk / "store"
    world.env["QTRAIN_STORE"] = str(store)
    run = world.cli("run", world.job(), "--json").json()
    _remount(small_disk, "ro")

    listed = world.cli("results", "list", "--no-refresh")
    assert listed.code == 0 and run["run_id"] in listed.out
    assert world.cli("results", "show", run["run_id"]).code == 0
    for args in (("results", "tag", run["run_id"], "k=v"), ("results", "reindex", "--yes"),
                 ("run", world.job(name="other"))):
        result = world.cli(*args)
        assert result.code == 2 and "read-only" in one_line_error(result), args
    tasks = world.api("/tasks").json()
    assert len(tasks) == 1  # the refused run submitted nothing


def test_a_locked_index_is_one_line_and_reads_still_work(world, tmp_path):
    run = world.cli("run", world.job(), "--json").json()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(world.store / 'index.sqlite')!r}, isolation_level=None)\n"
        "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        tagged = world.cli("results", "tag", run["run_id"], "k=v", env={"QTRAIN_STORE_LOCK_SECONDS": "1"})
        assert tagged.code == 2 and "locked by another process" in one_line_error(tagged)
        assert time.monotonic() - started < 30
        listed = world.cli("results", "list", "--no-refresh", env={"QTRAIN_STORE_LOCK_SECONDS": "1"})
        assert listed.code == 0 and run["run_id"] in listed.out
    finally:
        holder.kill()
        holder.wait()
    assert world.cli("results", "tag", run["run_id"], "k=v").code == 0  # once released, all is well
    assert world.cli("results", "list", "--tag", "k=v", "--no-refresh").out.count(run["run_id"]) == 1


def test_a_truncated_index_is_rebuilt_from_the_run_folders(world):
    run = world.cli("run", world.job(), "--json", "--tag", "keep=1").json()
    index = world.store / "index.sqlite"
    index.write_bytes(index.read_bytes()[:100])
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (world.store / extra).unlink(missing_ok=True)
    broken = world.cli("results", "list", "--no-refresh")
    assert broken.code == 2 and "reindex" in one_line_error(broken)
    assert world.cli("results", "reindex", "--yes").code == 0
    shown = world.cli("results", "show", "@keep=1", "--json").json()
    assert shown["run_id"] == run["run_id"] and shown["metrics"] == run["metrics"]
