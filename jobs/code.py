"""The code a job ships, found once: what the submitter uploads, what the code hash covers, and
where the runner finds it in the task.

A module job ships `model.source` (a .py file, or a folder of them), a script job its script's folder
(or `script.source`).  In the task, that code is `code/`, the root Python imports from: a file as
`code/<name>.py`; a folder as `code/<folder>/...` when `model.class` starts with the folder's name (a
package: `source: nets`, `class: nets.vision:Net`), else its contents below `code/`; the job is
rewritten to point there (`portable`).  Like a dataset, the code is stored by content (`code/<code hash>/` in the
data bucket): unchanged code uploads nothing.

What stays home: version control folders, Python caches, virtual environments (a folder holding
pyvenv.cfg, or named .venv/venv/env), notebook checkpoints, the job's own file and its data files
and folders, qtrain's own folders (its results store, state and config) and results folders it
wrote (holding run.json and metrics.json), any other qtrain job file in the folder (`is_job_file`:
a job travels as job.json, and editing one never changes the code hash), and what `.qtrainignore`
(gitignore-like patterns, one per line, in the code folder) names.  A code
folder over WARN_BYTES is said, naming what made it large; over LIMIT_BYTES it is refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from jobs.errors import JobError
from jobs.files import (PATH_FIELDS, LocalFile, get_dotted, local_value, resolve, special_kind)
from jobs.spec import Job

ROOT = "code"  # the code's folder in the task's working directory
IGNORE_FILE = ".qtrainignore"
ALWAYS_IGNORED = (".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", "*.pyo", ".venv/", "venv/", "env/",
                  ".ipynb_checkpoints/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", ".DS_Store",
                  "qtrain-out/", IGNORE_FILE)
WARN_BYTES = 10 << 20
LIMIT_BYTES = 200 << 20


@dataclass(frozen=True)
class CodeFile(LocalFile):
    remote: str  # its path in the task (posix), e.g. code/nets/vision.py
    local: Path


@dataclass(frozen=True)
class Code:
    """A job's code: its files, the field that names it, and the folder (or file) they come from."""

    field: str  # model.source or script.path
    origin: Path  # the file, or the folder, that travels
    files: tuple[CodeFile, ...]
    warnings: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def hash(self) -> str:
        h = hashlib.sha256()
        for f in sorted(self.files, key=lambda f: f.remote):
            h.update(f"{f.remote}\0{f.sha256}\n".encode())
        return h.hexdigest()


def code_field(job: Job) -> str | None:
    if job.script is not None:
        return "script.path"
    return "model.source" if job.model.kind == "module" else None


def portable(job: Job) -> dict[str, str]:
    """The code fields' values in the task: model.source -> code/net.py (a .py file) or code (a
    folder); script.path -> code/<the script, below its folder>; script.source -> code."""
    if job.script is not None:
        if job.script.source is None:
            return {"script.path": f"{ROOT}/{PurePosixPath(job.script.path).name}"}
        rel = _below(job.script.path, job.script.source)
        return {"script.path": f"{ROOT}/{rel}", "script.source": ROOT}
    if job.model.kind == "module":
        source = job.model.source
        if source.endswith(".py") or is_package(job):
            return {"model.source": f"{ROOT}/{PurePosixPath(source.rstrip('/')).name}"}
        return {"model.source": ROOT}
    return {}


def is_package(job: Job) -> bool:
    """Is a module job's folder a package its class is named in (`nets` with `nets.vision:Net`)?"""
    name = PurePosixPath(job.model.source.rstrip("/")).name
    return not job.model.source.endswith(".py") and job.model.class_.split(":")[0].split(".")[0] == name


def _below(path: str | Path, folder: str | Path) -> str:
    rel = PurePosixPath(os.path.relpath(os.path.normpath(path), os.path.normpath(folder)))
    if rel.parts and rel.parts[0] == "..":
        raise JobError(f"script.path {path}: it is not inside script.source {folder}",
                       hint=f"put the script in {folder}, or point script.source at a folder that holds it")
    return rel.as_posix()


def find_code(job: Job, base_dir: Path, job_file: str | Path | None = None) -> Code | None:
    """The job's code files (None: a built-in model, no code to ship); `job_file`, the job's own
    file, stays home too (it travels as job.json).  One-line JobErrors for a path that is not
    there, not Python, special, a link, or a folder over the limit."""
    # (a bare script, `qtrain run train.py`, is its own job file: it travels, as the code)
    home = {Path(job_file).resolve()} if job_file and Path(job_file).suffix != ".py" else set()
    field = code_field(job)
    if field is None:
        return None
    if job.script is not None:
        script = resolve(job.script.path, base_dir)
        _python_file(script, "script.path", folder_ok=False)
        origin = resolve(job.script.source, base_dir) if job.script.source else script.parent
        if job.script.source is not None:
            if not origin.is_dir():
                raise JobError(f"script.source {origin}: not a folder", hint="give the folder the script needs "
                                                                             "(its modules), or leave it out")
            _below(script.resolve(), origin.resolve())
        files = _folder(origin, job, base_dir, field, home=home)
    else:
        origin = resolve(job.model.source, base_dir)
        if origin.is_dir():
            files = _folder(origin, job, base_dir, field, f"{ROOT}/{origin.name}" if is_package(job) else ROOT,
                            home)
        else:
            _python_file(origin, "model.source")
            files = [CodeFile(f"{ROOT}/{origin.name}", origin)]
    code = Code(field, origin, tuple(files))
    size = code.size
    if size > LIMIT_BYTES:
        raise JobError(f"{field}: the code folder {origin} holds {size / 2**20:.0f} MiB, more than the "
                       f"{LIMIT_BYTES >> 20} MiB code may take ({_largest(code)})",
                       hint=f"data belongs in data.path; list what stays home in {origin / IGNORE_FILE}")
    if size > WARN_BYTES:
        code = Code(field, origin, code.files, (f"{field}: the code folder {origin} holds {size / 2**20:.0f} MiB "
                                                f"({_largest(code)}): is all of it code? {IGNORE_FILE} "
                                                f"keeps what it names at home",))
    return code


def _python_file(path: Path, field: str, folder_ok: bool = True) -> None:
    if not path.exists():
        raise JobError(f"{field} {path}: not found", hint="the path is relative to the job file")
    if kind := special_kind(path):
        raise JobError(f"{field} {path}: is {kind}, not a Python file")
    if path.is_dir():
        if folder_ok:
            return
        raise JobError(f"{field} {path}: a folder, not a Python file",
                       hint="give the script's .py file (script.source names the folder that travels with it)")
    if path.suffix != ".py":
        raise JobError(f"{field} {path}: not a Python file (.py)", hint="give the .py file of your code")


def _folder(origin: Path, job: Job, base_dir: Path, field: str, root: str = ROOT,
            home: set[Path] = frozenset()) -> list[CodeFile]:  # type: ignore[assignment]
    patterns = list(ALWAYS_IGNORED) + _ignore_file(origin / IGNORE_FILE)
    data = _data_paths(job, base_dir) | home | _qtrain_folders()
    found = []
    for dirpath, dirnames, filenames in os.walk(origin):
        here = Path(dirpath)
        for name in list(dirnames):
            path = here / name
            rel = path.relative_to(origin).as_posix()
            if ((path / "pyvenv.cfg").exists() or _ignored(rel + "/", patterns) or path.resolve() in data
                    or _qtrain_output(path)):
                dirnames.remove(name)
            elif path.is_symlink():
                raise JobError(f"{field}: {path} in the code folder is a symbolic link",
                               hint=f"copy what it points to in, or name it in {IGNORE_FILE}")
        for name in filenames:
            path = here / name
            rel = path.relative_to(origin).as_posix()
            if _ignored(rel, patterns) or path.resolve() in data or is_job_file(path):
                continue
            if path.is_symlink():
                raise JobError(f"{field}: {path} in the code folder is a symbolic link",
                               hint=f"copy what it points to in, or name it in {IGNORE_FILE}")
            if kind := special_kind(path):
                raise JobError(f"{field}: {path} in the code folder is {kind}, not a file")
            found.append(CodeFile(f"{root}/{rel}", path))
    return sorted(found, key=lambda f: f.remote)


JOB_SUFFIXES = (".yaml", ".yml", ".json")


def is_job_file(path: Path) -> bool:
    """A qtrain job file (a mapping of job fields with a name and a script, model or data): it
    travels as job.json, never as code, and editing it never changes the code's hash.  A config
    file the script reads (anything else) is code."""
    if path.suffix.lower() not in JOB_SUFFIXES or not path.is_file() or path.stat().st_size > 1 << 20:
        return False
    import json

    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return False
    return (isinstance(data, dict) and "name" in data and bool({"script", "model", "data"} & set(data))
            and set(data) <= set(Job.model_fields))


def _ignore_file(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """gitignore-like: `name` or `name/` anywhere, `/name` at the root, globs on a name or a path."""
    is_dir = rel.endswith("/")
    path = rel.rstrip("/")
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if pattern.endswith("/") and not is_dir:
            continue
        p = pattern.rstrip("/")
        if p.startswith("/"):
            if fnmatch.fnmatch(path, p[1:]):
                return True
        elif "/" in p:
            if fnmatch.fnmatch(path, p):
                return True
        elif fnmatch.fnmatch(name, p):
            return True
    return False


def _data_paths(job: Job, base_dir: Path) -> set[Path]:
    """The job's data (and other path fields): never shipped as code, even from inside its folder."""
    dumped = job.model_dump(mode="json")
    found = set()
    for field in PATH_FIELDS:
        value = get_dotted(dumped, field)
        if local_value(value):
            found.add(resolve(value, base_dir).resolve())
    return found


def _qtrain_output(folder: Path) -> bool:
    """A results folder (`qtrain train --out`) or a results store (`--store`): never code."""
    return ((folder / "run.json").is_file() and (folder / "metrics.json").is_file()) or \
        ((folder / "index.sqlite").is_file() and (folder / "runs").is_dir())


def _qtrain_folders() -> set[Path]:
    """qtrain's own folders (where they are inside a code folder, they are not code)."""
    from jobs import settings

    paths = settings.paths()
    return {p.resolve() for p in (paths.store_dir(), paths.state_dir(), paths.config_dir())}


def _largest(code: Code) -> str:
    """What makes a code folder large: its biggest top-level entries."""
    sizes: dict[str, int] = {}
    for f in code.files:
        top = f.remote.split("/")[1] if f.remote.count("/") > 1 else f.remote.split("/")[-1]
        sizes[top] = sizes.get(top, 0) + f.size
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in biggest)
