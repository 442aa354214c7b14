"""An in-memory backend with the real interface, scripted by the test: the states the task goes
through, the output each poll returns, the result files it leaves, and the polls on which the
connection is lost.  It lets the follow / retrieve / cancel logic run in milliseconds; the wire
format is tested against the real emulator daemon elsewhere."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from submit.backends.base import (Backend, BackendUnreachable, Downloaded, RemoteFile, TaskNotFound, TaskRequest,
                                  TaskStatus, fetch_all, plan_download)


@dataclass
class Script:
    states: list[str] = field(default_factory=lambda: ["Submitted", "FullyExecuting", "Success"])
    output: list[str] = field(default_factory=list)  # stdout chunks, one per poll
    results: dict[str, bytes] = field(default_factory=dict)  # bucket key -> bytes
    errors: list[str] = field(default_factory=list)  # the task's errors once it failed
    unreachable: set[int] = field(default_factory=set)  # status polls (1-based) that fail


class FakeBackend(Backend):
    name = "fake"
    poll_seconds = 0.0

    def __init__(self, script: Script | None = None):
        self.script = script or Script()
        self.requests: dict[str, TaskRequest] = {}
        self.polls = 0  # status calls
        self.answered = 0  # status calls that got through
        self.aborted: set[str] = set()
        self.sent: list[str] = []  # stdout handed out so far

    def runs_images(self) -> bool:
        return False

    def profiles(self) -> list[str]:
        return ["docker-batch", "docker-nvidia-batch"]

    def upload(self, package, progress=None) -> int:
        return package.dataset_bytes + len(package.job_json)

    def submit(self, package, request: TaskRequest, on_created=None) -> str:
        uuid = str(uuidlib.uuid4())
        self.requests[uuid] = request
        if on_created is not None:
            on_created(uuid)
        return uuid

    def find_tasks(self, tags: list[str]) -> list[str]:
        return [u for u, r in self.requests.items() if set(tags) <= set(r.tags)]

    def _known(self, uuid: str) -> None:
        if uuid not in self.requests:
            raise TaskNotFound(f"fake: task {uuid} not found")

    def status(self, uuid: str) -> TaskStatus:
        self._known(uuid)
        self.polls += 1
        if self.polls in self.script.unreachable:
            raise BackendUnreachable("cannot reach the fake backend")
        if uuid in self.aborted:
            return TaskStatus(uuid, "Cancelled")
        self.answered += 1
        state = self.script.states[min(self.answered, len(self.script.states)) - 1]
        return TaskStatus(uuid, state, errors=list(self.script.errors) if state == "Failure" else [])

    def fresh_output(self, uuid: str) -> tuple[str, str]:
        self._known(uuid)
        if len(self.sent) < len(self.script.output):
            self.sent.append(self.script.output[len(self.sent)])
            return self.sent[-1], ""
        return "", ""

    def output(self, uuid: str, instance: int | None = None, stderr: bool = False) -> str:
        self._known(uuid)
        return "" if stderr else "".join(self.script.output)

    def abort(self, uuid: str) -> None:
        self._known(uuid)
        self.aborted.add(uuid)

    def download(self, uuid: str, dest: Path, progress=None, on_total=None, replace: bool = True) -> Downloaded:
        self._known(uuid)
        objects = [RemoteFile(key, len(data), lambda local, data=data: local.read_bytes() == data)
                   for key, data in self.script.results.items()]
        todo, done = plan_download(objects, dest, replace)
        fetch_all(todo, lambda key, tmp: tmp.write_bytes(self.script.results[key]), done, progress)
        return done
