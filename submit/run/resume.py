"""`qtrain resume RUN`: a new task that continues a run from its retrieved checkpoints, on the
data the run read (refused when that data changed since)."""

from __future__ import annotations

import copy
from pathlib import Path

from jobs.errors import QtrainError
from jobs.files import job_files
from jobs.load import LoadedJob, load_job_dict, set_dotted
from jobs.results import CHECKPOINT, OUT, dataset_hash, trial_dir
from submit.run.package import PackageFile, extra_file
from submit.store import RunRecord, Store


def resume_job(run: RunRecord, epochs: int | None = None) -> LoadedJob:
    """The job a run ran, read again from the user's own files (the store keeps where they were);
    refused when those files changed since (the checkpoint was trained on the old data)."""
    if not run.done:
        raise QtrainError(f"run {run.run_id}: it is {run.state}; a run can be resumed once it has "
                          "ended", hint=f"qtrain cancel {run.run_id} first, or wait for it")
    raw = copy.deepcopy(run.job)
    for key, path in (run.info.get("data") or {}).items():
        set_dotted(raw, key, path)
    if epochs is not None:
        set_dotted(raw, "train.epochs", epochs)
    loaded = load_job_dict(raw, Path.cwd(), source=f"run {run.run_id}")
    now = dataset_hash(loaded.job, job_files(loaded.job, loaded.base_dir))
    if now != run.dataset_hash:
        raise QtrainError(f"run {run.run_id}: its data changed since it ran (dataset {now[:12]}, "
                          f"was {run.dataset_hash[:12]}); its checkpoint belongs to the old data",
                          hint="qtrain run JOB trains afresh on the new data")
    return loaded


def resume_checkpoints(run: RunRecord, store: Store) -> list[PackageFile]:
    """The run's retrieved checkpoints, as files the new task finds where the runner resumes
    from (out/checkpoint.pt, out/trial-<i>/checkpoint.pt)."""
    found = []
    for trial in range(run.trials) if run.trials else [None]:
        local = store.artifacts_dir(run.run_id, trial) / CHECKPOINT
        if local.is_file():
            where = OUT if trial is None else f"{OUT}/{trial_dir(trial)}"
            found.append(extra_file(f"{where}/{CHECKPOINT}", local))
    if not found:
        raise QtrainError(f"run {run.run_id}: no checkpoint in the store to resume from",
                          hint=f"qtrain fetch {run.run_id} retrieves what its task uploaded; "
                               "train.checkpoint_minutes / checkpoint_every make them")
    return found
