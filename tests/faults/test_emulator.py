"""Faults of the emulator's own parts, found by using it as unlucky users do (issue 28): a second
emulator on the same state, a storage server that dies under a running daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from submit.emulator.processes import pid_alive
from tests.faults.conftest import one_line_error
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

LONG = ["--set", "train.epochs=100000", "--set", "train.early_stopping=null", "--set", "train.checkpoint_every=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _epoch_seen(world, run_id: str) -> bool:
    return "epoch=" in world.cli("logs", run_id).out


def test_a_second_emulator_on_the_same_state_is_refused_and_touches_nothing(world):
    run = world.cli("run", world.job(), *LONG, "--detach", "--json").json()
    wait_for(lambda: _epoch_seen(world, run["run_id"]))
    daemon = world.daemon()
    s3 = world.emulator_home / "s3"
    kept = {name: (s3 / name).read_bytes() for name in ("identities.json", "weed.pid")}
    weed = int(kept["weed.pid"])

    second = world.cli("emulator", "serve", "--port", _free_port(), "--token", "x", timeout=60)
    line = one_line_error(second)
    assert second.code == 2 and f"pid {daemon['pid']}" in line and "--state" in line, line
    also = world.cli("emulator", "serve", "--port", _free_port(), "--state", world.emulator_home, timeout=60)
    assert also.code == 2 and f"pid {daemon['pid']}" in one_line_error(also)

    assert {name: (s3 / name).read_bytes() for name in kept} == kept  # its identity and pid files
    assert pid_alive(weed) and pid_alive(daemon["pid"])
    assert world.task_state(run["task_uuid"]) in ("FullyExecuting", "PartiallyExecuting")
    status = world.cli("emulator", "status", "--json").json()
    assert status["api"] == "answers" and status["storage"] == "answers"
    assert world.cli("cancel", run["run_id"]).code == 1  # it was training all along; now cancelled
    assert world.cli("results", "show", run["run_id"], "--json").json()["state"] == "cancelled"


def test_a_dead_storage_server_is_restarted_and_a_running_task_still_uploads(world):
    job = world.job(epochs=30, early_stopping=None)
    assert world.cli("emulator", "start").code == 0
    weed = int((world.emulator_home / "s3" / "weed.pid").read_text())
    run = world.cli("run", job, "--detach", "--json").json()
    wait_for(lambda: _epoch_seen(world, run["run_id"]))
    os.kill(weed, signal.SIGKILL)  # mid-task
    log = world.emulator_home / "daemon.log"
    wait_for(lambda: "restarted it on the same data" in log.read_text(), 30)
    assert f"the storage (weed, pid {weed}) died" in log.read_text()
    fetched = world.cli("fetch", run["run_id"], "--json")
    assert fetched.code == 0, fetched.err
    assert fetched.json()["state"] == "succeeded" and fetched.json()["metrics"]["epochs_run"] == 30
    again = world.cli("run", job, "--set", "train.epochs=2", "--json")  # and the next run too
    assert again.code == 0 and again.json()["state"] == "succeeded", again.err


def test_status_says_which_part_does_not_answer_and_its_advice_works(world):
    assert world.cli("emulator", "start").code == 0
    weed = int((world.emulator_home / "s3" / "weed.pid").read_text())
    os.kill(weed, signal.SIGSTOP)  # alive, answering nothing: the watcher has nothing to restart
    try:
        status = world.cli("emulator", "status", "--json", timeout=60)
        assert status.code == 1
        data = json.loads(status.out.strip().splitlines()[-1])
        assert data["api"] == "answers" and data["storage"] != "answers"
        said = world.cli("emulator", "status", timeout=60)
        assert "storage" in said.out and "does not answer" in said.out
        advice = said.out.split("qtrain emulator", 1)[1] if "qtrain emulator" in said.out else ""
        assert "stop" in advice and "start" in advice, said.out
    finally:
        os.kill(weed, signal.SIGCONT)
    started = time.monotonic()
    assert world.cli("emulator", "stop").code == 0 and world.cli("emulator", "start").code == 0  # the advice
    assert time.monotonic() - started < 60
    status = world.cli("emulator", "status", "--json").json()
    assert status["api"] == status["storage"] == "answers"
