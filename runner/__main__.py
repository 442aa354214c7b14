"""Container entrypoint: `python -m runner`, no arguments.

Reads `job.json` and the data from $QARNOT_RESOURCES_DIRECTORY (default /job), picks the sweep
trial from $INSTANCE_ID, and writes the results contract to $QARNOT_RESULTS_DIRECTORY/out (a sweep
trial to out/trial-<INSTANCE_ID>).  Resumes from a checkpoint.pt already there (a retried or
re-run instance).  Exit status: 0 done, 2 a problem with the job or data, 1 an internal error.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from jobs.errors import QtrainError


def main() -> int:
    resources = Path(os.environ.get("QARNOT_RESOURCES_DIRECTORY") or "/job")
    results = Path(os.environ.get("QARNOT_RESULTS_DIRECTORY") or str(resources))
    try:
        import json

        from jobs.load import load_job_dict
        from runner.run import run_job

        job_file = resources / "job.json"
        if not job_file.is_file():
            raise QtrainError(f"{job_file}: not found; the task must ship job.json as a resource")
        try:
            raw = json.loads(job_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise QtrainError(f"{job_file}: invalid JSON ({exc})") from exc
        loaded = load_job_dict(raw, resources, source=str(job_file))
        out = results / "out"
        trial = None
        if loaded.trials:
            trial = int(os.environ.get("INSTANCE_ID", "0"))
            out = out / f"trial-{trial}"
        run_job(loaded, out, resume=(out / "checkpoint.pt").exists(), trial=trial)
        return 0
    except QtrainError as exc:
        print(f"[qtrain] error: {exc.one_line()}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception:  # noqa: BLE001 - report, then fail the task
        print("[qtrain] internal error:", file=sys.stderr)
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
