"""Following a run's task: its state changes and the runner's lines, live, through a lost
connection (`Retry`), until it ends."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from jobs import settings
from jobs.errors import QtrainError
from jobs.results import PREFIX, SKIPPED, parse_epoch_line
from submit.backends import Backend
from submit.backends.base import BackendUnreachable, TaskStatus
from submit.store import RunRecord, Store
from submit.ui import Ui


def task_uuid(run: RunRecord) -> str:
    """The run's task, or one line saying why it has none."""
    if not run.task_uuid:
        if run.state == "submitting":
            raise QtrainError(f"run {run.run_id}: its submission is still under way in another qtrain",
                              hint="wait for it, then try again")
        raise QtrainError(f"run {run.run_id}: it has no task ({run.error or 'its submission failed'})")
    return run.task_uuid


class LineBuffer:
    """Fresh output arrives in chunks; hand out whole lines only."""

    def __init__(self) -> None:
        self.partial = ""

    def feed(self, text: str) -> list[str]:
        text = self.partial + text
        *lines, self.partial = text.split("\n")
        return lines

    def flush(self) -> list[str]:
        rest, self.partial = self.partial, ""
        return [rest] if rest else []


class LineShow:
    """Prints the task's lines: every line but epoch lines, which come at most one a second per
    instance (and always the last epoch), so a 500-epoch job stays readable.  `qtrain logs` has
    every line the backend kept.

    The backend's buffer of a task's output is a ring: a task that prints faster than this shows
    it (a rich line costs tens of microseconds to print) has lines dropped before they are read.
    The emulator says how many in a line of the fresh output (`SKIPPED`), which is shown with the
    command that has what was kept."""

    EVERY = 1.0

    def __init__(self, ui: Ui, run_id: str | None = None):
        self.ui = ui
        self.run_id = run_id
        self.shown: dict[str, float] = {}  # instance prefix -> when its last epoch line was shown
        self.held: dict[str, str] = {}  # instance prefix -> newest epoch line not shown yet

    def line(self, line: str, stream: str) -> None:
        if not line.strip():
            return
        epoch = parse_epoch_line(line)
        if epoch is not None:
            key = line[:line.find(PREFIX)]  # "" or a multi-instance task's "3> "
            done, _, total = epoch.get("epoch", "").partition("/")
            now = time.monotonic()
            if done == total or now - self.shown.get(key, 0.0) >= self.EVERY:
                self.ui.say(line.rstrip())
                self.shown[key] = now
                self.held.pop(key, None)
            else:
                self.held[key] = line
        elif line.startswith(PREFIX) and SKIPPED in line:
            self.ui.say(f"{line[:line.find(SKIPPED) + len(SKIPPED)]} (they left the backend's buffer before they "
                        f"were read): qtrain logs {self.run_id or 'RUN'} has what is kept", style="yellow")
        elif PREFIX in line:
            self.ui.say(line.rstrip(), style="red" if stream == "stderr" and "error" in line else None)
        else:
            self.ui.say(line.rstrip(), style="dim")

    def flush(self) -> None:
        for line in self.held.values():
            self.ui.say(line.rstrip())
        self.held.clear()


T = TypeVar("T")


class Retry:
    """Calls through a lost connection: waits 0.5, 1, 2 ... (at most 10) seconds between tries,
    saying so, and gives up `limit` seconds after the connection was lost."""

    def __init__(self, ui: Ui, what: str, limit: float | None = None, sleep=time.sleep):
        self.ui, self.what, self.sleep = ui, what, sleep
        self.limit = settings.submission().follow_retry_seconds if limit is None else limit

    def __call__(self, fn: Callable[[], T]) -> T:
        lost_at, delay = None, 0.5
        while True:
            try:
                value = fn()
            except BackendUnreachable as exc:
                now = time.monotonic()
                lost_at = lost_at or now
                if now - lost_at + delay > self.limit:
                    raise BackendUnreachable(f"{exc.message}; gave up after {now - lost_at:.0f}s",
                                             hint=f"the task goes on: {self.what}") from exc
                self.ui.warn(f"{exc.message}; trying again in {delay:g}s")
                self.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if lost_at is not None:
                self.ui.say("connection back", style="dim")
            return value


def follow(run: RunRecord, backend: Backend, store: Store, ui: Ui, quiet: bool = False,
           retry: Retry | None = None) -> TaskStatus:
    """Poll until the task ends, showing state changes and the runner's lines as they come.  A
    lost connection is retried (`Retry`) rather than ending the follow."""
    uuid = task_uuid(run)
    poll = settings.submission().poll_seconds or backend.poll_seconds
    buffers = {"stdout": LineBuffer(), "stderr": LineBuffer()}
    show = LineShow(ui, run.run_id)
    retry = retry or Retry(ui, f"qtrain fetch {run.run_id}")
    last = last_counts = None
    while True:
        status = retry(lambda: backend.status(uuid))
        out, err = retry(lambda: backend.fresh_output(uuid))
        if not quiet:
            for name, text in (("stdout", out), ("stderr", err)):
                for line in buffers[name].feed(text) + (buffers[name].flush() if status.done else []):
                    show.line(line, name)
            if status.done:
                show.flush()
        if run.trials and not quiet and not status.done:
            counts = trial_counts(status, run.trials)
            if counts != last_counts:
                ui.say(f"[{time.strftime('%H:%M:%S')}] trials: {counts[0]} done, {counts[1]} "
                       f"running, {counts[2]} queued", style="cyan")
                last_counts = counts
        if status.state != last:
            if not quiet:
                ui.say(f"[{time.strftime('%H:%M:%S')}] task {status.state}", style="cyan")
            if not status.done:
                store.set_state(run.run_id, status.run_state, detail=status.state)
            last = status.state
        if status.done:
            return status
        time.sleep(poll)


def trial_counts(status: TaskStatus, trials: int) -> tuple[int, int, int]:
    """A sweep's trials (instances): (done, running, queued)."""
    done = len(status.instances)
    running = min(status.running, trials - done)
    return done, running, trials - done - running


