"""The runner's side of issue 26, as an instance runs it (`python -m runner` in a task folder, no
emulator): one node of several processes meets on itself (torchrun's standalone rendezvous), rank 0
writes, and the others write nothing; the same on GPUs (NCCL) where a machine has two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.distributed import Rank, current, master_host
from jobs import settings

ROOT = Path(__file__).resolve().parents[2]
JOB = {"name": "two-procs", "task": "classification",
       "data": {"path": "palmerpenguins", "target": "species",
                "features": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]},
       "split": {"val_size": 0.15}, "model": {"kind": "mlp", "hidden": [16]},
       "train": {"epochs": 6, "batch_size": 16, "lr": 0.02, "early_stopping": None}}


def _instance(folder: Path, job: dict, threads: int = 2) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    env.update({"QARNOT_RESOURCES_DIRECTORY": str(folder), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)})
    return subprocess.run([sys.executable, "-m", "runner"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)


def test_one_node_of_two_processes_trains_as_one_and_rank_0_writes(tmp_path):
    proc = _instance(tmp_path / "task", {**JOB, "resources": {"procs_per_node": 2}})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "node 0 of 1: 2 process(es), world size 2, rendezvous on this node" in proc.stdout
    assert proc.stdout.count("[qtrain] epoch=6/6") == 1  # rank 0 speaks for the training
    metrics = json.loads((tmp_path / "task" / "out" / "metrics.json").read_text())
    assert metrics["distributed"]["world_size"] == 2 and metrics["distributed"]["global_batch_size"] == 32
    assert metrics["test"]["accuracy"] > 0.9


def test_the_rendezvous_host_comes_from_the_host_file_unless_master_addr_says(tmp_path):
    (tmp_path / "mpihosts").write_text("# nodes\nnode-a slots=4\nnode-b slots=4\n")
    env = {"QARNOT_RESOURCES_DIRECTORY": str(tmp_path)}
    assert master_host(settings.task(env), 2) == "node-a"
    assert master_host(settings.task({**env, "MASTER_ADDR": "10.0.0.9"}), 2) == "10.0.0.9"
    assert master_host(settings.task(env), 1) == "127.0.0.1"
    (tmp_path / "mpihosts").unlink()
    with pytest.raises(Exception, match="mpihosts: cannot read the cluster's host file"):
        master_host(settings.task(env), 2)
    assert current({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Rank(3, 4, 1)
    assert current({}) == Rank() and not Rank().active


def _cuda_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.skipif(_cuda_gpus() < 2, reason="needs 2 CUDA GPUs (NCCL, one process a GPU)")
def test_procs_per_node_auto_starts_one_process_a_gpu_with_nccl(tmp_path):
    job = {**JOB, "train": {**JOB["train"], "device": "cuda"}, "resources": {"procs_per_node": "auto"}}
    proc = _instance(tmp_path / "task", job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "task" / "out" / "metrics.json").read_text())
    assert metrics["distributed"]["backend"] == "nccl"
    assert metrics["distributed"]["world_size"] == _cuda_gpus()


LEAVE = """
import gc, json, sys
from pathlib import Path
from jobs.load import load_job_dict
from runner import distributed
from runner.api import run_job
distributed.join("cpu")
out = Path(sys.argv[1])
run_job(load_job_dict(json.loads(sys.argv[2]), out), out / "out")
distributed.leave()
from torch.nn.parallel import DistributedDataParallel
import torch.distributed as dist
alive = [o for o in gc.get_objects() if isinstance(o, DistributedDataParallel)]
print("left", dist.is_initialized(), len(alive), flush=True)
import atexit
atexit.register(print, "finalised")  # end_worker skips the interpreter's finalisation: never printed
distributed.end_worker(0)
"""


def test_a_worker_leaves_with_its_process_group_destroyed_and_ddp_collected(tmp_path):
    """Issue 36: a rank that finished before the others died at exit with SIGABRT ("terminate
    called without an active exception", a gloo thread meeting the finalising interpreter; seen
    twice in a row by a user, never here).  Each rank now leaves with nothing of its training left
    that holds the group (no DistributedDataParallel alive), the group destroyed, and ends without
    the interpreter's finalisation (`end_worker`)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**{k: v for k, v in os.environ.items() if k not in ("TORCHELASTIC_RUN_ID", "QTRAIN_AGENT_PID")},
               "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        folder = tmp_path / f"rank{rank}"
        folder.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", LEAVE, str(folder), json.dumps(JOB)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for rank, proc in enumerate(procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == "left False 0", (rank, out[-500:], err[-2000:])
        assert "finalised" not in out
