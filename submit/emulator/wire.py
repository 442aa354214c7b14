"""The Qarnot wire format, as the SDK sends and reads it: a task request parsed and checked
(`TaskBody`), and a task's JSON (`task_json`, from what a task shows of itself: `TaskView`).  No
task runs here (`tasks.py` does that); the field parsers, dates and ranges are `fields.py`'s.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from jobs.imageref import image_error
from submit.emulator.commands import split_command
from submit.emulator.fields import (Limits, RequestError, field_error, format_ranges, list_field,
                                    parse_constants, stamp, string_field, timespan, parse_ranges)
from submit.emulator.hardware import parse as parse_hardware

GPU_PROFILES = ("docker-nvidia-batch", "docker-nvidia-network", "docker-nvidia-cluster-network")
# cluster profiles, as Qarnot's samples use them: the task's instances reach one another, instance
# 0 (the master) runs DOCKER_CMD_MASTER and the others DOCKER_CMD_WORKER (DOCKER_CMD when unset),
# each finds the nodes in /job/mpihosts (the master first) and shares /share (`cluster.py`)
CLUSTER_PROFILES = ("docker-cluster-network", "docker-nvidia-cluster-network")
CLUSTER_COMMANDS = ("DOCKER_CMD_MASTER", "DOCKER_CMD_WORKER")
PROFILES = {
    "docker-batch": {"DOCKER_REPO": "library/ubuntu", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-network": {"DOCKER_REPO": "library/ubuntu", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-nvidia-batch": {"DOCKER_REPO": "nvidia/cuda", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-nvidia-network": {"DOCKER_REPO": "nvidia/cuda", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-cluster-network": {"DOCKER_REPO": "library/ubuntu", "DOCKER_TAG": "latest", "DOCKER_CMD_MASTER": "",
                               "DOCKER_CMD_WORKER": ""},
    "docker-nvidia-cluster-network": {"DOCKER_REPO": "nvidia/cuda", "DOCKER_TAG": "latest",
                                      "DOCKER_CMD_MASTER": "", "DOCKER_CMD_WORKER": ""},
}


FINAL_CONDITIONS = ("success", "failure", "cancelled")  # what an advanced dependency may wait for


def parse_dependencies(value: Any) -> list[tuple[str, tuple[str, ...]]]:
    """`dependencies` -> [(task uuid, final states it must end in)]: `dependsOn` waits for
    success; `advancedDependsOn` for the states listed (success when none)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise field_error("dependencies", "expected an object with dependsOn or advancedDependsOn")
    found: list[tuple[str, tuple[str, ...]]] = []
    for i, uuid in enumerate(list_field(value, "dependsOn", "dependencies.")):
        if not isinstance(uuid, str) or not uuid:
            raise field_error(f"dependencies.dependsOn[{i}]", "expected a task uuid")
        found.append((uuid, ("success",)))
    for i, item in enumerate(list_field(value, "advancedDependsOn", "dependencies.")):
        where = f"dependencies.advancedDependsOn[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("taskUuid"), str):
            raise field_error(where, "expected an object with a taskUuid")
        states = item.get("taskFinalStateCondition") or ["success"]
        if not isinstance(states, list) or any(str(x).lower() not in FINAL_CONDITIONS for x in states):
            raise field_error(f"{where}.taskFinalStateCondition",
                               f"expected a list of {', '.join(FINAL_CONDITIONS)}")
        found.append((item["taskUuid"], tuple(str(x).lower() for x in states)))
    return found


@dataclass
class TaskBody:
    """A task as submitted (POST /tasks), parsed and checked: every field the emulator reads has
    the type the SDK sends, or the request is refused naming the field."""

    raw: dict[str, Any]
    name: str
    shortname: str | None
    profile: str
    ids: list[int]
    constants: dict[str, str]
    buckets: list[dict[str, Any]]  # advancedResourceBuckets (+ plain resourceBuckets)
    result_bucket: str | None
    results_whitelist: str | None
    results_blacklist: str | None
    gpu: bool
    upload_on_cancel: bool
    tags: list[str] = field(default_factory=list)
    hardware: list[dict[str, Any]] = field(default_factory=list)
    dependencies: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    pool: str | None = None
    job: str | None = None  # the Qarnot job it belongs to (qjobs.py)

    @property
    def cluster(self) -> bool:
        """A cluster profile's task: its instances run together and reach one another."""
        return self.profile in CLUSTER_PROFILES

    @classmethod
    def parse(cls, body: Any, limits: Limits | None = None, pool: dict[str, Any] | None = None) -> "TaskBody":
        """`limits`: checked at submission (None for a task read back from the state file);
        `pool`: the pool's own request when the task is submitted into one (its profile,
        constants and resource buckets are the task's defaults, as on Qarnot)."""
        if not isinstance(body, dict):
            raise RequestError(400, "a task must be a JSON object")
        job_uuid = string_field(body, "jobUuid")
        pool_uuid = string_field(body, "poolUuid")
        profile = string_field(body, "profile") or ((pool or {}).get("profile") if pool_uuid else None)
        if profile not in PROFILES:
            raise field_error("profile", f"{str(profile)[:80]!r} does not exist (profiles: {', '.join(PROFILES)})")
        if body.get("advancedRanges") is not None:
            if not isinstance(body["advancedRanges"], str):
                raise field_error("advancedRanges", "expected a string such as 0-5,7")
            ids = parse_ranges(body["advancedRanges"])
            if len(set(ids)) != len(ids):
                raise field_error("advancedRanges", "an instance id appears twice")
            what = f"advancedRanges {body['advancedRanges'][:40]!r} ({len(ids)} instances)"
        else:
            count = body.get("instanceCount", 1)
            if isinstance(count, bool) or not isinstance(count, int):
                raise field_error("instanceCount", f"expected an integer, got {type(count).__name__}")
            ids = list(range(max(count, 0)))
            what = f"instanceCount {count}"
        if limits is not None and not 1 <= len(ids) <= limits.max_instances:
            raise RequestError(400, f"{what}: a task has 1 to {limits.max_instances} instances "
                                    f"(maxInstances); split the work into several tasks")
        if not ids:
            raise RequestError(400, f"{what}: a task has at least one instance")
        constants = parse_constants(list_field(pool or {}, "constants")) if pool_uuid else {}
        constants.update(parse_constants(list_field(body, "constants")))
        if constants.get("DOCKER_REPO"):  # it becomes an argument of `docker run`: a reference, nothing else
            image = f"{constants['DOCKER_REPO']}:{constants.get('DOCKER_TAG') or 'latest'}"
            if problem := image_error(image):
                raise RequestError(400, f"constants DOCKER_REPO/DOCKER_TAG: {problem}")
        for key in ("DOCKER_CMD", *CLUSTER_COMMANDS):
            if constants.get(key):
                try:
                    split_command(constants[key])
                except ValueError as exc:
                    raise RequestError(400, f"constants {key}: {exc} (Qarnot splits it into words as a "
                                            f"shell would, quotes included)") from None
        buckets = []
        for source in ((pool or {}), body) if pool_uuid else (body,):
            for i, b in enumerate(list_field(source, "advancedResourceBuckets")):
                if not isinstance(b, dict) or not isinstance(b.get("bucketName"), str):
                    raise field_error(f"advancedResourceBuckets[{i}]", "expected an object with a bucketName")
                buckets.append(b)
            for i, name in enumerate(list_field(source, "resourceBuckets")):
                if not isinstance(name, str):
                    raise field_error(f"resourceBuckets[{i}]", "expected a bucket name")
                buckets.append({"bucketName": name})
        for key in ("resultsWhitelist", "resultsBlacklist"):
            if pattern := string_field(body, key):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise field_error(key, f"{pattern[:80]!r} is not a valid regex: {exc}") from None
        tags = list_field(body, "tags")
        if not all(isinstance(t, str) for t in tags):
            raise field_error("tags", "expected a list of strings")
        labels = body.get("labels")
        if labels is not None and not isinstance(labels, dict):
            raise field_error("labels", "expected an object of strings")
        hardware = parse_hardware(body.get("hardwareConstraints"))
        gpu = profile in GPU_PROFILES or any(h["discriminator"] == "GpuHardwareConstraint" for h in hardware)
        return cls(raw=body, name=string_field(body, "name", "task") or "task", shortname=string_field(body, "shortname"),
                   profile=profile, ids=ids, constants=constants, buckets=buckets,
                   result_bucket=string_field(body, "resultBucket"),
                   results_whitelist=string_field(body, "resultsWhitelist"),
                   results_blacklist=string_field(body, "resultsBlacklist"), gpu=gpu,
                   upload_on_cancel=bool(body.get("uploadResultsOnCancellation")),
                   tags=list(tags), hardware=hardware, dependencies=parse_dependencies(body.get("dependencies")),
                   pool=pool_uuid, job=job_uuid)


class TaskView(Protocol):
    """What the JSON of a task is made of (`tasks.Task` has it): a protocol, so that the wire
    format needs nothing of how a task runs."""

    uuid: str
    body: TaskBody
    lock: threading.RLock
    ids: list[int]
    instances: dict[int, Any]  # instances.Instance
    state: str
    previous_state: str | None
    transition: float
    previous_transition: float | None
    created: float
    ended: float | None
    errors: list[dict[str, str]]
    results_count: int
    snapshot: dict[str, Any] | None
    done: bool
    cpu_model: str  # the machine's, as Qarnot names it by CPU model
    cores_per_instance: int

    def dependencies_json(self) -> dict[str, Any] | None: ...


def task_json(task: TaskView, summary: bool = False) -> dict[str, Any]:
    """A task as GET /tasks/{uuid} (or a summary, as the paginated listing) answers it."""
    body = task.body
    with task.lock:
        now = time.time()
        instances = list(task.instances.values())
        completed = [i for i in instances if i.done]
        running = [i for i in instances if i.state == "Running"]
        exec_time = sum(((i.ended or now) - i.started) for i in instances if i.started)
        data: dict[str, Any] = {
            "uuid": task.uuid, "name": body.name, "shortname": body.shortname or task.uuid,
            "profile": body.profile, "state": task.state, "previousState": task.previous_state,
            "stateTransitionTime": stamp(task.transition),
            "previousStateTransitionTime": stamp(task.previous_transition) if task.previous_transition else None,
            "creationDate": stamp(task.created), "lastModified": stamp(task.transition),
            "endDate": stamp(task.ended) if task.ended else None,
            "errors": list(task.errors), "resultsCount": task.results_count,
            "resultBucket": body.result_bucket, "tags": body.tags,
            "labels": body.raw.get("labels") or {},
            "runningInstanceCount": len(running), "runningCoreCount": len(running),
            "progress": round(100.0 * len(completed) / len(body.ids), 1),
            "executionTime": timespan(exec_time), "wallTime": timespan((task.ended or now) - task.created),
            "snapshotInterval": (task.snapshot or {}).get("interval", 0),
            "uploadResultsOnCancellation": body.upload_on_cancel,
        }
        if body.raw.get("advancedRanges"):
            data["advancedRanges"] = body.raw["advancedRanges"]
        else:
            data["instanceCount"] = len(body.ids)
        data["poolUuid"] = body.pool
        data["jobUuid"] = body.job
        data["status"] = _status(task, instances, now)
        if summary:
            return data
        data["dependencies"] = task.dependencies_json()
        data.update({
            "constants": [{"key": k, "value": v} for k, v in body.constants.items()],
            "constraints": body.raw.get("constraints") or [],
            "advancedResourceBuckets": body.raw.get("advancedResourceBuckets") or [],
            "hardwareConstraints": body.raw.get("hardwareConstraints") or [],
            "resultsWhitelist": body.results_whitelist, "resultsBlacklist": body.results_blacklist,
            "snapshotWhitelist": (task.snapshot or {}).get("whitelist"),
            "snapshotBlacklist": (task.snapshot or {}).get("blacklist"),
            "autoDeleteOnCompletion": bool(body.raw.get("autoDeleteOnCompletion")),
            "completionTimeToLive": body.raw.get("completionTimeToLive") or "00:00:00",
            "completedInstances": [{
                "instanceId": i.id, "state": i.state,
                "wallTimeSec": round((i.ended or now) - (i.started or i.ended or now), 3),
                "execTimeSec": round((i.ended or now) - (i.started or i.ended or now), 3),
                "execTimeSecGHz": 0.0, "peakMemoryMB": 0, "averageGHz": 0.0,
                "results": list(i.results), "executionAttemptCount": 1,
            } for i in completed],
        })
        return data


def _status(task: TaskView, instances: list[Any], now: float) -> dict[str, Any]:
    """`task.status` (the SDK's `qarnot.status.Status`): progress, times and the execution time by
    CPU model, both lists present (the SDK reads them without a default)."""
    started = [i for i in instances if i.started]
    done = [i for i in instances if i.done]
    execution = sum(((i.ended or now) - i.started) for i in started)
    first = min((i.started for i in started), default=None)
    wall = ((task.ended or now) - task.created)
    cpu = task.cpu_model
    cores = task.cores_per_instance
    ranges = format_ranges

    running = [i for i in instances if i.state == "Running"]
    return {
        "downloadProgress": 100.0 if first else 0.0,
        "executionProgress": round(100.0 * len(done) / max(1, len(instances)), 1),
        "uploadProgress": 100.0 if task.done else 0.0,
        "instanceCount": len(instances),
        "downloadTime": timespan(0), "downloadTimeSec": 0.0,
        "environmentTime": timespan((first or now) - task.created) if first else timespan(0),
        "environmentTimeSec": round(((first or now) - task.created) if first else 0.0, 3),
        "executionTime": timespan(execution), "executionTimeSec": round(execution, 3),
        "uploadTime": timespan(0), "uploadTimeSec": 0.0,
        "wallTime": timespan(wall), "wallTimeSec": round(wall, 3),
        "succeededRange": ranges([i.id for i in instances if i.state == "Success"]),
        "executedRange": ranges([i.id for i in done]),
        "failedRange": ranges([i.id for i in instances if i.state == "Failure"]),
        "lastUpdateTimestamp": stamp(task.transition),
        "executionTimeByCpuModel": [{"model": cpu, "time": round(execution), "core": cores}] if started else [],
        "executionTimeGhzByCpuModel": [{"model": cpu, "timeGhz": 0.0, "clockRatio": 0, "core": cores}]
        if started else [],
        "runningInstancesInfo": {
            "perRunningInstanceInfo": [{
                "phase": "execution", "instanceId": i.id, "maxFrequencyGHz": 0.0, "currentFrequencyGHz": 0.0,
                "cpuUsage": 0.0, "maxMemoryMB": 0, "currentMemoryMB": 0, "memoryUsage": 0.0,
                "networkInKbps": 0.0, "networkOutKbps": 0.0, "progress": 0.0,
                "executionTimeSec": round(now - i.started, 3), "executionTimeGHz": 0.0,
                "cpuModel": cpu, "executionAttemptCount": 1, "activeForwards": [], "vpnConnections": [],
            } for i in running],
            "snapshotResults": [], "timestamp": stamp(now), "averageFrequencyGHz": 0.0, "maxFrequencyGHz": 0.0,
            "minFrequencyGHz": 0.0, "averageMaxFrequencyGHz": 0.0, "averageCpuUsage": 0.0,
            "clusterPowerIndicator": 1.0, "averageMemoryUsage": 0.0, "averageNetworkInKbps": 0.0,
            "averageNetworkOutKbps": 0.0, "totalNetworkInKbps": 0.0, "totalNetworkOutKbps": 0.0,
            "runningCoreCountByCpuModel": [{"model": cpu, "core": cores * len(running),
                                            "runningCoreCount": cores * len(running)}] if running else [],
        },
    }
