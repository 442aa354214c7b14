"""What `run`, `status` and `fetch` say of a run: the JSON object (`--json`) and, for a failed
task, its errors and the tail of its stderr."""

from __future__ import annotations

from typing import Any

from jobs.errors import QtrainError
from submit.backends import Backend
from submit.backends.base import TaskStatus
from submit.run.follow import task_uuid
from submit.store import RunRecord, Store


def failure_report(run: RunRecord, backend: Backend, status: TaskStatus, lines: int = 15) -> list[str]:
    """The error and the tail of stderr, for a failed task."""
    out = [f"task {status.state}: " + ("; ".join(_error_line(e) for e in status.errors)
                                        or "no error reported")]
    try:
        tail = backend.output(task_uuid(run), stderr=True).rstrip().splitlines()[-lines:]
    except QtrainError:
        tail = []
    if tail:
        out.append(f"last {len(tail)} line(s) of stderr:")
        out += [f"  {line}" for line in tail]
    else:
        out.append("stderr: (empty)")
    return out


def _error_line(error: str) -> str:
    """An error's first line, and where the lines after it (the instance's last stderr lines) hold
    an error line, the last of those too: "instance 1: exited with status 1: <first line> ...
    [qtrain] error: rank 1 ... was killed by SIGKILL"."""
    lines = error.splitlines() or [""]
    telling = next((x.strip() for x in reversed(lines[1:]) if "error:" in x.lower()), None)
    return lines[0] if telling is None or telling in lines[0] else f"{lines[0]} ... {telling}"


def summary(run: RunRecord, store: Store) -> dict[str, Any]:
    """The JSON object of a run (the last line of `run/status/fetch --json`)."""
    data: dict[str, Any] = {
        "run_id": run.run_id, "state": run.state, "backend": run.backend, "profile": run.profile,
        "task_uuid": run.task_uuid, "uploaded_bytes": run.uploaded_bytes,
        "job_name": run.job_name, "kind": run.kind, "created": run.created, "job_hash": run.job_hash,
        "dataset_hash": run.dataset_hash, "error": run.error, "retrieved": run.retrieved,
        "tags": run.tags, "note": run.note, "info": run.info, "resumed_from": run.info.get("resumed_from"),
        "footprint": run.info.get("footprint"),
        "metrics": run.metrics.get(-1), "artifacts_dir": str(store.artifacts_dir(run.run_id)),
        "history": run.history,
    }
    if run.trials:
        sweep = run.sweep()
        data["trials"] = [{"trial": i, "metrics": run.metrics.get(i),
                           "artifacts_dir": str(store.artifacts_dir(run.run_id, i))}
                          for i in range(run.trials)]
        data["best"] = sweep.best.model_dump(mode="json") if sweep.best else None
        data["selection"] = sweep.selection  # what chose the best trial, e.g. val_accuracy
        data["selection_note"] = sweep.note
        data["metrics"] = run.chosen()[1]
    return data
