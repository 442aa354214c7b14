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


_EXIT_FIRST: dict[str, int] = {}  # {"pid": p, "sig": s}: p exits just before `os.kill(p, s)` is sent


def _exit_before_signalled(event: str, args: tuple) -> None:
    """An audit hook (they cannot be removed: it acts once per arming): a daemon that exits, and is
    reaped by its keeper, between being found by `stop` and being signalled by it."""
    if event != "os.kill" or not _EXIT_FIRST or tuple(args) != (_EXIT_FIRST["pid"], _EXIT_FIRST["sig"]):
        return
    pid = _EXIT_FIRST.pop("pid")
    _EXIT_FIRST.clear()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, every=0.01)


def _exits_first(pid: int, sig: int) -> None:
    if not _EXIT_FIRST.get("hooked"):
        import sys

        sys.addaudithook(_exit_before_signalled)
    _EXIT_FIRST.update(hooked=1, pid=pid, sig=sig)


def test_stop_of_a_daemon_that_exits_before_it_is_signalled_says_stopped(qtrain, tmp_path):
    """`qtrain emulator stop` racing a daemon that is exiting (a second stop, a kill, its own
    crash): gone between being found and being signalled is stopped, never a traceback."""
    from submit.emulator import daemon

    with daemon.isolated(tmp_path / "home") as endpoint:
        _exits_first(endpoint.pid, signal.SIGTERM)
        result = qtrain("emulator", "stop")
        assert result.code == 0 and result.out.strip() == "emulator stopped", result.out + result.err
        assert "pid" not in _EXIT_FIRST, "the daemon was signalled"
        assert daemon.running() is None and not daemon.state_file().exists()
        assert qtrain("emulator", "stop").out.strip() == "the emulator was not running"


def test_stop_of_a_daemon_that_exits_as_its_grace_ends_is_stopped(tmp_path):
    """The daemon outlives stop's grace (stopped here: SIGTERM waits), then exits just before the
    SIGKILL that follows."""
    from submit.emulator import daemon

    with daemon.isolated(tmp_path / "home") as endpoint:
        os.kill(endpoint.pid, signal.SIGSTOP)
        _exits_first(endpoint.pid, signal.SIGKILL)
        assert daemon.stop(timeout=0.5) is True
        assert "pid" not in _EXIT_FIRST, "the daemon was signalled"
        assert daemon.running() is None
