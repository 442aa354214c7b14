"""The emulator's tasks, kept: submitted (checked against the account's limits, its credits, the
machine's hardware), listed, deleted, and, with a state file, outliving the daemon: the tasks of
the previous one are read back, and those it left running end as Failure (their instances
stopped, what their folders held uploaded as a last snapshot)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from submit.emulator.fields import Limits, RequestError
from submit.emulator.footprint import account_credits, task_credits
from submit.emulator.hardware import Machine, unmet
from submit.emulator.processes import stop_orphan
from submit.emulator.state import TaskStore
from submit.emulator.storage import Storage
from submit.emulator.tasks import Task
from submit.emulator.wire import GPU_PROFILES, TaskBody

HARDWARE_MODES = ("wait", "strict", "lenient")


class TaskManager:
    """The emulator's tasks.  With a `store` (state.TaskStore) they outlive the process: the
    tasks of the previous one are read back, and those it left running end as Failure (their
    instances stopped, what their folders held uploaded as a last snapshot)."""

    FLUSH_SECONDS = 0.5

    def __init__(self, work_dir: Path, storage: Storage, executor, cores: int | None = None,
                 store: TaskStore | None = None, limits: Limits | None = None, hardware_mode: str = "wait",
                 machine: Machine | None = None):
        if hardware_mode not in HARDWARE_MODES:
            raise ValueError(f"hardware mode {hardware_mode!r}: choose one of {', '.join(HARDWARE_MODES)}")
        self.limits = limits or Limits()
        self.hardware_mode = hardware_mode
        self.running_tasks = threading.BoundedSemaphore(self.limits.max_running_tasks)
        self.pools: dict[str, Any] = {}  # uuid -> pools.Pool
        self.jobs: dict[str, Any] = {}  # uuid -> qjobs.QJob
        self.credits_spent = 0.0  # by tasks deleted since the daemon started (footprint.py)
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if hasattr(executor, "set_root"):  # the docker executor mounts it into warm containers
            executor.set_root(work_dir)
        self.storage = storage
        self.executor = executor
        self.cores = cores or os.cpu_count() or 1
        self.machine = machine or Machine.here(self.cores)
        self.slots = threading.BoundedSemaphore(self.cores)
        self.gang = threading.Lock()  # a cluster task takes its slots all at once (tasks.Task._take_slots)
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
                task.files.upload_results()
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
        if isinstance(body, dict) and body.get("jobUuid"):
            if body.get("poolUuid"):
                raise RequestError(400, "poolUuid and jobUuid: a task goes into a pool or a job, not both "
                                        "(a job may be in a pool)")
            job = self.jobs.get(body["jobUuid"]) if isinstance(body["jobUuid"], str) else None
            if job is None:
                raise RequestError(404, f"jobUuid: job {str(body['jobUuid'])[:80]!r} not found")
            if job.terminated:
                raise RequestError(400, f"jobUuid: job {job.uuid} is {job.state}: it takes no more tasks")
            if job.pool:
                body = {**body, "poolUuid": job.pool}
        if isinstance(body, dict) and body.get("poolUuid"):
            pool = self.pools.get(body["poolUuid"]) if isinstance(body["poolUuid"], str) else None
            if pool is None:
                raise RequestError(400, f"poolUuid: pool {str(body['poolUuid'])[:80]!r} not found")
            if pool.closed:
                raise RequestError(400, f"poolUuid: pool {pool.uuid} is {pool.state}: it takes no more tasks")
        task = Task(self, TaskBody.parse(body, self.limits, pool.body if pool else None),
                    pool_body=pool.body if pool else None)
        if account_credits(self.list(), self.credits_spent) <= 0:
            raise RequestError(402, "Not enough credits: the account's emulated credits are spent "
                                    "(QTRAIN_EMULATOR_CREDITS; qtrain emulator reset starts afresh)")
        if len(self.tasks) >= self.limits.max_tasks:
            raise RequestError(403, f"Maximum number of tasks reached ({self.limits.max_tasks}, maxTask): "
                                    f"delete tasks you no longer need")
        for uuid, _ in task.body.dependencies:
            if uuid not in self.tasks:
                raise RequestError(400, f"dependencies: task {uuid[:80]!r} not found")
        problems = unmet(task.body.hardware, self.machine, task.body.profile in GPU_PROFILES)
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
