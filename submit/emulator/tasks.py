"""Emulated Qarnot tasks: the request a task was submitted with, its life, and its JSON.

A task moves through Qarnot's states in order:
    Submitted -> FullyDispatched -> PartiallyExecuting|FullyExecuting -> UploadingResults
    -> Success | Failure | Cancelled
Resources come from S3 buckets (prefix filtering, strip-prefix, cached by ETag across tasks like
Qarnot's cache TTL), each instance runs in its own folder through an executor, and whatever an
instance writes there goes back to the result bucket (whitelist/blacklist honoured) when it ends,
and periodically while it runs when snapshots are asked.  `resultsCount` grows with each upload,
which is what tells the SDK that there is something new to download.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from submit.emulator.executors import InstanceSpec, Running, host_has_gpu

RUNNING_STATES = ("Submitted", "PartiallyDispatched", "FullyDispatched", "PartiallyExecuting",
                  "FullyExecuting", "UploadingResults", "DownloadingResults", "PendingCancel")
FINAL_STATES = ("Success", "Failure", "Cancelled")
GPU_PROFILES = ("docker-nvidia-batch", "docker-nvidia-network")
PROFILES = {
    "docker-batch": {"DOCKER_REPO": "library/ubuntu", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-network": {"DOCKER_REPO": "library/ubuntu", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-nvidia-batch": {"DOCKER_REPO": "nvidia/cuda", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
    "docker-nvidia-network": {"DOCKER_REPO": "nvidia/cuda", "DOCKER_TAG": "latest", "DOCKER_CMD": ""},
}
LOG_LIMIT = 4 << 20  # characters of stdout/stderr kept per stream (Qarnot's buffer is circular too)


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
class Output:
    """One instance's stdout or stderr, and the task-wide view of it."""

    text: list[str] = field(default_factory=list)
    size: int = 0
    fresh_at: int = 0  # index into `text` of the first line not yet read by a "fresh" request

    def add(self, line: str) -> None:
        self.text.append(line)
        self.size += len(line)
        while self.size > LOG_LIMIT and len(self.text) > 1:
            self.size -= len(self.text.pop(0))
            self.fresh_at = max(0, self.fresh_at - 1)

    def whole(self) -> str:
        return "".join(self.text)

    def fresh(self) -> str:
        new = self.text[self.fresh_at:]
        self.fresh_at = len(self.text)
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
    uploaded: dict[str, tuple[int, int]] = field(default_factory=dict)  # relpath -> (size, mtime)
    results: list[str] = field(default_factory=list)


class Task:
    def __init__(self, manager: "TaskManager", body: dict[str, Any]):
        self.manager = manager
        self.uuid = str(uuidlib.uuid4())
        self.body = body
        self.name = str(body.get("name") or "task")
        self.shortname = body.get("shortname") or self.uuid
        self.profile = body.get("profile")
        if self.profile not in PROFILES:
            raise RequestError(400, f"profile {self.profile!r} does not exist (profiles: "
                                    f"{', '.join(PROFILES)})")
        if body.get("advancedRanges"):
            self.ids = parse_ranges(body["advancedRanges"])
        else:
            count = body.get("instanceCount") or 1
            if not isinstance(count, int) or count < 1:
                raise RequestError(400, f"instanceCount {count!r}: must be a positive integer")
            self.ids = list(range(count))
        self.constants = {c.get("key"): "" if c.get("value") is None else str(c.get("value"))
                          for c in body.get("constants") or [] if c.get("key")}
        self.buckets = [b for b in body.get("advancedResourceBuckets") or []]
        self.buckets += [{"bucketName": name} for name in body.get("resourceBuckets") or []]
        self.result_bucket = body.get("resultBucket")
        self.results_whitelist = body.get("resultsWhitelist")
        self.results_blacklist = body.get("resultsBlacklist")
        for name, rx in (("resultsWhitelist", self.results_whitelist),
                         ("resultsBlacklist", self.results_blacklist)):
            if rx:
                try:
                    re.compile(rx)
                except re.error as exc:
                    raise RequestError(400, f"{name} {rx!r} is not a valid regex: {exc}") from None
        self.gpu = self.profile in GPU_PROFILES or any(
            (h or {}).get("discriminator") == "GpuHardwareConstraint"
            for h in body.get("hardwareConstraints") or [])
        self.upload_on_cancel = bool(body.get("uploadResultsOnCancellation"))
        self.snapshot: dict[str, Any] | None = None
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.created = time.time()
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

    # -------------------------------------------------------------------------------- state
    def set_state(self, state: str) -> None:
        with self.lock:
            if state == self.state:
                return
            self.previous_state, self.previous_transition = self.state, self.transition
            self.state, self.transition = state, time.time()
            if state in FINAL_STATES:
                self.ended = self.transition

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
            if self.upload_on_cancel:
                self._upload_all()
            self.set_state("Cancelled")
            return
        self.set_state("UploadingResults")
        self._upload_all()
        failed = [i for i in self.instances.values() if i.state != "Success"]
        self.set_state("Failure" if failed else "Success")

    def _run_instance(self, inst: Instance) -> None:
        with self.manager.slots:  # instances in parallel up to the cores
            if self.aborted:
                inst.state = "Cancelled"
                return
            env = dict(self.constants)
            env.update({
                "INSTANCE_ID": str(inst.id), "INSTANCE_COUNT": str(len(self.ids)),
                "QARNOT_RESOURCES_DIRECTORY": str(inst.workdir),
                "QARNOT_RESULTS_DIRECTORY": str(inst.workdir),
                "QARNOT_TASK_UUID": self.uuid, "QARNOT_TASK_NAME": self.name,
            })
            command = self.constants.get("DOCKER_CMD", "").replace("${INSTANCE_ID}", str(inst.id))
            image = None
            if self.constants.get("DOCKER_REPO"):
                image = f"{self.constants['DOCKER_REPO']}:{self.constants.get('DOCKER_TAG') or 'latest'}"
            spec = InstanceSpec(self.uuid, inst.id, command, inst.workdir, env, image, self.gpu,
                                threads=self.manager.threads_per_instance(len(self.ids)))
            if self.gpu and not host_has_gpu():
                self.log(inst.id, f"[emulator] profile {self.profile} asks for a GPU; this host has "
                                  f"none: the instance runs on the CPU")
            if not command.strip():
                self.log(inst.id, "[emulator] DOCKER_CMD is empty: the local emulator needs the "
                                  "command the image would run", "stderr")
                self._finish_instance(inst, 127)
                return
            inst.started = time.time()
            inst.state = "Running"
            self._update_running_state()
            try:
                inst.running = self.manager.executor.start(spec)
            except Exception as exc:  # noqa: BLE001
                self.log(inst.id, f"[emulator] the instance could not start: {exc}", "stderr")
                self._finish_instance(inst, 127)
                return
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
            self._upload(inst, self.results_whitelist, self.results_blacklist)
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

    def abort(self) -> None:
        with self.lock:
            if self.done or self.aborted:
                return
            self.aborted = True
            if self.state != "Submitted":
                self.set_state("PendingCancel")
        for inst in self.instances.values():
            if inst.running is not None:
                inst.running.kill()

    # --------------------------------------------------------------------- resources & results
    def _materialise(self) -> None:
        storage = self.manager.storage
        staged: list[tuple[PurePosixPath, Path]] = []
        for b in self.buckets:
            name = b.get("bucketName")
            prefix = (((b.get("filtering") or {}).get("prefixFiltering") or {}).get("prefix")) or ""
            strip = (((b.get("resourcesTransformation") or {}).get("stripPrefix") or {}).get("prefix")) or ""
            for obj in storage.list(name, prefix):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = safe_relpath(key[len(strip):] if strip and key.startswith(strip) else key)
                if rel is None:
                    continue
                staged.append((rel, storage.cached(name, key, obj["ETag"])))
        for inst in self.instances.values():
            inst.workdir.mkdir(parents=True, exist_ok=True)
            for rel, src in staged:
                dest = inst.workdir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    dest.unlink()
                try:
                    os.link(src, dest)  # read-only cache files: an instance can replace, not alter
                except OSError:
                    shutil.copyfile(src, dest)
        for rel, src in staged:
            st = src.stat()
            self.resource_files[str(rel)] = (st.st_size, st.st_mtime_ns)

    def _changed_files(self, inst: Instance, whitelist: str | None, blacklist: str | None):
        if not inst.workdir.is_dir():
            return
        for path in sorted(inst.workdir.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(inst.workdir).as_posix()
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            if self.resource_files.get(rel) == sig or inst.uploaded.get(rel) == sig:
                continue  # an untouched resource, or already uploaded as it is
            if whitelist and not re.search(whitelist, rel):
                continue
            if blacklist and re.search(blacklist, rel):
                continue
            yield rel, path, sig

    def _upload(self, inst: Instance, whitelist: str | None, blacklist: str | None,
                bucket: str | None = None, prefix: str = "") -> int:
        bucket = bucket or self.result_bucket
        if not bucket:
            return 0
        n = 0
        for rel, path, sig in list(self._changed_files(inst, whitelist, blacklist)):
            try:
                self.manager.storage.put(bucket, prefix + rel, path)
            except FileNotFoundError:
                continue  # deleted while we looked: a temporary file
            inst.uploaded[rel] = sig
            if rel not in inst.results:
                inst.results.append(rel)
            n += 1
        if n:
            with self.lock:
                self.results_count += 1
        return n

    def _upload_all(self) -> None:
        for inst in self.instances.values():
            self._upload(inst, self.results_whitelist, self.results_blacklist)

    def take_snapshot(self, config: dict[str, Any]) -> None:
        for inst in self.instances.values():
            if inst.state == "Running":
                self._upload(inst, config.get("whitelist"), config.get("blacklist"),
                             config.get("bucket"), config.get("bucketPrefix") or "")

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

    # --------------------------------------------------------------------------------- JSON
    def to_json(self, summary: bool = False) -> dict[str, Any]:
        with self.lock:
            now = time.time()
            completed = [i for i in self.instances.values() if i.state in FINAL_STATES]
            running = [i for i in self.instances.values() if i.state == "Running"]
            exec_time = sum(((i.ended or now) - i.started) for i in self.instances.values() if i.started)
            data: dict[str, Any] = {
                "uuid": self.uuid, "name": self.name, "shortname": self.shortname,
                "profile": self.profile, "state": self.state, "previousState": self.previous_state,
                "stateTransitionTime": stamp(self.transition),
                "previousStateTransitionTime": stamp(self.previous_transition) if self.previous_transition else None,
                "creationDate": stamp(self.created), "lastModified": stamp(self.transition),
                "endDate": stamp(self.ended) if self.ended else None,
                "errors": list(self.errors), "resultsCount": self.results_count,
                "resultBucket": self.result_bucket, "tags": self.body.get("tags") or [],
                "labels": self.body.get("labels") or {},
                "runningInstanceCount": len(running), "runningCoreCount": len(running),
                "progress": round(100.0 * len(completed) / len(self.ids), 1),
                "executionTime": _timespan(exec_time), "wallTime": _timespan((self.ended or now) - self.created),
                "snapshotInterval": (self.snapshot or {}).get("interval", 0),
                "uploadResultsOnCancellation": self.upload_on_cancel,
            }
            if self.body.get("advancedRanges"):
                data["advancedRanges"] = self.body["advancedRanges"]
            else:
                data["instanceCount"] = len(self.ids)
            if summary:
                return data
            data.update({
                "constants": [{"key": k, "value": v} for k, v in self.constants.items()],
                "constraints": self.body.get("constraints") or [],
                "advancedResourceBuckets": self.body.get("advancedResourceBuckets") or [],
                "hardwareConstraints": self.body.get("hardwareConstraints") or [],
                "resultsWhitelist": self.results_whitelist, "resultsBlacklist": self.results_blacklist,
                "snapshotWhitelist": (self.snapshot or {}).get("whitelist"),
                "snapshotBlacklist": (self.snapshot or {}).get("blacklist"),
                "autoDeleteOnCompletion": bool(self.body.get("autoDeleteOnCompletion")),
                "completionTimeToLive": self.body.get("completionTimeToLive") or "00:00:00",
                "completedInstances": [{
                    "instanceId": i.id, "state": i.state,
                    "wallTimeSec": round((i.ended or now) - (i.started or i.ended or now), 3),
                    "execTimeSec": round((i.ended or now) - (i.started or i.ended or now), 3),
                    "execTimeSecGHz": 0.0, "peakMemoryMB": 0, "averageGHz": 0.0,
                    "results": list(i.results), "executionAttemptCount": 1,
                } for i in completed],
            })
            return data


def _timespan(seconds: float) -> str:
    """A .NET TimeSpan as Qarnot sends it: [d.]hh:mm:ss."""
    seconds = max(0, int(seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}." if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


class Storage:
    """The emulator's own S3 client (to its moto server) and its object cache."""

    def __init__(self, s3_url: str, cache_dir: Path):
        import boto3
        import botocore.config

        self.client = boto3.session.Session().client(
            "s3", endpoint_url=s3_url, aws_access_key_id="qtrain-emulator",
            aws_secret_access_key="qtrain-emulator", region_name="us-east-1",
            config=botocore.config.Config(s3={"addressing_style": "path"}))
        self.cache_dir = cache_dir
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
            return True
        except Exception:  # noqa: BLE001 - 404 and friends
            return False

    def list(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
        return out

    def cached(self, bucket: str, key: str, etag: str) -> Path:
        """The object's bytes in the local cache (downloaded once per ETag, like Qarnot's cache)."""
        name = hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()
        path = self.cache_dir / name
        with self._lock:
            if not path.exists():
                tmp = path.with_suffix(".part")
                self.client.download_file(bucket, key, str(tmp))
                tmp.chmod(0o444)
                tmp.replace(path)
        return path

    def put(self, bucket: str, key: str, path: Path) -> None:
        self.client.upload_file(str(path), bucket, key)


class TaskManager:
    def __init__(self, work_dir: Path, storage: Storage, executor, cores: int | None = None):
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.storage = storage
        self.executor = executor
        self.cores = cores or os.cpu_count() or 1
        self.slots = threading.BoundedSemaphore(self.cores)
        self.tasks: dict[str, Task] = {}
        self.lock = threading.Lock()

    def threads_per_instance(self, instances: int) -> int:
        return max(1, self.cores // min(instances, self.cores))

    def submit(self, body: dict[str, Any]) -> Task:
        if not isinstance(body, dict):
            raise RequestError(400, "a task must be a JSON object")
        task = Task(self, body)
        for b in task.buckets:
            if not b.get("bucketName") or not self.storage.exists(b["bucketName"]):
                raise RequestError(404, f"resource bucket {b.get('bucketName')!r} not found")
        if task.result_bucket and not self.storage.exists(task.result_bucket):
            raise RequestError(404, f"result bucket {task.result_bucket!r} not found")
        with self.lock:
            self.tasks[task.uuid] = task
        task.thread.start()
        return task

    def get(self, uuid: str) -> Task:
        task = self.tasks.get(uuid)
        if task is None:
            raise RequestError(404, f"task {uuid} not found")
        return task

    def delete(self, uuid: str) -> None:
        task = self.get(uuid)
        task.abort()
        with self.lock:
            self.tasks.pop(uuid, None)  # its thread removes its folder once the instances stop

    def list(self) -> list[Task]:
        with self.lock:
            return sorted(self.tasks.values(), key=lambda t: t.created)

    def shutdown(self) -> None:
        """Stop every running instance (the daemon is going away)."""
        for task in self.list():
            task.abort()
        for task in self.list():
            task.thread.join(timeout=15)
