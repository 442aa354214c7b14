"""Every environment variable qtrain reads, in one module: the user's settings (the submitter and
the local emulator) and the task's environment (what the runner reads inside an instance).

It lives in `jobs/` because both sides read it: the runner image holds `jobs/` and `runner/` only.
Each group below is a typed model, read from the environment when it is asked for (`paths()`,
`qarnot()`, `submission()`, `emulator()`, `task()`), so a variable set in between is seen.  A
variable set to an empty string counts as unset.  A bad value is one `SettingError` (exit 2)
naming the variable, what it must be and its meaning, never echoing a secret:

    error: QTRAIN_STORE_LOCK_SECONDS='abc': Input should be a valid number (...)

The task's environment variable names are defined here once (`TaskVar`), and `task_environment`
is the one function that builds an instance's environment from them: the emulator's executors
call it, the runner reads the same names through `task()`.

Why plain pydantic and not pydantic-settings: the latter imports asyncio for its CLI source, which
cost 60 ms of every `qtrain` command and every instance start here (measured with -X importtime;
a remembered `qtrain check` takes 150 ms).  Reading a model from os.environ is the few lines of
`read` below.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from jobs.errors import QtrainError


class SettingError(QtrainError):
    """An environment variable qtrain reads has a value it cannot use."""


def var(default: Any, name: str, meaning: str, **constraints: Any) -> Any:
    """A setting: the environment variable `name`, its default and what it means (the README's
    table of settings is checked against these)."""
    return Field(default, alias=name, description=meaning, **constraints)


class Group(BaseModel):
    # built when a group is first read, not at import: most commands read two or three groups
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", defer_build=True)


G = TypeVar("G", bound=Group)


def read(group: type[G], environ: dict[str, str] | None = None) -> G:
    env = os.environ if environ is None else environ
    found = {f.alias: env[f.alias].strip() for f in group.model_fields.values()
             if f.alias and env.get(f.alias, "").strip()}
    try:
        return group.model_validate(found)
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else next(iter(found), "?")
        field = next((f for f in group.model_fields.values() if f.alias == name), None)
        secret = field is not None and _secret(field)
        shown = "(hidden)" if secret else repr(found.get(name, ""))
        meaning = f": {field.description}" if field is not None and field.description else ""
        message = problem["msg"].removeprefix("Value error, ")
        raise SettingError(f"{name}={shown}: {message}",
                           hint=f"fix or unset {name}{meaning}") from None


# ------------------------------------------------------------------------------------ paths
class Paths(Group):
    config: Path | None = var(None, "QTRAIN_CONFIG_DIR", "qtrain's config folder: the emulator token, "
                              "prices.toml, the Qarnot SDK config (default $XDG_CONFIG_HOME/qtrain)")
    state: Path | None = var(None, "QTRAIN_STATE_DIR", "qtrain's state folder: the emulator daemon's "
                             "files, remembered checks (default $XDG_STATE_HOME/qtrain)")
    store: Path | None = var(None, "QTRAIN_STORE", "the results store (default "
                             "$XDG_DATA_HOME/qtrain/store); --store overrides it")
    xdg_config: Path | None = var(None, "XDG_CONFIG_HOME", "the XDG config home (default ~/.config)")
    xdg_state: Path | None = var(None, "XDG_STATE_HOME", "the XDG state home (default ~/.local/state)")
    xdg_data: Path | None = var(None, "XDG_DATA_HOME", "the XDG data home (default ~/.local/share)")
    qarnot_config_file: Path | None = var(None, "QARNOT_CONFIG_FILE", "the Qarnot SDK's INI file "
                                          "([cluster] url, [client] token; default CONFIG_DIR/qarnot.conf)")
    prices: Path | None = var(None, "QTRAIN_PRICES", "the price table of estimates (default "
                              "CONFIG_DIR/prices.toml; a file named here must exist)")

    def config_dir(self) -> Path:
        return (self.config or (self.xdg_config or Path.home() / ".config") / "qtrain").expanduser()

    def state_dir(self) -> Path:
        return (self.state or (self.xdg_state or Path.home() / ".local" / "state") / "qtrain").expanduser()

    def store_dir(self, option: str | Path | None = None) -> Path:
        if option:
            return Path(option).expanduser()
        return (self.store or (self.xdg_data or Path.home() / ".local" / "share") / "qtrain" / "store").expanduser()

    def qarnot_config(self) -> Path:
        return (self.qarnot_config_file or self.config_dir() / "qarnot.conf").expanduser()

    def prices_file(self) -> tuple[Path, bool]:
        """(the price table, whether the user named it: a named file that is missing is an error)."""
        return ((self.prices.expanduser(), True) if self.prices else (self.config_dir() / "prices.toml", False))


def paths() -> Paths:
    return read(Paths)


# ----------------------------------------------------------------------------- Qarnot account
class Qarnot(Group):
    client_token: SecretStr | None = var(None, "QARNOT_CLIENT_TOKEN", "the Qarnot account's token (a "
                                         "secret: handed to the SDK, never written anywhere)")
    cluster_url: str = var("https://api.qarnot.com", "QARNOT_CLUSTER_URL", "Qarnot's API")
    docker_server: str | None = var(None, "QTRAIN_DOCKER_SRV", "a private registry's server, for "
                                    "Qarnot to pull resources.image from (task constant DOCKER_SRV)")
    registry_login: str | None = var(None, "QTRAIN_REGISTRY_LOGIN", "that registry's login "
                                     "(DOCKER_REGISTRY_LOGIN)")
    registry_password: SecretStr | None = var(None, "QTRAIN_REGISTRY_PASSWORD", "that registry's "
                                              "password (DOCKER_REGISTRY_PASSWORD; never stored)")

    def token(self) -> str | None:
        return self.client_token.get_secret_value() if self.client_token else None


def qarnot() -> Qarnot:
    return read(Qarnot)


# ------------------------------------------------------------------------------- submission
class Submission(Group):
    profile_cpu: str = var("docker-batch", "QTRAIN_PROFILE_CPU", "the Qarnot profile behind "
                           "resources.profile: cpu")
    profile_gpu: str = var("docker-nvidia-batch", "QTRAIN_PROFILE_GPU", "the Qarnot profile behind "
                           "resources.profile: gpu")
    profile_cluster: str = var("docker-cluster-network", "QTRAIN_PROFILE_CLUSTER", "the Qarnot cluster "
                               "profile behind resources.profile: cpu when resources.nodes > 1")
    profile_gpu_cluster: str = var("docker-nvidia-cluster-network", "QTRAIN_PROFILE_GPU_CLUSTER", "the Qarnot "
                                   "cluster profile behind resources.profile: gpu when resources.nodes > 1")
    gpus_per_node: int = var(1, "QTRAIN_GPUS_PER_NODE", "the GPUs of one node of a Qarnot GPU profile "
                             "(procs_per_node auto starts one process each; the emulator counts its own)", ge=1)
    data_bucket: str = var("qtrain-data", "QTRAIN_DATA_BUCKET", "the bucket that holds datasets "
                           "(by content) and job files")
    resource_cache_ttl: int = var(7 * 24 * 3600, "QTRAIN_RESOURCE_CACHE_TTL", "seconds Qarnot may "
                                  "cache a dataset on its nodes", ge=0)
    snapshot_interval: int = var(300, "QTRAIN_SNAPSHOT_INTERVAL", "seconds between checkpoint "
                                 "snapshots sent back while a task runs (0: none)", ge=0)
    poll_seconds: float = var(0.0, "QTRAIN_POLL_SECONDS", "seconds between polls of a running task "
                              "(0: the backend's own: 5 on Qarnot, 0.1 on the emulator)", ge=0)
    follow_retry_seconds: float = var(120.0, "QTRAIN_FOLLOW_RETRY_SECONDS", "how long `qtrain run` "
                                      "follows through a lost connection before it leaves the task "
                                      "to `qtrain fetch`", ge=0)
    store_lock_seconds: float = var(60.0, "QTRAIN_STORE_LOCK_SECONDS", "how long a write to the "
                                    "results store waits for another process's", ge=0)
    max_trials: int = var(1000, "QTRAIN_MAX_TRIALS", "the most trials a sweep may make", ge=1)
    keep_remote: bool = var(False, "QTRAIN_KEEP_REMOTE", "1: keep a run's task and result bucket on the "
                            "account after its files are retrieved and verified (default: deleted)")
    bucket_warning: float = var(0.8, "QTRAIN_BUCKET_WARNING", "the share of the account's buckets (maxBucket) "
                                "from which `qtrain run` warns", gt=0, le=1)
    mlflow_export: bool = var(False, "QTRAIN_MLFLOW_EXPORT", "1: export every retrieved run to "
                              "MLflow (MLFLOW_TRACKING_URI)")
    mlflow_tracking_uri: str | None = var(None, "MLFLOW_TRACKING_URI", "MLflow's tracking server "
                                          "for `results export` (MLflow's own variable)")


def submission() -> Submission:
    return read(Submission)


# --------------------------------------------------------------------------------- emulator
LIMIT = re.compile(r"\s*([a-z_]+)\s*=\s*(\d+)\s*")


class Emulator(Group):
    executor: Literal["docker", "process"] | None = var(
        None, "QTRAIN_EMULATOR_EXECUTOR", "how the emulator runs instances: docker | process "
        "(default docker where an engine answers and the runner image exists)")
    storage: Literal["seaweedfs", "moto"] | None = var(
        None, "QTRAIN_EMULATOR_STORAGE", "the emulator's S3 storage: seaweedfs (on disk) | moto "
        "(in memory, keeps nothing; default seaweedfs where its weed is installed)")
    hardware: Literal["wait", "strict", "lenient"] = var(
        "wait", "QTRAIN_EMULATOR_HARDWARE", "a task whose hardware constraints this machine cannot "
        "meet: wait (queued) | strict (refused) | lenient (run anyway)")
    limits: dict[str, int] = var({}, "QTRAIN_EMULATOR_LIMITS", "the account limits, e.g. "
                                 "max_tasks=10,max_running_tasks=2 (see `qtrain emulator` in the README)")
    request_timeout: float = var(60.0, "QTRAIN_EMULATOR_REQUEST_TIMEOUT", "seconds before a client "
                                 "that stalls mid-request is dropped", ge=0.5)
    footprint: bool = var(True, "QTRAIN_EMULATOR_FOOTPRINT", "0: the emulator has no credits or "
                          "carbon services (they answer 404)")
    eur_per_core_hour: float = var(0.05, "QTRAIN_EMULATOR_EUR_PER_CORE_HOUR", "the emulated credits "
                                   "of a core-hour", ge=0)
    watts_per_core: float = var(12.0, "QTRAIN_EMULATOR_WATTS_PER_CORE", "the emulated power of a "
                                "busy core", ge=0)
    grid_g_per_kwh: float = var(56.0, "QTRAIN_EMULATOR_GRID_G_PER_KWH", "the emulated grid's "
                                "carbon intensity (gCO2eq/kWh)", ge=0)
    credits: float = var(100.0, "QTRAIN_EMULATOR_CREDITS", "the emulated account's starting credits "
                         "(EUR)", ge=0)
    docker_warm: bool = var(True, "QTRAIN_DOCKER_WARM", "0: the docker executor starts a fresh "
                            "container per instance (no warm fork server)")
    warm_image: str = var("qtrain/runner:latest", "QTRAIN_WARM_IMAGE", "the image the docker "
                          "executor warms when the emulator starts")

    @field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        found = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            match = LIMIT.fullmatch(part)
            if not match or int(match.group(2)) < 1:
                raise ValueError(f"{part!r} is not NAME=POSITIVE_NUMBER")
            found[match.group(1)] = int(match.group(2))
        return found


def emulator() -> Emulator:
    return read(Emulator)


# ---------------------------------------------------------------------------- the task's
class TaskVar:
    """The names of the environment variables of a task's instance: Qarnot's own, and qtrain's
    (task constants and what the emulator adds).  The contract between whoever starts an
    instance and the runner."""

    RESOURCES = "QARNOT_RESOURCES_DIRECTORY"  # the task's input folder (Qarnot: /job)
    RESULTS = "QARNOT_RESULTS_DIRECTORY"  # what is uploaded when the instance ends
    INSTANCE_ID = "INSTANCE_ID"  # the instance's id: a sweep's trial
    FRAME_ID = "FRAME_ID"  # the same, by its older name
    INSTANCE_COUNT = "INSTANCE_COUNT"
    TASK_UUID = "QARNOT_TASK_UUID"
    TASK_NAME = "QARNOT_TASK_NAME"
    RUN_ID = "QTRAIN_RUN_ID"  # the results store's run (a task constant)
    IMAGE_DIGEST = "QTRAIN_IMAGE_DIGEST"  # the image that runs (a constant, or the emulator's)
    SOURCE_DIGEST = "QTRAIN_SOURCE_DIGEST"  # sha256 of the code the image was built from (its ENV)
    EXECUTION = "QTRAIN_EXECUTION"  # how the emulator ran it: docker, docker-warm, process, process-warm
    THREADS = "OMP_NUM_THREADS"  # the instance's CPU share
    MKL_THREADS = "MKL_NUM_THREADS"
    # a cluster task (resources.nodes > 1): Qarnot's host file and shared folder (its samples'
    # names: /job/mpihosts, /share), and torch.distributed's rendezvous (torchrun's own names)
    HOSTFILE = "QTRAIN_HOSTFILE"  # where the host file is (default: mpihosts in the resources folder)
    SHARE = "QTRAIN_SHARE_DIR"  # the folder every instance of the task sees (default /share)
    MASTER_ADDR = "MASTER_ADDR"
    MASTER_PORT = "MASTER_PORT"
    SITE = "QTRAIN_SITE"  # a folder of packages the runner puts first on sys.path (resources.requirements)
    # what the runner tells a script job (`runner.script` reads them; so may the script itself)
    DATA = "QTRAIN_DATA"
    DATA_DIR = "QTRAIN_DATA_DIR"
    OUTPUT_DIR = "QTRAIN_OUTPUT_DIR"
    CHECKPOINT = "QTRAIN_CHECKPOINT"
    TRIAL = "QTRAIN_TRIAL"
    PARAMS = "QTRAIN_PARAMS"
    SCRIPT_THREADS = "QTRAIN_THREADS"
    DEVICE = "QTRAIN_DEVICE"
    SEED = "QTRAIN_SEED"
    SMOKE = "QTRAIN_SMOKE"
    MAX_STEPS = "QTRAIN_MAX_STEPS"


class Task(Group):
    resources: Path = var(Path("/job"), TaskVar.RESOURCES, "(task) where the runner finds job.json "
                          "and the data")
    results: Path | None = var(None, TaskVar.RESULTS, "(task) where the runner writes out/ "
                               "(default: the resources folder)")
    instance_id: int = var(0, TaskVar.INSTANCE_ID, "(task) the instance's id, a sweep's trial", ge=0)
    instance_count: int = var(1, TaskVar.INSTANCE_COUNT, "(task) the task's instances", ge=1)
    run_id: str | None = var(None, TaskVar.RUN_ID, "(task) the run the results belong to")
    image_digest: str | None = var(None, TaskVar.IMAGE_DIGEST, "(task) the image that runs, for run.json")
    source_digest: str | None = var(None, TaskVar.SOURCE_DIGEST, "(task) the code the image was built "
                                    "from, for run.json")
    execution: str | None = var(None, TaskVar.EXECUTION, "(task) how the emulator ran the instance, "
                                "for run.json")
    threads: int | None = var(None, TaskVar.THREADS, "(task) the instance's CPU share: torch's threads "
                              "unless train.threads says")
    task_uuid: str | None = var(None, TaskVar.TASK_UUID, "(task) the task's uuid")
    site: Path | None = var(None, TaskVar.SITE, "(task) a folder of the job's own packages "
                            "(resources.requirements), put first on the path")
    hostfile: Path | None = var(None, TaskVar.HOSTFILE, "(cluster task) the host file, one node a line, "
                                "the master first (default: mpihosts in the resources folder)")
    share: Path = var(Path("/share"), TaskVar.SHARE, "(cluster task) the folder all its instances share")
    master_addr: str | None = var(None, TaskVar.MASTER_ADDR, "(cluster task) the rendezvous host "
                                  "(default: the host file's first node)")
    master_port: int = var(29500, TaskVar.MASTER_PORT, "(cluster task) the rendezvous port", ge=1, le=65535)

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        """OpenMP's own variable, set by whoever runs the process: a value OpenMP would not take
        leaves the choice to the runner, as OpenMP leaves it to its default."""
        try:
            return int(value) if int(value) > 0 else None
        except (TypeError, ValueError):
            return None

    def results_dir(self) -> Path:
        return self.results or self.resources

    def hosts_file(self) -> Path:
        return self.hostfile or self.resources / "mpihosts"


def task(environ: dict[str, str] | None = None) -> Task:
    return read(Task, environ)


class Ranks(Group):
    """torchrun's variables, set in each worker of a distributed run (`runner.distributed`)."""

    rank: int | None = var(None, "RANK", "(torchrun) the process's rank in the training", ge=0)
    world_size: int | None = var(None, "WORLD_SIZE", "(torchrun) the processes of the training", ge=1)
    local_rank: int = var(0, "LOCAL_RANK", "(torchrun) the process's rank on its node", ge=0)
    agent_pid: int | None = var(None, "QTRAIN_AGENT_PID", "(torchrun) the pid of the agent that started the "
                                "worker (runner.distributed)")


def ranks(environ: dict[str, str] | None = None) -> Ranks:
    return read(Ranks, environ)


class ScriptEnv(Group):
    """What a script job is told (`runner.script`); outside qtrain, the defaults."""

    data: Path | None = var(None, TaskVar.DATA, "(script) the job's data.path as the script finds it")
    data_dir: Path | None = var(None, TaskVar.DATA_DIR, "(script) the folder that holds it")
    output_dir: Path = var(Path("qtrain-out"), TaskVar.OUTPUT_DIR, "(script) the folder that comes home: "
                           "models, checkpoints, anything the script writes (its working folder)")
    checkpoint: Path | None = var(None, TaskVar.CHECKPOINT, "(script) the checkpoint to resume from, when "
                                  "the run is resumed")
    trial: int | None = var(None, TaskVar.TRIAL, "(script) the sweep trial it runs", ge=0)
    params: dict[str, Any] = var({}, TaskVar.PARAMS, "(script) its arguments (script.args, a trial's "
                                 "values in), as JSON")
    threads: int | None = var(None, TaskVar.SCRIPT_THREADS, "(script) the CPU threads it may use", ge=1)
    device: str = var("cpu", TaskVar.DEVICE, "(script) cuda or cpu, as train.device resolves here")
    seed: int = var(0, TaskVar.SEED, "(script) train.seed")
    smoke: bool = var(False, TaskVar.SMOKE, "(script) 1: a smoke run (qtrain check --smoke): a few steps "
                      "on a small slice, to find mistakes")
    max_steps: int | None = var(None, TaskVar.MAX_STEPS, "(script) in a smoke run, the steps to stop after", ge=1)

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON ({exc})") from None
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
        return value


def script_env() -> ScriptEnv:
    return read(ScriptEnv)


def script_environment(base: dict[str, str], facts: dict[str, Any]) -> dict[str, str]:
    """A script job's environment: `base` (the runner's own) with what the script is told, by
    ScriptEnv's field names (`facts`: data, output_dir, params, ...; None: not set)."""
    import json

    env = dict(base)
    for name, field in ScriptEnv.model_fields.items():
        value = facts.get(name)
        if value is None:
            env.pop(field.alias or name, None)
        else:
            env[field.alias or name] = json.dumps(value) if isinstance(value, dict) else \
                ("1" if value is True else "0" if value is False else str(value))
    return env


def task_environment(constants: dict[str, str], *, folder: str, instance_id: int, instance_count: int,
                     task_uuid: str, task_name: str, threads: int, execution: str | None = None,
                     image_digest: str | None = None) -> dict[str, str]:
    """An instance's environment: the task's constants, then what Qarnot sets (its folders, ids,
    task), the instance's CPU share, and how it ran (the emulator's)."""
    env = dict(constants)
    env.update({
        TaskVar.INSTANCE_ID: str(instance_id), TaskVar.FRAME_ID: str(instance_id),
        TaskVar.INSTANCE_COUNT: str(instance_count),
        TaskVar.RESOURCES: folder, TaskVar.RESULTS: folder,
        TaskVar.TASK_UUID: task_uuid, TaskVar.TASK_NAME: task_name,
        TaskVar.THREADS: str(threads), TaskVar.MKL_THREADS: str(threads),
    })
    if execution:
        env[TaskVar.EXECUTION] = execution
    if image_digest:
        env[TaskVar.IMAGE_DIGEST] = image_digest
    else:
        env.pop(TaskVar.IMAGE_DIGEST, None)  # no image ran (the process executor): none is claimed
    return env


def library_defaults(values: dict[str, str]) -> None:
    """Defaults for a library that reads its own variables (MLflow's HTTP retries), set in this
    process's environment unless the user set them."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


@contextmanager
def overriding(values: dict[str, str | None]) -> Iterator[None]:
    """This process's settings with `values` set (None: unset) for a while, then back as they were
    (an emulator of its own: `submit.emulator.daemon.isolated`)."""

    def put(pairs: dict[str, str | None]) -> None:
        for name, value in pairs.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    saved = {name: os.environ.get(name) for name in values}
    try:
        put(values)
        yield
    finally:
        put(saved)


# ---------------------------------------------------------------------------------- listing
GROUPS: tuple[type[Group], ...] = (Paths, Qarnot, Submission, Emulator, Task, ScriptEnv, Ranks)


def _secret(field: Any) -> bool:
    return "SecretStr" in str(field.annotation)


def secret_names() -> frozenset[str]:
    """The variables that hold secrets (the Qarnot token, the registry password), and the task
    constant that carries the registry password to Qarnot: never handed to a user's script."""
    return frozenset({f.alias for group in GROUPS for f in group.model_fields.values() if f.alias and _secret(f)}
                     | {"DOCKER_REGISTRY_PASSWORD"})


def describe() -> list[dict[str, Any]]:
    """Every variable: its name, group, default, meaning, whether it is secret, its value here (a
    secret's as "(set)"), and the one-line problem of its group's values, if any."""
    rows = []
    for group in GROUPS:
        try:
            read(group)
            problem = None
        except SettingError as exc:
            problem = exc
        for name, f in group.model_fields.items():
            default = f.default
            secret = _secret(f)
            raw = os.environ.get(f.alias or "", "").strip()
            rows.append({
                "name": f.alias, "group": group.__name__.lower(), "field": name,
                "default": None if default is None else (
                    ",".join(f"{k}={v}" for k, v in default.items()) if isinstance(default, dict) else str(default)),
                "meaning": f.description or "", "secret": secret,
                "value": ("(set)" if raw else None) if secret else (raw or None),
                "problem": problem.one_line() if problem and problem.message.startswith(f"{f.alias}=") else None})
    return rows
