"""Script jobs and their packages through the docker executor (marker `docker`): the runner image
runs the user's script (its epoch lines live, qtrain's confusion matrix, the model home, a sweep
over a script argument; in the fault tier, a cancelled run resumed to the uninterrupted result),
and a job with resources.requirements runs a derived image, built once per requirements."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from submit.emulator import daemon
from submit.image import BASE_LABEL, CPU_TAG, REQUIREMENTS_LABEL, image_id, inspect
from tests.helpers import wait_for
from tests.submit.run.test_script_jobs import _greeting_job, _steady

pytestmark = pytest.mark.docker


def test_a_script_job_in_the_runner_image(qtrain, tmp_path, docker_home):
    import torch

    store = tmp_path / "store"
    path = _steady(tmp_path, epochs=5)
    with daemon.isolated(docker_home, "docker"):
        reference = qtrain("run", path, "--json", "--store", store)
        assert reference.code == 0, reference.err
        shown = reference.out + reference.err
        assert "epoch=1/5" in shown and "epoch=5/5" in shown
        folder = Path(reference.json()["artifacts_dir"])
        assert json.loads((folder / "run.json").read_text())["execution"].startswith("docker")
        assert (folder / "confusion_matrix.csv").is_file() and (folder / "model.pt").is_file()
        job = yaml.safe_load(path.read_text())
        job["sweep"] = {"script.args.hidden": [4, 16]}
        path.write_text(yaml.safe_dump(job))
        swept = qtrain("run", path, "--json", "--store", store)
        assert swept.code == 0, swept.err
        for trial, hidden in ((0, 4), (1, 16)):
            weights = torch.load(Path(swept.json()["artifacts_dir"]) / f"trial-{trial}" / "model.pt")
            assert weights["0.weight"].shape == (hidden, 3)


@pytest.mark.faults  # a fault injected: in the fault tier (pytest -m faults)
def test_a_cancelled_script_run_in_the_runner_image_resumes_to_the_uninterrupted_result(qtrain, tmp_path, docker_home):
    store = tmp_path / "store"
    path = _steady(tmp_path, epochs=60, pause=0.1)
    with daemon.isolated(docker_home, "docker"):
        reference = qtrain("run", path, "--json", "--store", store)
        assert reference.code == 0, reference.err
        run = qtrain("run", path, "--detach", "--json", "--store", store).json()
        wait_for(lambda: "epoch=10/60" in qtrain("logs", run["run_id"], "--store", store).out, timeout=90)
        qtrain("cancel", run["run_id"], "--store", store)  # killed mid-training (exit 1: the run did not succeed)
        cancelled = qtrain("fetch", run["run_id"], "--json", "--store", store).json()
        assert cancelled["state"] == "cancelled"
        stopped_at = json.loads((Path(run["artifacts_dir"]) / "checkpoint.json").read_text())["epoch"]
        assert 10 <= stopped_at < 60
        resumed = qtrain("resume", run["run_id"], "--json", "--store", store)
        assert resumed.code == 0, resumed.err
        assert resumed.json()["metrics"]["test"] == reference.json()["metrics"]["test"]


def test_requirements_run_in_a_derived_image_built_once(qtrain, tmp_path, docker_home):
    path = _greeting_job(tmp_path, requirements=True)
    store = tmp_path / "store"
    tag = None
    try:
        with daemon.isolated(docker_home, "docker"):
            first = qtrain("run", path, "--json", "--store", store)
            assert first.code == 0, first.err
            assert "hello qarnot" in first.out + first.err and "building" in first.err
            tag = first.json()["info"]["image"]
            assert tag.startswith(f"{CPU_TAG}-req-")
            labels = inspect(tag)["labels"]
            assert labels[BASE_LABEL] == image_id(CPU_TAG) and labels[REQUIREMENTS_LABEL]
            second = qtrain("run", path, "--json", "--store", store)
            assert second.code == 0 and "building" not in second.err  # cached by the requirements' hash
            assert second.json()["info"]["image"] == tag
    finally:
        if tag:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
