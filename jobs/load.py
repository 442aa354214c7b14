"""Reading job files: YAML/JSON -> validated `Job`, with `--set` overrides and sweep trials.

Every problem becomes a `JobError` whose one-line message names the file, the field and the fix:
    Invalid job file jobs/x.yaml: train.epochs: Input should be greater than 0
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from jobs.errors import JobError
from jobs.files import PATH_FIELDS, refuse_special, refuse_too_large, unread_fields
from jobs.spec import Job, is_builtin_source
from jobs.suggest import suggestion

CATALOG_DIR = Path(__file__).parent / "catalog"


@dataclass(frozen=True)
class LoadedJob:
    """A validated job plus where it came from (relative data paths resolve against `base_dir`)."""

    job: Job
    base_dir: Path
    source: str  # the file it was read from, for messages
    raw: dict[str, Any] = field(repr=False, default_factory=dict)  # after overrides, before trial

    @property
    def trials(self) -> list[dict[str, Any]]:
        return sweep_trials(self.job.sweep)

    def trial(self, index: int) -> "LoadedJob":
        """The job of sweep trial `index` (the Qarnot INSTANCE_ID), with the sweep removed."""
        trials = self.trials
        if not trials:
            if index != 0:
                raise JobError(f"{self.source}: trial {index} asked for, but the job has no sweep")
            return self
        if not 0 <= index < len(trials):
            raise JobError(f"{self.source}: sweep trial {index} does not exist "
                           f"(the sweep has {len(trials)} trials, 0..{len(trials) - 1})")
        raw = copy.deepcopy(self.raw)
        raw.pop("sweep", None)
        for key, value in trials[index].items():
            set_dotted(raw, key, value)
        job = validate(raw, f"{self.source} (sweep trial {index}: {format_trial(trials[index])})")
        return LoadedJob(job, self.base_dir, self.source, raw)


def find_job_file(path: str | Path) -> Path:
    """A path (a job file, or a Python script), or the name of a catalog job (`penguins` ->
    jobs/catalog/penguins.yaml)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.suffix and (CATALOG_DIR / f"{p.name}.yaml").is_file() and len(p.parts) == 1:
        return CATALOG_DIR / f"{p.name}.yaml"
    if p.is_dir():
        raise JobError(f"{p}: is a folder; give the job file (.yaml or .json) inside it")
    names = ", ".join(sorted(q.stem for q in CATALOG_DIR.glob("*.yaml")))
    raise JobError(f"{p}: job file not found", hint=f"check the path, or name a catalog job: {names}")


def load_job(path: str | Path, overrides: Iterable[str] = (), script_args: list[str] | None = None) -> LoadedJob:
    """Read, override and validate a job file.  A Python file is a script job with the defaults
    (`qtrain run train.py -- ARGS`: `script_args` its command line, as it is)."""
    file = find_job_file(path)
    source = str(file)
    named = [item.split("=", 1)[0] for item in overrides if item.startswith("script.args.")]
    if script_args and named:
        raise JobError(f"--set {named[0]} and the words after -- both give the script's command line",
                       hint=f"use one: after --, add --{named[0].removeprefix('script.args.')} VALUE")
    if file.suffix == ".py":
        raw = script_job(file, script_args)
    else:
        raw = parse_text(read_job_text(file), source, json_file=file.suffix == ".json")
        if script_args:
            if not isinstance(raw.get("script"), dict):
                raise JobError(f"{source}: the words after -- are a script's command line, and {source} is not a "
                               f"script job", hint="give the script itself (qtrain run train.py -- ARGS), or leave "
                                                   "them out")
            raw["script"]["args"] = list(script_args)
    for item in overrides:
        key, value = parse_override(item, source)
        if key in PATH_FIELDS and value == "":
            value = None  # `--set data.labels=`: unset, never "this folder"
        if key in PATH_FIELDS and isinstance(value, str) and not is_builtin_source(value):
            value = str((Path.cwd() / Path(value).expanduser()).resolve())
        set_dotted(raw, key, value)
    job = validate(raw, source)
    loaded = LoadedJob(job, file.resolve().parent, source, raw)
    refuse_special(job, loaded.base_dir, source)
    refuse_too_large(job, loaded.base_dir, source)
    unread = unread_fields(job, loaded.base_dir)
    if unread:  # a path the job never reads would still be sent: refused, whatever its file
        field, why = next(iter(unread.items()))
        raise JobError(f"{source}: {field}: {why}, so it would never be read",
                       hint=f"remove {field} (or --set {field}=null): qtrain sends only the files a job reads")
    for i in range(len(loaded.trials)):  # every trial must be a valid job too
        loaded.trial(i)
    return loaded


def script_job(file: Path, args: list[str] | None = None) -> dict[str, Any]:
    """The job of a bare Python file: a script job named after it, with qtrain's defaults."""
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", file.stem).strip("-._")[:80] or "script"
    raw: dict[str, Any] = {"name": name, "script": {"path": file.name}}
    if args:
        raw["script"]["args"] = list(args)
    return raw


def load_job_dict(raw: dict[str, Any], base_dir: Path, source: str = "job.json") -> LoadedJob:
    job = validate(copy.deepcopy(raw), source)
    refuse_special(job, base_dir, source)
    refuse_too_large(job, base_dir, source)
    return LoadedJob(job, base_dir, source, copy.deepcopy(raw))


MAX_JOB_BYTES = 1 << 20  # a job file is a page of text; a bigger one is not a job file


def read_job_text(file: Path) -> str:
    """A job file's text, read only up to MAX_JOB_BYTES (and only from a regular file)."""
    with open(file, "rb") as fh:
        if not os.path.isfile(file) or os.fstat(fh.fileno()).st_size > MAX_JOB_BYTES:
            raise JobError(f"{file}: not a job file: a job file is a text file of at most "
                           f"{MAX_JOB_BYTES >> 20} MiB", hint="give the job's .yaml or .json file")
        data = fh.read(MAX_JOB_BYTES + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobError(f"{file}: not a job file: its bytes are not utf-8 text ({exc.reason} at byte {exc.start})",
                       hint="give the job's .yaml or .json file") from None


MAX_VALUES = 100_000  # values in a job file once its aliases are expanded


def expanded_size(data: Any) -> int:
    """How many values `data` holds with shared (aliased) parts counted every time they appear,
    computed without expanding them (each object is sized once)."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a self-referencing alias counts once, never loops
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_VALUES:
                break
        sizes[id(node)] = total
        return total

    return size(data)


def parse_text(text: str, source: str, json_file: bool = False) -> dict[str, Any]:
    try:
        data = json.loads(text) if json_file else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise JobError(f"Invalid job file {source}: JSON syntax error at line {exc.lineno} "
                       f"column {exc.colno}: {exc.msg}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise JobError(f"Invalid job file {source}: YAML syntax error{where}: {problem}") from exc
    if expanded_size(data) > MAX_VALUES:  # YAML aliases can make a small file a huge tree
        raise JobError(f"Invalid job file {source}: it expands to more than {MAX_VALUES} values "
                       f"(YAML aliases repeated inside each other?)",
                       hint="write the values out, without nested aliases")
    if data is None:
        raise JobError(f"Invalid job file {source}: the file is empty",
                       hint="start from a catalog job: qtrain catalog")
    if not isinstance(data, dict):
        raise JobError(f"Invalid job file {source}: expected a mapping of fields at the top, "
                       f"got {type(data).__name__}")
    return data


def validate(raw: dict[str, Any], source: str) -> Job:
    try:
        return Job.model_validate(raw)
    except ValidationError as exc:
        raise JobError(f"Invalid job file {source}: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + (suggestion(str(err["loc"][-1]), _fields_at(err["loc"][:-1]))
                                     or " (remove it or check the spelling)")
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _fields_at(loc: tuple) -> set[str]:
    """The field names the job model allows at `loc` (every member's, for a union)."""
    models: list[type[BaseModel]] = [Job]
    for part in loc:
        if _is_union_tag(part):
            continue
        found: list[type[BaseModel]] = []
        for model in models:
            field = model.model_fields.get(str(part))
            if field is not None:
                found += _models_in(field.annotation)
        models = found
    return {f.alias or name for model in models for name, f in model.model_fields.items()}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the discriminator value into the error location: model.cnn.filters
    return part in ("mlp", "cnn", "transfer", "module", "int", "constrained-int") or str(part).startswith("literal[")


def parse_override(item: str, source: str) -> tuple[str, Any]:
    if "=" not in item:
        raise JobError(f"--set {item!r}: expected key.path=value (e.g. train.epochs=5)")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise JobError(f"--set {item!r}: the key must be a dotted path such as train.epochs")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise JobError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
    if expanded_size(value) > MAX_VALUES:
        raise JobError(f"--set {key}: the value expands to more than {MAX_VALUES} values (nested YAML aliases?)")
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise JobError(f"override {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def sweep_trials(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid, in a stable order (last key varies fastest)."""
    if not sweep:
        return []
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def format_trial(trial: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in trial.items())
