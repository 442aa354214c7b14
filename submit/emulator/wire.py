"""The Qarnot wire format, as the SDK sends and reads it: a task request parsed and checked, a
task's JSON, dates, time spans and advanced ranges.  No task runs here (`tasks.py` does that).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from submit.emulator.tasks import Task

GPU_PROFILES = ("docker-nvidia-batch", "docker-nvidia-network")
PROFILES = {
    "docker-batch": {"DOCKER_REPO": "library/ubuntu", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-network": {"DOCKER_REPO": "library/ubuntu", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-nvidia-batch": {"DOCKER_REPO": "nvidia/cuda", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-nvidia-network": {"DOCKER_REPO": "nvidia/cuda", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
}


class RequestError(Exception):
    """A request the emulator refuses: answered with `status` and {"message": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def stamp(t: float | None = None) -> str:
    """Qarnot's date format, as the SDK parses it (6 fraction digits, 'Z')."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timespan(seconds: float) -> str:
    """A .NET TimeSpan as Qarnot sends it: [d.]hh:mm:ss."""
    seconds = max(0, int(seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}." if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def parse_ranges(text: str) -> list[int]:
    """Qarnot's advanced ranges: "0-5,7,10-12"."""
    ids: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ids.extend(range(lo, hi + 1))
            elif part:
                ids.append(int(part))
    except ValueError:
        raise RequestError(400, f"advancedRanges {text!r}: expected ranges such as 0-5,7") from None
    if not ids:
        raise RequestError(400, "advancedRanges is empty")
    return ids


def safe_relpath(key: str) -> PurePosixPath | None:
    """A bucket key as a relative path, or None for keys that would escape the folder."""
    p = PurePosixPath(key.lstrip("/"))
    if not p.parts or ".." in p.parts:
        return None
    return p


@dataclass(frozen=True)
class Limits:
    """The account limits `/info` advertises, and the emulator enforces with the service's answers."""

    max_instances: int = 64  # instances of one task (instanceCount, or an advanced range)
    max_tasks: int = 1000  # tasks kept (403 "Maximum number of tasks reached": MaxTaskException)
    max_running_tasks: int = 32  # tasks past Submitted at once: the others wait, Submitted
    max_buckets: int = 100  # buckets (S3 CreateBucket answers TooManyBuckets)
    max_pools: int = 50
    max_running_pools: int = 10
    max_body: int = 4 << 20  # bytes of a request body (413 above)

    @classmethod
    def from_env(cls, text: str | None = None) -> "Limits":
        """QTRAIN_EMULATOR_LIMITS="max_tasks=10,max_running_tasks=2": lower (or raise) the limits."""
        import dataclasses
        import os

        text = os.environ.get("QTRAIN_EMULATOR_LIMITS", "") if text is None else text
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name.strip() not in names or not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"QTRAIN_EMULATOR_LIMITS: {part!r} is not NAME=POSITIVE_NUMBER "
                                 f"(names: {', '.join(sorted(names))})")
            values[name.strip()] = int(value)
        return cls(**values)


FINAL_CONDITIONS = ("success", "failure", "cancelled")  # what an advanced dependency may wait for


def _field_error(field: str, problem: str) -> RequestError:
    return RequestError(400, f"{field}: {problem}")


def _string(body: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _field_error(key, f"expected a string, got {type(value).__name__}")
    return value


def _list(body: dict[str, Any], key: str, within: str = "") -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _field_error(within + key, f"expected a list, got {type(value).__name__}")
    return value


def parse_constants(items: list[Any], field: str = "constants") -> dict[str, str]:
    constants: dict[str, str] = {}
    for i, c in enumerate(items):
        if not isinstance(c, dict) or not isinstance(c.get("key"), str) or not c["key"]:
            raise _field_error(f"{field}[{i}]", "expected an object with a key (a non-empty string) and a value")
        value = c.get("value")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise _field_error(f"{field}[{i}].value", f"expected a string, got {type(value).__name__}")
        constants[c["key"]] = "" if value is None else str(value)
    return constants


def parse_dependencies(value: Any) -> list[tuple[str, tuple[str, ...]]]:
    """`dependencies` -> [(task uuid, final states it must end in)]: `dependsOn` waits for
    success; `advancedDependsOn` for the states listed (success when none)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise _field_error("dependencies", "expected an object with dependsOn or advancedDependsOn")
    found: list[tuple[str, tuple[str, ...]]] = []
    for i, uuid in enumerate(_list(value, "dependsOn", "dependencies.")):
        if not isinstance(uuid, str) or not uuid:
            raise _field_error(f"dependencies.dependsOn[{i}]", "expected a task uuid")
        found.append((uuid, ("success",)))
    for i, item in enumerate(_list(value, "advancedDependsOn", "dependencies.")):
        where = f"dependencies.advancedDependsOn[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("taskUuid"), str):
            raise _field_error(where, "expected an object with a taskUuid")
        states = item.get("taskFinalStateCondition") or ["success"]
        if not isinstance(states, list) or any(str(x).lower() not in FINAL_CONDITIONS for x in states):
            raise _field_error(f"{where}.taskFinalStateCondition",
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

    @classmethod
    def parse(cls, body: Any, limits: Limits | None = None, pool: dict[str, Any] | None = None) -> "TaskBody":
        """`limits`: checked at submission (None for a task read back from the state file);
        `pool`: the pool's own request when the task is submitted into one (its profile,
        constants and resource buckets are the task's defaults, as on Qarnot)."""
        from submit.emulator.hardware import parse as parse_hardware

        if not isinstance(body, dict):
            raise RequestError(400, "a task must be a JSON object")
        if body.get("jobUuid"):
            raise RequestError(400, "jobUuid: jobs are not supported by the local Qarnot emulator; "
                                    "submit the tasks on their own (or into a pool)")
        pool_uuid = _string(body, "poolUuid")
        profile = _string(body, "profile") or ((pool or {}).get("profile") if pool_uuid else None)
        if profile not in PROFILES:
            raise _field_error("profile", f"{str(profile)[:80]!r} does not exist (profiles: {', '.join(PROFILES)})")
        if body.get("advancedRanges") is not None:
            if not isinstance(body["advancedRanges"], str):
                raise _field_error("advancedRanges", "expected a string such as 0-5,7")
            ids = parse_ranges(body["advancedRanges"])
            if len(set(ids)) != len(ids):
                raise _field_error("advancedRanges", "an instance id appears twice")
            what = f"advancedRanges {body['advancedRanges'][:40]!r} ({len(ids)} instances)"
        else:
            count = body.get("instanceCount", 1)
            if isinstance(count, bool) or not isinstance(count, int):
                raise _field_error("instanceCount", f"expected an integer, got {type(count).__name__}")
            ids = list(range(max(count, 0)))
            what = f"instanceCount {count}"
        if limits is not None and not 1 <= len(ids) <= limits.max_instances:
            raise RequestError(400, f"{what}: a task has 1 to {limits.max_instances} instances "
                                    f"(maxInstances); split the work into several tasks")
        if not ids:
            raise RequestError(400, f"{what}: a task has at least one instance")
        constants = parse_constants(_list(pool or {}, "constants")) if pool_uuid else {}
        constants.update(parse_constants(_list(body, "constants")))
        if constants.get("DOCKER_REPO"):  # it becomes an argument of `docker run`: a reference, nothing else
            from jobs.imageref import image_error

            image = f"{constants['DOCKER_REPO']}:{constants.get('DOCKER_TAG') or 'latest'}"
            if problem := image_error(image):
                raise RequestError(400, f"constants DOCKER_REPO/DOCKER_TAG: {problem}")
        if constants.get("DOCKER_CMD"):
            from submit.emulator.executors import split_command

            try:
                split_command(constants["DOCKER_CMD"])
            except ValueError as exc:
                raise RequestError(400, f"constants DOCKER_CMD: {exc} (Qarnot splits it into words as a "
                                        f"shell would, quotes included)") from None
        buckets = []
        for source in ((pool or {}), body) if pool_uuid else (body,):
            for i, b in enumerate(_list(source, "advancedResourceBuckets")):
                if not isinstance(b, dict) or not isinstance(b.get("bucketName"), str):
                    raise _field_error(f"advancedResourceBuckets[{i}]", "expected an object with a bucketName")
                buckets.append(b)
            for i, name in enumerate(_list(source, "resourceBuckets")):
                if not isinstance(name, str):
                    raise _field_error(f"resourceBuckets[{i}]", "expected a bucket name")
                buckets.append({"bucketName": name})
        for key in ("resultsWhitelist", "resultsBlacklist"):
            if pattern := _string(body, key):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise _field_error(key, f"{pattern[:80]!r} is not a valid regex: {exc}") from None
        tags = _list(body, "tags")
        if not all(isinstance(t, str) for t in tags):
            raise _field_error("tags", "expected a list of strings")
        labels = body.get("labels")
        if labels is not None and not isinstance(labels, dict):
            raise _field_error("labels", "expected an object of strings")
        hardware = parse_hardware(body.get("hardwareConstraints"))
        gpu = profile in GPU_PROFILES or any(h["discriminator"] == "GpuHardwareConstraint" for h in hardware)
        return cls(raw=body, name=_string(body, "name", "task") or "task", shortname=_string(body, "shortname"),
                   profile=profile, ids=ids, constants=constants, buckets=buckets,
                   result_bucket=_string(body, "resultBucket"),
                   results_whitelist=_string(body, "resultsWhitelist"),
                   results_blacklist=_string(body, "resultsBlacklist"), gpu=gpu,
                   upload_on_cancel=bool(body.get("uploadResultsOnCancellation")),
                   tags=list(tags), hardware=hardware, dependencies=parse_dependencies(body.get("dependencies")),
                   pool=pool_uuid)


def task_json(task: "Task", summary: bool = False) -> dict[str, Any]:
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
        data["jobUuid"] = None
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


def _status(task: "Task", instances: list[Any], now: float) -> dict[str, Any]:
    """`task.status` (the SDK's `qarnot.status.Status`): progress, times and the execution time by
    CPU model, both lists present (the SDK reads them without a default)."""
    started = [i for i in instances if i.started]
    done = [i for i in instances if i.done]
    execution = sum(((i.ended or now) - i.started) for i in started)
    first = min((i.started for i in started), default=None)
    wall = ((task.ended or now) - task.created)
    machine = task.manager.machine
    cores = task.manager.threads_per_instance(len(task.ids))

    def ranges(ids: list[int]) -> str:
        ids, parts = sorted(ids), []
        for i in ids:
            if parts and parts[-1][1] == i - 1:
                parts[-1][1] = i
            else:
                parts.append([i, i])
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)

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
        "executionTimeByCpuModel": [{"model": machine.cpu, "time": round(execution), "core": cores}] if started else [],
        "executionTimeGhzByCpuModel": [{"model": machine.cpu, "timeGhz": 0.0, "clockRatio": 0, "core": cores}]
        if started else [],
        "runningInstancesInfo": {
            "perRunningInstanceInfo": [{
                "phase": "execution", "instanceId": i.id, "maxFrequencyGHz": 0.0, "currentFrequencyGHz": 0.0,
                "cpuUsage": 0.0, "maxMemoryMB": 0, "currentMemoryMB": 0, "memoryUsage": 0.0,
                "networkInKbps": 0.0, "networkOutKbps": 0.0, "progress": 0.0,
                "executionTimeSec": round(now - i.started, 3), "executionTimeGHz": 0.0,
                "cpuModel": machine.cpu, "executionAttemptCount": 1, "activeForwards": [], "vpnConnections": [],
            } for i in running],
            "snapshotResults": [], "timestamp": stamp(now), "averageFrequencyGHz": 0.0, "maxFrequencyGHz": 0.0,
            "minFrequencyGHz": 0.0, "averageMaxFrequencyGHz": 0.0, "averageCpuUsage": 0.0,
            "clusterPowerIndicator": 1.0, "averageMemoryUsage": 0.0, "averageNetworkInKbps": 0.0,
            "averageNetworkOutKbps": 0.0, "totalNetworkInKbps": 0.0, "totalNetworkOutKbps": 0.0,
            "runningCoreCountByCpuModel": [{"model": machine.cpu, "core": cores * len(running),
                                            "runningCoreCount": cores * len(running)}] if running else [],
        },
    }
