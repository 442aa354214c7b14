"""Qarnot pools, at the level the SDK's examples use them: create a pool (`conn.create_pool(name,
profile, instancecount)`, its constants and resource buckets, `pool.submit()`), submit tasks into
it (`conn.create_task(name, pool, n)`: the task takes the pool's profile, constants and resources
as defaults), close it (`pool.close()`), delete it.

A pool's instance count is its slots: the instances of all its tasks run at most that many at a
time (and at most the machine's cores, as any instance).  Closing a pool cancels the tasks still
running in it and takes no more; it ends Closed.  Pools live in the daemon's memory: a restarted
emulator has none (its tasks are kept, as every task is).
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from submit.emulator.fields import Limits, RequestError, list_field, parse_constants, stamp, string_field
from submit.emulator.wire import PROFILES

if TYPE_CHECKING:
    from submit.emulator.manager import TaskManager

NOT_RUNNING = "invalid operation on non running pool"


class Pool:
    def __init__(self, manager: "TaskManager", body: Any, limits: Limits):
        if not isinstance(body, dict):
            raise RequestError(400, "a pool must be a JSON object")
        profile = string_field(body, "profile")
        if profile not in PROFILES:
            raise RequestError(400, f"profile: {str(profile)[:80]!r} does not exist (profiles: {', '.join(PROFILES)})")
        count = body.get("instanceCount", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limits.max_instances:
            raise RequestError(400, f"instanceCount {str(count)[:20]}: a pool has 1 to {limits.max_instances} "
                                    f"instances (maxInstances)")
        parse_constants(list_field(body, "constants"))
        for i, b in enumerate(list_field(body, "advancedResourceBuckets")):
            if not isinstance(b, dict) or not isinstance(b.get("bucketName"), str):
                raise RequestError(400, f"advancedResourceBuckets[{i}]: expected an object with a bucketName")
        tags = list_field(body, "tags")
        if not all(isinstance(t, str) for t in tags):
            raise RequestError(400, "tags: expected a list of strings")
        self.manager = manager
        self.uuid = str(uuidlib.uuid4())
        self.body = body
        self.name = string_field(body, "name", "pool") or "pool"
        self.profile = profile
        self.count = count
        self.tags = list(tags)
        self.slots = threading.BoundedSemaphore(count)
        self.created = time.time()
        self.state, self.previous_state = "FullyExecuting", "FullyDispatched"
        self.transition = self.previous_transition = self.created
        self.ended: float | None = None
        self.closed = False
        self.lock = threading.Lock()

    def tasks(self) -> list[Any]:
        return [t for t in self.manager.list() if t.body.pool == self.uuid]

    def _set_state(self, state: str) -> None:
        with self.lock:
            self.previous_state, self.previous_transition = self.state, self.transition
            self.state, self.transition = state, time.time()
            if state == "Closed":
                self.ended = self.transition

    def close(self) -> None:
        """Cancel the tasks still running in it; no more are taken; Closed once they have ended."""
        with self.lock:
            if self.closed:
                raise RequestError(403, f"pool {self.uuid} is {self.state}: {NOT_RUNNING}")
            self.closed = True
        self._set_state("Closing")
        running = [t for t in self.tasks() if not t.done]
        for task in running:
            task.abort()

        def settle() -> None:
            while any(not t.done for t in running):
                time.sleep(0.1)
            self._set_state("Closed")

        threading.Thread(target=settle, name=f"pool-{self.uuid[:8]}", daemon=True).start()

    def json(self, summary: bool = False) -> dict[str, Any]:
        tasks = self.tasks()
        running = sum(1 for t in tasks for i in t.instances.values() if i.state == "Running")
        queued = sum(1 for t in tasks if not t.done for i in t.instances.values() if not i.done)
        data: dict[str, Any] = {
            "uuid": self.uuid, "name": self.name, "shortname": self.body.get("shortname") or self.uuid,
            "profile": self.profile, "instanceCount": self.count, "state": self.state,
            "previousState": self.previous_state, "stateTransitionTime": stamp(self.transition),
            "previousStateTransitionTime": stamp(self.previous_transition), "creationDate": stamp(self.created),
            "lastModified": stamp(self.transition), "endDate": stamp(self.ended) if self.ended else None,
            "errors": [], "tags": self.tags, "labels": self.body.get("labels") or {},
            "runningInstanceCount": running, "runningCoreCount": running,
            "queuedOrRunningTaskInstancesCount": float(queued), "totalSlotCapacity": self.count,
            "poolUsage": round(running / self.count, 3),
            "status": {"executionTimeByCpuModel": [], "executionTimeGhzByCpuModel": [],
                       "instanceCount": self.count},
        }
        if summary:
            return data
        data.update({
            "constants": list(self.body.get("constants") or []),
            "advancedResourceBuckets": list(self.body.get("advancedResourceBuckets") or []),
            "hardwareConstraints": list(self.body.get("hardwareConstraints") or []),
            "elasticProperty": self.body.get("elasticProperty") or {"isElastic": False},
            "preparationTask": self.body.get("preparationTask"),
            "taskDefaultWaitForPoolResourcesSynchronization":
                bool(self.body.get("taskDefaultWaitForPoolResourcesSynchronization")),
            "autoDeleteOnCompletion": bool(self.body.get("autoDeleteOnCompletion")),
            "completionTimeToLive": self.body.get("completionTimeToLive") or "00:00:00",
        })
        return data


class Pools:
    """The API's view of the pools: create, get, list, close, delete."""

    def __init__(self, manager: "TaskManager"):
        self.manager = manager

    def submit(self, body: Any) -> dict[str, str]:
        limits = self.manager.limits
        pool = Pool(self.manager, body, limits)
        pools = self.manager.pools
        if len(pools) >= limits.max_pools:
            raise RequestError(403, f"Maximum number of pools reached ({limits.max_pools}, maxPool): "
                                    f"delete pools you no longer need")
        if sum(not p.closed for p in pools.values()) >= limits.max_running_pools:
            raise RequestError(403, f"Maximum number of pools reached: {limits.max_running_pools} are open "
                                    f"(maxRunningPool); close one first")
        for b in pool.body.get("advancedResourceBuckets") or []:
            if not self.manager.storage.exists(b["bucketName"]):
                raise RequestError(404, f"resource bucket {b['bucketName']!r} not found")
        pools[pool.uuid] = pool
        return {"uuid": pool.uuid}

    def get(self, uuid: str) -> Pool:
        pool = self.manager.pools.get(uuid)
        if pool is None:
            raise RequestError(404, f"pool {uuid} not found")
        return pool

    def delete(self, uuid: str) -> None:
        pool = self.get(uuid)
        if not pool.closed:
            pool.close()
        self.manager.pools.pop(uuid, None)

    def listing(self) -> list[Pool]:
        return sorted(self.manager.pools.values(), key=lambda p: p.created)
