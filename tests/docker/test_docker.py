"""The emulator's docker executor running the real runner image (marker `docker`).

Skipped, with the reason, where no Docker engine answers or the image is not built
(`qtrain image build --offline` makes it without any registry; `.ci/run` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from submit.emulator import daemon
from submit.emulator.processes import LABEL, WARM_LABEL
from submit.image import CPU_TAG, docker_problem, image_id
from tests.helpers import docker_skip_reason, sh

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_emulator(docker_home):
    with daemon.isolated(docker_home, "docker") as endpoint:
        yield endpoint


def _containers(owner: int, warm: bool = False, image_id: str | None = None) -> list[str]:
    """The instance containers (with warm=True, the warm containers; of `image_id`, if given) of
    the emulator daemon `owner`, and nobody else's: a user's own emulator may run beside the tests."""
    filters = ["--filter", f"label={LABEL}={owner}"] + (["--filter", f"label={WARM_LABEL}={image_id}"] if image_id else [])
    proc = subprocess.run(["docker", "ps", "-a", *filters, "--format", "{{.Names}}"], capture_output=True, text=True)
    return [n for n in proc.stdout.split() if n.startswith("qtrain-warm-") == warm]


def _wait(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _warm_ready(owner: int, image: str = CPU_TAG) -> bool:
    """Has the emulator `owner`'s warm container of `image` (as it is now) come up?"""
    from submit.emulator import daemon

    return bool(_containers(owner, warm=True, image_id=image_id(image))) and \
        any((daemon.home() / "tasks").rglob(".warm-*.sock"))


def _run_json(result) -> dict:
    return json.loads((Path(result.json()["artifacts_dir"]) / "run.json").read_text())


def test_penguins_gives_the_same_metrics_fresh_warm_and_in_process(qtrain, tmp_path, docker_home, monkeypatch):
    args = ("run", "penguins", "--set", "train.epochs=8", "--json", "--store", tmp_path / "store")
    monkeypatch.setenv("QTRAIN_DOCKER_WARM", "0")
    with daemon.isolated(docker_home, "docker") as endpoint:
        assert endpoint.executor == "docker"
        status = qtrain("emulator", "status", "--json").json()
        assert status["executor"] == "docker"
        fresh = qtrain(*args)
        assert not _containers(endpoint.pid, warm=True)
    first = endpoint.pid
    monkeypatch.setenv("QTRAIN_DOCKER_WARM", "1")
    with daemon.isolated(docker_home, "docker") as endpoint:
        _wait(lambda: _warm_ready(endpoint.pid))  # the default image is warmed when the emulator starts
        warm = qtrain(*args)
        assert _containers(endpoint.pid, warm=True) and not _containers(endpoint.pid)  # forked in it
    assert not _containers(endpoint.pid, warm=True), "warm containers go with the emulator"
    with daemon.isolated(tmp_path / "process-home", "process"):
        in_process = qtrain(*args)
    results = {"docker": fresh, "docker-warm": warm, "process-warm": in_process}
    for how, result in results.items():
        assert result.code == 0, result.err
        assert result.json()["state"] == "succeeded"
        assert _run_json(result)["execution"] == how
    tests = [r.json()["metrics"]["test"] for r in results.values()]
    assert tests[0]["accuracy"] == tests[1]["accuracy"] == tests[2]["accuracy"]
    assert tests[0]["log_loss"] == pytest.approx(tests[1]["log_loss"], abs=1e-5)
    assert tests[0]["log_loss"] == pytest.approx(tests[2]["log_loss"], abs=1e-5)
    for result in (fresh, warm):
        run_json = _run_json(result)
        assert run_json["image_digest"] == image_id(CPU_TAG)  # the image that really ran
        assert run_json["image_source_digest"]
    assert _run_json(in_process)["image_digest"] is None
    assert not _containers(first) and not _containers(endpoint.pid), "containers are removed when they end"


def test_a_rebuilt_image_gets_a_fresh_warm_container(qtrain, tmp_path, docker_home):
    tag = "qtrain/runner:warm-test"
    build = ["docker", "build", "-q", "-t", tag, "-"]

    def rebuild(mark: str) -> str:
        dockerfile = f"FROM {CPU_TAG}\nLABEL org.qtrain.test={mark}\n"
        subprocess.run(build, input=dockerfile, text=True, check=True, capture_output=True)
        return image_id(tag)

    args = ("run", "penguins", "--set", "train.epochs=1", "--set", f"resources.image={tag}", "--json",
            "--store", tmp_path / "store")
    try:
        first = rebuild(f"a{time.time()}")
        with daemon.isolated(docker_home, "docker") as endpoint:
            assert _run_json(qtrain(*args))["execution"] == "docker"  # no warm container yet: fresh
            _wait(lambda: _warm_ready(endpoint.pid, tag))
            assert _run_json(qtrain(*args))["image_digest"] == first
            second = rebuild(f"b{time.time()}")
            assert second != first
            rerun = _run_json(qtrain(*args))  # the warm container is of the old image: fresh again
            assert rerun["execution"] == "docker" and rerun["image_digest"] == second
            _wait(lambda: _warm_ready(endpoint.pid, tag))
            again = _run_json(qtrain(*args))
            assert again["execution"] == "docker-warm" and again["image_digest"] == second
            assert not _containers(endpoint.pid, warm=True, image_id=first), "the old image's warm container is retired"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.mark.faults  # a fault injected: in the fault tier (pytest -m faults)
def test_a_killed_daemon_leaves_no_container_behind(qtrain, tmp_path, docker_home):
    """kill -9 of the daemon mid-training: its keeper removes the instance's container and the
    warm one at once, and the `docker run` clients and the instance's files are gone with them."""
    from submit.emulator import daemon
    from tests.helpers import processes_in

    with daemon.isolated(docker_home, "docker") as endpoint:
        pid = endpoint.pid
        _wait(lambda: _warm_ready(pid))
        run = qtrain("run", "penguins", "--set", "train.epochs=100000", "--set", "train.checkpoint_every=1",
                     "--detach", "--json", "--store", tmp_path / "store").json()
        work = daemon.home() / "tasks"
        _wait(lambda: any(work.rglob(f"{run['task_uuid']}/**/checkpoint.pt")))  # it trains
        assert _containers(pid) or _containers(pid, warm=True)
        os.kill(pid, 9)
        _wait(lambda: not _containers(pid) and not _containers(pid, warm=True), timeout=60)
        assert not processes_in(work / str(pid))


def test_abort_kills_the_container(conn_factory, docker_emulator, wait_task):
    conn = conn_factory(docker_emulator)
    task = conn.create_task("abort-docker", "docker-batch", 1)
    task.constants.update({"DOCKER_REPO": "qtrain/runner", "DOCKER_TAG": "latest",
                           "DOCKER_CMD": sh("echo started; sleep 120")})
    task.submit()
    deadline = time.monotonic() + 60
    while "started" not in task.stdout() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _containers(docker_emulator.pid), "the instance runs in a container"
    task.abort()
    assert wait_task(task, timeout=30) == "Cancelled"  # the container sleeps 120 s
    deadline = time.monotonic() + 10
    while _containers(docker_emulator.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _containers(docker_emulator.pid)


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


def test_commands_as_qarnot_runs_them_default_command_and_entrypoint(conn_factory, docker_emulator, wait_task):
    """No DOCKER_CMD: the image's own CMD runs.  An ENTRYPOINT is honoured, DOCKER_CMD its
    arguments (Qarnot's documented example: ENTRYPOINT ["echo", "Hello"] + DOCKER_CMD " World")."""
    conn = conn_factory(docker_emulator)
    images = {"qtrain/test-default:latest": f'FROM {CPU_TAG}\nCMD ["echo", "the image default command"]\n',
              "qtrain/test-entry:latest": f'FROM {CPU_TAG}\nENTRYPOINT ["echo", "Hello"]\n'}
    try:
        for tag, dockerfile in images.items():
            subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, check=True,
                           capture_output=True)
        default = conn.create_task("default command", "docker-batch", 1)
        default.constants.update({"DOCKER_REPO": "qtrain/test-default", "DOCKER_TAG": "latest"})
        entry = conn.create_task("entrypoint", "docker-batch", 2)
        entry.constants.update({"DOCKER_REPO": "qtrain/test-entry", "DOCKER_TAG": "latest",
                                "DOCKER_CMD": " World #${FRAME_ID}"})
        for task in (default, entry):
            task.submit()
        assert wait_task(default) == "Success" and wait_task(entry) == "Success"
        assert default.stdout().strip() == "the image default command"
        assert sorted(entry.stdout().splitlines()) == ["0> Hello World #0", "1> Hello World #1"]
    finally:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True)


def test_runs_as_non_root_without_network(conn_factory, docker_emulator, wait_task):
    conn = conn_factory(docker_emulator)
    task = conn.create_task("whoami", "docker-batch", 1)
    task.constants.update({"DOCKER_REPO": "qtrain/runner", "DOCKER_TAG": "latest",
                           "DOCKER_CMD": sh("id -u; pwd; echo $QARNOT_RESULTS_DIRECTORY; "
                                            "python -c 'import socket; print(len(socket.if_nameindex()))'")})
    task.submit()
    assert wait_task(task) == "Success"
    uid, cwd, results, interfaces = task.stdout().split()
    assert uid != "0" and cwd == "/job" and results == "/job"
    assert interfaces == "1", "only the loopback interface: no network, like docker-batch"


@pytest.mark.faults  # a fault injected: in the fault tier (pytest -m faults)
def test_stopping_the_emulator_mid_task_removes_its_containers_and_files(qtrain, tmp_path, docker_home):
    from submit.emulator import daemon

    with daemon.isolated(docker_home, "docker") as endpoint:
        run = qtrain("run", "penguins", "--set", "train.epochs=100000", "--set",
                     "train.checkpoint_every=1", "--detach", "--json", "--store", tmp_path / "store").json()
        work = daemon.home() / "tasks"
        _wait(lambda: any(work.rglob(f"{run['task_uuid']}/**/checkpoint.pt")))  # it trains
        assert _containers(endpoint.pid) or _containers(endpoint.pid, warm=True)
    assert not _containers(endpoint.pid) and not _containers(endpoint.pid, warm=True)
    assert not any(work.rglob(run["task_uuid"])), "files written in the container are deletable"


def test_the_warm_container_comes_up_when_the_state_lies_under_a_private_folder(qtrain, tmp_path):
    """As root, a user's state is under /root (0700): the image's non-root user must not need to
    cross it, so the task folders are mounted at a path of their own inside the container."""
    if docker_problem() or image_id(CPU_TAG) is None:
        pytest.skip(docker_skip_reason())
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with daemon.isolated(private / "home", "docker") as endpoint:
        _wait(lambda: _warm_ready(endpoint.pid), timeout=90)
        run = qtrain("run", "penguins", "--set", "train.epochs=2", "--json", "--store", tmp_path / "store")
        assert run.code == 0, run.err
        assert _run_json(run)["execution"] == "docker-warm", run.out + run.err
