"""A 2-node job in the runner image (issue 26): the docker executor runs a cluster profile's
instances as containers on a network of the task's own, each with /job/mpihosts and /share; the
training's results come from rank 0, and neither a container nor the network is left behind."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from submit.emulator import daemon
from submit.emulator.processes import LABEL
from tests.helpers import wait_for
from tests.submit.run.test_distributed import PENGUINS

pytestmark = pytest.mark.docker


def _left(kind: str, owner: int) -> list[str]:
    """The emulator `owner`'s containers (kind "ps -a") or networks (kind "network ls")."""
    proc = subprocess.run(["docker", *kind.split(), "--filter", f"label={LABEL}={owner}", "--format", "{{.Names}}"],
                          capture_output=True, text=True)
    return [n for n in proc.stdout.split() if not n.startswith("qtrain-warm-")]


def test_a_two_node_job_runs_in_containers_on_a_network_of_its_own(qtrain, tmp_path, docker_home):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**PENGUINS, "train": {**PENGUINS["train"], "epochs": 10}}))
    with daemon.isolated(docker_home, "docker") as endpoint:
        run = qtrain("run", job, "--json", "--store", tmp_path / "store")
        assert run.code == 0, run.err
        data = run.json()
        assert data["state"] == "succeeded"
        assert data["metrics"]["distributed"] == {
            "nodes": 2, "procs_per_node": 1, "world_size": 2, "backend": "gloo",
            "batch_size_per_process": 16, "global_batch_size": 32}
        assert data["metrics"]["test"]["accuracy"] >= 0.9
        said = run.out + run.err
        assert "rendezvous at qtrain-" in said  # the master's container, by name, from the host file
        wait_for(lambda: not _left("ps -a", endpoint.pid) and not _left("network ls", endpoint.pid), timeout=60)
        shown = qtrain("results", "show", data["run_id"], "--store", tmp_path / "store")
        assert "2 nodes x 1 process" in " ".join(shown.out.split()).replace("│ ", "")
