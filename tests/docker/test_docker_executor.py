"""The emulator's docker executor running the real runner image (marker `docker`).

Skipped, with the reason, where no Docker engine answers or the image is not built
(`qtrain image build --offline` makes it without any registry; `.ci/run` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from submit.image import CPU_TAG, docker_problem, image_id

pytestmark = pytest.mark.docker


def _skip_reason() -> str | None:
    problem = docker_problem()
    if problem:
        return f"no Docker engine: {problem}"
    if image_id(CPU_TAG) is None:
        return f"the runner image {CPU_TAG} is not built (qtrain image build --offline)"
    return None


@contextmanager
def emulator_at(home: Path, executor: str):
    """A daemon of its own (state and config under `home`), stopped on the way out."""
    from submit.emulator import daemon

    keys = ("QTRAIN_STATE_DIR", "QTRAIN_CONFIG_DIR")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["QTRAIN_STATE_DIR"] = str(home / "state")
    os.environ["QTRAIN_CONFIG_DIR"] = str(home / "config")
    try:
        endpoint, _ = daemon.start(executor)
        yield endpoint
    finally:
        daemon.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def docker_home(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    return tmp_path_factory.mktemp("docker-emulator")


@pytest.fixture
def docker_emulator(docker_home):
    with emulator_at(docker_home, "docker") as endpoint:
        yield endpoint


def _containers() -> list[str]:
    proc = subprocess.run(["docker", "ps", "-a", "--filter", "label=org.qtrain.emulator",
                           "--format", "{{.Names}}"], capture_output=True, text=True)
    return proc.stdout.split()


def test_penguins_through_docker_gives_the_process_executor_metrics(qtrain, tmp_path, docker_home):
    args = ("run", "penguins", "--set", "train.epochs=8", "--json", "--store", tmp_path / "store")
    with emulator_at(docker_home, "docker") as endpoint:
        assert endpoint.executor == "docker"
        status = qtrain("emulator", "status", "--json").json()
        assert status["executor"] == "docker"
        in_docker = qtrain(*args)
    assert in_docker.code == 0, in_docker.err
    with emulator_at(tmp_path / "process-home", "process"):
        in_process = qtrain(*args)
    assert in_process.code == 0, in_process.err
    d, p = in_docker.json(), in_process.json()
    assert d["state"] == p["state"] == "succeeded"
    assert d["metrics"]["test"]["accuracy"] == p["metrics"]["test"]["accuracy"]
    assert d["metrics"]["test"]["log_loss"] == pytest.approx(p["metrics"]["test"]["log_loss"], abs=1e-5)
    run_json = json.loads((Path(d["artifacts_dir"]) / "run.json").read_text())
    assert run_json["image_digest"] == image_id(CPU_TAG)  # the image that really ran
    assert run_json["image_source_digest"]
    assert json.loads((Path(p["artifacts_dir"]) / "run.json").read_text())["image_digest"] is None
    assert not _containers(), "containers are removed when they end"


def test_abort_kills_the_container(conn_factory, docker_emulator, wait_task):
    conn = conn_factory(docker_emulator)
    task = conn.create_task("abort-docker", "docker-batch", 1)
    task.constants.update({"DOCKER_REPO": "qtrain/runner", "DOCKER_TAG": "latest",
                           "DOCKER_CMD": "echo started; sleep 120"})
    task.submit()
    deadline = time.monotonic() + 60
    while "started" not in task.stdout() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _containers(), "the instance runs in a container"
    task.abort()
    assert wait_task(task, timeout=30) == "Cancelled"  # the container sleeps 120 s
    deadline = time.monotonic() + 10
    while _containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _containers()


def test_a_failing_container_and_a_missing_image_are_failures(conn_factory, docker_emulator, wait_task):
    conn = conn_factory(docker_emulator)
    task = conn.create_task("fail-docker", "docker-batch", 1)
    task.constants.update({"DOCKER_REPO": "qtrain/runner", "DOCKER_TAG": "latest",
                           "DOCKER_CMD": "python -c 'import sys; print(\"bad\", file=sys.stderr); sys.exit(3)'"})
    task.submit()
    assert wait_task(task) == "Failure"
    assert any("status 3" in e.message for e in task.errors) and "bad" in task.stderr()
    missing = conn.create_task("no-image", "docker-batch", 1)
    missing.constants.update({"DOCKER_REPO": "qtrain/not-built", "DOCKER_TAG": "x", "DOCKER_CMD": "true"})
    missing.submit()
    assert wait_task(missing) == "Failure"
    assert "qtrain/not-built" in missing.stderr()


def test_runs_as_non_root_without_network(conn_factory, docker_emulator, wait_task):
    conn = conn_factory(docker_emulator)
    task = conn.create_task("whoami", "docker-batch", 1)
    task.constants.update({"DOCKER_REPO": "qtrain/runner", "DOCKER_TAG": "latest",
                           "DOCKER_CMD": "id -u; pwd; echo $QARNOT_RESULTS_DIRECTORY; "
                                         "python -c 'import socket; print(len(socket.if_nameindex()))'"})
    task.submit()
    assert wait_task(task) == "Success"
    uid, cwd, results, interfaces = task.stdout().split()
    assert uid != "0" and cwd == "/job" and results == "/job"
    assert interfaces == "1", "only the loopback interface: no network, like docker-batch"


def test_stopping_the_emulator_mid_task_removes_its_containers_and_files(qtrain, tmp_path, docker_home):
    from submit.emulator import daemon

    with emulator_at(docker_home, "docker"):
        run = qtrain("run", "penguins", "--set", "train.epochs=100000", "--detach", "--json",
                     "--store", tmp_path / "store").json()
        deadline = time.monotonic() + 60
        while not _containers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _containers()
        work = daemon.home() / "tasks"
        assert any(work.rglob(run["task_uuid"]))
    assert not _containers()
    assert not any(work.rglob(run["task_uuid"])), "files written in the container are deletable"
