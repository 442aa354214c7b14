"""`qtrain image build|push` against the real Docker engine (marker `docker`)."""

from __future__ import annotations

import json
import subprocess

import pytest

from submit.image import CPU_TAG, DOCKER_DIR, docker_problem, image_id, source_digest

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def needs_the_image():
    problem = docker_problem()
    if problem:
        pytest.skip(f"no Docker engine: {problem}")
    if image_id(CPU_TAG) is None:
        pytest.skip(f"the runner image {CPU_TAG} is not built (qtrain image build --offline)")


def test_the_image_holds_the_runner_not_the_submitter():
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", CPU_TAG, "python", "-c",
                           "import json, importlib.util as u, torch, runner.run; print(json.dumps("
                           "[u.find_spec(m) is not None for m in ('jobs', 'runner', 'submit', 'qarnot', 'boto3')]))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, True, False, False, False]
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", CPU_TAG], capture_output=True,
                                        text=True).stdout)[0]["Config"]
    assert inspect["User"] == "qtrain" and inspect["WorkingDir"] == "/job"
    assert inspect["Cmd"] == ["python", "-m", "runner"]
    label = inspect["Labels"]["org.qtrain.source-digest"]  # what went in (this checkout's, in CI)
    assert len(label) == 64 and len(source_digest(DOCKER_DIR / "requirements-cpu.txt")) == 64


def test_push_errors_are_one_line(qtrain):
    result = qtrain("image", "push", "127.0.0.1:9/qtrain-runner:test", "--source", "qtrain/not-built:x")
    assert result.code == 2 and "not on this machine" in result.err
    result = qtrain("image", "push", "127.0.0.1:9/qtrain-runner:test")  # no registry listens there
    assert result.code == 2 and "docker push failed" in result.err and "Traceback" not in result.err
    subprocess.run(["docker", "rmi", "127.0.0.1:9/qtrain-runner:test"], capture_output=True)


def test_offline_gpu_build_needs_a_cuda_base(qtrain):
    result = qtrain("image", "build", "--gpu", "--offline")
    assert result.code == 2 and "--base" in result.err
