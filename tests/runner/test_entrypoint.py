"""`python -m runner` as the container runs it: job.json + data in the resources folder, results
in $QARNOT_RESULTS_DIRECTORY/out, the sweep trial from $INSTANCE_ID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from jobs import load_job

ROOT = Path(__file__).resolve().parents[2]


def run_runner(resources: Path, results: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "QARNOT_RESOURCES_DIRECTORY": str(resources),
               "QARNOT_RESULTS_DIRECTORY": str(results), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "runner"], cwd=resources.parent, env=environ,
                          capture_output=True, text=True, timeout=300)


def test_runner_reads_job_json_and_writes_out(tmp_path):
    resources, results = tmp_path / "job", tmp_path / "results"
    resources.mkdir()
    frame = pd.DataFrame({"x1": range(60), "x2": [i % 7 for i in range(60)],
                          "y": ["a" if i % 3 else "b" for i in range(60)]})
    frame.to_csv(resources / "train.csv", index=False)
    job = {"name": "entry", "task": "classification", "data": {"path": "train.csv", "target": "y"},
           "train": {"epochs": 3}}
    (resources / "job.json").write_text(json.dumps(job))
    proc = run_runner(resources, results)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("[qtrain] epoch=") == 3
    metrics = json.loads((results / "out" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and (results / "out" / "model.pt").is_file()


def test_runner_runs_the_sweep_trial_of_its_instance(tmp_path):
    resources, results = tmp_path / "job", tmp_path / "results"
    resources.mkdir()
    raw = load_job("grid-search", ["train.epochs=1"]).raw
    (resources / "job.json").write_text(json.dumps(raw))
    proc = run_runner(resources, results, INSTANCE_ID="3")
    assert proc.returncode == 0, proc.stderr
    run = json.loads((results / "out" / "trial-3" / "run.json").read_text())
    assert run["trial"] == 3 and run["job"]["model"]["n_layers"] == 2
    assert run["job"]["model"]["dropout"] == 0.2
    assert not (results / "out" / "trial-0").exists()


def test_runner_reports_a_bad_job_in_one_line(tmp_path):
    resources = tmp_path / "job"
    resources.mkdir()
    (resources / "job.json").write_text(json.dumps({"name": "x", "task": "classification",
                                                    "data": {"path": "missing.csv", "target": "y"}}))
    proc = run_runner(resources, tmp_path / "results")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("[qtrain] error: data.path")
    assert "Traceback" not in proc.stderr
    proc = run_runner(tmp_path / "nowhere", tmp_path / "results")
    assert proc.returncode == 2 and "job.json: not found" in proc.stderr


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_a_missing_or_broken_job_file_fails_before_torch_is_imported(tmp_path, content):
    resources = tmp_path / "job"
    resources.mkdir()
    if content is not None:
        (resources / "job.json").write_text(content)
    probe = ("import sys, runner.__main__ as m; code = m.main(); "
             "print(code, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "QARNOT_RESOURCES_DIRECTORY": str(resources),
                               "QARNOT_RESULTS_DIRECTORY": str(tmp_path / "results")})
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    assert proc.stderr.startswith("[qtrain] error:") and "job.json" in proc.stderr
