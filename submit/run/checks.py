"""The check's verdict, remembered: a job that passed `check` with the same job, the same data
and the same code is not checked again.

The key is the sha256 of the job hash and the dataset hash (`jobs.results`: the data files' bytes,
so a file rewritten with the same size still counts as changed), the code that checks and trains
(every source file of `jobs/` and `runner/`) and the versions of the libraries it runs on.  Only
passed checks are kept (a failure is never remembered), one small JSON report per key in
`~/.local/state/qtrain/checks/`.  The remembered path imports neither torch nor pandas: it costs
the hashing of the data files and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from jobs import settings
from jobs.code import find_code
from jobs.files import job_files
from jobs.load import LoadedJob
from jobs.results import atomic_write, dataset_hash, job_hash, read_json
from runner.api import check_job

CODE_PACKAGES = ("jobs", "runner")  # what a verdict depends on, besides the job and its data
LIBRARIES = ("torch", "numpy", "pandas", "scikit-learn", "pydantic", "pyarrow", "palmerpenguins")


@functools.lru_cache(maxsize=1)
def code_version(roots: tuple[Path, ...] | None = None) -> str:
    """sha256 over the source files of the checking code and the libraries' versions."""
    if roots is None:
        roots = tuple(Path(__import__(name).__file__).parent for name in CODE_PACKAGES)
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".yaml"):
                h.update(f"{path.relative_to(root.parent).as_posix()}\0".encode())
                h.update(path.read_bytes())
    for name in LIBRARIES:
        try:
            h.update(f"{name}={metadata.version(name)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name}=-\n".encode())
    return h.hexdigest()


def check_key(loaded: LoadedJob, site: Path | None = None) -> str:
    files = job_files(loaded.job, loaded.base_dir)
    code = find_code(loaded.job, loaded.base_dir, loaded.source)
    parts = {"job": job_hash(loaded.job, code.hash() if code else None), "data": dataset_hash(loaded.job, files),
             "code": code_version(), "device": loaded.job.train.device,
             "packages": site.name if site is not None else None}  # its requirements' hash
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_dir() -> Path:
    return settings.paths().state_dir() / "checks"


def check(loaded: LoadedJob, recheck: bool = False, site: Path | None = None) -> tuple[dict[str, Any], bool]:
    """(the check's report, whether it was remembered).  Raises on the first problem, as
    `runner.api.check_job` does.  `site`: the folder of the job's own packages
    (`submit.run.environment`), which its code may import."""
    path = cache_dir() / f"{check_key(loaded, site)}.json"
    if not recheck:
        report = read_json(path)
        if report is not None:
            return report, True
    report = check_job(loaded, [site] if site is not None else [])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(report, default=_plain))
    except OSError:
        pass  # a verdict we cannot remember is checked again next time: nothing is lost
    return report, False


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


SMOKE_STEPS = 20  # what a smoke run's script is asked to stop after (QTRAIN_MAX_STEPS)
SMOKE_SECONDS = 300.0  # and the time it may take


def smoke(loaded: LoadedJob, site: Path | None = None) -> dict[str, Any]:
    """A script job's smoke run: the script here, on the job's data, told to stop after a few steps
    (QTRAIN_SMOKE=1, QTRAIN_MAX_STEPS; the script may honour them, runner.script.smoke()), with a
    time limit, into a folder that is then thrown away.  One line when it fails; its output shows
    above as it runs."""
    import tempfile
    import time

    from jobs.errors import JobError
    from runner.api import run_job

    if loaded.job.script is None:
        raise JobError("--smoke runs a script job's script; this job trains a model (qtrain check runs one "
                       "training step of it already)")
    first = loaded.trial(0) if loaded.trials else loaded
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qtrain-smoke-") as folder:
        try:
            run_job(first, Path(folder) / "out", smoke_steps=SMOKE_STEPS, time_limit=SMOKE_SECONDS, site=site)
        except JobError as exc:
            if type(exc).__name__ != "ScriptFailed":
                raise
            raise JobError(f"smoke run of {loaded.job.script.path}: {exc.message}",
                           hint="its output above says why; fix the script, then --smoke again") from None
    return {"smoke": {"steps": SMOKE_STEPS, "seconds": round(time.monotonic() - started, 2)}}
