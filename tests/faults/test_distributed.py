"""A rank killed mid-training (issue 26): the task fails within seconds, naming the rank, the other
instances are stopped and nothing is left running; `resume` continues from rank 0's checkpoint."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from submit.store import Store
from tests.helpers import processes_in, wait_for
from tests.submit.run.test_distributed import PENGUINS

pytestmark = pytest.mark.faults


def _job(tmp_path: Path, job: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _rank_process(uuid: str, rank: int) -> int | None:
    """The worker of `rank` (a `python -m runner` that torchrun started) in task `uuid`."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                env = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"QARNOT_TASK_UUID={uuid}".encode() in env and f"RANK={rank}".encode() in env:
                return int(proc.name)
    return None


def _task_processes(uuid: str) -> list[int]:
    """Every process of the task: by its working folder, or by the task's uuid in its environment."""
    found = set(processes_in(uuid))
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"QARNOT_TASK_UUID={uuid}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.add(int(proc.name))
            except OSError:
                continue
    return sorted(found)


def test_a_killed_rank_fails_the_task_within_seconds_and_resume_continues(emulator, qtrain, conn, tmp_path):
    job = {**PENGUINS, "name": "penguins-kill", "split": {"val_size": 0},
           "train": {**PENGUINS["train"], "epochs": 3000, "checkpoint_every": 5}}
    store = tmp_path / "store"
    submitted = qtrain("run", _job(tmp_path, job), "--detach", "--json", "--store", store)
    assert submitted.code == 0, submitted.err
    run_id = submitted.json()["run_id"]
    uuid = Store(store).get(run_id).task_uuid
    task = conn.retrieve_task(uuid)
    state = Path(os.environ["QTRAIN_STATE_DIR"])
    checkpoint = wait_for(lambda: next(state.rglob(f"{uuid}/instances/0/out/checkpoint.pt"), None), timeout=120)
    assert checkpoint.is_file()
    victim = wait_for(lambda: _rank_process(uuid, 1), timeout=30)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: task.update() or task.state in ("Failure", "Success", "Cancelled"), timeout=60, every=0.1)
    assert task.state == "Failure"
    assert time.monotonic() - killed < 15  # within seconds: the rank's node sees it, the others are stopped
    errors = [f"{e.message} {e.debug}" for e in task.errors]
    # the killed rank's node says so, whichever node noticed first (rank 0 sees its peer's socket close)
    assert any(e.startswith("instance 1:") and "rank 1" in e and "SIGKILL" in e for e in errors), errors
    assert any(e.startswith("instance 0:") for e in errors), errors
    wait_for(lambda: not _task_processes(uuid), timeout=20)  # nothing left running
    fetched = qtrain("fetch", run_id, "--json", "--store", store)
    assert fetched.json()["state"] == "failed"
    assert (store / "runs" / run_id / "checkpoint.pt").is_file()  # rank 0's, brought home

    resumed = qtrain("resume", run_id, "--epochs", "60", "--json", "--store", store)
    assert resumed.code == 0, resumed.err
    data = resumed.json()
    assert data["state"] == "succeeded" and data["metrics"]["resumed_from_epoch"] >= 5
    assert data["metrics"]["epochs_run"] == 60 and data["metrics"]["distributed"]["world_size"] == 2
