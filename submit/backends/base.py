"""What every backend offers, in qtrain's own terms (no SDK type leaves a backend).

A backend takes a `Package` and a `TaskRequest` to a running task, and answers about that task by
its uuid: its `TaskStatus`, its fresh output, an abort, its results downloaded into a folder.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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


class Backend(abc.ABC):
    """Base class: a backend is named, lists its profiles and runs tasks."""

    name = "base"
    poll_seconds = 5.0

    def describe(self) -> str:
        return self.name

    def runs_images(self) -> bool:
        """Do tasks run in the job's image here (so that a stale local image matters)?"""
        return True

    def executor_name(self) -> str:
        """How tasks run here, for the store: the backend's name, or the emulator's executor."""
        return self.name

    def check_image(self, image: str) -> None:
        """Refuse, before anything is uploaded, an image this backend cannot run."""

    def warm_up(self) -> None:
        """Get ready in the background (connect, start a daemon) while the job is checked."""

    @abc.abstractmethod
    def profiles(self) -> list[str]:
        """The profile names the account offers."""

    def resolve_profile(self, profile: str, cpu_profile: str, gpu_profile: str) -> tuple[str, bool]:
        """`cpu`/`gpu` or a profile name -> (the backend's profile, GPU wanted).  An unknown
        profile is refused with the list of those the account offers."""
        wanted = {"cpu": cpu_profile, "gpu": gpu_profile}.get(profile, profile)
        available = self.profiles()
        if wanted not in available:
            raise BackendError(f"profile {wanted!r} is not offered by {self.describe()}",
                               hint=f"profiles here: {', '.join(available) or 'none'}; "
                                    f"set resources.profile or --profile")
        return wanted, profile == "gpu" or wanted == gpu_profile

    @abc.abstractmethod
    def upload(self, package, progress: Progress | None = None) -> int:
        """Put the package's files where tasks read them; returns the bytes actually sent."""

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

    @abc.abstractmethod
    def download(self, uuid: str, dest: Path, progress: Progress | None = None,
                 on_total: Callable[[int], None] | None = None) -> Downloaded:
        """Bring the task's results into `dest`, skipping files already there and identical."""
