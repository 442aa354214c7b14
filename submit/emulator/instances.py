"""An instance of a task, as the emulator keeps it and as an executor runs it.

    Output        one stream of an instance (or of the task): a ring of lines, and how much of it
                  the state file holds and a "fresh" request has read; what it dropped, it says
    Instance      its state, times, process and files uploaded
    InstanceSpec  what an executor is asked to run (command, folder, environment, image, share)
    Running       a started instance: its output streams, wait, kill
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from jobs import settings
from jobs.results import PREFIX, SKIPPED
from runner.api import signal_instance
from submit.emulator.commands import command_argv

FINAL_STATES = ("Success", "Failure", "Cancelled")
LOG_LIMIT = 4 << 20  # characters of stdout/stderr kept per stream (Qarnot's buffer is circular too)


@dataclass
class Output:
    """One instance's stdout or stderr, and the task-wide view of it: a ring of lines (the oldest
    dropped past LOG_LIMIT characters) and where the state file stands.

    Offsets are absolute (characters since the buffer began), so what the state file lacks is a
    suffix: the flusher appends it as a chunk instead of rewriting the whole log twice a second.

    Once the ring has dropped lines, what it gives whole (`kept`: `qtrain logs`, task-stdout.txt)
    begins with a line saying how much was left out; a "fresh" read that fell behind (lines dropped
    before it read them: a script printing faster than `qtrain run` shows) begins with a line
    saying how many lines it skipped (`SKIPPED`).  Neither line is in the ring (nor the state file).
    """

    text: list[str] = field(default_factory=list)
    size: int = 0
    fresh_at: int = 0  # index into `text` of the first line not yet read by a "fresh" request
    version: int = 0  # bumped by every change (what the state flusher compares)
    dropped: int = 0  # characters dropped from the front since the buffer began
    saved: int = 0  # absolute end of what the state file holds
    base: int = 0  # absolute offset of the state file's first character for this buffer
    stored: int = 0  # characters the state file holds for this buffer (chunks summed)
    dropped_lines: int = 0  # lines dropped from the front since the buffer began
    skipped: tuple[int, int] = (0, 0)  # (lines, characters) dropped unread since the last fresh read

    def add(self, line: str) -> None:
        self.text.append(line)
        self.size += len(line)
        self.version += 1
        while self.size > LOG_LIMIT and len(self.text) > 1:
            gone = self.text.pop(0)
            self.size -= len(gone)
            self.dropped += len(gone)
            self.dropped_lines += 1
            if self.fresh_at:
                self.fresh_at -= 1
            else:  # never read fresh: the reader is told it skipped it
                self.skipped = (self.skipped[0] + 1, self.skipped[1] + len(gone))

    @property
    def end(self) -> int:
        return self.dropped + self.size

    def pending(self) -> tuple[bool, str, int]:
        """What the state file needs: (replace everything?, text to write, characters of the
        stored text already read fresh).  Replacing happens when the file would otherwise hold a
        gap (lines dropped before they were saved) or more than twice what the buffer keeps."""
        read = self.dropped + sum(len(x) for x in self.text[:self.fresh_at])
        new = self.end - max(self.saved, self.dropped)
        if self.saved < self.dropped or self.stored + new > 2 * LOG_LIMIT:
            return True, "".join(self.text), read - self.dropped
        whole = "".join(self.text)
        return False, whole[len(whole) - new:] if new else "", read - self.base

    def mark_saved(self, replaced: bool, written: int, end: int, dropped: int) -> None:
        """The state file now holds the buffer up to `end` (`dropped` as it was when computed)."""
        if replaced:
            self.base, self.stored = dropped, written
        else:
            self.stored += written
        self.saved = end

    @classmethod
    def load(cls, text: str, fresh_chars: int) -> "Output":
        """A buffer from the state file's text (trimmed to LOG_LIMIT); its first save replaces."""
        cut = max(0, len(text) - LOG_LIMIT)
        text, fresh_chars = text[cut:], max(0, fresh_chars - cut)
        read, unread = text[:fresh_chars], text[fresh_chars:]
        return cls(text=[p for p in (read, unread) if p], size=len(text), fresh_at=1 if read else 0,
                    saved=-1)

    def whole(self) -> str:
        return "".join(self.text)

    def kept(self) -> str:
        """The text, after a line saying how much the ring left out (when it did)."""
        if not self.dropped_lines:
            return self.whole()
        return (f"{PREFIX} {self.dropped_lines:,} lines ({size(self.dropped)}) of earlier output left out: the "
                f"emulator keeps the last {size(LOG_LIMIT)} of each stream (Qarnot's buffer is circular too)\n"
                + self.whole())

    def fresh(self) -> str:
        """What was added since the last fresh read, after a line saying how many lines left the
        ring before they could be read (when some did)."""
        new = self.text[self.fresh_at:]
        lines, chars = self.skipped
        notice = (f"{PREFIX} {lines:,} lines ({size(chars)}) {SKIPPED}: they left the emulator's "
                  f"{size(LOG_LIMIT)} buffer before they were read\n") if lines else ""
        if new or notice:
            self.fresh_at = len(self.text)
            self.skipped = (0, 0)
            self.version += 1
        return notice + "".join(new)


def size(n: int) -> str:
    """Characters as a reader counts bytes: 200 B, 25.8 MB, 4 MiB (a whole number of MiB)."""
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    return f"{n} B" if n < 1000 else f"{n / 1e3:.1f} kB" if n < 1e6 else f"{n / 1e6:.1f} MB"


@dataclass
class Instance:
    id: int
    workdir: Path
    state: str = "Pending"  # Pending, Running, Success, Failure, Cancelled
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    running: Running | None = None
    pid: int | None = None  # of the instance's process (what a restarted emulator stops)
    uploaded: dict[str, tuple[int, int]] = field(default_factory=dict)  # relpath -> (size, mtime)
    results: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "workdir": str(self.workdir), "state": self.state, "exit_code": self.exit_code,
                "started": self.started, "ended": self.ended, "pid": self.pid,
                "uploaded": {k: list(v) for k, v in self.uploaded.items()}, "results": self.results}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> "Instance":
        return cls(int(data["id"]), Path(data["workdir"]), data["state"], data.get("exit_code"),
                   data.get("started"), data.get("ended"), pid=data.get("pid"),
                   uploaded={k: tuple(v) for k, v in (data.get("uploaded") or {}).items()},
                   results=list(data.get("results") or []))

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class ClusterPlace:
    """An instance's place in a cluster task (a cluster profile): is it the master, the folder the
    instances share, what the executor adds to the environment (the process executor: the
    rendezvous port, as loopback is one port space), and the task's network (the docker
    executor's).  The nodes, as they reach one another, are in its host file (`cluster.py`)."""

    master: bool
    share: Path
    env: dict[str, str] = field(default_factory=dict)
    network: str | None = None


@dataclass
class InstanceSpec:
    """What an executor is asked to run: the task's facts, from which it builds the instance's
    environment as its process will see it (`environment`) and the command (`argv`)."""

    task_uuid: str
    task_name: str
    instance_id: int
    instance_count: int
    constants: dict[str, str]  # the task's constants as they are when the instance starts
    workdir: Path
    image: str | None = None  # DOCKER_REPO:DOCKER_TAG
    gpu: bool = False
    threads: int = 1  # CPU share of this instance
    notes: list[str] = field(default_factory=list)  # lines the executor adds to the instance's output
    cluster: ClusterPlace | None = None  # a cluster task's instance

    def environment(self, folder: str | None = None, execution: str | None = None,
                    image_digest: str | None = None) -> dict[str, str]:
        """The instance's environment (`jobs.settings.task_environment`), with its folder as the
        instance's process sees it (default: the folder on this machine)."""
        env = settings.task_environment(
            self.constants, folder=folder or str(self.workdir), instance_id=self.instance_id,
            instance_count=self.instance_count, task_uuid=self.task_uuid, task_name=self.task_name,
            threads=self.threads, execution=execution, image_digest=image_digest)
        if self.cluster is not None:
            env.update(self.cluster.env)
        return env

    def command(self) -> str | None:
        """DOCKER_CMD; a cluster task's master runs DOCKER_CMD_MASTER and its workers
        DOCKER_CMD_WORKER, where set."""
        if self.cluster is not None:
            own = self.constants.get("DOCKER_CMD_MASTER" if self.cluster.master else "DOCKER_CMD_WORKER")
            if own and own.strip():
                return own
        return self.constants.get("DOCKER_CMD")

    def argv(self, env: dict[str, str]) -> list[str] | None:
        """The command as words, `${NAME}` replaced from `env`; None: the image's own command."""
        return command_argv(self.command(), env)


class Running:
    """A started instance: its output `streams` (name -> iterator of byte lines that ends when the
    instance does), `wait()` -> exit status, `kill()`."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pid = proc.pid
        self.streams: dict[str, Iterator[bytes]] = {
            "stdout": iter(proc.stdout.readline, b""),  # type: ignore[union-attr]
            "stderr": iter(proc.stderr.readline, b""),  # type: ignore[union-attr]
        }

    def wait(self) -> int:
        return self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Stop the instance and everything it started (its own process group)."""
        if not self.alive():
            return
        signal_instance(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            signal_instance(self.pid, signal.SIGKILL)


def tail(path: Path, alive, nap=time.sleep) -> Iterator[bytes]:
    """Lines appended to `path` until the writer is gone and the file is read to its end;
    `nap(seconds)` waits between reads (returning early when the writer ends)."""
    with open(path, "rb") as fh:
        partial = b""
        while True:
            running = alive()
            chunk = fh.read()
            if chunk:
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    yield line + b"\n"
            elif not running:
                if partial:
                    yield partial
                return
            else:
                nap(0.05)
