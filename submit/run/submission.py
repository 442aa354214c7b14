"""A run sent to a backend: check -> package -> place -> estimate -> record -> upload -> submit.

Everything up to the record is `plan_run`, which `run --dry-run` and `run --estimate` go
through too: they refuse what the run refuses, in the same line, and stop before the sending.
Nothing leaves the machine until the check has passed; the run is in the store (`submitting`)
before anything is sent, and its task carries the tags `submission_tags` names, so a submission
interrupted anywhere is found again (`recover`) by the next `status`, `fetch`, `cancel` or
`results list`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from jobs import settings
from jobs.errors import QtrainError, RunError
from jobs.code import ROOT as CODE_ROOT
from jobs.files import FIELD_FOLDERS, JOB_FILE, PATH_FIELDS, get_dotted, local_value, resolve
from jobs.load import LoadedJob
from jobs.results import OUT
from jobs.spec import STOP_GRACE_SECONDS, procs_for
from submit.backends import Backend
from submit.backends.base import BackendError, TaskRequest
from submit.image import image_digest, stale_image
from submit.run.checks import SMOKE_STEPS, check
from submit.run.checks import smoke as smoke_run
from submit.run.environment import describe, job_site
from submit.run.estimate import Estimate, estimate, prices, refuse_over
from submit.run.package import Package, build_package
from submit.run.resume import resume_checkpoints
from submit.run.account import check_room
from submit.store import RunRecord, Store
from jobs.files import human_bytes
from submit.ui import Ui

# the task's inputs lie in these folders of its working directory (a dataset's shards unpack there):
# never results, whatever their names (a class folder called `out` included)
INPUTS = "^(" + "|".join(sorted({*FIELD_FOLDERS.values(), CODE_ROOT})) + ")/"

COMMAND = "python -m runner"  # the runner image's entrypoint, also DOCKER_CMD


# ------------------------------------------------------------------------------------ submit
def submit_run(loaded: LoadedJob, backend: Backend, store: Store, ui: Ui,
               profile: str | None = None, recheck: bool = False,
               tags: dict[str, str] | None = None, note: str | None = None,
               resume: RunRecord | None = None, max_cost: float | None = None, smoke: bool = False) -> RunRecord:
    job = loaded.job
    store.ensure_writable()  # before anything is uploaded
    planned = plan_run(loaded, backend, ui, profile, recheck, max_cost, smoke, warm_up=True)
    package, where, est = planned.package, planned.where, planned.estimate
    if resume is not None:
        package.extras = resume_checkpoints(resume, store)
    profile_name, gpu = where.profile, where.gpu
    image, site_constants = job.resources.image, {}
    if package.requirements is not None:  # the runner image plus the job's packages, or a folder of them
        image = backend.image_with(package.requirements, job.resources.image, lambda line: ui.say(line, style="dim"))
        if not backend.runs_images():
            site_constants = {settings.TaskVar.SITE: str(package.site)}
    constants = {**image_constants(image), **site_constants}
    info = {"data": user_paths(loaded), "code_hash": package.code_hash, "image": image,
            "image_digest": constants.get(settings.TaskVar.IMAGE_DIGEST), "where": backend.describe(),
            "executor": backend.executor_name(),
            "resumed_from": resume.run_id if resume is not None else None,
            "footprint": {"estimate": est.record()}}
    if where.world > 1:  # what `results show` says before the run's own metrics come home
        info["distributed"] = {"nodes": where.nodes, "procs_per_node": where.procs, "world_size": where.world}
    if package.requirements is not None:
        info["requirements"] = describe(package.requirements, package.site)
    # the intent first: from here on, whatever happens, the run is in the store under its id, and
    # its task (if one was made) carries the run's tags, by which `recover` finds it
    run = store.create_run(job_name=job.name, job_hash=package.job_hash,
                           dataset_hash=package.dataset_hash, backend=backend.name,
                           profile=profile_name, job=package.job, trials=package.trials,
                           tags=tags, note=note, info=info, state="submitting")
    if where.nodes > 1:  # a cluster profile: the master's command and the workers' (runner.distributed)
        constants.update({"DOCKER_CMD_MASTER": COMMAND, "DOCKER_CMD_WORKER": COMMAND})
    request = TaskRequest(
        run_id=run.run_id, name=f"qtrain-{job.name}", profile=profile_name, gpu=gpu,
        instances=where.instances, image=image, command=COMMAND,
        constants={settings.TaskVar.RUN_ID: run.run_id, **constants},
        tags=submission_tags(run.run_id), results_whitelist=f"(^|/){OUT}/", results_blacklist=INPUTS,
        max_wall_seconds=wall_limit(job.resources.max_minutes))

    def created(uuid: str) -> None:
        store.update(run.run_id, task_uuid=uuid)
        store.set_state(run.run_id, "submitted")

    with store.run_lock(run.run_id, "submit"):
        try:
            total = package.dataset_bytes + len(package.job_json)
            with ui.transfer(f"uploading {job.name}", total) as bar:
                uploaded = backend.upload(package, bar.advance)
            store.update(run.run_id, uploaded_bytes=uploaded)
            if package.files or package.code:
                what = ("uploaded " + human_bytes(uploaded)) if uploaded > len(package.job_json) \
                    else "data and code already uploaded"
                parts = [f"dataset {package.dataset_hash[:12]}: {carried(package)}"] if package.files else []
                parts += [f"code {package.code_hash[:12]}: {len(package.code)} file(s)"] if package.code else []
                ui.say(f"{what} ({human_bytes(package.dataset_bytes)} in all; {'; '.join(parts)})", style="dim")
            uuid = backend.submit(package, request, on_created=created)
        except BaseException as exc:  # noqa: BLE001 - the run's fate is recorded, then it goes on up
            _submission_interrupted(store.get(run.run_id), backend, store, ui, exc)
            raise
    ui.say(f"submitted run {run.run_id} to {backend.describe()} (task {uuid}, profile "
           f"{profile_name}{', ' + str(request.instances) + ' instances' if request.instances > 1 else ''})")
    return store.get(run.run_id)


@dataclass(frozen=True)
class Placement:
    """Where a run's task goes: the backend's profile, GPU or not, its instances, and how the
    training spreads over them (resources.nodes x procs_per_node)."""

    profile: str
    gpu: bool
    instances: int
    nodes: int = 1
    procs: int = 1

    @property
    def world(self) -> int:
        return self.nodes * self.procs


def place(loaded: LoadedJob, backend: Backend, profile: str | None = None) -> Placement:
    """The run's placement, refused in one line (nothing sent) where the backend cannot give it: a
    profile it lacks, several nodes on a profile that is not a cluster one, more instances than a
    task may have, more processes a node than its GPUs."""
    job = loaded.job
    res = job.resources
    name, gpu = backend.resolve_profile(profile or res.profile, nodes=res.nodes)
    gpus = backend.gpus_per_node() if gpu else 0
    if gpu and isinstance(res.procs_per_node, int) and res.procs_per_node > max(1, gpus):
        raise BackendError(f"resources.procs_per_node {res.procs_per_node}: a node of profile {name!r} has "
                           f"{gpus} GPU(s) on {backend.describe()}, and a process a GPU is the most it runs",
                           hint=f"set procs_per_node to {max(1, gpus)} or auto" + (
                               "; QTRAIN_GPUS_PER_NODE says how many GPUs your Qarnot nodes have"
                               if backend.name == "qarnot" else ""))
    procs = procs_for(res.procs_per_node, gpus)
    if res.nodes > 1:
        backend.check_capacity(res.nodes, gpu, f"resources.nodes {res.nodes}")
        return Placement(name, gpu, res.nodes, res.nodes, procs)
    trials = len(loaded.trials)
    backend.check_capacity(max(1, trials), gpu)
    return Placement(name, gpu, max(1, trials), 1, procs)


@dataclass
class Planned:
    """A run as far as it goes without sending anything: its package (checked), its placement
    and its estimate, with the account's credits left (None: not known)."""

    package: Package
    where: Placement
    estimate: Estimate
    credits: float | None = None


def plan_run(loaded: LoadedJob, backend: Backend, ui: Ui, profile: str | None = None, recheck: bool = False,
             max_cost: float | None = None, smoke: bool = False, warm_up: bool = False) -> Planned:
    """Everything `run` does before it records and sends: the image the backend must run, the
    check, the requirements (resolved by pip), the package, the placement and the estimate, each
    refused in one line.  `run --dry-run` and `run --estimate` are this, then no sending.
    `warm_up`: the backend gets ready (the emulator's daemon starts) while the job is checked;
    else it is reached only once the check has passed."""
    image = loaded.job.resources.image
    backend.check_image(image)
    if warm_up:
        backend.warm_up()
    package = prepare(loaded, ui, recheck, smoke)
    if backend.runs_images() and stale_image(image):
        ui.warn(f"the image {image} was built from other code than this checkout's: "
                f"qtrain image build (and push) to run your changes")
    where = place(loaded, backend, profile)
    check_room(backend, ui)  # the account can take the run's buckets and task
    est, credits = estimate_run(loaded, package, backend, where.gpu, ui, max_cost, where.procs)
    return Planned(package, where, est, credits)


LIMIT_MARGIN_SECONDS = 120.0  # a task's wall-clock backstop beyond the runner's own limit: start, upload


def wall_limit(max_minutes: float | None) -> int | None:
    """The backend's limit on a task's wall-clock time for resources.max_minutes: the runner stops
    the training at max_minutes (a script: SIGTERM, SIGKILL STOP_GRACE_SECONDS later) and its
    results are uploaded; the backend ends the task if it is still running after this, which only
    a runner that cannot stop its work reaches."""
    if not max_minutes:
        return None
    return math.ceil(max_minutes * 60 + STOP_GRACE_SECONDS + LIMIT_MARGIN_SECONDS)


def estimate_run(loaded: LoadedJob, package: Package, backend: Backend, gpu: bool, ui: Ui,
                 max_cost: float | None = None, procs: int = 1) -> tuple[Estimate, float | None]:
    """(the run's estimate, the account's credits left or None), said in one line; refused
    (nothing sent) over `max_cost` or the credits left.  `procs`: processes a node."""
    est = estimate(loaded, package.check, backend.pricing(gpu), procs)
    credits = backend.credits_left()
    ui.say(est.line() + (f"; credits left {credits:.4g} EUR" if credits is not None else ""), style="dim")
    refuse_over(est, max_cost, credits)
    return est, credits


def prepare(loaded: LoadedJob, ui: Ui, recheck: bool = False, smoke: bool = False) -> Package:
    """Check the job (a verdict remembered for this job, data and code is not redone) and
    package it.  Nothing leaves the machine: every mistake is caught here, before any upload."""
    settings.submission(), settings.qarnot()  # every setting a submission reads, refused now
    prices()  # and the price table of its estimate
    reqs, site = job_site(loaded, lambda line: ui.say(line, style="dim"))  # a package it cannot get: one line
    report, remembered = check(loaded, recheck, site)
    how = "passed before with this job, data and code" if remembered else "checked"
    for line in report.get("warnings") or [] if remembered else []:  # a fresh check printed them
        ui.warn(line)
    what = (f"script {report['script']}" if "script" in report else f"{report['splits']['train']} training rows")
    ui.say(f"{how}: {loaded.job.name}, {what}, {len(loaded.trials) or 1} trial(s)", style="dim")
    if smoke:
        ui.say(f"smoke run of {loaded.job.script.path if loaded.job.script else loaded.job.name}: "
               f"{SMOKE_STEPS} steps at most", style="dim")
        report = {**report, **smoke_run(loaded, site)}
    package = build_package(loaded)
    for line in package.warnings:
        ui.warn(line)
    package.check = report
    package.requirements, package.site = reqs, site
    return package


def carried(package: Package) -> str:
    """How the data files travel, in words: "20,000 files in 12 shards, 1 file alone"."""
    shards = [o for o in package.objects if o.shard]
    alone = len(package.objects) - len(shards)
    words = [f"{sum(len(o.files) for o in shards):,} file(s) in {len(shards)} shard(s)"] if shards else []
    words += [f"{alone} file(s) alone"] if alone else []
    return ", ".join(words)


def upload_plan(package: Package, backend: Backend | None = None) -> dict[str, Any]:
    """Every file and byte an upload of `package` sends at most, the objects its data travels as,
    and, when `backend` answers, which of them it lacks: what would actually be sent
    (`qtrain run --dry-run`)."""
    files = [{"path": f.remote, "bytes": f.size, "from": str(f.local), "kind": kind,
              **({"link_to": str(f.outside)} if f.outside else {})}
             for kind, group in (("data", package.files), ("code", package.code), ("checkpoint", package.extras))
             for f in group]
    files.append({"path": JOB_FILE, "bytes": len(package.job_json), "from": None, "kind": "job"})
    objects = [{"key": o.key, "kind": "shard" if o.shard else "file", "files": len(o.files), "bytes": o.payload}
               for o in package.objects]
    plan = {"job": package.job_name, "dataset_hash": package.dataset_hash, "code_hash": package.code_hash,
            "job_hash": package.job_hash, "trials": package.trials, "files": files,
            "total_bytes": sum(f["bytes"] for f in files), "objects": objects, "send": None}
    if backend is not None:
        try:
            lacking = backend.missing(package)
        except QtrainError as exc:  # the dry run still lists what would go at most
            plan["send_unknown"] = exc.message
        else:
            if lacking is not None:
                keys = {o.key for o in lacking}
                for o in objects:
                    o["sent"] = o["key"] in keys
                plan["send"] = {"objects": len(lacking), "data_bytes": sum(o.payload for o in lacking)}
    if package.requirements is not None:  # not uploaded: the task runs an image with them, or their folder
        plan["requirements"] = describe(package.requirements, package.site)
    return plan


def submission_tags(run_id: str) -> list[str]:
    """The tags of a run's task: how an interrupted submission finds it (all of them must match)."""
    return ["qtrain", run_id]


def _submission_interrupted(run: RunRecord, backend: Backend, store: Store, ui: Ui, exc: BaseException) -> None:
    """`submit_run` stopped between recording the run and knowing its task: record what is known
    (asking the backend for a task with the run's tags), name the run, and turn a failure into a
    RunError (exit status 3) that says so.  An interrupt (Ctrl-C) stays an interrupt."""
    reason = (exc.one_line() if isinstance(exc, QtrainError) else
              "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}")
    try:
        run = recover(run, backend, store, reason=f"submission failed: {reason}", own=True)
    except (QtrainError, OSError) as lookup:  # cannot ask: the next status/fetch/list does
        ui.err.print(f"run {run.run_id}: {reason}; whether its task was created is not known yet "
                     f"({lookup}); qtrain status {run.run_id} finds out", style="red", markup=False)
        if not isinstance(exc, KeyboardInterrupt):
            raise RunError(f"run {run.run_id}: {reason}", hint=f"qtrain status {run.run_id}") from exc
        return
    if run.task_uuid:
        message = (f"run {run.run_id} was submitted (task {run.task_uuid}) before: {reason}; "
                   f"qtrain fetch {run.run_id} follows it, qtrain cancel {run.run_id} stops it")
    else:
        message = f"run {run.run_id}: {reason}; no task was created, nothing runs"
    ui.err.print(message, style="yellow" if run.task_uuid else "red", markup=False, highlight=False)
    if not isinstance(exc, KeyboardInterrupt):
        if run.task_uuid:
            raise RunError(f"run {run.run_id}: submitted as task {run.task_uuid}, then {reason}",
                           hint=f"qtrain fetch {run.run_id}") from exc
        raise RunError(f"run {run.run_id}: {reason}; no task was created",
                       hint="fix the cause, then qtrain run again") from exc


def recover(run: RunRecord, backend: Backend, store: Store, reason: str | None = None,
            own: bool = False) -> RunRecord:
    """A run still `submitting` whose submitter is gone (killed, interrupted): its task found by
    the run's tags and recorded, or, when the backend has none, the run failed (nothing runs, so
    nothing is lost).  A submission still under way elsewhere (its lock held) is left alone;
    `own`: the caller is that submitter."""
    if run.state != "submitting":
        return run
    if not run.task_uuid and not own and store.lock_held(run.run_id, "submit"):
        return run
    found = [run.task_uuid] if run.task_uuid else backend.find_tasks(submission_tags(run.run_id))
    if found:
        store.update(run.run_id, task_uuid=found[0])
        store.set_state(run.run_id, "submitted", detail="found by its tags" if not run.task_uuid else None)
    else:
        store.set_state(run.run_id, "failed", error=reason or "the submission was interrupted before its "
                                                              "task was created: nothing runs")
        store.update(run.run_id, retrieved=True)
    return store.get(run.run_id)


def user_paths(loaded: LoadedJob) -> dict[str, str]:
    """The job's path fields as the user's machine has them (the task sees `data/<name>`)."""
    dumped = loaded.job.model_dump(mode="json")
    out = {}
    for key in (*PATH_FIELDS, "model.source", "script.path", "script.source"):
        value = get_dotted(dumped, key)
        if value:
            out[key] = str(resolve(value, loaded.base_dir)) if local_value(value) else str(value)
    return out


def image_constants(image: str) -> dict[str, str]:
    """Task constants about the image: its digest when this machine has it (recorded in run.json),
    and a private registry's server and login from the environment (never from the job)."""
    constants = {}
    digest = image_digest(image)
    if digest:
        constants[settings.TaskVar.IMAGE_DIGEST] = digest
    account = settings.qarnot()
    password = account.registry_password.get_secret_value() if account.registry_password else None
    for key, value in (("DOCKER_SRV", account.docker_server), ("DOCKER_REGISTRY_LOGIN", account.registry_login),
                       ("DOCKER_REGISTRY_PASSWORD", password)):
        if value:
            constants[key] = value
    return constants


