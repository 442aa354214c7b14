"""A script job's check, before anything is sent: the script parses, and each module it imports is
one the job's environment has (the runner image's packages, the standard library, the script's own
code, its requirements)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

from jobs.code import find_code
from jobs.errors import JobError
from jobs.files import resolve
from jobs.load import LoadedJob


def check_script(loaded: LoadedJob, extra_paths: list[Path] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Before a script job is sent: the script parses, and each module it imports is one the job's
    environment has (the runner image's packages, the standard library, the script's own code,
    `extra_paths`: its requirements).  One line for the first that is not."""
    job = loaded.job
    code = find_code(job, loaded.base_dir, loaded.source)
    script = resolve(job.script.path, loaded.base_dir)
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    except SyntaxError as exc:
        raise JobError(f"script.path {job.script.path}:{exc.lineno}: syntax error: {exc.msg}"
                       + (f": {(exc.text or '').strip()}" if exc.text else ""),
                       hint="fix the script, then qtrain check again") from None
    except UnicodeDecodeError as exc:
        raise JobError(f"script.path {job.script.path}: not utf-8 text ({exc.reason})") from None
    local = _local_modules(code)
    available = runner_modules() | set(sys.stdlib_module_names) | local | _modules_in(extra_paths) | \
        _required_modules(loaded)
    imports = []
    for node, name, line in _imports(tree):
        imports.append(name)
        if name not in available:
            raise JobError(f"script.path {job.script.path}:{line}: imports {name}, which the runner's environment "
                           f"does not have", hint="add it to resources.requirements (a requirements file or a list)")
    return {"job": job.name, "script": job.script.path, "imports": sorted(set(imports)),
            "code_files": len(code.files) if code else 0, "trials": len(loaded.trials)}


def _imports(tree: ast.AST):
    """(node, top-level module, line) of each absolute import, those inside a try that catches
    ImportError (optional imports) left out."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                h.type is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError",
                                                                         "Exception")
                                      for n in ast.walk(h.type)) for h in node.handlers):
            for inner in node.body:
                guarded.update(id(n) for n in ast.walk(inner))
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else []
        for name in names:
            yield node, name.split(".")[0], node.lineno
            for module, needs in NEEDS.items():  # a module of a package that imports another's
                if name == module or name.startswith(module + "."):
                    yield node, needs, node.lineno


# modules that import a package their own distribution does not bring (torch's SummaryWriter is
# TensorBoard's writer): the script needs that package too
NEEDS = {"torch.utils.tensorboard": "tensorboard"}


def _required_modules(loaded: LoadedJob) -> set[str]:
    """The modules of what resources.requirements names (as this machine maps distributions to
    modules): a package the requirements bring is there, whether this interpreter has it already
    or its site folder does."""
    from importlib import metadata

    from jobs.requirements import find_requirements

    reqs = find_requirements(loaded.job, loaded.base_dir)
    if reqs is None:
        return set()
    wanted = {_normal(name) for name in reqs.names}
    return {module for module, dists in metadata.packages_distributions().items()
            if any(_normal(d) in wanted for d in dists)} | wanted


def _local_modules(code: Any) -> set[str]:
    names = set()
    for f in (code.files if code else ()):
        parts = f.remote.split("/")[1:]
        if parts:
            names.add(parts[0][:-3] if parts[0].endswith(".py") else parts[0])
    return names


def runner_modules() -> set[str]:
    """The modules the runner image provides: those of the distributions its pinned requirements
    name (docker/requirements-cpu.txt), as this machine maps distributions to modules; where that
    file is not at hand, every module this interpreter can import."""
    from importlib import metadata

    pinned = Path(__file__).resolve().parents[1] / "docker" / "requirements-cpu.txt"
    if not pinned.is_file():
        return _importable()
    wanted = set()
    for line in pinned.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            wanted.add(_normal(re.split(r"[=<>!~\[ ;]", line)[0]))
    found = {module for module, dists in metadata.packages_distributions().items()
             if any(_normal(d) in wanted for d in dists)}
    return found | {"jobs", "runner"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _importable() -> set[str]:
    import pkgutil

    return {m.name for m in pkgutil.iter_modules()} | {"jobs", "runner"}


def _modules_in(paths: Any) -> set[str]:
    import pkgutil

    return {m.name for m in pkgutil.iter_modules([str(p) for p in paths])} if paths else set()
