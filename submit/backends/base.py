"""What every backend offers, in qtrain's own terms (no SDK type leaves a backend).

A backend takes a `Package` and a `TaskRequest` to a running task, and answers about that task by
its uuid: its `TaskStatus`, its fresh output, an abort, its results downloaded into a folder.
"""

from __future__ import annotations

import abc
import errno
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from jobs import settings
from jobs.errors import QtrainError

# Qarnot's task states -> the run states of the results store.
RUN_STATE = {
    "UnSubmitted": "submitted", "Submitted": "submitted", "PartiallyDispatched": "submitted",
    "FullyDispatched": "submitted", "PartiallyExecuting": "running", "FullyExecuting": "running",
    "UploadingResults": "running", "DownloadingResults": "running", "PendingCancel": "running",
    "Success": "succeeded", "Failure": "failed", "Cancelled": "cancelled", "PendingDelete": "cancelled",
}
DONE_STATES = ("Success", "Failure", "Cancelled", "PendingDelete")

Progress = Callable[[int], None]  # called with a number of bytes moved


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


class BackendError(QtrainError):
    """The backend refused or could not be reached."""


class TaskNotFound(BackendError):
    """The backend does not know the task (deleted, or an emulator that was restarted)."""


class BackendUnreachable(BackendError):
    """The backend or its storage could not be reached: worth trying again later."""


@dataclass
class TaskRequest:
    run_id: str  # the results store's run id: names the result bucket, tags the task
    name: str
    profile: str  # the backend's profile name (resolved)
    gpu: bool  # ask for GPU hardware
    instances: int
    image: str  # repo:tag
    command: str
    constants: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    results_whitelist: str | None = None
    results_blacklist: str | None = None  # what never comes back, even under a whitelisted name
    max_wall_seconds: int | None = None  # end the task if it still runs after this (resources.max_minutes)


@dataclass(frozen=True)
class Pricing:
    """How a backend's instances are priced and timed, for the estimate: the price table's
    section, and, where the instances share one machine's cores (the local emulator), how many."""

    name: str  # who runs them, for the estimate's basis
    section: str  # cpu | gpu | local
    gpu: bool = False
    shared_cores: int | None = None  # None: each instance has a node of its own
    emulated: bool = False  # the emulator's own rates, not a price
    startup_seconds: float = 0.0  # a bound on an instance's start, unless the price table sets one


@dataclass
class TaskStatus:
    uuid: str
    state: str  # Qarnot's state name
    errors: list[str] = field(default_factory=list)
    instances: dict[int, str] = field(default_factory=dict)  # completed instance -> state
    progress: float | None = None
    running: int = 0  # instances running now

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES

    @property
    def run_state(self) -> str:
        return RUN_STATE.get(self.state, "running")


@dataclass
class Downloaded:
    files: int
    bytes: int
    skipped: int  # already there, identical
    refused: list[tuple[str, str]] = field(default_factory=list)  # (key, why): never written
    differing: list[str] = field(default_factory=list)  # keys unlike the kept local file (replace=False)


@dataclass(frozen=True)
class Usage:
    """What the account holds against its limits (`/info`; None: not said)."""

    buckets: int | None = None
    max_buckets: int | None = None
    tasks: int | None = None
    max_tasks: int | None = None
    used_bytes: int | None = None
    quota_bytes: int | None = None


@dataclass(frozen=True)
class Remote:
    """A bucket or a task that qtrain made on the account (`results gc --remote`)."""

    kind: str  # bucket | task
    name: str  # the bucket's name, or the task's uuid
    run_id: str | None  # the run it belongs to, where it says (a task's tag, a result bucket's name)
    detail: str = ""  # a task's state and name, a bucket's objects and bytes


@dataclass(frozen=True)
class RemoteFile:
    key: str
    size: int
    same_as: Callable[[Path], bool]  # is this local file the object's bytes?


NAME_MAX = 255  # bytes in one path component (Linux, macOS)
PATH_MAX = 4000  # bytes in a path below the destination, with room for the store's own folders


def plan_download(objects: list[RemoteFile], dest: Path,
                  replace: bool = True) -> tuple[list[tuple[RemoteFile, Path]], Downloaded]:
    """Which result objects to write where under `dest`, and which not: identical files are
    skipped; keys that cannot be a file here are refused with why (climbing out with `..`,
    absolute, a component too long, a key below another key: that one is a file and is kept);
    with `replace` False a local file that differs is kept and its key listed as differing."""
    done = Downloaded(0, 0, 0)
    keys = {o.key for o in objects}
    todo = []
    for o in sorted(objects, key=lambda o: o.key):
        why = None
        rel = PurePosixPath(o.key)
        if o.key.startswith("/") or rel.is_absolute():
            why = "an absolute key"
        elif not rel.parts or any(part in ("..", ".") for part in o.key.split("/")):
            why = "a key that climbs out with .. (or names no file)"
        elif any(len(part.encode()) > NAME_MAX for part in rel.parts) or len(o.key.encode()) > PATH_MAX:
            why = f"a name longer than {NAME_MAX} bytes (or a path longer than {PATH_MAX})"
        elif "\0" in o.key:
            why = "a NUL byte in the key"
        else:
            parent = next((str(p) for p in list(rel.parents)[:-1] if str(p) in keys), None)
            if parent is not None:
                why = f"a key below {parent}, which is a file"
        if why is not None:
            done.refused.append((o.key, why))
            continue
        local = dest.joinpath(*rel.parts)
        if local.is_file() and o.same_as(local):
            done.skipped += 1
        elif local.exists() and not replace:
            done.differing.append(o.key)
        else:
            todo.append((o, local))
    return todo, done


# errors of one file that say "this key cannot be a file here" (not a full or read-only disk)
UNWRITABLE = (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EINVAL, errno.EILSEQ)


def fetch_all(todo: list[tuple[RemoteFile, Path]], fetch: Callable[[str, Path], None], done: Downloaded,
              progress: Progress | None = None, workers: int = 8) -> None:
    """`write_object` for each (object, local path) of `todo`, up to `workers` at a time: each
    object costs a round trip or two before its first byte (milliseconds here, tens of them to a
    cloud), and a run's results are many small files.  The first error stops what has not
    started and is raised once the started ones end (each cleans up after itself)."""
    lock = threading.Lock()

    def one(item: tuple[RemoteFile, Path]) -> None:
        o, local = item
        mine = Downloaded(0, 0, 0)
        write_object(local, lambda tmp: fetch(o.key, tmp), mine, o.key, o.size)
        with lock:
            done.files += mine.files
            done.bytes += mine.bytes
            done.refused.extend(mine.refused)
            if progress:
                progress(o.size)

    in_turn(todo, one, workers, "download")


def in_turn(items: list, one: Callable[[Any], None], workers: int, name: str) -> None:
    """`one(item)` for each of `items`, up to `workers` at a time in threads named `name`: each
    transfer costs a round trip or more before its first byte.  The first error stops what has
    not started and is raised once the started ones end."""
    if len(items) <= 1 or workers <= 1:
        for item in items:
            one(item)
        return
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix=name) as pool:
        futures = [pool.submit(one, item) for item in items]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def write_object(local: Path, fetch: Callable[[Path], None], done: Downloaded, key: str, size: int) -> None:
    """`fetch` the object into a temporary file beside `local`, then rename it into place: a
    reader never sees half a file, two fetches never share a temporary name, an interruption
    leaves nothing behind.  A key that cannot be a file here is refused (listed in `done`)."""
    tmp = None
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.parent / f".qtrain-{secrets.token_hex(6)}.part"
        fetch(tmp)
        os.replace(tmp, local)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if exc.errno not in UNWRITABLE:
            raise
        done.refused.append((key, f"cannot be written here: {exc.strerror}"))
        return
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    done.files += 1
    done.bytes += size


class Backend(abc.ABC):
    """Base class: a backend is named, lists its profiles and runs tasks."""

    name = "base"
    poll_seconds = 5.0

    def describe(self) -> str:
        return self.name

    def runs_images(self) -> bool:
        """Do tasks run in the job's image here (so that a stale local image matters)?"""
        return True

    def image_with(self, reqs: Any, image: str, log: Callable[[str], None]) -> str:
        """The image that runs a job with requirements `reqs` (jobs.requirements) here: `image`
        where tasks run no image (the packages then travel as a folder on the path, QTRAIN_SITE)."""
        return image

    def executor_name(self) -> str:
        """How tasks run here, for the store: the backend's name, or the emulator's executor."""
        return self.name

    def check_image(self, image: str) -> None:
        """Refuse, before anything is uploaded, an image this backend cannot run."""

    def check_capacity(self, instances: int, gpu: bool, why: str = "one per sweep trial") -> None:
        """Refuse, before anything is uploaded, a task the account (or machine) cannot run: more
        instances than one task may have (`why` it has them), GPU hardware where none is offered."""

    def warm_up(self) -> None:
        """Get ready in the background (connect, start a daemon) while the job is checked."""

    @abc.abstractmethod
    def profiles(self) -> list[str]:
        """The profile names the account offers."""

    def profile_aliases(self) -> dict[str, str]:
        """What `resources.profile: cpu|gpu` means here (QTRAIN_PROFILE_CPU, QTRAIN_PROFILE_GPU), and
        for a job of several nodes (QTRAIN_PROFILE_CLUSTER, QTRAIN_PROFILE_GPU_CLUSTER)."""
        given = settings.submission()
        return {"cpu": given.profile_cpu, "gpu": given.profile_gpu, "cpu_cluster": given.profile_cluster,
                "gpu_cluster": given.profile_gpu_cluster}

    def is_cluster(self, profile: str) -> bool:
        """Do the instances of this profile's tasks reach one another (Qarnot's cluster profiles:
        the configured ones, or a name with `cluster` in it, as docker-cluster-network-ssh)?"""
        aliases = self.profile_aliases()
        return profile in (aliases["cpu_cluster"], aliases["gpu_cluster"]) or "cluster" in profile

    def gpus_per_node(self) -> int:
        """The GPUs of one node of a GPU profile (QTRAIN_GPUS_PER_NODE: Qarnot does not say)."""
        return settings.submission().gpus_per_node

    def pricing(self, gpu: bool) -> Pricing:
        """How the estimate prices this backend's instances (one node each, by default)."""
        return Pricing(self.describe(), "gpu" if gpu else "cpu", gpu)

    def resolve_profile(self, profile: str, nodes: int = 1) -> tuple[str, bool]:
        """`cpu`/`gpu` or a profile name -> (the backend's profile, GPU wanted); with `nodes` > 1,
        `cpu`/`gpu` name the cluster profiles, and a profile that is not one is refused.  An
        unknown profile is refused with the list of those the account offers."""
        aliases = self.profile_aliases()
        key = f"{profile}_cluster" if nodes > 1 and profile in ("cpu", "gpu") else profile
        wanted = aliases.get(key, profile)
        available = self.profiles()
        if wanted not in available:
            raise BackendError(f"profile {wanted!r} is not offered by {self.describe()}",
                               hint=f"profiles here: {', '.join(available) or 'none'}; "
                                    f"set resources.profile or --profile"
                                    + ("; QTRAIN_PROFILE_CLUSTER / QTRAIN_PROFILE_GPU_CLUSTER name the "
                                       "cluster profiles of cpu / gpu" if nodes > 1 else ""))
        if nodes > 1 and not self.is_cluster(wanted):
            clusters = [p for p in available if self.is_cluster(p)]
            raise BackendError(f"resources.nodes {nodes}: profile {wanted!r} is not a cluster profile, so its "
                               f"instances cannot reach one another",
                               hint=f"use resources.profile cpu or gpu, or a cluster profile "
                                    f"({', '.join(clusters) or 'none offered here'}); or remove resources.nodes")
        gpu = profile == "gpu" or wanted in (aliases["gpu"], aliases["gpu_cluster"])
        return wanted, gpu

    @abc.abstractmethod
    def upload(self, package, progress: Progress | None = None) -> int:
        """Put the package's files where tasks read them; returns the bytes actually sent."""

    def missing(self, package) -> list | None:
        """The package's data objects (`jobs.shards.DataObject`) the backend lacks: what an upload
        would send of its data.  None when this backend cannot say."""
        return None

    @abc.abstractmethod
    def submit(self, package, request: TaskRequest, on_created: Callable[[str], None] | None = None) -> str:
        """Start the task; returns its uuid.  `on_created` is called with the uuid as soon as the
        backend has the task (before any follow-up request), so the caller records it first."""

    @abc.abstractmethod
    def find_tasks(self, tags: list[str]) -> list[str]:
        """The uuids of the tasks that carry every one of `tags` (how an interrupted submission
        finds the task it may have created)."""

    @abc.abstractmethod
    def status(self, uuid: str) -> TaskStatus:
        """The task's state now."""

    @abc.abstractmethod
    def fresh_output(self, uuid: str) -> tuple[str, str]:
        """(stdout, stderr) written since the last call."""

    @abc.abstractmethod
    def output(self, uuid: str, instance: int | None = None, stderr: bool = False) -> str:
        """The whole stdout (or stderr) of the task or of one instance."""

    @abc.abstractmethod
    def abort(self, uuid: str) -> None:
        """Stop the task (a finished task stays as it is)."""

    def footprint(self, uuid: str) -> dict[str, Any] | None:
        """What the task cost and emitted (`submit.backends.footprint`), each figure None when the backend
        does not say; None when it reports nothing at all.  Never raises for a missing figure."""
        return None

    def credits_left(self) -> float | None:
        """The account's remaining credits (euros), or None when unknown."""
        return None

    # ------------------------------------------------------------- what stays on the account
    def usage(self) -> Usage:
        """The account's buckets, tasks and storage against its limits."""
        return Usage()

    def has_bucket(self, name: str) -> bool:
        return False

    def unverified(self, uuid: str, dest: Path) -> list[str]:
        """The task's result objects that `dest` does not hold as they are (same size and
        checksum): empty once a retrieval has everything."""
        return []

    def delete_remote(self, uuid: str | None, run_id: str, bucket: str | None = None) -> list[str]:
        """Delete a run's ended task and its result bucket (`bucket`: that one), whichever are
        still there; returns what was deleted, in words."""
        return []

    def remotes(self) -> list[Remote]:
        """The result buckets and the tasks tagged `qtrain` on the account (never the data bucket)."""
        return []

    @abc.abstractmethod
    def download(self, uuid: str, dest: Path, progress: Progress | None = None,
                 on_total: Callable[[int], None] | None = None, replace: bool = True) -> Downloaded:
        """Bring the task's results into `dest`, skipping files already there and identical
        (`plan_download`, `write_object`); with `replace` False a differing local file is kept."""
