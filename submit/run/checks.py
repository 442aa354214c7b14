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


def check_key(loaded: LoadedJob) -> str:
    files = job_files(loaded.job, loaded.base_dir)
    code = find_code(loaded.job, loaded.base_dir, loaded.source)
    parts = {"job": job_hash(loaded.job, code.hash() if code else None), "data": dataset_hash(loaded.job, files),
             "code": code_version(), "device": loaded.job.train.device}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cache_dir() -> Path:
    return settings.paths().state_dir() / "checks"


def check(loaded: LoadedJob, recheck: bool = False) -> tuple[dict[str, Any], bool]:
    """(the check's report, whether it was remembered).  Raises on the first problem, as
    `runner.api.check_job` does."""
    path = cache_dir() / f"{check_key(loaded)}.json"
    if not recheck:
        report = read_json(path)
        if report is not None:
            return report, True
    report = check_job(loaded)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(report, default=_plain))
    except OSError:
        pass  # a verdict we cannot remember is checked again next time: nothing is lost
    return report, False


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)
