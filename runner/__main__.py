"""Container entrypoint: `python -m runner`, no arguments.

Reads `job.json` and the data from $QARNOT_RESOURCES_DIRECTORY (default /job), the data's shards
unpacked there first (`jobs.shards`), picks the sweep
trial from $INSTANCE_ID, and writes the results contract (`jobs.results`) to
$QARNOT_RESULTS_DIRECTORY/out (a sweep trial to out/trial-<INSTANCE_ID>).  Resumes from a
checkpoint.pt already there (a retried or re-run instance).  Exit status: 0 done, 2 a problem with
the job or data, 1 an internal error.  A missing or unreadable job.json fails before torch is
imported, in well under a second.  A job of several processes (resources.nodes, procs_per_node)
makes this process torchrun's agent for its node, and each worker it starts runs this again
(`runner.distributed`).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from jobs import settings
from jobs.errors import QtrainError
from jobs.files import JOB_FILE


def read_job(resources: Path) -> dict:
    job_file = resources / JOB_FILE
    if not job_file.is_file():
        raise QtrainError(f"{job_file}: not found; the task must ship {JOB_FILE} as a resource")
    try:
        raw = json.loads(job_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise QtrainError(f"{job_file}: cannot read it ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise QtrainError(f"{job_file}: invalid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise QtrainError(f"{job_file}: expected a JSON object of job fields")
    return raw


def main() -> int:
    try:
        env = settings.task()
        if env.site is not None:  # the job's own packages (resources.requirements), before its code imports
            sys.path.insert(0, str(env.site))
        resources, results = env.resources, env.results_dir()
        raw = read_job(resources)
        from jobs import shards

        unpacked = shards.unpack(resources)  # the dataset's shards, before anything reads its files
        if unpacked:
            print(f"[qtrain] unpacked {unpacked} data file(s) from their shards", flush=True)
        from jobs.load import load_job_dict
        from jobs.results import CHECKPOINT, OUT, trial_dir

        loaded = load_job_dict(raw, resources, source=str(resources / JOB_FILE))
        from runner import distributed

        if distributed.in_worker():  # one of torchrun's workers: rank 0 writes, all train
            distributed.die_with_parent()
            if loaded.job.script is None:
                distributed.join(loaded.job.train.device)
        elif distributed.spans(loaded.job):  # this instance's node: torchrun starts its workers
            return distributed.launch(loaded.job, env)
        out = results / OUT
        trial = None
        if loaded.trials:
            trial = env.instance_id
            out = out / trial_dir(trial)
        from runner.api import run_job  # torch: only once the job is known to be readable
        from runner.userscript import ScriptFailed

        try:
            run_job(loaded, out, resume=(out / CHECKPOINT).exists(), trial=trial, site=env.site)
        except ScriptFailed as exc:  # its results are written: the task fails with its status
            print(f"[qtrain] error: {exc}", file=sys.stderr, flush=True)
            return exc.code
        finally:
            distributed.leave()
        return 0
    except QtrainError as exc:
        print(f"[qtrain] error: {exc.one_line()}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - report, then fail the task
        lost = _lost_peer(exc)
        if lost:  # a distributed worker whose peer is gone: that peer's node says why
            print(f"[qtrain] error: {lost}", file=sys.stderr, flush=True)
            return 1
        print("[qtrain] internal error:", file=sys.stderr)
        traceback.print_exc()
        return 1


def _lost_peer(exc: BaseException) -> str | None:
    """In one of torchrun's workers, a collective that failed because a peer went away: one line
    (the peer's own node names the rank that failed), not a traceback."""
    from runner import distributed

    rank = distributed.current()
    if not rank.active or "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    text = str(exc)
    if isinstance(exc, dist.DistError) or isinstance(exc, RuntimeError) and ("gloo" in text or "NCCL" in text):
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return (f"rank {rank.rank} lost its peers in a collective ({first[:200]}); the rank that failed "
                f"first is named by its node")
    return None


if __name__ == "__main__":
    status = main()
    from runner import distributed

    if distributed.in_worker():  # one of torchrun's workers
        distributed.end_worker(status)
    from runner.imports import exit_fast

    exit_fast()
    sys.exit(status)
