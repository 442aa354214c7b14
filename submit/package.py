"""What a task ships: the job's local files, content-addressed, and `job.json`, the resolved job.

Every local path the job names (data.path, data.labels, data.test_path, data.test_labels,
model.backbone, model.weights) becomes a file or folder in the task's working directory, and the job
is rewritten to point there:

    data.path: ~/datasets/weatherAUS.csv   ->  data/weatherAUS.csv
    data.path: ~/datasets/mnist/           ->  data/mnist/...

The files go to the data bucket under `datasets/<dataset hash>/`, where the dataset hash is a
sha256 over every file's relative path and sha256: an unchanged dataset has the same prefix and is
never uploaded twice, from any job.  `job.json` goes under `jobs/<sha256 of job.json>/`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.errors import QtrainError
from jobs.load import PATH_FIELDS, LoadedJob, job_hash, set_dotted
from jobs.spec import is_builtin_source
from runner.data import file_sha256

# Folder in the task's working directory for each path field.
FIELD_FOLDERS = {"data.path": "data", "data.labels": "labels", "data.test_path": "test",
                 "data.test_labels": "test_labels", "model.backbone": "backbone",
                 "model.weights": "weights"}
assert set(FIELD_FOLDERS) == set(PATH_FIELDS)


@dataclass(frozen=True)
class PackageFile:
    remote: str  # path in the task's working directory (posix)
    local: Path
    size: int
    sha256: str


@dataclass
class Package:
    job_name: str
    job: dict[str, Any]  # the resolved job, paths rewritten: what job.json holds
    job_hash: str
    dataset_hash: str
    files: list[PackageFile] = field(default_factory=list)
    trials: int = 0

    @property
    def dataset_prefix(self) -> str:
        return f"datasets/{self.dataset_hash}/"

    @property
    def job_json(self) -> bytes:
        return (json.dumps(self.job, indent=2, sort_keys=True) + "\n").encode()

    @property
    def job_prefix(self) -> str:
        return f"jobs/{hashlib.sha256(self.job_json).hexdigest()}/"

    @property
    def dataset_bytes(self) -> int:
        return sum(f.size for f in self.files)


def build_package(loaded: LoadedJob) -> Package:
    raw = copy.deepcopy(loaded.raw)
    for key in loaded.job.sweep:
        if key in PATH_FIELDS:
            raise QtrainError(f"{loaded.source}: sweep over {key} cannot be submitted",
                              hint="run one job per dataset, or sweep other fields")
    files: list[PackageFile] = []
    for key in PATH_FIELDS:
        value = _get_dotted(raw, key)
        if not isinstance(value, str) or not value or (key.startswith("data.") and is_builtin_source(value)):
            continue
        local = Path(value).expanduser()
        local = local if local.is_absolute() else loaded.base_dir / local
        if not local.exists():
            continue  # not a local file (e.g. torchvision:densenet121); `check` vetted it
        folder = FIELD_FOLDERS[key]
        if local.is_dir():
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                files.append(_file(f"{folder}/{local.name}/{path.relative_to(local).as_posix()}", path))
            set_dotted(raw, key, f"{folder}/{local.name}")
        else:
            files.append(_file(f"{folder}/{local.name}", local))
            set_dotted(raw, key, f"{folder}/{local.name}")
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.remote):
        h.update(f"{f.remote}\0{f.sha256}\n".encode())
    if not files:  # a built-in dataset: its name and options identify it
        h.update(json.dumps(raw.get("data"), sort_keys=True).encode())
    return Package(job_name=loaded.job.name, job=raw, job_hash=job_hash(loaded.job),
                   dataset_hash=h.hexdigest(), files=files, trials=len(loaded.trials))


def _file(remote: str, path: Path) -> PackageFile:
    try:
        size = path.stat().st_size
        digest = file_sha256(path)
    except OSError as exc:
        raise QtrainError(f"{path}: cannot read it ({exc.strerror})") from exc
    return PackageFile(remote, path, size, digest)


def _get_dotted(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class ProgressReader:
    """A read-only file object that reports the bytes read (for upload progress bars)."""

    def __init__(self, path: Path, advance):
        self._fh = open(path, "rb")
        self._advance = advance
        self.name = os.fspath(path)

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        if data:
            self._advance(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
