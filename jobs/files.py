"""The local files a job reads, defined once: what the runner loads, what the submitter uploads,
and what the dataset hash covers.

Every path field (data.path, data.labels, data.test_path, data.test_labels, model.backbone,
model.weights) that names a local file or folder becomes, in the task's working directory,
`<folder of the field>/<its name>` (a folder keeps its tree below that):

    data.path: ~/datasets/weatherAUS.csv   ->  data/weatherAUS.csv
    data.path: ~/datasets/mnist/           ->  data/mnist/train-images-idx3-ubyte ...

That portable name is what the job hash and the dataset hash use, so a job has the same hashes
wherever its files live: on a laptop (`qtrain train`), in the store (`qtrain run`) and in the
task (`run.json`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from jobs.errors import JobError
from jobs.spec import Job, is_builtin_source

JOB_FILE = "job.json"  # the resolved job, in the task's working directory beside the data

# Fields holding file paths: a relative value given with --set is taken from the current folder,
# like any other command-line path (values inside the job file are relative to the job file).
# Each maps to its folder in the task's working directory.
FIELD_FOLDERS = {"data.path": "data", "data.labels": "labels", "data.test_path": "test",
                 "data.test_labels": "test_labels", "model.backbone": "backbone",
                 "model.weights": "weights"}
PATH_FIELDS = tuple(FIELD_FOLDERS)


@dataclass(frozen=True)
class JobFile:
    field: str  # the job field that names it, e.g. data.path
    remote: str  # its path in the task's working directory (posix), e.g. data/mnist/x.idx
    local: Path  # where it is here

    @property
    def size(self) -> int:
        return self.local.stat().st_size

    @property
    def sha256(self) -> str:
        return file_sha256(self.local)


def get_dotted(node: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def local_value(value: Any) -> bool:
    """Does this field's value name a local path (not empty, not a built-in source)?"""
    return isinstance(value, str) and bool(value) and not is_builtin_source(value)


def portable_path(field: str, value: str) -> str:
    """The path a field's value has in the task's working directory: `data/<name>`."""
    return f"{FIELD_FOLDERS[field]}/{PurePosixPath(value.rstrip('/')).name}"


def resolve(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base_dir / p


def job_files(job: Job, base_dir: Path) -> list[JobFile]:
    """The local files the job's path fields name, folders expanded, in a stable order.  A path
    that does not exist here is left out (the check reports it; a backbone may be a built-in)."""
    dumped = job.model_dump(mode="json")
    out: list[JobFile] = []
    for field in PATH_FIELDS:
        value = get_dotted(dumped, field)
        if not local_value(value):
            continue
        local = resolve(value, base_dir)
        remote = portable_path(field, value)
        if local.is_dir():
            for path in folder_files(local, field):
                out.append(JobFile(field, f"{remote}/{path.relative_to(local).as_posix()}", path))
        elif local.exists():
            out.append(JobFile(field, remote, local))
    return out


def folder_files(folder: Path, field: str) -> list[Path]:
    """The files in a data folder, in a stable order.  A symbolic link is followed only where it
    stays inside the folder: one that leads out of it (to a key, another project, /etc) is an error
    rather than something sent to the cloud unseen."""
    root = folder.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        for name in dirnames + filenames:
            path = here / name
            if not path.is_symlink():
                continue
            target = path.resolve()
            if target != root and root not in target.parents:
                raise JobError(f"{field}: {path} is a symbolic link to {target}, outside the folder {folder}",
                               hint="qtrain sends only what lies inside a data folder: copy the file in, "
                                    "or remove the link")
        for name in filenames:
            path = here / name
            if path.is_file():
                found.append(path)
    return sorted(found)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for an unchanged file (`qtrain run`
    checks the job, then packages it: both need the hashes)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int, chunk: int = 1 << 20) -> str:  # noqa: ARG001
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
