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


@dataclass
class TaskBody:
    """A task as submitted (POST /tasks), parsed and checked."""

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

    @classmethod
    def parse(cls, body: Any) -> "TaskBody":
        if not isinstance(body, dict):
            raise RequestError(400, "a task must be a JSON object")
        profile = body.get("profile")
        if profile not in PROFILES:
            raise RequestError(400, f"profile {profile!r} does not exist (profiles: "
                                    f"{', '.join(PROFILES)})")
        if body.get("advancedRanges"):
            ids = parse_ranges(body["advancedRanges"])
        else:
            count = body.get("instanceCount") or 1
            if not isinstance(count, int) or count < 1:
                raise RequestError(400, f"instanceCount {count!r}: must be a positive integer")
            ids = list(range(count))
        constants = {c.get("key"): "" if c.get("value") is None else str(c.get("value"))
                     for c in body.get("constants") or [] if c.get("key")}
        if constants.get("DOCKER_REPO"):  # it becomes an argument of `docker run`: a reference, nothing else
            from jobs.imageref import image_error

            image = f"{constants['DOCKER_REPO']}:{constants.get('DOCKER_TAG') or 'latest'}"
            if problem := image_error(image):
                raise RequestError(400, f"constants DOCKER_REPO/DOCKER_TAG: {problem}")
        buckets = list(body.get("advancedResourceBuckets") or [])
        buckets += [{"bucketName": name} for name in body.get("resourceBuckets") or []]
        for key in ("resultsWhitelist", "resultsBlacklist"):
            if body.get(key):
                try:
                    re.compile(body[key])
                except re.error as exc:
                    raise RequestError(400, f"{key} {body[key]!r} is not a valid regex: {exc}") from None
        gpu = profile in GPU_PROFILES or any(
            (h or {}).get("discriminator") == "GpuHardwareConstraint"
            for h in body.get("hardwareConstraints") or [])
        return cls(raw=body, name=str(body.get("name") or "task"), shortname=body.get("shortname"),
                   profile=profile, ids=ids, constants=constants, buckets=buckets,
                   result_bucket=body.get("resultBucket"),
                   results_whitelist=body.get("resultsWhitelist"),
                   results_blacklist=body.get("resultsBlacklist"), gpu=gpu,
                   upload_on_cancel=bool(body.get("uploadResultsOnCancellation")),
                   tags=list(body.get("tags") or []))


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
        if summary:
            return data
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
