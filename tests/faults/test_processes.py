"""Faults of processes: the submitter, the emulator's daemon, the training process.  Each case
asserts what the user sees (one line, an exit status) and what survives (store rows, files)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from submit.emulator.processes import pid_alive
from tests.helpers import processes_in, wait_for

pytestmark = pytest.mark.faults

LONG = ["--set", "train.epochs=100000", "--set", "train.early_stopping=null", "--set", "train.checkpoint_every=1"]


def _epoch_seen(world, run_id: str) -> bool:
    return "epoch=" in world.cli("logs", run_id).out


def test_kill9_of_qtrain_run_while_following_then_fetch_from_a_new_process(world):
    job = world.job(epochs=1000, early_stopping=None)
    client = world.popen("run", job)
    for line in client.stdout:  # following: the first epoch line, then the client dies
        if "epoch=" in line:
            break
    client.kill()
    client.wait(30)
    assert client.returncode == -signal.SIGKILL

    runs = json.loads(world.cli("results", "list", "--no-refresh", "--json").out.strip().splitlines()[-1])
    assert len(runs) == 1  # the run was recorded, with its task, before it was followed
    assert world.cli("results", "show", runs[0]["run_id"], "--json").json()["task_uuid"]
    fetched = world.cli("fetch", runs[0]["run_id"], "--json")
    assert fetched.code == 0, fetched.err
    data = fetched.json()
    assert data["state"] == "succeeded" and data["metrics"]["epochs_run"] == 1000
    assert (Path(data["artifacts_dir"]) / "model.pt").is_file()


def test_kill9_of_the_daemon_mid_task_loses_no_task_and_brings_the_checkpoint_home(world):
    job = world.job()
    ended = world.cli("run", job, "--detach", "--json").json()  # ends, never fetched
    world.wait_task(ended["task_uuid"])
    running = world.cli("run", job, *LONG, "--detach", "--json").json()
    wait_for(lambda: _epoch_seen(world, running["run_id"]))
    old_tasks = world.emulator_home / "tasks" / str(world.daemon()["pid"])
    weed_pid = int((world.emulator_home / "s3" / "weed.pid").read_text())

    world.kill_daemon()
    wait_for(lambda: not pid_alive(weed_pid), 10)  # died with it

    status = world.cli("status", running["run_id"], "--json")  # starts the emulator again
    assert status.code == 1, status.err  # the run failed (exit 1), and says why
    data = status.json()
    assert data["state"] == "failed" and "emulator stopped" in data["error"]
    assert not processes_in(old_tasks)  # the orphaned training process was stopped
    checkpoint = Path(data["artifacts_dir"]) / "checkpoint.pt"
    assert checkpoint.is_file()
    stopped_at = torch.load(checkpoint, weights_only=False)["epoch"]

    fetched = world.cli("fetch", ended["run_id"], "--json")  # the task that had ended is still there
    assert fetched.code == 0 and fetched.json()["state"] == "succeeded"
    assert fetched.json()["metrics"]["test"]["accuracy"] > 0.5

    resumed = world.cli("resume", running["run_id"], "--epochs", stopped_at + 3, "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["resumed_from"] == running["run_id"]
    assert resumed.json()["metrics"]["epochs_run"] == stopped_at + 3


def test_emulator_stop_with_an_unfetched_run_then_start_again_and_fetch(world):
    run = world.cli("run", world.job(), "--detach", "--json").json()
    world.wait_task(run["task_uuid"])
    assert world.cli("emulator", "stop").code == 0
    assert world.cli("emulator", "start").code == 0
    assert world.task_state(run["task_uuid"]) == "Success"
    fetched = world.cli("fetch", run["run_id"], "--json")
    assert fetched.code == 0, fetched.err
    data = fetched.json()
    assert data["state"] == "succeeded" and data["retrieved"]
    assert {"model.pt", "metrics.json"} <= {p.name for p in Path(data["artifacts_dir"]).iterdir()}


def test_emulator_reset_asks_then_wipes_tasks_and_buckets(world):
    world.env["QTRAIN_KEEP_REMOTE"] = "1"  # what the account holds is looked at (issue 42 deletes it)
    run = world.cli("run", world.job(), "--json").json()
    refused = world.cli("emulator", "reset")  # no terminal to ask on
    assert refused.code == 2 and "--yes" in refused.err
    assert world.task_state(run["task_uuid"]) == "Success"
    done = world.cli("emulator", "reset", "--yes")
    assert done.code == 0 and "1 task(s)" in done.out
    world.cli("emulator", "start")
    assert world.api("/tasks").json() == []
    assert [b["Name"] for b in world.s3().list_buckets()["Buckets"]] == []
    listed = world.cli("results", "list", "--no-refresh")  # the store is the user's: untouched
    assert run["run_id"] in listed.out




def _tree(root: int) -> set[int]:
    """`root` and every process below it (from /proc)."""
    from submit.emulator.processes import children

    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children(pid)
    return found


def test_kill9_of_the_daemon_leaves_no_process_of_it_running(world):
    """The daemon's keeper owns its tree: kill -9 of the daemon mid-training stops the instance,
    the fork server and the resource tracker at once, with no new daemon needed."""
    run = world.cli("run", world.job(), *LONG, "--detach", "--json").json()
    wait_for(lambda: _epoch_seen(world, run["run_id"]))
    state = world.daemon()
    keeper, daemon = state["supervisor"], state["pid"]
    tree = _tree(keeper)
    old_tasks = world.emulator_home / "tasks" / str(daemon)
    assert processes_in(old_tasks) and len(tree) >= 5  # keeper, daemon, weed, fork server + instance, ...

    world.kill_daemon()
    wait_for(lambda: not any(pid_alive(p) for p in tree), 30)  # the keeper too, once it has cleaned up
    assert not processes_in(old_tasks)
    assert "was killed by signal 9; stopped" in (world.emulator_home / "daemon.log").read_text()


def test_processes_that_outlive_daemon_and_keeper_are_stopped_and_reported_by_the_next_daemon(world):
    run = world.cli("run", world.job(), *LONG, "--detach", "--json").json()
    wait_for(lambda: _epoch_seen(world, run["run_id"]))
    state = world.daemon()
    old_tasks = world.emulator_home / "tasks" / str(state["pid"])
    os.killpg(state["supervisor"], signal.SIGKILL)  # keeper and daemon at once (their process group)
    wait_for(lambda: not pid_alive(state["pid"]), 10)
    assert processes_in(old_tasks)  # the instance (its own session) is still training

    status = world.cli("status", run["run_id"], "--json")  # a new daemon reads the task back
    assert status.code == 1, status.err  # the run failed (exit 1)
    assert status.json()["state"] == "failed"
    assert not processes_in(old_tasks)
    assert "outlived the emulator that started it: stopped" in world.cli("logs", run["run_id"], "--stderr").out


def test_qtrain_run_following_when_the_daemon_dies_exits_3_naming_the_run_at_once(world):
    client = world.popen("run", world.job(), *LONG)
    for line in client.stdout:  # following: the first epoch line
        if "epoch=" in line:
            break
    world.kill_daemon()
    out, _ = client.communicate(timeout=60)  # not the two minutes of retries a network blip gets
    runs = json.loads(world.cli("results", "list", "--no-refresh", "--json").out.strip().splitlines()[-1])
    assert client.returncode == 3, out
    error = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and f"run {runs[0]['run_id']}:" in error[0] and "emulator stopped" in error[0], out
    status = world.cli("status", runs[0]["run_id"], "--json")  # as the hint says
    assert status.json()["state"] == "failed" and "emulator stopped" in status.json()["error"]
