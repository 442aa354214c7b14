"""The shape of the code, held by tests: no import cycles, no file past 500 lines, one reader of
settings, one door into the runner, and packages that say what they own."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from jobs import settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jobs", "runner", "submit")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module `name` imports, wherever the import stands (in a function, under
    `if TYPE_CHECKING:`): `from a.b import c` counts a.b.c when c is a module, else a.b."""

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [known(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            targets = [known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else known(base)
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t and t != name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_one_that_imports_it_back():
    modules = _modules()
    graph = defaultdict(set, {name: _imports(name, path, modules) for name, path in modules.items()})
    assert not _cycles(graph), "import cycles (imports in functions and TYPE_CHECKING count):\n" + \
        "\n".join(" <-> ".join(c) for c in _cycles(graph))


def test_the_cycle_finder_finds_a_cycle():
    graph = defaultdict(set, {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_source_file_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


# where the environment may be read or set: the settings module, and code that builds a child
# process's environment (file -> the functions)
ENVIRONMENT = {
    "jobs/settings.py": {"read", "describe", "library_defaults", "overriding"},
    "runner/warm.py": {"become"},  # the forked instance's own environment
    "runner/userscript.py": {"run_script"},  # a script job's
    "runner/distributed.py": {"launch"},  # torchrun's workers' (their threads)
    "submit/image.py": {"build", "build_derived"},  # docker build's
    "submit/run/environment.py": {"pip"},  # pip's
    "submit/emulator/daemon.py": {"_start_locked"},  # the daemon's
    "submit/emulator/docker.py": {"start"},  # the docker client's (it passes the instance's values on)
    "submit/emulator/process.py": {"environment"},  # a process instance's
}


def _environment_uses(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    owner: dict[int, str] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                owner.setdefault(id(node), fn.name)
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ("environ", "getenv", "putenv", "unsetenv"):
            uses.append((owner.get(id(node), "<module>"), node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and \
                any(a.name in ("environ", "getenv") for a in node.names):
            uses.append((owner.get(id(node), "<module>"), node.lineno))
    return uses


def test_the_environment_is_read_only_by_the_settings_module_and_child_builders():
    found = []
    for path in _modules().values():
        rel = str(path.relative_to(ROOT))
        for function, line in _environment_uses(path):
            if function not in ENVIRONMENT.get(rel, set()):
                found.append(f"{rel}:{line} ({function})")
    assert not found, "read settings through jobs.settings:\n" + "\n".join(found)


def test_the_submitter_reaches_the_runner_only_through_its_door():
    found = []
    for path in sorted((ROOT / "submit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "runner":
                if node.module != "runner.api":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}" for a in node.names
                          if a.name.split(".")[0] == "runner" and a.name != "runner.api"]
    assert not found, "use runner.api:\n" + "\n".join(found)


def test_the_runners_door_is_cheap_to_open():
    """Importing runner.api imports none of torch, pandas, sklearn (each call does, when made)."""
    import subprocess
    import sys

    probe = ("import sys, runner.api; "
             "print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_every_package_says_what_it_owns():
    silent = []
    for path in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if not doc or len(doc.split()) < 8:
            silent.append(str(path.relative_to(ROOT)))
    assert not silent, silent


def test_every_setting_is_listed_in_the_readme_with_its_default():
    readme = (ROOT / "README.md").read_text()
    missing = []
    for row in settings.describe():
        line = next((ln for ln in readme.splitlines() if ln.startswith(f"| `{row['name']}` |")), None)
        if line is None or (row["default"] is not None and row["default"] not in line):
            missing.append(row["name"])
    assert not missing, "README.md's table of settings lacks (or lacks the default of): " + ", ".join(missing)
