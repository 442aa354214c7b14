"""The Qarnot backend: the official `qarnot` SDK, and nothing hand-written on the wire.

The same class serves Qarnot and the local emulator; they differ only in where the connection
points: `QarnotBackend` reads the account from QARNOT_CLIENT_TOKEN or the SDK's config file, and
`submit.backends.local.LocalBackend` hands it a connection to the emulator daemon (`connect`).
The token goes to the SDK and nowhere else: not into the job, the task's constants, the logs or
the results store.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
from pathlib import Path
from typing import Any, Callable

from jobs import settings
from jobs.files import JOB_FILE
from jobs.shards import DATA_PREFIX, MANIFEST, SHARD_BYTES, SHARD_FOLDER, DataObject, write_shard
from submit.backends.base import (Backend, BackendError, Downloaded, Progress, ProgressReader, Remote, RemoteFile,
                                  TaskRequest, TaskStatus, Usage, fetch_all, in_turn, plan_download)
from submit.backends.errors import translated
from submit.backends.footprint import euros, from_sdk
from submit.image import CPU_TAG, GPU_TAG

PART = 8 << 20  # the SDK's (and boto3's) multipart chunk size: S3 ETags of big files depend on it


def s3_etag(path: Path) -> str:
    """The ETag S3 gives a file uploaded by boto3 (multipart from 8 MiB, 8 MiB parts)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size < PART:
            return hashlib.md5(fh.read()).hexdigest()  # noqa: S324 - S3's checksum, not security
        digests = []
        while block := fh.read(PART):
            digests.append(hashlib.md5(block).digest())  # noqa: S324
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"  # noqa: S324


def send_objects(bucket, objects: list[DataObject], advance: Progress, workers: int = 8) -> int:
    """Upload `objects` (a shard written into a temporary file first: in memory up to twice SHARD_BYTES),
    up to `workers` at a time (`in_turn`).  Returns the bytes sent."""
    import tempfile

    lock = threading.Lock()
    sent = 0

    def one(obj: DataObject) -> None:
        nonlocal sent
        if obj.shard is None:
            with ProgressReader(obj.files[0].local, advance) as fh:
                bucket.add_file(fh, obj.key)
            size = obj.payload
        else:
            with tempfile.SpooledTemporaryFile(max_size=2 * SHARD_BYTES) as tmp:
                write_shard(obj, lambda f: f.local, tmp)
                size = tmp.tell()
                tmp.seek(0)
                bucket.add_file(tmp, obj.key)
            advance(obj.payload)
        with lock:
            sent += size

    in_turn(objects, one, workers, "upload")
    return sent


class QarnotBackend(Backend):
    name = "qarnot"
    poll_seconds = 5.0
    token_hint = "check QARNOT_CLIENT_TOKEN or the [client] token of your Qarnot config file"
    unreachable_hint = "check your network and QARNOT_CLUSTER_URL"

    def unreachable(self, error: BackendError) -> BackendError:
        """What a lost connection means here (a network blip, worth retrying, on Qarnot)."""
        return error

    def __init__(self, connect: Callable[[], Any] | None = None, start: bool = True) -> None:  # noqa: ARG002
        """`connect` makes the SDK connection (default: the Qarnot account configured here);
        `start` is for backends with a service to start (Qarnot's is always there)."""
        self._connect = connect or self._connect_account
        self._conn = None
        self._warming: threading.Thread | None = None
        self._tasks: dict[str, Any] = {}
        self.cluster_url = settings.qarnot().cluster_url

    def describe(self) -> str:
        return "Qarnot"

    def check_image(self, image: str) -> None:
        if image in (CPU_TAG, GPU_TAG):
            raise BackendError(f"resources.image is {image}, a local tag that Qarnot cannot pull",
                               hint="qtrain image push REGISTRY/REPO:TAG, then set resources.image "
                                    "(or --set resources.image=REGISTRY/REPO:TAG)")

    @staticmethod
    def configured() -> bool:
        """Is a Qarnot account set up here (token in the environment or the SDK config file)?"""
        return bool(settings.qarnot().token()) or settings.paths().qarnot_config().is_file()

    def _connect_account(self):
        import qarnot

        cfg = settings.paths().qarnot_config()
        token = settings.qarnot().token()
        if token or not cfg.is_file():
            if not token:
                raise BackendError("no Qarnot account is configured",
                                   hint=f"export QARNOT_CLIENT_TOKEN=... or write {cfg}, "
                                        f"or use --backend local")
            return qarnot.connection.Connection(client_token=token, cluster_url=self.cluster_url)
        return qarnot.connection.Connection(fileconf=str(cfg))

    @property
    def conn(self):
        if self._warming is not None:  # warm_up() is connecting in the background: wait for it
            self._warming.join()
            self._warming = None
        if self._conn is None:
            self._conn = translated(lambda self: self._connect())(self)
        return self._conn

    def warm_up(self) -> None:
        """Start connecting in the background (for the emulator: start its daemon) while the
        caller does other work; `conn` waits for it, and raises any error itself."""
        if self._conn is None and self._warming is None:
            def connect() -> None:
                try:
                    self._conn = self._connect()
                except Exception:  # noqa: BLE001 - `conn` tries again and reports it properly
                    pass
            self._warming = threading.Thread(target=connect, name="connect", daemon=True)
            self._warming.start()

    def _task(self, uuid: str):
        task = self._tasks.get(uuid)
        if task is None:
            task = self._tasks[uuid] = self.conn.retrieve_task(uuid)
            task.auto_update = False  # we refresh explicitly: one GET per poll
        return task

    # ------------------------------------------------------------------------------ profiles
    @translated
    def profiles(self) -> list[str]:
        return sorted(self.conn.profiles_names())

    # -------------------------------------------------------------------------------- upload
    @translated
    def upload(self, package, progress: Progress | None = None) -> int:
        """The data objects and code files the bucket lacks, then job.json and the data's
        manifest; returns the bytes sent."""
        import io

        advance = progress or (lambda n: None)
        bucket = self.conn.create_bucket(settings.submission().data_bucket)
        sent = send_objects(bucket, self._missing(bucket, package), advance)
        present = {o.key: o.size for o in bucket.directory(package.code_prefix)} if package.code else {}
        for f in package.code:  # by content: what the bucket has under the prefix is what it should hold
            key = package.code_prefix + f.remote
            if present.get(key) != f.size:
                with ProgressReader(f.local, advance) as fh:
                    bucket.add_file(fh, key)
                sent += f.size
        beside = [(JOB_FILE, package.job_json)] + ([(MANIFEST, package.manifest)] if package.manifest else [])
        for name, data in beside:
            key = package.job_prefix + name
            if not any(o.key == key for o in bucket.directory(key)):
                bucket.add_file(io.BytesIO(data), key)
                sent += len(data)
        for f in package.extras:  # a resumed run's checkpoints, beside job.json
            key = package.job_prefix + f.remote
            if any(o.key == key and o.size == f.size for o in bucket.directory(key)):
                continue
            with ProgressReader(f.local, advance) as fh:
                bucket.add_file(fh, key)
            sent += f.size
        return sent

    @translated
    def missing(self, package) -> list[DataObject]:
        """The package's data objects the data bucket lacks (what an upload would send), asked
        without creating the bucket (a dry run makes none): a bucket not there lacks them all."""
        from botocore.exceptions import ClientError

        try:
            bucket = self.conn.retrieve_bucket(settings.submission().data_bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket"):
                raise
            return list(package.objects)
        return self._missing(bucket, package)

    @staticmethod
    def _missing(bucket, package) -> list[DataObject]:
        objects = package.objects
        if not objects:
            return []
        # one listing of the shards (pages of 1,000), one per lone file: a key names its content,
        # and an object is whole or absent (a failed upload leaves none), so being there is enough
        shard_keys = {o.key for o in bucket.directory(f"{DATA_PREFIX}{SHARD_FOLDER}/")} \
            if any(o.shard for o in objects) else set()
        out = []
        for o in objects:
            if o.shard:
                if o.key not in shard_keys:
                    out.append(o)
            elif not any(x.key == o.key and x.size == o.payload for x in bucket.directory(o.key)):
                out.append(o)
        return out

    # -------------------------------------------------------------------------------- submit
    def image_with(self, reqs: Any, image: str, log: Callable[[str], None]) -> str:
        """Qarnot pulls `image-req-<hash>` (submit.image.derived_tag): built here with `qtrain
        image build --requirements` and pushed with `qtrain image push`.  Where Docker runs, an
        image of that name must be here, and up to date with its base."""
        from submit.image import derived_state, derived_tag, docker_problem

        tag = derived_tag(image, reqs)
        if docker_problem() is None:
            state = derived_state(image, reqs)
            if state != "ok":
                raise BackendError(f"resources.requirements: Qarnot would run {tag}, which is "
                                   f"{'not built here' if state == 'missing' else 'older than ' + image}",
                                   hint=f"qtrain image push {image} --requirements {reqs.where} builds and "
                                        f"pushes it")
        return tag

    @translated
    def check_capacity(self, instances: int, gpu: bool, why: str = "one per sweep trial") -> None:
        limit = self.conn.user_info.max_instances
        if isinstance(limit, int) and 0 < limit < instances:
            raise BackendError(f"the task would have {instances} instances ({why}); "
                               f"{self.describe()} runs at most {limit} per task (maxInstances)",
                               hint="lower resources.nodes" if why.startswith("resources.nodes") else
                               "narrow the sweep's grid, or split it into several jobs")

    @translated
    def submit(self, package, request: TaskRequest, on_created: Callable[[str], None] | None = None) -> str:
        from qarnot.advanced_bucket import BucketPrefixFiltering, PrefixResourcesTransformation
        from qarnot.bucket import Bucket
        from qarnot.hardware_constraint import GpuHardware

        conn = self.conn
        given = settings.submission()
        job = None
        if request.max_wall_seconds:  # Qarnot's time limit is a job's: one job holds the task
            job = conn.create_job(request.name)
            job.max_wall_time = datetime.timedelta(seconds=request.max_wall_seconds)
            job.tags = request.tags
            job.submit()
        task = conn.create_task(request.name, request.profile, request.instances, job=job)
        repo, tag = split_image(request.image)
        task.constants["DOCKER_REPO"] = repo
        task.constants["DOCKER_TAG"] = tag
        task.constants["DOCKER_CMD"] = request.command
        for key, value in request.constants.items():
            task.constants[key] = value

        def view(prefix: str, ttl: int | None, strip: str | None = None):
            b = Bucket(conn, given.data_bucket, create=False)
            b = b.with_filtering(BucketPrefixFiltering(prefix))
            b = b.with_resource_transformation(PrefixResourcesTransformation(prefix if strip is None else strip))
            return b.with_cache_ttl(ttl) if ttl else b

        resources = [view(package.job_prefix, None)]
        for obj in reversed(package.objects):  # one view an object: the bucket holds other datasets too
            resources.insert(0, view(obj.key, given.resource_cache_ttl, strip=obj.strip))
        if package.code:
            resources.insert(0, view(package.code_prefix, given.resource_cache_ttl))
        task.resources = resources
        task.results = conn.create_bucket(results_bucket(request.run_id))
        if request.results_whitelist:
            task.results_whitelist = request.results_whitelist
        if request.results_blacklist:
            task.results_blacklist = request.results_blacklist
        if request.gpu:
            task.hardware_constraints = [GpuHardware()]
        task.upload_results_on_cancellation = True
        task.tags = request.tags
        task.submit()
        self._tasks[task.uuid] = task
        if on_created is not None:
            on_created(task.uuid)
        if given.snapshot_interval > 0:
            task.snapshot(given.snapshot_interval, whitelist=request.results_whitelist,
                          blacklist=request.results_blacklist)
        task.auto_update = False
        return task.uuid

    @translated
    def find_tasks(self, tags: list[str]) -> list[str]:
        return [t.uuid for t in self.conn.all_tasks(summary=True, tags_intersect=list(tags))]

    # ---------------------------------------------------------------------------- following
    @translated
    def status(self, uuid: str) -> TaskStatus:
        task = self._task(uuid)
        task.update(flushcache=True)
        errors = []
        for e in task.errors or []:
            text = getattr(e, "message", None) or str(e)
            debug = getattr(e, "debug", None)
            errors.append(f"{text}" + (f": {debug}" if debug else ""))
        instances = {c.instance_id: c.state for c in task.completed_instances or []}
        return TaskStatus(uuid=uuid, state=task.state or "Submitted", errors=errors,
                          instances=instances, progress=task.progress,
                          running=task.running_instance_count or 0)

    @translated
    def fresh_output(self, uuid: str) -> tuple[str, str]:
        task = self._task(uuid)
        return task.fresh_stdout() or "", task.fresh_stderr() or ""

    @translated
    def output(self, uuid: str, instance: int | None = None, stderr: bool = False) -> str:
        task = self._task(uuid)
        return (task.stderr(instance) if stderr else task.stdout(instance)) or ""

    @translated
    def abort(self, uuid: str) -> None:
        import qarnot.exceptions as qx

        try:
            self._task(uuid).abort()
        except qx.UnauthorizedException as exc:  # Qarnot: "invalid operation on non running task"
            if "running" not in str(exc).lower():
                raise

    # ------------------------------------------------------------------------- cost & carbon
    footprint_source = "qarnot"

    @translated
    def footprint(self, uuid: str) -> dict[str, Any] | None:
        """The task's credits and carbon facts through the SDK; a figure the API will not give
        (no access, an older cluster: 403, 404, 400) stays unknown."""
        task = self._task(uuid)
        return from_sdk(_optional(task.credits), _optional(task.carbon_facts), self.footprint_source)

    @translated
    def credits_left(self) -> float | None:
        return euros(_optional(lambda: self.conn.credits()))

    # ------------------------------------------------------------------------------- results
    @translated
    def download(self, uuid: str, dest: Path, progress: Progress | None = None,
                 on_total: Callable[[int], None] | None = None, replace: bool = True) -> Downloaded:
        task = self._task(uuid)
        task.update(flushcache=True)
        bucket = task.results
        if bucket is None:
            return Downloaded(0, 0, 0)
        objects = _objects(bucket)
        todo, done = plan_download(objects, dest, replace)
        if on_total:
            on_total(sum(o.size for o, _ in todo))
        fetch_all(todo, lambda key, tmp: bucket.get_file(key, local=str(tmp)), done, progress)
        job_uuid = getattr(task, "_job_uuid", None)  # the job that held its time limit: ended with it
        if job_uuid and task.state in ("Success", "Failure", "Cancelled"):
            _optional(lambda: self.conn.retrieve_job(job_uuid).terminate())
        return done


    # --------------------------------------------------------- what stays on the account
    @translated
    def usage(self) -> Usage:
        info = self.conn.user_info
        return Usage(buckets=_count(info.bucket_count), max_buckets=_count(info.max_bucket),
                     tasks=_count(info.task_count), max_tasks=_count(info.max_task),
                     used_bytes=_count(info.used_quota_bytes_bucket), quota_bytes=_count(info.quota_bytes_bucket))

    @translated
    def has_bucket(self, name: str) -> bool:
        return name in {b.uuid for b in self.conn.buckets()}

    @translated
    def unverified(self, uuid: str, dest: Path) -> list[str]:
        task = self._task(uuid)
        task.update(flushcache=True)
        bucket = task.results
        if bucket is None:
            return []
        todo, done = plan_download(_objects(bucket), dest, replace=False)
        return sorted([o.key for o, _ in todo] + [key for key, _ in done.refused] + done.differing)

    @translated
    def delete_remote(self, uuid: str | None, run_id: str, bucket: str | None = None) -> list[str]:
        import qarnot.exceptions as qx
        from qarnot.bucket import Bucket

        deleted = []
        if uuid:
            try:
                task = self.conn.retrieve_task(uuid)
                task.delete(purge_resources=False, purge_results=False)
                self._tasks.pop(uuid, None)
                deleted.append(f"task {uuid}")
            except qx.MissingTaskException:
                pass
        name = bucket or (results_bucket(run_id) if run_id else None)
        if name and self.has_bucket(name):
            Bucket(self.conn, name, create=False).delete()
            deleted.append(f"bucket {name}")
        return deleted

    @translated
    def remotes(self) -> list[Remote]:
        found = []
        data = settings.submission().data_bucket
        for bucket in self.conn.buckets():
            if bucket.uuid.startswith(RESULTS_PREFIX) and bucket.uuid != data:
                found.append(Remote("bucket", bucket.uuid, None))
        for task in self.conn.all_tasks(summary=True, tags_intersect=["qtrain"]):
            run_id = next((t for t in task.tags or [] if t != "qtrain"), None)
            found.append(Remote("task", task.uuid, run_id, f"{task.state}, {task.name}"))
        return found


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _objects(bucket) -> list[RemoteFile]:
    """A result bucket's objects, each able to say whether a local file holds its bytes (size and
    S3 ETag, as Qarnot computes it)."""

    def same(etag: str, size: int) -> Callable[[Path], bool]:
        return lambda local: local.stat().st_size == size and s3_etag(local) == etag.strip('"')

    return [RemoteFile(o.key, o.size, same(o.e_tag, o.size)) for o in bucket.list_files() if not o.key.endswith("/")]


def _optional(call: Callable[[], Any]) -> Any:
    """The SDK call's answer, or None when the API refuses or lacks it (never a failed run)."""
    import qarnot.exceptions as qx
    import requests

    try:
        return call()
    except (qx.QarnotGenericException, qx.UnauthorizedException, qx.MissingTaskException, qx.MissingJobException,
            requests.RequestException, ValueError, TypeError, AttributeError):
        return None


RESULTS_PREFIX = "qtrain-"  # a run's result bucket; the data bucket (qtrain-data) is shared


def results_bucket(run_id: str) -> str:
    """One result bucket per run: `qtrain-<run id>` made S3-safe (lowercase, 3..63 chars)."""
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in run_id.lower()).strip("-")
    return f"{RESULTS_PREFIX}{safe}"[:63].rstrip("-")


def split_image(image: str) -> tuple[str, str]:
    """`registry:5000/team/runner:1.2` -> (`registry:5000/team/runner`, `1.2`); no tag: latest;
    a digest stays with the tag (`1.2@sha256:...`).  ValueError for what is not a reference."""
    from jobs.imageref import parse_image

    ref = parse_image(image)
    return ref.name, ref.docker_tag
