"""What a task ships: the job's local files, content-addressed, and `job.json`, the resolved job.

The files are those `jobs.files.job_files` names (the one definition the runner shares): each
becomes `<field's folder>/<name>` in the task's working directory, and the job is rewritten to
point there:

    data.path: ~/datasets/weatherAUS.csv   ->  data/weatherAUS.csv
    data.path: ~/datasets/mnist/           ->  data/mnist/...

The data files travel as the objects `jobs.shards` plans: small files packed in shards, large
ones alone, each object named by its content, so an unchanged file is never uploaded twice (from
any job) and changing one file sends its shard only.  The dataset hash (`jobs.results.dataset_hash`,
the hash the runner writes in run.json) covers every file and stays the run's data identity.  The
task gets the manifest of its objects (`dataset.json`) beside `job.json`.  A module's or a script's code goes the same way under `code/<code hash>/`
(`jobs.code`): in the task it is `code/...`, and unchanged code uploads nothing.  `job.json` (and the manifest) go
under `jobs/<sha256 of both>/`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.code import find_code, portable
from jobs.errors import QtrainError
from jobs.files import JOB_FILE, PATH_FIELDS, JobFile, get_dotted, job_files, portable_path
from jobs.load import LoadedJob, set_dotted
from jobs.results import dataset_hash, job_hash
from jobs import shards


@dataclass(frozen=True)
class PackageFile:
    remote: str  # path in the task's working directory (posix)
    local: Path
    size: int
    sha256: str
    outside: Path | None = None  # the target outside its data folder a link led to (follow_symlinks)


@dataclass
class Package:
    job_name: str
    job: dict[str, Any]  # the resolved job, paths rewritten: what job.json holds
    job_hash: str
    dataset_hash: str
    files: list[PackageFile] = field(default_factory=list)
    code_hash: str | None = None  # the module's or script's code (jobs.code), None for a built-in model
    code: list[PackageFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said before anything is sent
    trials: int = 0
    # shipped beside job.json, at their place in the task: a resumed run's checkpoints
    # (out/checkpoint.pt, out/trial-<i>/checkpoint.pt), from which the runner continues
    extras: list[PackageFile] = field(default_factory=list)
    check: dict[str, Any] = field(default_factory=dict)  # the check's report (what the estimate reads)
    # resources.requirements (jobs.requirements.Requirements) and the folder of what this machine's
    # interpreter lacks for them (submit.run.environment): not uploaded, the task gets an image or a path
    requirements: Any = None
    site: Path | None = None

    @functools.cached_property
    def objects(self) -> list[shards.DataObject]:
        """The data files as they travel: shards of small files, large files alone."""
        return shards.plan(self.files)

    @functools.cached_property
    def manifest(self) -> bytes | None:
        """What the task must hold of the dataset (`jobs.shards.MANIFEST`), None without data files."""
        return shards.manifest(self.objects) if self.files else None

    @property
    def code_prefix(self) -> str:
        return f"code/{self.code_hash}/"

    @property
    def job_json(self) -> bytes:
        return (json.dumps(self.job, indent=2, sort_keys=True) + "\n").encode()

    @property
    def job_prefix(self) -> str:
        digest = hashlib.sha256(self.job_json)
        if self.manifest is not None:
            digest.update(b"\0" + self.manifest)
        for f in self.extras:
            digest.update(f"\0{f.remote}\0{f.sha256}".encode())
        return f"jobs/{digest.hexdigest()}/"

    @property
    def job_key(self) -> str:
        return self.job_prefix + JOB_FILE

    @property
    def dataset_bytes(self) -> int:
        """What an upload sends at most, besides job.json: data, code and extras."""
        return sum(f.size for f in self.files + self.code + self.extras)


def build_package(loaded: LoadedJob) -> Package:
    raw = copy.deepcopy(loaded.raw)
    for key in loaded.job.sweep:
        if key in PATH_FIELDS:
            raise QtrainError(f"{loaded.source}: sweep over {key} cannot be submitted",
                              hint="run one job per dataset, or sweep other fields")
    for key in loaded.job.sweep:
        if key in ("model.source", "script.path", "script.source"):
            raise QtrainError(f"{loaded.source}: sweep over {key} cannot be submitted",
                              hint="sweep the code's arguments (model.args.*, script.args.*) instead")
    found = job_files(loaded.job, loaded.base_dir)
    files = [_file(f) for f in found]
    for key in {f.field for f in found}:  # point the job at the files' place in the task
        set_dotted(raw, key, portable_path(key, get_dotted(loaded.job.model_dump(mode="json"), key)))
    code = find_code(loaded.job, loaded.base_dir, loaded.source)
    code_hash = code.hash() if code else None
    for key, value in portable(loaded.job).items():  # and its code at code/
        set_dotted(raw, key, value)
    return Package(job_name=loaded.job.name, job=raw, job_hash=job_hash(loaded.job, code_hash),
                   dataset_hash=dataset_hash(loaded.job, found), files=files,
                   trials=len(loaded.trials), code_hash=code_hash,
                   code=[extra_file(f.remote, f.local) for f in code.files] if code else [],
                   warnings=list(code.warnings) if code else [])


def extra_file(remote: str, local: Path) -> PackageFile:
    from jobs.files import file_sha256

    return PackageFile(remote, local, local.stat().st_size, file_sha256(local))


def _file(f: JobFile) -> PackageFile:
    try:
        return PackageFile(f.remote, f.local, f.size, f.sha256, f.outside)
    except OSError as exc:
        raise QtrainError(f"{f.field} {f.local}: cannot read it ({exc.strerror})") from exc
