"""The matrix's docker cells (issue 36): one cell a job kind through the docker executor, the
runner image running it as a task runs it on Qarnot, on two nodes (containers on a network of the
task's own).  Part of the matrix tier (`-m matrix`); skipped, saying why, without Docker."""

from __future__ import annotations

import pytest

from submit.emulator import daemon
from tests.matrix.test_matrix import _job

pytestmark = [pytest.mark.docker, pytest.mark.matrix]


@pytest.mark.parametrize("kind", ["builtin", "module", "script"])
def test_each_job_kind_on_two_nodes_in_the_runner_image(qtrain, tmp_path, docker_home, kind):
    path = _job(tmp_path / "job", kind, "classification", "predictions", 2)
    with daemon.isolated(docker_home, "docker"):
        result = qtrain("run", path, "--json", "--store", tmp_path / "store")
        assert result.code == 0, (result.out + result.err)[-3000:]
        run = result.json()
        assert run["state"] == "succeeded" and "accuracy" in run["metrics"]["test"]
        assert run["info"]["execution"].startswith("docker")
        if kind != "script":
            assert run["metrics"]["distributed"]["world_size"] == 2
