"""The training process killed inside an instance (the machine ran out of memory, a node was lost):
the task fails with the reason, the checkpoints it wrote come home, and `qtrain resume` continues
to exactly the uninterrupted run's result.  On the session's emulator, through the CLI in-process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import kill_instance, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("emulator")]


def test_a_failed_task_shows_the_error_and_stderr_and_keeps_partial_results(qtrain, store_dir, csv_job):
    run = qtrain("run", csv_job, "--set", "train.epochs=100000", "--set", "train.early_stopping=null",
                 "--set", "train.checkpoint_every=1",
                 "--detach", "--json", "--store", store_dir).json()
    wait_for(lambda: "epoch=" in qtrain("logs", run["run_id"], "--store", store_dir).out)
    time.sleep(1)
    kill_instance(run["task_uuid"])  # as if the machine ran out of memory
    result = qtrain("fetch", run["run_id"], "--json", "--store", store_dir)
    assert result.code == 1
    data = result.json()
    assert data["state"] == "failed" and "status 137" in data["error"]
    assert "task Failure" in result.err and "stderr" in result.err
    assert (Path(data["artifacts_dir"]) / "checkpoint.pt").is_file()


def test_resume_continues_a_killed_run_to_the_uninterrupted_result(qtrain, store_dir, csv_job):
    import torch

    long = ["--set", "train.epochs=800", "--set", "train.early_stopping=null", "--set",
            "train.checkpoint_every=1", "--store", store_dir]
    reference = qtrain("run", csv_job, *long, "--json").json()
    assert reference["state"] == "succeeded"
    run = qtrain("run", csv_job, *long, "--detach", "--json").json()
    wait_for(lambda: "epoch=" in qtrain("logs", run["run_id"], "--store", store_dir).out)
    kill_instance(run["task_uuid"])  # the machine died mid-training
    failed = qtrain("fetch", run["run_id"], "--json", "--store", store_dir)
    assert failed.code == 1 and failed.json()["state"] == "failed"
    stopped_at = torch.load(Path(run["artifacts_dir"]) / "checkpoint.pt", weights_only=False)["epoch"]
    assert 0 < stopped_at < 800

    resumed = qtrain("resume", run["run_id"], "--json", "--store", store_dir)
    assert resumed.code == 0, resumed.err
    data = resumed.json()
    assert data["state"] == "succeeded" and data["resumed_from"] == run["run_id"]
    assert f"resumed from checkpoint.pt at epoch {stopped_at}" in resumed.err
    assert data["metrics"]["epochs_run"] == 800
    for split in ("train", "test"):
        assert data["metrics"][split] == reference["metrics"][split], split
    assert data["metrics"]["train_loss"] == reference["metrics"]["train_loss"]

    done = qtrain("resume", reference["run_id"], "--store", store_dir)  # succeeded: nothing left to train
    assert done.code == 2 and "succeeded" in done.err and "--epochs" in done.err  # refused, nothing billed
    refused = qtrain("resume", run["run_id"], "--epochs", "0", "--store", store_dir)
    assert refused.code == 2 and "Traceback" not in refused.err
