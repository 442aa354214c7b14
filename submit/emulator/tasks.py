"""Emulated Qarnot tasks: their life, from submission to an end state.

A task moves through Qarnot's states in order:
    Submitted -> FullyDispatched -> PartiallyExecuting|FullyExecuting -> UploadingResults
    -> Success | Failure | Cancelled
It stays Submitted while it waits: for the tasks it depends on to end as it asked (it fails if
one ends otherwise), for a machine that meets its hardware constraints (`hardware.py`), for a
running-task slot (`Limits.max_running_tasks`), or for its pool's slots.
Each instance runs in its own folder through an executor (`executors.py`).  Its files (resources
staged, results and snapshots uploaded) are its `TaskFiles` (`transfers.py`); the request a task
was submitted with and the JSON it is answered with are the wire format's (`wire.py`).  What a
task needs of the emulator around it is its `Host` (`manager.TaskManager` is one).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Protocol

from submit.emulator import cluster
from submit.emulator.fields import NOT_RUNNING, RequestError, list_field, parse_constants, stamp, string_field
from submit.emulator.hardware import Machine, unchecked
from submit.emulator.instances import FINAL_STATES, ClusterPlace, Instance, InstanceSpec, Output
from submit.emulator.processes import stop_in
from submit.emulator.storage import Storage
from submit.emulator.transfers import TaskFiles
from submit.emulator.wire import TaskBody


class Host(Protocol):
    """What a task needs of the emulator that runs it."""

    work_dir: Path  # the instance folders' root
    storage: Storage
    executor: Any  # executors: ProcessExecutor | DockerExecutor
    machine: Machine
    hardware_mode: str  # wait | strict | lenient
    slots: threading.BoundedSemaphore  # one per core: instances in parallel up to the cores
    gang: threading.Lock  # held while a cluster task takes its slots, all at once
    cores: int
    running_tasks: threading.BoundedSemaphore  # maxRunningTask
    pools: dict[str, Any]  # uuid -> pools.Pool
    tasks: dict[str, "Task"]

    def persist(self, task: "Task") -> None: ...

    def dependencies_verdict(self, task: "Task") -> str | None: ...

    def threads_per_instance(self, instances: int) -> int: ...


class Task:
    def __init__(self, manager: Host, body: TaskBody, uuid: str | None = None,
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
        self.aborted = False
        self.lock = threading.RLock()
        self.dir = manager.work_dir / self.uuid
        self.instances = {i: Instance(i, self.dir / "instances" / str(i)) for i in self.ids}
        self.files = TaskFiles(manager.storage, body, self.instances)
        self.out = {i: Output() for i in self.ids}
        self.err = {i: Output() for i in self.ids}
        self.all_out = Output()
        self.all_err = Output()
        self.thread = threading.Thread(target=self._run, name=f"task-{self.uuid[:8]}", daemon=True)
        self._snapshot_thread: threading.Thread | None = None
        self.saved: tuple[str, dict[tuple[str, int], int]] | None = None  # what the state file holds
        self.settled = False  # ended and saved after its thread finished: only outputs can change
        self.dependency_state: str | None = "waiting" if body.dependencies else None
        self.hardware_problems: list[str] = []  # what this machine lacks (the task waits, mode `wait`)
        # a cluster task: its instances' places, and the first instance that failed (the others stop)
        self.places: dict[int, ClusterPlace] = {}
        self.failed_first: int | None = None

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
                    "ended": self.ended, "errors": list(self.errors), "results_count": self.files.results_count,
                    "aborted": self.aborted, "snapshot": self.snapshot, "snapshots": self.snapshots,
                    "resource_files": {k: list(v) for k, v in self.files.resource_files.items()},
                    "instances": [i.record() for i in self.instances.values()]}

    @classmethod
    def restore(cls, manager: Host, uuid: str, data: dict[str, Any],
                outputs: dict[tuple[str, int], tuple[str, int]]) -> "Task":
        pool_body = data.get("pool_body")
        task = cls(manager, TaskBody.parse(data["body"], pool=pool_body), uuid=uuid, created=data["created"],
                   pool_body=pool_body)
        task.dir = Path(data.get("dir") or task.dir)
        for key in ("state", "previous_state", "transition", "previous_transition", "ended", "aborted", "snapshot"):
            setattr(task, key, data.get(key, getattr(task, key)))
        task.files.results_count = data.get("results_count") or 0
        task.errors = list(data.get("errors") or [])
        task.snapshots = dict(data.get("snapshots") or {})
        task.files.resource_files = {k: tuple(v) for k, v in (data.get("resource_files") or {}).items()}
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
            self.files.stage()
        except Exception as exc:  # noqa: BLE001 - a task that cannot start fails, with the reason
            self.errors.append({"code": "RESOURCES", "message": f"resources could not be staged: {exc}",
                                "debug": repr(exc)})
            self.set_state("Failure")
            return
        if self.aborted:
            self.set_state("Cancelled")
            return
        self.set_state("FullyDispatched")
        network, held = None, 0
        try:
            if self.body.cluster:
                try:
                    network = cluster.open_cluster(self)
                except Exception as exc:  # noqa: BLE001 - a cluster that cannot be set up fails the task
                    self.errors.append({"code": "CLUSTER", "message": f"the cluster could not be set up: {exc}",
                                        "debug": repr(exc)})
                    self.set_state("Failure")
                    return
                held = cluster.take_slots(self)
            threads = [threading.Thread(target=self._run_instance, args=(inst,), daemon=True)
                       for inst in self.instances.values()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for _ in range(held):
                self.manager.slots.release()
            if self.body.cluster:
                self.manager.executor.close_cluster(network)
        if self.aborted:
            if self.body.upload_on_cancel:
                self.files.upload_results()
            self.set_state("Cancelled")
            return
        self.set_state("UploadingResults")
        self.files.upload_results()
        failed = [i for i in self.instances.values() if i.state != "Success"]
        self.set_state("Failure" if failed else "Success")

    def _run_instance(self, inst: Instance) -> None:
        pool = self.manager.pools.get(self.body.pool) if self.body.pool else None
        slot = contextlib.nullcontext() if self.body.cluster else self.manager.slots  # a cluster's: taken
        with (pool.slots if pool else contextlib.nullcontext()), slot:
            # instances in parallel up to the pool's instances (in a pool), and up to the cores
            if self.aborted:
                inst.state = "Cancelled"
                return
            with self.lock:
                constants = dict(self.body.constants)  # as they are now (commit() may change them)
            image = None
            if constants.get("DOCKER_REPO"):
                image = f"{constants['DOCKER_REPO']}:{constants.get('DOCKER_TAG') or 'latest'}"
            spec = InstanceSpec(self.uuid, self.body.name, inst.id, len(self.ids), constants, inst.workdir,
                                image, self.body.gpu, threads=self.cores_per_instance,
                                cluster=self.places.get(inst.id))
            for problem in self.hardware_problems:  # lenient mode: said, and run on what there is
                self.log(inst.id, f"[emulator] {problem}: the instance runs on this machine as it is "
                                  f"(QTRAIN_EMULATOR_HARDWARE=lenient)")
            for kind in unchecked(self.body.hardware):
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
            with self.lock:  # an abort (or delete), or a cluster peer's failure, that came while it started
                inst.running = running
                aborted = self.aborted or self.failed_first is not None
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
        if self.body.cluster:  # what its processes started in sessions of their own (torchrun's workers)
            stop_in(inst.workdir)
        with self.lock:
            peer_failed = self.failed_first is not None and self.failed_first != inst.id
            if self.body.cluster and code != 0 and not self.aborted and self.failed_first is None:
                self.failed_first = inst.id
                peers = [i.running for i in self.instances.values() if i.id != inst.id and i.running is not None]
                threading.Thread(target=lambda: [r.kill() for r in peers], daemon=True,
                                 name=f"cluster-stop-{self.uuid[:8]}").start()
        if self.aborted:
            inst.state = "Cancelled"
        elif code == 0:
            inst.state = "Success"
        elif peer_failed and _stopped_by_signal(code):  # stopped by the emulator: the first failure is the cause
            inst.state = "Failure"
            self.errors.append({"code": "INSTANCE_STOPPED",
                                "message": f"instance {inst.id}: stopped, as instance {self.failed_first} of the "
                                           f"cluster failed", "debug": ""})
        else:  # a failure of its own, even after a peer's: its node may have seen the cause (a killed rank)
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
            self.files.upload(inst, self.body.results_whitelist, self.body.results_blacklist)
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
        if not isinstance(body, dict):
            raise RequestError(400, "a task must be a JSON object")
        with self.lock:
            if self.done:
                raise RequestError(403, f"task {self.uuid} is {self.state}: {NOT_RUNNING}")
            name = string_field(body, "name", self.body.name)
            tags = list_field(body, "tags") if body.get("tags") is not None else self.body.tags
            if not all(isinstance(t, str) for t in tags):
                raise RequestError(400, "tags: expected a list of strings")
            constants = parse_constants(list_field(body, "constants")) if body.get("constants") is not None else None
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

    # ------------------------------------------------------------------ resources & snapshots
    def update_resources(self) -> int:
        """PATCH /tasks/{uuid} (`task.update_resources()`): what the resource buckets hold now is
        added to the running instances' folders (additive: nothing is deleted).  Returns the files
        added or replaced."""
        with self.lock:
            if self.done:
                raise RequestError(403, f"task {self.uuid} is {self.state}: {NOT_RUNNING}")
        if self.state == "Submitted":
            return 0  # it has not staged anything yet: it will stage what is there when it starts
        return self.files.stage(only_new=True)

    def take_snapshot(self, config: dict[str, Any]) -> None:
        self.files.snapshot(config)

    def set_periodic_snapshot(self, config: dict[str, Any]) -> None:
        """Snapshot every `config["interval"]` seconds until the task ends (the newest settings
        apply from the next snapshot on)."""
        with self.lock:
            self.snapshot = config
            if self._snapshot_thread is None and not self.done:
                self._snapshot_thread = threading.Thread(target=self._snapshot_loop, daemon=True,
                                                         name=f"snapshots-{self.uuid[:8]}")
                self._snapshot_thread.start()

    def _snapshot_loop(self) -> None:
        while not self.done:
            interval = max(1, int(self.snapshot.get("interval") or 60))
            for _ in range(interval * 10):
                if self.done:
                    return
                time.sleep(0.1)
            try:
                self.take_snapshot(self.snapshot)
            except Exception as exc:  # noqa: BLE001 - a failed snapshot is logged, not fatal
                self.log(self.ids[0], f"[emulator] snapshot failed: {exc}", "stderr")

    def instant_snapshot(self, config: dict[str, Any]) -> str:
        sid = str(uuidlib.uuid4())
        now = stamp()
        self.snapshots[sid] = {"id": sid, "taskUuid": self.uuid, "triggerDate": now,
                               "lastUpdateDate": now, "snapshotConfig": config, "status": "InProgress"}
        try:
            self.take_snapshot(config)
            self.snapshots[sid]["status"] = "Success"
        except Exception:  # noqa: BLE001
            self.snapshots[sid]["status"] = "Failure"
        self.snapshots[sid]["lastUpdateDate"] = stamp()
        return sid

    # ------------------------------------------------------------------------- what it shows
    @property
    def results_count(self) -> int:
        return self.files.results_count

    @property
    def cpu_model(self) -> str:
        return self.manager.machine.cpu

    @property
    def cores_per_instance(self) -> int:
        return self.manager.threads_per_instance(len(self.ids))


def _stopped_by_signal(code: int) -> bool:
    """Did the instance end by the emulator's stop (SIGTERM, then SIGKILL), rather than fail on its own?"""
    return code in (-signal.SIGTERM, -signal.SIGKILL, 128 + signal.SIGTERM, 128 + signal.SIGKILL)
