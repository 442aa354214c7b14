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
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from jobs.errors import JobError
from jobs.memory import available_bytes
from jobs.spec import Job, is_builtin_source

JOB_FILE = "job.json"  # the resolved job, in the task's working directory beside the data

# Fields holding file paths: a relative value given with --set is taken from the current folder,
# like any other command-line path (values inside the job file are relative to the job file).
# Each maps to its folder in the task's working directory.
FIELD_FOLDERS = {"data.path": "data", "data.labels": "labels", "data.test_path": "test",
                 "data.test_labels": "test_labels", "model.backbone": "backbone",
                 "model.weights": "weights"}
PATH_FIELDS = tuple(FIELD_FOLDERS)


class LocalFile:
    """A file that is sent: its size and content hash, read from `local` (data and code alike)."""

    local: Path

    @property
    def size(self) -> int:
        return self.local.stat().st_size

    @property
    def sha256(self) -> str:
        return file_sha256(self.local)


@dataclass(frozen=True)
class JobFile(LocalFile):
    field: str  # the job field that names it, e.g. data.path
    remote: str  # its path in the task's working directory (posix), e.g. data/mnist/x.idx
    local: Path  # where it is here
    outside: Path | None = None  # a link in a data folder to this file outside it (follow_symlinks)


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


SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
           (stat.S_ISSOCK, "a socket"))


def special_kind(path: Path) -> str | None:
    """What `path` is when it is neither a file nor a folder (a device, a FIFO, a socket: reading
    one may never end), else None.  Links are followed, as a reader follows them."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return next((kind for test, kind in SPECIAL if test(mode)), None)


def refuse_special(job: Job, base_dir: Path, source: str) -> None:
    """Every local path the job names is a file or a folder, or the job is refused now, before
    anything reads it (a folder's contents are checked as its files are listed)."""
    dumped = job.model_dump(mode="json")
    for field in PATH_FIELDS:
        value = get_dotted(dumped, field)
        if local_value(value) and (kind := special_kind(resolve(value, base_dir))):
            raise JobError(f"{source}: {field} {resolve(value, base_dir)} is {kind}, not a file or a folder",
                           hint="give a file (or a folder of them): qtrain reads it whole, and would never "
                                "finish reading this")


def refuse_too_large(job: Job, base_dir: Path, source: str) -> None:
    """A data file (data.path, data.test_path) read whole is refused when it is larger than the
    memory free here, before anything hashes, sends or reads it (data.max_rows reads only the first
    rows of a table: then it may be as large as it likes)."""
    if job.data is None or job.data.max_rows is not None:
        return
    for field, value in (("data.path", job.data.path), ("data.test_path", job.data.test_path)):
        if not local_value(value) or not (path := resolve(value, base_dir)).is_file():
            continue
        size, free = path.stat().st_size, available_bytes()
        if free is not None and size > free:
            raise JobError(f"{source}: {field} {path} is {human_bytes(size)} and this machine has {human_bytes(free)} "
                           f"of memory free: read whole, it would not fit",
                           hint="read its first rows with data.max_rows, or check and train on a machine with more "
                                "memory (tables larger than memory are not supported)")


def job_files(job: Job, base_dir: Path) -> list[JobFile]:
    """The local files the job's path fields name, folders expanded, in a stable order.  A path
    that does not exist here is left out (the check reports it; a backbone may be a built-in).
    A path field the job's data format never reads (`unread_fields`) is left out: what is not
    read is never sent (`load_job` refuses it; a job made otherwise skips it here)."""
    unread = unread_fields(job, base_dir)
    dumped = job.model_dump(mode="json")
    out: list[JobFile] = []
    for field in PATH_FIELDS:
        value = get_dotted(dumped, field)
        if not local_value(value) or field in unread:
            continue
        local = resolve(value, base_dir)
        remote = portable_path(field, value)
        if local.is_dir():
            for path, outside in folder_files(local, field, job.data.follow_symlinks):
                out.append(JobFile(field, f"{remote}/{path.relative_to(local).as_posix()}", path, outside))
        elif local.exists():
            out.append(JobFile(field, remote, local))
            if job.data.image_column and field in ("data.path", "data.test_path"):
                folder = remote.rpartition("/")[0]  # the images go beside the CSV, as they lie here
                out += [JobFile(field, f"{folder}/{rel}", local.parent / rel)
                        for rel in listed_images(local, job.data.image_column, job.data.sep, job.data.encoding)]
    return out


def listed_file(root: Path, value: Any) -> Path | str:
    """A file a table names, relative to its folder `root` (resolved): the file, or why it is not one
    that can be sent: "empty", "absolute", "outside" (it leads out of the folder) or "missing"."""
    if not isinstance(value, str) or not value.strip():
        return "empty"
    value = value.strip()
    if Path(value).is_absolute() or PurePosixPath(value).is_absolute():
        return "absolute"
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        return "outside"
    return path if path.is_file() else "missing"


def listed_images(table: Path, column: str, sep: str | None = None, encoding: str = "utf-8") -> list[str]:
    """The image files a CSV's `column` names that exist inside its folder, relative to it, each
    once, in a stable order (what is absolute, leads out or is missing: the check refuses it)."""
    import csv

    root = table.parent.resolve()
    delimiter = sep or ("\t" if table.suffix.lower() == ".tsv" else ",")
    found: set[str] = set()
    try:
        with open(table, newline="", encoding=encoding, errors="replace") as fh:
            rows = csv.reader(fh, delimiter=delimiter)
            header = next(rows, [])
            if column not in header:
                return []
            i = header.index(column)
            for row in rows:
                path = listed_file(root, row[i] if i < len(row) else None)
                if isinstance(path, Path):
                    found.add(path.relative_to(root).as_posix())
    except (OSError, csv.Error):
        return []
    return sorted(found)


def _npy_file(value: str | None, fmt: str, base_dir: Path) -> bool:
    """Is this data path read as a .npy array of images (the only reader that takes a labels file)?"""
    if not local_value(value):
        return False
    local = resolve(value, base_dir)
    if local.is_dir():
        return False
    return fmt == "npy" or (fmt == "auto" and local.name.lower().endswith(".npy"))


def unread_fields(job: Job, base_dir: Path) -> dict[str, str]:
    """The path fields set in the job that its data format never reads, each with why.
    data.labels goes with a .npy file of images in data.path, data.test_labels with one in
    data.test_path; with a table, a folder or a built-in they are never opened."""
    data, out = job.data, {}
    if data is None:
        return out
    if data.labels and not _npy_file(data.path, data.format, base_dir):
        out["data.labels"] = (f"labels go with a .npy file of images in data.path, and {data.path} "
                              f"is not one")
    if data.test_labels and not _npy_file(data.test_path, data.format, base_dir):
        where = f"and {data.test_path} is not one" if data.test_path else "which is not set"
        out["data.test_labels"] = f"test labels go with a .npy file of images in data.test_path, {where}"
    return out


def folder_files(folder: Path, field: str, follow_symlinks: bool = False) -> list[tuple[Path, Path | None]]:
    """The files in a data folder, in a stable order, each with the target outside the folder a
    link led to (else None).  A symbolic link in the folder is an error unless `follow_symlinks`:
    a shared job file must not send a user's other files to the cloud unseen."""
    root = folder.resolve()
    found: list[tuple[Path, Path | None]] = []
    seen_dirs = {root}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=follow_symlinks):
        here = Path(dirpath)
        for name in list(dirnames) + filenames:
            path = here / name
            if not path.is_symlink():
                continue
            target = path.resolve()
            if not follow_symlinks:
                raise JobError(f"{field}: {path} is a symbolic link (to {target})",
                               hint="set data.follow_symlinks: true to send what it points to, or copy the "
                                    "file in")
            if name in dirnames and (target in seen_dirs or target in root.parents):
                dirnames.remove(name)  # a loop (a link to the folder or to one above it)
            elif name in dirnames:
                seen_dirs.add(target)
        for name in filenames:
            path = here / name
            if kind := special_kind(path):
                raise JobError(f"{field}: {path} is {kind}, not a file",
                               hint="remove it from the data folder: qtrain sends and reads files only")
            if path.is_file():
                if not follow_symlinks:  # no link was met (each is refused above): it lies inside
                    found.append((path, None))
                    continue
                target = path.resolve()
                found.append((path, None if root in target.parents else target))
    return sorted(found)


def human_bytes(n: int) -> str:
    """A byte count as people read it: 512 B, 3.4 MiB, 1.2 TiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for an unchanged file (`qtrain run`
    checks the job, then packages it: both need the hashes)."""
    st = os.stat(path)  # the file by its inode, size and time: no path resolution (20,000 files: 3 s)
    return _sha256(os.fspath(path), st.st_size, st.st_mtime_ns, (st.st_dev, st.st_ino))


@functools.lru_cache(maxsize=1 << 17)  # a 100,000-image folder hashed once
def _sha256(path: str, size: int, mtime_ns: int, inode: tuple[int, int], chunk: int = 1 << 20) -> str:  # noqa: ARG001
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
