"""`qtrain resume RUN`: a new task that continues a run from its retrieved checkpoints, on the
data the run read, and only when that means what it says:

- a failed or cancelled run goes on to its own epochs (or `--epochs`, its new total);
- a succeeded run has trained them all: it goes on only with `--epochs` above them;
- `--epochs` at or below the epoch a checkpoint was written after is refused (nothing to train);
- a data file that is gone is named as missing, one that changed is refused (the checkpoint
  belongs to the old data);
- one resume of a run at a time (`Store.run_lock(run, "resume")`, held by the command).

A script job's epochs are its `script.args.epochs` (what `--epochs` sets); a script that takes no
such argument resumes a failed or cancelled run as it is.  Its checkpoint travels with the
epoch it was written after and the epochs it logged (checkpoint.json, history.csv), so that its
curves go on.
"""

from __future__ import annotations

import copy
from pathlib import Path

from jobs.errors import QtrainError
from jobs.files import job_files
from jobs.load import LoadedJob, load_job_dict, set_dotted
from jobs.results import CHECKPOINT, CHECKPOINT_INFO, HISTORY, OUT, dataset_hash, trial_dir
from jobs.spec import is_builtin_source
from runner.api import checkpoint_epoch
from submit.run.package import PackageFile, extra_file
from submit.store import RunRecord, Store


def resume_job(run: RunRecord, store: Store, epochs: int | None = None) -> LoadedJob:
    """The job a run ran, read again from the user's own files (the store keeps where they were),
    to train on to `epochs` (default: the run's own) from its checkpoints; a one-line refusal
    when that would not mean what it says (see above)."""
    if not run.done:
        raise QtrainError(f"run {run.run_id}: it is {run.state}; a run can be resumed once it has "
                          "ended", hint=f"qtrain cancel {run.run_id} first, or wait for it")
    script = run.job.get("script")
    epochs_field = "script.args.epochs" if script else "train.epochs"
    if script:
        args = script.get("args")
        planned = args.get("epochs") if isinstance(args, dict) else None
        if epochs is not None and not isinstance(planned, int):
            raise QtrainError(f"run {run.run_id}: --epochs sets a script's script.args.epochs, and its script "
                              f"{script.get('path')} takes none", hint="resume without --epochs, or give the "
                              "script an epochs argument (script.args.epochs) in the job")
        planned = planned if isinstance(planned, int) and not isinstance(planned, bool) else None
    else:
        planned = int((run.job.get("train") or {}).get("epochs") or 0)
    reached = max(_checkpoint_epochs(run, store).values())
    total = epochs if epochs is not None else planned
    if run.state == "succeeded" and epochs is None:
        raise QtrainError(f"run {run.run_id} succeeded: it trained {reached} epoch(s) and is done",
                          hint=f"qtrain resume {run.run_id} --epochs N, N above {reached}, trains on to N in all")
    if total is not None and total <= reached:
        given = f"--epochs {epochs}" if epochs is not None else f"its own {planned} epoch(s)"
        raise QtrainError(f"run {run.run_id}: its checkpoint is at epoch {reached}, so {given} leaves "
                          f"nothing to train", hint=f"give --epochs above {reached}")
    raw = copy.deepcopy(run.job)
    for key, path in (run.info.get("data") or {}).items():
        if not Path(path).exists() and not is_builtin_source(path):
            raise QtrainError(f"run {run.run_id}: its {key} {path} is missing (the run read it from there)",
                              hint="put it back, or qtrain run the job afresh on other data")
        set_dotted(raw, key, path)
    if total is not None:
        set_dotted(raw, epochs_field, total)
    loaded = load_job_dict(raw, Path.cwd(), source=f"run {run.run_id}")
    now = dataset_hash(loaded.job, job_files(loaded.job, loaded.base_dir))
    if now != run.dataset_hash:
        raise QtrainError(f"run {run.run_id}: its data changed since it ran (dataset {now[:12]}, "
                          f"was {run.dataset_hash[:12]}); its checkpoint belongs to the old data",
                          hint="qtrain run JOB trains afresh on the new data")
    return loaded


def _checkpoint_epochs(run: RunRecord, store: Store) -> dict[int | None, int]:
    """Each trial's retrieved checkpoint and the epoch it was written after (0 when unreadable)."""
    found = {}
    for trial in range(run.trials) if run.trials else [None]:
        local = store.artifacts_dir(run.run_id, trial) / CHECKPOINT
        if local.is_file():
            found[trial] = checkpoint_epoch(local) or 0
    if not found:
        raise QtrainError(f"run {run.run_id}: no checkpoint in the store to resume from",
                          hint=f"qtrain fetch {run.run_id} retrieves what its task uploaded; "
                               "train.checkpoint_minutes / checkpoint_every make them")
    return found


def resume_checkpoints(run: RunRecord, store: Store) -> list[PackageFile]:
    """The run's retrieved checkpoints, as files the new task finds where the runner resumes
    from (out/checkpoint.pt, out/trial-<i>/checkpoint.pt)."""
    files = []
    for trial in _checkpoint_epochs(run, store):
        folder = store.artifacts_dir(run.run_id, trial)
        names = [CHECKPOINT] + ([CHECKPOINT_INFO, HISTORY] if run.job.get("script") else [])
        files += [extra_file(f"{OUT if trial is None else f'{OUT}/{trial_dir(trial)}'}/{name}", folder / name)
                  for name in names if (folder / name).is_file()]
    return files
