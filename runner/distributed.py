"""One training across processes and instances: resources.nodes x procs_per_node, on torch.distributed.

In a task's instance, `python -m runner` for such a job does not train: it becomes torchrun's agent
(`launch`, torch.distributed.run in this process), which starts procs_per_node workers, each
`python -m runner` again, with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT).  A worker of a built-in or module job joins the process group (`join`: gloo on CPU,
NCCL on GPU) and trains with DistributedDataParallel on its shard of the rows (`runner.train`);
only rank 0 writes results and checkpoints.  A script job's workers run the script with those
variables: the script does its own DDP.

Where the nodes are (Qarnot's cluster profiles, as their samples use them; written down in the
README, "Several nodes"): the instance's node rank is its INSTANCE_ID, instance 0 being the
master; the rendezvous host is MASTER_ADDR when set, else the first host of the host file
(`mpihosts` in the resources folder, Qarnot's /job/mpihosts); the port is MASTER_PORT, else 29500.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import settings
from jobs.errors import QtrainError
from jobs.spec import procs_for
from runner import procs

TIMEOUT_MINUTES = 10  # a collective that waits longer than this for a peer fails the run


@dataclass(frozen=True)
class Rank:
    """Where this process stands in the training: torchrun's variables (a plain run: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def current(environ: dict[str, str] | None = None) -> Rank:
    given = settings.ranks(environ)
    if given.rank is None or given.world_size is None:
        return Rank()
    return Rank(given.rank, given.world_size, given.local_rank)


def in_worker() -> bool:
    """Is this process one of torchrun's workers?"""
    return current().active


def spans(job: Any) -> bool:
    """Does the job run as more than one process (`auto`: one a GPU of this node)?"""
    r = job.resources
    return r.spread() or r.procs_per_node == "auto" and _gpus(job) > 1


def _gpus(job: Any) -> int:
    """The GPUs this node offers the job: none when it trains on the CPU (a CPU profile's instance
    sees none: CUDA_VISIBLE_DEVICES is empty)."""
    if job.train.device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def master_host(env: settings.Task, nodes: int) -> str:
    """The rendezvous host: MASTER_ADDR, else the host file's first host (an MPI host file's
    first word: `node-0 slots=4` -> node-0)."""
    if env.master_addr:
        return env.master_addr
    if nodes == 1:
        return "127.0.0.1"
    path = env.hosts_file()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise QtrainError(f"{path}: cannot read the cluster's host file ({exc.strerror or exc})",
                          hint="a task of resources.nodes > 1 runs on a cluster profile, which lists its "
                               "nodes there; or set MASTER_ADDR") from None
    hosts = [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not hosts:
        raise QtrainError(f"{path}: the cluster's host file names no host", hint="set MASTER_ADDR")
    return hosts[0]


def launch(job: Any, env: settings.Task) -> int:
    """This instance's share of the training: torchrun's agent starting procs_per_node workers
    (`python -m runner`), the rendezvous with the other nodes, and one line naming the rank that
    failed.  Returns the exit status."""
    nodes, node = job.resources.nodes, env.instance_id
    if env.instance_count != nodes:
        raise QtrainError(f"resources.nodes is {nodes} but the task has {env.instance_count} instance(s)",
                          hint="a distributed job runs as one task of resources.nodes instances")
    if not 0 <= node < nodes:
        raise QtrainError(f"INSTANCE_ID {node}: the node ranks of a {nodes}-node task are 0 to {nodes - 1} "
                          f"(qtrain takes the instance id as the node rank, the master being 0)")
    procs = procs_for(job.resources.procs_per_node, _gpus(job))
    host, port = master_host(env, nodes), env.master_port
    threads = env.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    # the workers' environment (torchrun hands them this process's): their threads, and who their agent is
    os.environ[settings.TaskVar.THREADS] = os.environ[settings.TaskVar.MKL_THREADS] = str(max(1, threads // procs))
    os.environ["QTRAIN_AGENT_PID"] = str(os.getpid())
    where = f"rendezvous at {host}:{port}" if nodes > 1 else "rendezvous on this node"
    print(f"[qtrain] node {node} of {nodes}: {procs} process(es), world size {nodes * procs}, {where}", flush=True)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import config_from_args, get_args_parser

    args = ["--nnodes", str(nodes), "--nproc-per-node", str(procs), "--node-rank", str(node),
            "--max-restarts", "0", "--monitor-interval", "0.2", "--rdzv-id", env.task_uuid or "qtrain"]
    args += ["--standalone"] if nodes == 1 else ["--master-addr", host, "--master-port", str(port)]
    parsed = get_args_parser().parse_args([*args, "--module", "runner"])
    if parsed.standalone:
        parsed.rdzv_backend, parsed.rdzv_endpoint = "c10d", "localhost:0"
    config, entrypoint, cmd_args = config_from_args(parsed)
    _quiet_elastic_logs()
    from torch.distributed.launcher.api import elastic_launch

    try:
        elastic_launch(config=config, entrypoint=entrypoint)(*cmd_args)
    except ChildFailedError as exc:  # a worker of this node failed: torchrun has stopped the others
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        how = f"exited with status {code}" if code >= 0 else f"was killed by {_signal_name(-code)}"
        print(f"[qtrain] error: rank {rank} (node {node}, local rank {failure.local_rank}) {how}; "
              f"its node stops, and with it the training", file=sys.stderr, flush=True)
        return code if 0 < code < 128 else 1
    except SignalException as exc:  # the instance is stopped (a failed peer, an abort): workers too
        print(f"[qtrain] node {node} stopped by {_signal_name(int(exc.sigval))}, its workers with it",
              file=sys.stderr, flush=True)
        return 128 + int(exc.sigval)
    return 0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _quiet_elastic_logs() -> None:
    """torch.distributed.elastic logs each step of its agent at INFO, and a failure as a page of
    text: qtrain says what matters in one line."""
    import logging

    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def die_with_parent() -> None:
    """A worker ends when its agent does (Linux), even by SIGKILL: torchrun starts each worker in a
    session of its own, out of reach of a signal to the instance's process group."""
    if not procs.die_with_parent():
        return
    agent = settings.ranks().agent_pid
    if agent is not None and os.getppid() != agent:  # the agent was already gone
        os._exit(1)


def join(device: str) -> str:
    """Join the process group of this worker's training: NCCL where it trains on a GPU, else gloo.
    Returns the backend."""
    import datetime

    import torch
    import torch.distributed as dist

    rank = current()
    backend = "gloo"
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(rank.local_rank)
        backend = "nccl"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES))
    return backend


def leave() -> None:
    """Leave the process group, once the training is done.  The DistributedDataParallel wrapper
    that holds the group is cyclic garbage by then: collected first, so that destroying the group
    joins gloo's threads here, while the interpreter is whole.  (Left to the interpreter's exit,
    a gloo thread still holding a tensor met a finalising interpreter: SIGABRT, "terminate called
    without an active exception", on a rank that finished before the others.)"""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def end_worker(status: int) -> None:
    """A worker's exit: its streams flushed, then no interpreter finalisation at all (nothing of a
    library's threads can meet a half-finalised interpreter; its files are closed already)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def describe(job: Any, rank: Rank, batch_size: int, backend: str | None) -> dict[str, Any]:
    """metrics.json's `distributed`: how the training was spread."""
    return {"nodes": job.resources.nodes, "procs_per_node": rank.world // max(1, job.resources.nodes),
            "world_size": rank.world, "backend": backend, "batch_size_per_process": batch_size,
            "global_batch_size": batch_size * rank.world}


def shard_path() -> Path:
    """Where a rank other than 0 writes what the script writes (nothing of it comes home)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"qtrain-rank{current().rank}-"))
