"""Emulated Qarnot tasks: their life, from submission to an end state.

A task moves through Qarnot's states in order:
    Submitted -> FullyDispatched -> PartiallyExecuting|FullyExecuting -> UploadingResults
    -> Success | Failure | Cancelled
It stays Submitted while it waits: for the tasks it depends on to end as it asked (it fails if
one ends otherwise), for a machine that meets its hardware constraints (`hardware.py`), for a
running-task slot (`Limits.max_running_tasks`), or for its pool's slots.
Each instance runs in its own folder through an executor (`executors.py`).  Its files (resources
staged, results and snapshots uploaded) are `transfers.py`'s; the request a task was submitted
with and the JSON it is answered with are the wire format's (`wire.py`); the bytes move through
`storage.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submit.emulator import hardware
from submit.emulator.executors import InstanceSpec, Running, command_argv
from submit.emulator.storage import Storage
from submit.emulator.transfers import NOT_RUNNING, TaskFiles
from submit.emulator.wire import Limits, RequestError, TaskBody

FINAL_STATES = ("Success", "Failure", "Cancelled")
LOG_LIMIT = 4 << 20  # characters of stdout/stderr kept per stream (Qarnot's buffer is circular too)


@dataclass
class Output:
    """One instance's stdout or stderr, and the task-wide view of it: a ring of lines (the oldest
    dropped past LOG_LIMIT characters) and where the state file stands.

    Offsets are absolute (characters since the buffer began), so what the state file lacks is a
    suffix: the flusher appends it as a chunk instead of rewriting the whole log twice a second.
    """

    text: list[str] = field(default_factory=list)
    size: int = 0
    fresh_at: int = 0  # index into `text` of the first line not yet read by a "fresh" request
    version: int = 0  # bumped by every change (what the state flusher compares)
    dropped: int = 0  # characters dropped from the front since the buffer began
    saved: int = 0  # absolute end of what the state file holds
    base: int = 0  # absolute offset of the state file's first character for this buffer
    stored: int = 0  # characters the state file holds for this buffer (chunks summed)

    def add(self, line: str) -> None:
        self.text.append(line)
        self.size += len(line)
        self.version += 1
        while self.size > LOG_LIMIT and len(self.text) > 1:
            gone = self.text.pop(0)
            self.size -= len(gone)
            self.dropped += len(gone)
            self.fresh_at = max(0, self.fresh_at - 1)

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

    def fresh(self) -> str:
        new = self.text[self.fresh_at:]
        if new:
            self.fresh_at = len(self.text)
            self.version += 1
        return "".join(new)


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


class Task(TaskFiles):
    def __init__(self, manager: "TaskManager", body: TaskBody, uuid: str | None = None,
                 created: float | None = None, pool_body: dict[str, Any] | None = None):
        self.manager = manager
        self.pool_body = pool_body  # the pool's request, when submitted into one (what restore needs)
        self.uuid = uuid or str(uuidlib.uuid4())
        self.body = body
        self.ids = body.ids
        self.snapshot: dict[str, Any] | None = None
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.created = created or time.time()
        self.state = "Submitted"
        self.previous_state: str | None = None
        self.transition = self.created
        self.previous_transition: float | None = None
        self.ended: float | None = None
        self.errors: list[dict[str, str]] = []
        self.results_count = 0
        self.aborted = False
        self.lock = threading.RLock()
        self.dir = manager.work_dir / self.uuid
        self.instances = {i: Instance(i, self.dir / "instances" / str(i)) for i in self.ids}
        self.out = {i: Output() for i in self.ids}
        self.err = {i: Output() for i in self.ids}
        self.all_out = Output()
        self.all_err = Output()
        self.resource_files: dict[str, tuple[int, int]] = {}
        self.thread = threading.Thread(target=self._run, name=f"task-{self.uuid[:8]}", daemon=True)
        self._snapshot_thread: threading.Thread | None = None
        self.saved: tuple[str, dict[tuple[str, int], int]] | None = None  # what the state file holds
        self.settled = False  # ended and saved after its thread finished: only outputs can change
        self.dependency_state: str | None = "waiting" if body.dependencies else None
        self.hardware_problems: list[str] = []  # what this machine lacks (the task waits, mode `wait`)

    # ---------------------------------------------------------------------------- durability
    def outputs(self) -> dict[tuple[str, int], Output]:
        """Every output buffer by (stream, instance id; -1 for the task-wide view)."""
        found = {("stdout", -1): self.all_out, ("stderr", -1): self.all_err}
        for i in self.ids:
            found[("stdout", i)] = self.out[i]
            found[("stderr", i)] = self.err[i]
        return found

    def record(self) -> dict[str, Any]:
        """What a restarted emulator needs of this task (outputs apart)."""
        with self.lock:
            return {"body": self.body.raw, "pool_body": self.pool_body, "dir": str(self.dir), "created": self.created,
                    "state": self.state, "previous_state": self.previous_state,
                    "transition": self.transition, "previous_transition": self.previous_transition,
                    "ended": self.ended, "errors": list(self.errors), "results_count": self.results_count,
                    "aborted": self.aborted, "snapshot": self.snapshot, "snapshots": self.snapshots,
                    "resource_files": {k: list(v) for k, v in self.resource_files.items()},
                    "instances": [i.record() for i in self.instances.values()]}

    @classmethod
    def restore(cls, manager: "TaskManager", uuid: str, data: dict[str, Any],
                outputs: dict[tuple[str, int], tuple[str, int]]) -> "Task":
        pool_body = data.get("pool_body")
        task = cls(manager, TaskBody.parse(data["body"], pool=pool_body), uuid=uuid, created=data["created"],
                   pool_body=pool_body)
        task.dir = Path(data.get("dir") or task.dir)
        for key in ("state", "previous_state", "transition", "previous_transition", "ended", "results_count",
                    "aborted", "snapshot"):
            setattr(task, key, data.get(key, getattr(task, key)))
        task.errors = list(data.get("errors") or [])
        task.snapshots = dict(data.get("snapshots") or {})
        task.resource_files = {k: tuple(v) for k, v in (data.get("resource_files") or {}).items()}
        for inst in data.get("instances") or []:
            restored = Instance.restore(inst)
            task.instances[restored.id] = restored
        buffers = task.outputs()
        for key, (text, fresh_chars) in outputs.items():
            if key in buffers:
                loaded = Output.load(text, fresh_chars)
                target = buffers[key]
                target.text, target.size, target.fresh_at = loaded.text, loaded.size, loaded.fresh_at
                target.saved = loaded.saved
        return task

    # -------------------------------------------------------------------------------- state
    def set_state(self, state: str) -> None:
        with self.lock:
            if state == self.state:
                return
            self.previous_state, self.previous_transition = self.state, self.transition
            self.state, self.transition = state, time.time()
            if state in FINAL_STATES:
                self.ended = self.transition
        self.manager.persist(self)  # at once: a kill -9 right after a state change keeps it

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def log(self, instance_id: int, line: str, stream: str = "stdout") -> None:
        if not line.endswith("\n"):
            line += "\n"
        with self.lock:
            per, whole = (self.out, self.all_out) if stream == "stdout" else (self.err, self.all_err)
            per[instance_id].add(line)
            whole.add(f"{instance_id}> {line}" if len(self.ids) > 1 else line)

    # ---------------------------------------------------------------------------------- run
    def _run(self) -> None:
        try:
            self._lifecycle()
        finally:  # results are in the result bucket by now: the instance folders can go
            shutil.rmtree(self.dir, ignore_errors=True)

    def _lifecycle(self) -> None:
        if not self._wait_to_start():
            return
        try:
            self._run_started()
        finally:
            self.manager.running_tasks.release()

    def _wait_to_start(self) -> bool:
        """Wait, Submitted, until the task may start: its dependencies ended as it asked, a machine
        meets its hardware, a running-task slot is free.  False when it ended while it waited."""
        said: set[str] = set()
        while True:
            if self.aborted:
                self.set_state("Cancelled")
                return False
            verdict = self.manager.dependencies_verdict(self)
            if verdict is not None:
                with self.lock:
                    self.dependency_state = "dependencyConditionsFulfilled" if verdict == "" else \
                        "dependencyConditionsNotFulfilled"
                if verdict:
                    self.errors.append({"code": "DEPENDENCY_NOT_FULFILLED", "message": verdict, "debug": ""})
                    self.set_state("Failure")
                    return False
            if verdict is None:
                pass  # its dependencies run: the task says Submitted, with its dependencies' state
            elif self.hardware_problems and self.manager.hardware_mode == "wait":
                if "hardware" not in said:
                    said.add("hardware")
                    with self.lock:
                        self.errors.append({
                            "code": "HARDWARE_UNAVAILABLE",
                            "message": "no machine of the local emulator meets the task's hardware constraints ("
                                       + "; ".join(self.hardware_problems) + "): the task waits, Submitted",
                            "debug": "abort or delete it; or restart the emulator with "
                                     "QTRAIN_EMULATOR_HARDWARE=lenient to run it on this machine anyway"})
                    self.manager.persist(self)
            elif self.manager.running_tasks.acquire(blocking=False):
                return True  # else maxRunningTask tasks run: it waits, Submitted, as on Qarnot
            time.sleep(0.1)

    def _run_started(self) -> None:
        try:
            self._materialise()
        except Exception as exc:  # noqa: BLE001 - a task that cannot start fails, with the reason
            self.errors.append({"code": "RESOURCES", "message": f"resources could not be staged: {exc}",
                                "debug": repr(exc)})
            self.set_state("Failure")
            return
        if self.aborted:
            self.set_state("Cancelled")
            return
        self.set_state("FullyDispatched")
        threads = [threading.Thread(target=self._run_instance, args=(inst,), daemon=True)
                   for inst in self.instances.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.aborted:
            if self.body.upload_on_cancel:
                self._upload_all()
            self.set_state("Cancelled")
            return
        self.set_state("UploadingResults")
        self._upload_all()
        failed = [i for i in self.instances.values() if i.state != "Success"]
        self.set_state("Failure" if failed else "Success")

    def _run_instance(self, inst: Instance) -> None:
        pool = self.manager.pools.get(self.body.pool) if self.body.pool else None
        with (pool.slots if pool else contextlib.nullcontext()), self.manager.slots:
            # instances in parallel up to the pool's instances (in a pool), and up to the cores
            if self.aborted:
                inst.state = "Cancelled"
                return
            with self.lock:
                constants = dict(self.body.constants)  # as they are now (commit() may change them)
            env = dict(constants)
            env.update({
                "INSTANCE_ID": str(inst.id), "FRAME_ID": str(inst.id), "INSTANCE_COUNT": str(len(self.ids)),
                "QARNOT_RESOURCES_DIRECTORY": str(inst.workdir),
                "QARNOT_RESULTS_DIRECTORY": str(inst.workdir),
                "QARNOT_TASK_UUID": self.uuid, "QARNOT_TASK_NAME": self.body.name,
            })
            argv = command_argv(constants.get("DOCKER_CMD"), env)
            image = None
            if constants.get("DOCKER_REPO"):
                image = f"{constants['DOCKER_REPO']}:{constants.get('DOCKER_TAG') or 'latest'}"
            spec = InstanceSpec(self.uuid, inst.id, argv, inst.workdir, env, image, self.body.gpu,
                                threads=self.manager.threads_per_instance(len(self.ids)))
            for problem in self.hardware_problems:  # lenient mode: said, and run on what there is
                self.log(inst.id, f"[emulator] {problem}: the instance runs on this machine as it is "
                                  f"(QTRAIN_EMULATOR_HARDWARE=lenient)")
            for kind in hardware.unchecked(self.body.hardware):
                self.log(inst.id, f"[emulator] {kind}: the local emulator cannot check it; accepted")
            inst.started = time.time()
            inst.state = "Running"
            self._update_running_state()
            try:
                running = self.manager.executor.start(spec)
            except Exception as exc:  # noqa: BLE001
                self.log(inst.id, f"[emulator] the instance could not start: {exc}", "stderr")
                self._finish_instance(inst, 127)
                return
            with self.lock:  # an abort (or delete) that came while it started has not seen it
                inst.running = running
                aborted = self.aborted
            if aborted:  # (in a thread of its own: the kill waits for the end that `wait` below sees)
                threading.Thread(target=running.kill, daemon=True, name=f"kill-{self.uuid[:8]}").start()
            inst.pid = inst.running.pid
            self.manager.persist(self)
            for note in spec.notes:
                self.log(inst.id, note)
            readers = [threading.Thread(target=self._pump, args=(inst.id, lines, name), daemon=True)
                       for name, lines in inst.running.streams.items()]
            for r in readers:
                r.start()
            code = inst.running.wait()
            for r in readers:
                r.join(timeout=10)
            self._finish_instance(inst, code)

    def _pump(self, instance_id: int, lines, name: str) -> None:
        for raw in lines:
            self.log(instance_id, raw.decode("utf-8", "replace"), name)

    def _finish_instance(self, inst: Instance, code: int) -> None:
        inst.ended = time.time()
        inst.exit_code = code
        if self.aborted:
            inst.state = "Cancelled"
        elif code == 0:
            inst.state = "Success"
        else:
            inst.state = "Failure"
            tail = "".join(self.err[inst.id].text[-5:]).strip()
            how = f"exited with status {code}"
            if code > 128:
                try:
                    how += f" (killed by {signal.Signals(code - 128).name})"
                except ValueError:
                    pass
            self.errors.append({
                "code": "INSTANCE_FAILED",
                "message": f"instance {inst.id}: the command {how}",
                "debug": tail[-2000:]})
        if not self.aborted:
            self._upload(inst, self.body.results_whitelist, self.body.results_blacklist)
        self._update_running_state()

    def _update_running_state(self) -> None:
        with self.lock:
            if self.done or self.state == "UploadingResults":
                return
            running = sum(i.state == "Running" for i in self.instances.values())
            pending = sum(i.state == "Pending" for i in self.instances.values())
            if running and not pending and running == len(self.ids):
                self.set_state("FullyExecuting")
            elif running or pending:
                self.set_state("PartiallyExecuting")

    def abort(self, strict: bool = False) -> None:
        """Stop the task.  `strict` (the API's abort): an ended task is refused with Qarnot's 403."""
        with self.lock:
            if self.done and strict:
                raise RequestError(403, f"task {self.uuid} is {self.state}: {NOT_RUNNING}")
            if self.done or self.aborted:
                return
            self.aborted = True
            if self.state != "Submitted":
                self.set_state("PendingCancel")
        for inst in self.instances.values():
            if inst.running is not None:
                inst.running.kill()

    # --------------------------------------------------------------------- resources & results
    def commit(self, body: Any) -> None:
        """PUT /tasks/{uuid} (`task.commit()`): the fields a submitted task may change (name,
        tags, labels, constants: instances that start later see the new constants)."""
        from submit.emulator.wire import _list, _string, parse_constants

        if not isinstance(body, dict):
            raise RequestError(400, "a task must be a JSON object")
        with self.lock:
            if self.done:
                raise RequestError(403, f"task {self.uuid} is {self.state}: {NOT_RUNNING}")
            name = _string(body, "name", self.body.name)
            tags = _list(body, "tags") if body.get("tags") is not None else self.body.tags
            if not all(isinstance(t, str) for t in tags):
                raise RequestError(400, "tags: expected a list of strings")
            constants = parse_constants(_list(body, "constants")) if body.get("constants") is not None else None
            labels = body.get("labels")
            if labels is not None and not isinstance(labels, dict):
                raise RequestError(400, "labels: expected an object of strings")
            self.body.name = name or self.body.name
            self.body.tags = list(tags)
            self.body.raw = {**self.body.raw, "name": self.body.name, "tags": self.body.tags}
            if labels is not None:
                self.body.raw["labels"] = labels
            if constants is not None:
                merged = {**self.body.constants, **constants}
                self.body.constants = merged
                self.body.raw["constants"] = [{"key": k, "value": v} for k, v in merged.items()]
        self.manager.persist(self)

    def dependencies_json(self) -> dict[str, Any] | None:
        if not self.body.dependencies:
            return None
        raw = self.body.raw.get("dependencies") or {}
        advanced = []
        for item in raw.get("advancedDependsOn") or []:
            other = self.manager.tasks.get(item.get("taskUuid"))
            actual = other.state.lower() if other is not None and other.done else None
            wanted = [str(x).lower() for x in item.get("taskFinalStateCondition") or ["success"]]
            advanced.append({"taskUuid": item.get("taskUuid"), "taskFinalStateCondition": wanted,
                             "actualFinalState": actual,
                             "state": "waiting" if actual is None else
                             "dependencyConditionsFulfilled" if actual in wanted else
                             "dependencyConditionsNotFulfilled"})
        return {"dependsOn": list(raw.get("dependsOn") or []), "advancedDependsOn": advanced,
                "state": self.dependency_state}


class TaskManager:
    """The emulator's tasks.  With a `store` (state.TaskStore) they outlive the process: the
    tasks of the previous one are read back, and those it left running end as Failure (their
    instances stopped, what their folders held uploaded as a last snapshot)."""

    FLUSH_SECONDS = 0.5

    def __init__(self, work_dir: Path, storage: Storage, executor, cores: int | None = None,
                 store=None, limits: Limits | None = None, hardware_mode: str = "wait",
                 machine: hardware.Machine | None = None):
        self.limits = limits or Limits()
        self.hardware_mode = hardware.mode(hardware_mode)
        self.running_tasks = threading.BoundedSemaphore(self.limits.max_running_tasks)
        self.pools: dict[str, Any] = {}  # uuid -> pools.Pool
        self.credits_spent = 0.0  # by tasks deleted since the daemon started (footprint.py)
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if hasattr(executor, "set_root"):  # the docker executor mounts it into warm containers
            executor.set_root(work_dir)
        self.storage = storage
        self.executor = executor
        self.cores = cores or os.cpu_count() or 1
        self.machine = machine or hardware.Machine.here(self.cores)
        self.slots = threading.BoundedSemaphore(self.cores)
        self.tasks: dict[str, Task] = {}
        self.lock = threading.Lock()
        self.store = store
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None
        if store is not None:
            self._restore()
            self._flusher = threading.Thread(target=self._flush_loop, name="state-flusher", daemon=True)
            self._flusher.start()

    # ---------------------------------------------------------------------------- durability
    def persist(self, task: Task) -> None:
        """Write what changed of `task` to the state file (no-op without one)."""
        if self.store is None or task.uuid not in self.tasks:  # deleted: its row is gone and stays so
            return
        with task.lock:
            versions = {k: o.version for k, o in task.outputs().items()}
            old_data, old_versions = task.saved or (None, {})
            if task.settled and versions == old_versions:
                return  # ended, saved since, nothing read or written: the flusher skips it cheaply
            data = json.dumps(task.record(), sort_keys=True)
            changed = {k: o for k, o in task.outputs().items() if old_versions.get(k) != versions[k]}
            outputs = {k: o.pending() for k, o in changed.items()}
            marks = {k: (o.end, o.dropped) for k, o in changed.items()}
        if data == old_data and not outputs:
            return
        try:
            self.store.save(task.uuid, task.created, None if data == old_data else data, outputs)
        except Exception as exc:  # noqa: BLE001 - a full disk must not kill the task; said in the log
            print(f"[emulator] could not save task {task.uuid} to {self.store.path}: {exc}", file=sys.stderr)
            return
        with task.lock:
            for key, (replaced, text, _) in outputs.items():
                changed[key].mark_saved(replaced, len(text), *marks[key])
        task.saved = (data, versions)
        task.settled = task.done and not task.thread.is_alive()

    def _flush_loop(self) -> None:
        while not self._stopping.wait(self.FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        for task in self.list():
            self.persist(task)

    def _restore(self) -> None:
        for uuid, data, outputs in self.store.load():
            try:
                task = Task.restore(self, uuid, data, outputs)
            except (RequestError, KeyError, TypeError, ValueError) as exc:
                print(f"[emulator] task {uuid} in {self.store.path} cannot be read back: {exc}", file=sys.stderr)
                continue
            task.saved = (json.dumps(task.record(), sort_keys=True), {k: o.version for k, o in task.outputs().items()})
            task.settled = task.done
            with self.lock:
                self.tasks[uuid] = task
            if not task.done:
                self._end_interrupted(task)

    def _end_interrupted(self, task: Task) -> None:
        """A task the previous emulator left running: its instances stopped, what their folders
        hold uploaded (a last snapshot, so a checkpoint written since the last one comes home),
        and the task a Failure that says why."""
        for inst in task.instances.values():
            if stop_orphan(inst.pid, task.dir):
                task.log(inst.id, f"[emulator] the instance's process (pid {inst.pid}) outlived the emulator "
                                  f"that started it: stopped", "stderr")
        try:
            if task.body.upload_on_cancel or not task.aborted:
                task._upload_all()
        except Exception as exc:  # noqa: BLE001 - the task still ends, saying so
            task.log(task.ids[0], f"[emulator] the instances' files could not be uploaded: {exc}", "stderr")
        with task.lock:
            for inst in task.instances.values():
                if not inst.done:
                    inst.state = "Failure"
                    inst.ended = inst.ended or time.time()
            task.errors.append({
                "code": "EMULATOR_STOPPED",
                "message": "the local emulator stopped while the task was running; the results and "
                           "snapshots it had uploaded are kept",
                "debug": ""})
        shutil.rmtree(task.dir, ignore_errors=True)
        task.set_state("Cancelled" if task.aborted else "Failure")

    def threads_per_instance(self, instances: int) -> int:
        return max(1, self.cores // min(instances, self.cores))

    def submit(self, body: Any) -> Task:
        pool = None
        if isinstance(body, dict) and body.get("poolUuid"):
            pool = self.pools.get(body["poolUuid"]) if isinstance(body["poolUuid"], str) else None
            if pool is None:
                raise RequestError(400, f"poolUuid: pool {str(body['poolUuid'])[:80]!r} not found")
            if pool.closed:
                raise RequestError(400, f"poolUuid: pool {pool.uuid} is {pool.state}: it takes no more tasks")
        task = Task(self, TaskBody.parse(body, self.limits, pool.body if pool else None),
                    pool_body=pool.body if pool else None)
        from submit.emulator.footprint import account_credits

        if account_credits(self) <= 0:
            raise RequestError(402, "Not enough credits: the account's emulated credits are spent "
                                    "(QTRAIN_EMULATOR_CREDITS; qtrain emulator reset starts afresh)")
        if len(self.tasks) >= self.limits.max_tasks:
            raise RequestError(403, f"Maximum number of tasks reached ({self.limits.max_tasks}, maxTask): "
                                    f"delete tasks you no longer need")
        for uuid, _ in task.body.dependencies:
            if uuid not in self.tasks:
                raise RequestError(400, f"dependencies: task {uuid[:80]!r} not found")
        problems = hardware.unmet(task.body.hardware, self.machine, task.body.profile in _gpu_profiles())
        if problems and self.hardware_mode == "strict":
            raise RequestError(402, "no machine of the local emulator meets the hardware constraint(s): "
                                    + "; ".join(problems))
        task.hardware_problems = problems
        for b in task.body.buckets:
            if not b.get("bucketName") or not self.storage.exists(b["bucketName"]):
                raise RequestError(404, f"resource bucket {b.get('bucketName')!r} not found")
        if task.body.result_bucket and not self.storage.exists(task.body.result_bucket):
            raise RequestError(404, f"result bucket {task.body.result_bucket!r} not found")
        with self.lock:
            self.tasks[task.uuid] = task
        self.persist(task)
        task.thread.start()
        return task

    def dependencies_verdict(self, task: Task) -> str | None:
        """None while a task it depends on has not ended; "" when all ended as asked; else why not."""
        for uuid, wanted in task.body.dependencies:
            other = self.tasks.get(uuid)
            if other is None:
                return f"the task it depends on, {uuid}, was deleted before it ended"
            if not other.done:
                return None
            if other.state.lower() not in wanted:
                return (f"the task it depends on, {uuid} ({other.body.name}), ended {other.state} "
                        f"where {' or '.join(wanted)} was wanted")
        return ""

    def running_count(self) -> int:
        return sum(1 for t in self.list() if not t.done and t.state != "Submitted")

    def get(self, uuid: str) -> Task:
        task = self.tasks.get(uuid)
        if task is None:
            raise RequestError(404, f"task {uuid} not found")
        return task

    def delete(self, uuid: str) -> None:
        from submit.emulator.footprint import task_credits

        task = self.get(uuid)
        task.abort()
        self.credits_spent += task_credits(task)["credits"]  # what it cost stays spent
        with self.lock:
            self.tasks.pop(uuid, None)  # its thread removes its folder once the instances stop
        if self.store is not None:
            self.store.delete(uuid)

    def list(self) -> list[Task]:
        with self.lock:
            return sorted(self.tasks.values(), key=lambda t: t.created)

    def shutdown(self) -> None:
        """Stop every running instance (the daemon is going away): each task ends Cancelled,
        its results uploaded when it asked for that, and the state file has the last word."""
        for task in self.list():
            task.abort()
        for task in self.list():
            if task.thread.is_alive():
                task.thread.join(timeout=15)
        self._stopping.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        if self.store is not None:
            self.flush()
            self.store.close()


def _gpu_profiles() -> tuple[str, ...]:
    from submit.emulator.wire import GPU_PROFILES

    return GPU_PROFILES


def stop_orphan(pid: int | None, task_dir: Path) -> bool:
    """Kill an instance process a dead emulator left behind, if `pid` still is one: a process whose
    working directory lies in the task's folder (a reused pid is left alone).  True if it was."""
    if not pid:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    if not (cwd == str(task_dir) or cwd.startswith(str(task_dir) + os.sep)):
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True
