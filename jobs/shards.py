"""How a dataset's files travel: many small files packed in tar shards, large ones alone, every
object named by its content, so a resubmission sends only what changed.

Both sides share this contract: the submitter plans the objects (`plan`) and writes each shard
(`write_shard`); the runner unpacks them (`unpack`) before it reads the job's data.

- A file of `ALONE_BYTES` or more travels alone, under `datasets/files/<its sha256>/<its path in
  the task>`, and lands at its path in the task (the resource view strips the first part).
- Smaller files, taken in the order of their paths, are cut into runs of about `SHARD_BYTES`:
  a run ends after a file whose *path* hashes to a multiple of `per_shard` (the files expected in
  a shard of that size).  The cuts depend on the paths only, never on the contents, so changing a
  file changes its own shard and no other; adding or removing one changes its shard (or splits
  one in two).  A run never grows past `MAX_SHARD_BYTES`.
- A shard is a POSIX tar (pax) of its files at their paths in the task, with fixed metadata (mtime
  0, mode 0644, owner 0), under `datasets/shards/<id>.tar`: its id is the sha256 of its members'
  paths and hashes, so it is known before the tar is written and the same files always make the
  same object.  In the task it lands as `shards/<id>.tar`.
- `MANIFEST` (in the task beside job.json) lists the shards and the lone files the task must have:
  the runner unpacks every shard it names and refuses to start when one did not arrive.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol, Sequence

from jobs.errors import DataError

SHARD_BYTES = 16 << 20  # a shard's target size: tens of objects for 50,000 thumbnails, 1/16 of a GiB resent
MAX_SHARD_BYTES = 4 * SHARD_BYTES  # a run of files whose paths never cut is cut here
ALONE_BYTES = 4 << 20  # from this size a file is its own object (a table, an array file)
DATA_PREFIX = "datasets/"  # where a dataset's objects live in the data bucket
SHARD_FOLDER = "shards"  # where shards land in the task's working directory, before unpacking
MANIFEST = "dataset.json"  # beside job.json in the task
VERSION = "qtrain-shard-1"


class SentFile(Protocol):
    remote: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DataObject:
    """One object of a dataset in the data bucket: a shard of small files, or one large file."""

    key: str  # in the data bucket
    strip: str  # the part of `key` the task's resource view strips: what is left is its place there
    files: tuple[Any, ...]  # the SentFile(s) inside, in order
    shard: str | None = None  # a shard's id; None for a file alone

    @property
    def payload(self) -> int:
        """The bytes of the files inside (a shard's tar adds 512 bytes a file and its ending)."""
        return sum(f.size for f in self.files)

    @property
    def landing(self) -> str:
        return self.key[len(self.strip):]


def per_shard(sizes: Sequence[int]) -> int:
    """How many small files make a shard of about SHARD_BYTES: a power of two, so a change in the
    files' mean size moves it (and every cut) only when the mean doubles or halves."""
    if not sizes:
        return 1
    mean = max(1.0, sum(sizes) / len(sizes))
    return 1 << max(0, round(math.log2(max(1.0, SHARD_BYTES / mean))))


def _cuts_after(remote: str, every: int) -> bool:
    return int.from_bytes(hashlib.sha256(remote.encode()).digest()[:8], "big") % every == 0


def shard_id(files: Sequence[SentFile]) -> str:
    h = hashlib.sha256(VERSION.encode())
    for f in files:
        h.update(f"\0{f.remote}\0{f.size}\0{f.sha256}".encode())
    return h.hexdigest()


def plan(files: Sequence[SentFile]) -> list[DataObject]:
    """The objects `files` travel as: lone large files, then shards, each in a stable order."""
    ordered = sorted(files, key=lambda f: f.remote)
    alone = [f for f in ordered if f.size >= ALONE_BYTES]
    small = [f for f in ordered if f.size < ALONE_BYTES]
    objects = [DataObject(key=f"{DATA_PREFIX}files/{f.sha256}/{f.remote}",
                          strip=f"{DATA_PREFIX}files/{f.sha256}/", files=(f,)) for f in alone]
    every = per_shard([f.size for f in small])
    run: list[SentFile] = []
    run_bytes = 0

    def close() -> None:
        nonlocal run, run_bytes
        if run:
            sid = shard_id(run)
            objects.append(DataObject(key=f"{DATA_PREFIX}{SHARD_FOLDER}/{sid}.tar", strip=DATA_PREFIX,
                                      files=tuple(run), shard=sid))
        run, run_bytes = [], 0

    for f in small:
        if run and run_bytes + f.size > MAX_SHARD_BYTES:
            close()
        run.append(f)
        run_bytes += f.size
        if _cuts_after(f.remote, every):
            close()
    close()
    return objects


def manifest(objects: Sequence[DataObject]) -> bytes:
    """What the task must hold: its shards (with their files) and its lone files."""
    body = {"version": VERSION,
            "shards": {o.shard: [f.remote for f in o.files] for o in objects if o.shard},
            "files": [o.files[0].remote for o in objects if not o.shard]}
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def write_shard(obj: DataObject, local: Any, out: IO[bytes]) -> None:
    """The shard's tar into `out`: each file's bytes read from `local(file)`, its metadata fixed."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in obj.files:
            info = tarfile.TarInfo(f.remote)
            info.size, info.mtime, info.mode = f.size, 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(local(f), "rb") as fh:
                tar.addfile(info, fh)


# --------------------------------------------------------------------------------- the task
def unpack(root: Path) -> int:
    """Unpack into `root` every shard its manifest names (each tar removed once unpacked), after
    checking that every shard and lone file arrived.  Returns the files unpacked (0 without a
    manifest: a job packaged before shards, or run where its files lie)."""
    listed = root / MANIFEST
    if not listed.is_file():
        return 0
    try:
        body = json.loads(listed.read_text(encoding="utf-8"))
        shards, alone = dict(body["shards"]), list(body["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{listed}: not a dataset manifest ({exc})") from exc
    folder = root / SHARD_FOLDER
    missing = [f"shard {sid[:12]}" for sid, names in shards.items()
               if not (folder / f"{sid}.tar").is_file() and not all((root / n).is_file() for n in names)]
    missing += [name for name in alone if not (root / name).is_file()]
    if missing:
        raise DataError(f"{len(missing)} of the dataset's objects did not reach the task, first {missing[0]}",
                        hint="the data bucket lost them: submit the job again, which uploads what is missing")
    count = 0
    for sid in sorted(shards):
        tar_path = folder / f"{sid}.tar"
        if tar_path.is_file():
            count += _extract(tar_path, root, set(shards[sid]))
            tar_path.unlink()
    return count


def _extract(tar_path: Path, root: Path, expected: set[str]) -> int:
    """The regular files of a shard at their paths under `root`; anything else (a link, a device,
    a path that leads out or that the manifest does not name) is refused."""
    count = 0
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if (not member.isfile() or name.is_absolute() or ".." in name.parts
                        or member.name not in expected):
                    raise DataError(f"{tar_path}: {member.name!r} is not a file of this shard",
                                    hint="the shard was altered in the bucket: submit the job again")
                dest = root / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                with source, open(dest, "wb") as fh:
                    shutil.copyfileobj(source, fh, 1 << 20)
                count += 1
    except (tarfile.TarError, EOFError) as exc:
        raise DataError(f"{tar_path}: not a readable shard ({exc})",
                        hint="the shard was damaged on its way: submit the job again") from exc
    return count
