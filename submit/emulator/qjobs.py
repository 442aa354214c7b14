"""Qarnot jobs (named qjobs here: `jobs` is qtrain's package of job files), at the level the SDK
uses them: create a job (`conn.create_job(name)`, `job.max_wall_time`, `job.submit()`), submit
tasks into it (`conn.create_task(name, profile, n, job=job)`), terminate it, delete it, list its
tasks.

A job's `maxWallTime` (a TimeSpan, `[d.]hh:mm:ss`) is Qarnot's time limit: counted from the job's
creation, it ends the job's tasks still running when it is reached, as `terminate` does: each is
cancelled (its results uploaded when it asked for that, as qtrain's tasks do) with an error that
names the limit.  A terminated job takes no more tasks and ends Completed once its tasks have
ended.  A job in a pool gives its tasks the pool (its profile, constants and resources as
defaults).  Jobs live in the daemon's memory, as pools do: a restarted emulator has none (the tasks
it restores were ended when it stopped).
"""

from __future__ import annotations

import re
import threading
import time
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from submit.emulator.fields import RequestError, list_field, stamp, string_field, timespan

if TYPE_CHECKING:
    from submit.emulator.manager import TaskManager

TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")
WALL_TIME_CODE = "MAX_WALL_TIME_REACHED"


def parse_timespan(value: Any, field: str) -> float:
    """A .NET TimeSpan as the SDK writes it ([d.]hh:mm:ss[.fffffff]), in seconds."""
    match = TIMESPAN.match(value) if isinstance(value, str) else None
    if match is None:
        raise RequestError(400, f"{field}: {str(value)[:40]!r} is not a time span (expected [d.]hh:mm:ss)")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or int(seconds) > 59 or int(hours) > 23:
        raise RequestError(400, f"{field}: {value!r}: hours run to 23, minutes and seconds to 59")
    return (int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            + (float(f"0.{fraction}") if fraction else 0.0))


class QJob:
    def __init__(self, manager: "TaskManager", body: Any):
        if not isinstance(body, dict):
            raise RequestError(400, "a job must be a JSON object")
        tags = list_field(body, "tags")
        if not all(isinstance(t, str) for t in tags):
            raise RequestError(400, "tags: expected a list of strings")
        self.max_wall = parse_timespan(body["maxWallTime"], "maxWallTime") if body.get("maxWallTime") else None
        if self.max_wall is not None and self.max_wall <= 0:
            raise RequestError(400, "maxWallTime: a job's wall time must be above zero")
        self.pool = string_field(body, "poolUuid")
        if self.pool and self.pool not in manager.pools:
            raise RequestError(404, f"poolUuid: pool {self.pool[:80]!r} not found")
        self.manager = manager
        self.uuid = str(uuidlib.uuid4())
        self.body = body
        self.name = string_field(body, "name", "job") or "job"
        self.tags = list(tags)
        self.created = time.time()
        self.state, self.previous_state = "Active", None
        self.transition, self.previous_transition = self.created, None
        self.terminated = False
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        if self.max_wall is not None:
            self.timer = threading.Timer(self.max_wall, self._wall_time_reached)
            self.timer.daemon = True
            self.timer.start()

    def tasks(self) -> list[Any]:
        return [t for t in self.manager.list() if t.body.job == self.uuid]

    def _set_state(self, state: str) -> None:
        with self.lock:
            self.previous_state, self.previous_transition = self.state, self.transition
            self.state, self.transition = state, time.time()

    def _wall_time_reached(self) -> None:
        if not self.terminated:
            self.terminate(reason=f"the job's maxWallTime ({timespan(self.max_wall or 0)}) was reached: "
                                  f"the task was cancelled")

    def terminate(self, reason: str | None = None) -> None:
        """Cancel the tasks still running in it (each told `reason`); no more are taken; Completed
        once they have ended."""
        with self.lock:
            if self.terminated:
                return
            self.terminated = True
        if self.timer is not None:
            self.timer.cancel()
        self._set_state("Terminating")
        running = [t for t in self.tasks() if not t.done]
        for task in running:
            if reason:
                with task.lock:
                    task.errors.append({"code": WALL_TIME_CODE, "message": reason, "debug": ""})
            task.abort()

        def settle() -> None:
            while any(not t.done for t in running):
                time.sleep(0.1)
            self._set_state("Completed")

        threading.Thread(target=settle, name=f"job-{self.uuid[:8]}", daemon=True).start()

    def json(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid, "name": self.name, "shortname": self.body.get("shortname") or self.uuid,
            "poolUuid": self.pool, "state": self.state, "previousState": self.previous_state,
            "stateTransitionTime": stamp(self.transition),
            "previousStateTransitionTime": stamp(self.previous_transition) if self.previous_transition else None,
            "creationDate": stamp(self.created), "lastModified": stamp(self.transition),
            "useDependencies": bool(self.body.get("useDependencies")),
            "maxWallTime": timespan(self.max_wall) if self.max_wall is not None else None,
            "tags": self.tags, "autoDeleteOnCompletion": bool(self.body.get("autoDeleteOnCompletion")),
            "completionTimeToLive": self.body.get("completionTimeToLive") or "00:00:00",
        }


class QJobs:
    """The API's view of the jobs: create, get, list, terminate, delete, a job's tasks."""

    def __init__(self, manager: "TaskManager"):
        self.manager = manager

    def submit(self, body: Any) -> dict[str, str]:
        job = QJob(self.manager, body)
        jobs = self.manager.jobs
        if sum(not j.terminated for j in jobs.values()) >= self.manager.limits.max_jobs:
            if job.timer is not None:
                job.timer.cancel()
            raise RequestError(403, f"Maximum number of jobs reached ({self.manager.limits.max_jobs} active, "
                                    f"maxJob): terminate jobs you no longer need")
        jobs[job.uuid] = job
        return {"uuid": job.uuid}

    def get(self, uuid: str) -> QJob:
        job = self.manager.jobs.get(uuid)
        if job is None:
            raise RequestError(404, f"job {uuid} not found")
        return job

    def terminate(self, uuid: str) -> None:
        job = self.get(uuid)
        if job.terminated:
            raise RequestError(403, f"job {uuid} is {job.state}: invalid operation on non running job")
        job.terminate()

    def delete(self, uuid: str, force: bool) -> None:
        job = self.get(uuid)
        running = [t for t in job.tasks() if not t.done]
        if running and not force:
            raise RequestError(403, f"job {uuid} still has {len(running)} running task(s): terminate it first, "
                                    f"or delete with force=true")
        job.terminate()
        self.manager.jobs.pop(uuid, None)

    def listing(self) -> list[QJob]:
        return sorted(self.manager.jobs.values(), key=lambda j: j.created)
