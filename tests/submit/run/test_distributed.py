"""One training across instances (issue 26): resources.nodes x procs_per_node through `qtrain run`
on the real emulator (process executor: the instances on loopback), torch.distributed underneath.

A 2-node job trains as one: one result set, from rank 0, with curves over the whole data; a script
job gets torchrun's variables and does its own all-reduce; a placement the backend cannot give is
one line before anything is sent.  (A rank killed: tests/faults/test_distributed.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs.errors import JobError
from jobs.load import load_job_dict
from submit.store import Store

PENGUINS = {
    "name": "penguins-2n", "task": "classification",
    "data": {"path": "palmerpenguins", "target": "species",
             "features": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]},
    "split": {"val_size": 0.15},
    "model": {"kind": "mlp", "hidden": [32, 32]},
    "train": {"epochs": 25, "batch_size": 16, "lr": 0.003, "early_stopping": None},
    "resources": {"nodes": 2},
}

ALLREDUCE = """
import os
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"RANK={os.environ['RANK']} WORLD_SIZE={os.environ['WORLD_SIZE']} sum={t.item():g}", flush=True)
if rank == 0:
    with open(os.path.join(os.environ["QTRAIN_OUTPUT_DIR"], "sum.txt"), "w") as fh:
        fh.write(f"{t.item():g}")
dist.destroy_process_group()
"""


def _job(tmp_path: Path, job: dict, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(job))
    return path


def _tasks(emulator) -> list[dict]:
    import requests

    return requests.get(f"{emulator.url}/tasks", headers={"Authorization": emulator.token}, timeout=30).json()


NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self, in_features, num_classes, hidden=24):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.layers(x)
"""


def test_a_two_node_job_trains_as_one_with_its_results_from_rank_0(emulator, qtrain, tmp_path):
    """Your own model (a module job) on two nodes; the built-in ones: tests/docker/test_distributed.py
    and tests/runner/test_distributed.py."""
    (tmp_path / "net.py").write_text(NET)
    job = {**PENGUINS, "model": {"kind": "module", "source": "net.py", "class": "Net"}}
    store = tmp_path / "store"
    run = qtrain("run", _job(tmp_path, job), "--json", "--store", store)
    assert run.code == 0, run.err
    data = run.json()
    assert data["state"] == "succeeded"
    metrics = data["metrics"]
    assert metrics["distributed"]["nodes"] == 2 and metrics["distributed"]["world_size"] == 2
    assert metrics["distributed"]["global_batch_size"] == 32 and metrics["batch_size"] == 16
    assert metrics["test"]["accuracy"] >= 0.9
    # the curves cover the whole training split: every rank's rows, summed (a shard may repeat a row)
    rows, epochs = metrics["train"]["n"], metrics["epochs_run"]
    seen = metrics["timings"]["samples_per_second"] * metrics["timings"]["train_seconds"]
    assert epochs == 25 and epochs * rows <= seen + 1e-6 and seen <= epochs * (rows + 1) + 1e-6
    # one result set, from rank 0: one metrics.json and model.pt in the run's folder, none of rank 1
    folder = Path(data["artifacts_dir"])
    kept = [p for p in folder.rglob("metrics.json") if ".incoming" not in p.parts]  # (the download's own copy)
    assert kept == [folder / "metrics.json"]
    assert (folder / "model.pt").is_file() and (folder / "history.csv").is_file() and (folder / "code" / "net.py").is_file()
    history = (folder / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 25 and "val_loss" in history[0]
    record = Store(store).get(data["run_id"])
    assert record.profile == "docker-cluster-network"
    shown = qtrain("results", "show", data["run_id"], "--store", store)
    assert shown.code == 0, shown.err
    assert "2 nodes x 1 process, world size 2 (gloo)" in " ".join(shown.out.split()).replace("│ ", "")




def test_the_estimate_counts_every_node(emulator, qtrain, tmp_path):
    one = qtrain("run", _job(tmp_path, {**PENGUINS, "resources": {}}, "one.yaml"), "--estimate", "--json")
    two = qtrain("run", _job(tmp_path, PENGUINS, "two.yaml"), "--estimate", "--json")
    assert one.code == 0 and two.code == 0, one.err + two.err
    a, b = one.json()["estimate"], two.json()["estimate"]
    assert any("2 node(s) x 1 process(es)" in line for line in b["basis"]), b["basis"]
    assert b["instance_seconds"] > a["instance_seconds"] and b["cost_eur"] > 0


def test_a_script_job_gets_every_rank_and_does_its_own_all_reduce(emulator, qtrain, tmp_path):
    (tmp_path / "allreduce.py").write_text(ALLREDUCE)
    job = _job(tmp_path, {"name": "allreduce", "script": {"path": "allreduce.py"},
                          "resources": {"nodes": 2, "procs_per_node": 2}})
    store = tmp_path / "store"
    run = qtrain("run", job, "--store", store)
    assert run.code == 0, run.err
    said = run.out + run.err
    for rank in range(4):
        assert f"RANK={rank} WORLD_SIZE=4 sum=10" in said, said
    run_id = Store(store).list()[0].run_id
    assert (store / "runs" / run_id / "sum.txt").read_text() == "10"


@pytest.mark.parametrize("resources, words", [
    ({"nodes": 0}, ["resources.nodes", "greater than or equal to 1"]),
    ({"nodes": 65}, ["65 instances", "maxInstances", "resources.nodes"]),
    ({"nodes": 2, "profile": "docker-batch"}, ["resources.nodes 2", "docker-batch", "not a cluster profile"]),
    ({"profile": "gpu", "procs_per_node": 2}, ["resources.procs_per_node 2", "GPU"]),
])
def test_a_placement_that_cannot_be_given_is_one_line_before_anything_is_sent(emulator, qtrain, tmp_path,
                                                                              resources, words):
    store = tmp_path / "store"
    tasks = len(_tasks(emulator))
    job = {**PENGUINS, "train": {**PENGUINS["train"], "epochs": 2}, "resources": resources}
    result = qtrain("run", _job(tmp_path, job), "--store", store)
    # the check's own warnings about the data aside (penguins has missing values)
    lines = [x for x in result.err.strip().splitlines() if not x.startswith("[qtrain] warning:")]
    assert result.code == 2 and len(lines) == 1 and "Traceback" not in result.err, result.err
    for word in words:
        assert word in lines[0], lines[0]
    assert len(_tasks(emulator)) == tasks
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())


def test_a_sweep_or_a_second_training_cannot_span_nodes():
    base = {k: v for k, v in PENGUINS.items()}
    with pytest.raises(JobError, match="sweep with resources.nodes 2"):
        load_job_dict({**base, "sweep": {"train.lr": [0.01, 0.001]}}, Path("."))
    with pytest.raises(JobError, match="train.refit: true"):
        load_job_dict({**base, "train": {**base["train"], "refit": True}}, Path("."))
    job = load_job_dict(base, Path(".")).job
    assert job.resources.nodes == 2 and job.resources.procs_per_node == "auto"
    assert json.dumps(job.model_dump(mode="json")["resources"]).count("nodes") == 1
