"""The packages a job's code needs beyond the runner's (`resources.requirements`, read by
`jobs.requirements`), made ready before anything is uploaded: a package the index does not have
is one line naming it, and nothing is sent.

- Where the runner runs on this machine's interpreter (`qtrain check`, `qtrain train`, the
  emulator's process executor), the packages this interpreter lacks go into a folder of their
  own, `<state>/requirements/site-<hash>-<python>/` (pip's resolver decides what is missing:
  `pip install --dry-run --report`, then exactly those with `pip install --target --no-deps`).
  The runner puts it first on its path (QTRAIN_SITE); this environment is never touched.
- Where the runner runs in an image (the docker executor, Qarnot), it runs a derived image: the
  runner image plus those packages (`submit.image.build_derived`), built from wheels fetched here.

Both are made once per requirements hash (its lines, options and local wheels) and reused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from jobs import settings
from jobs.errors import JobError
from jobs.requirements import FIELD, Requirements

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
PYTHON_TAG = f"py{sys.version_info[0]}{sys.version_info[1]}"


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    requires: tuple[str, ...] = ()

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def root() -> Path:
    return settings.paths().state_dir() / "requirements"


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------------- pip
def pip(args: list[str], reqs: Requirements, what: str, log: Callable[[str], None] | None = None) -> str:
    """Run pip; its output, or one line naming what went wrong (the package the index lacks, a
    conflict, an index that cannot be reached)."""
    proc = subprocess.run([*PIP, *args], capture_output=True, text=True,
                          env={**os.environ, "PIP_REQUIRE_VIRTUALENV": "0"})
    if proc.returncode != 0:
        raise pip_error(proc.stdout + proc.stderr, reqs, what)
    if log is not None:
        for line in proc.stdout.splitlines():
            if line.startswith(("Successfully", "Collecting", "Saved")):
                log(line)
    return proc.stdout


def pip_error(output: str, reqs: Requirements, what: str) -> JobError:
    missing = re.search(r"No matching distribution found for ([^\s]+)", output)
    versions = re.search(r"satisfies the requirement ([^\s]+) \(from versions: ([^)]*)\)", output)
    where = f"{FIELD} ({reqs.where})"
    if missing:
        name = missing.group(1)
        known = versions.group(2).strip() if versions else ""
        nowhere = "not in the wheel folder(s) it names" if "--no-index" in reqs.options else \
            "the package index has no such package"
        return JobError(f"{where}: {name}: {nowhere}" if known in ("", "none") else
                        f"{where}: {name}: no version of it fits (available: {known[:120]})",
                        hint="check the name and the version, or give a folder of wheels with --find-links")
    conflict = re.search(r"(Cannot install .*?conflicting dependencies\.|ResolutionImpossible[^\n]*)", output)
    if conflict:
        detail = re.findall(r"The conflict is caused by:\s*(.*?)(?:\n\n|To fix)", output, re.S)
        return JobError(f"{where}: the requirements conflict" + (f": {' '.join(detail[0].split())[:240]}" if detail else ""),
                        hint="loosen a version, or drop the package the runner image already has")
    if re.search(r"(Max retries exceeded|Failed to establish a new connection|Temporary failure in name "
                 r"resolution|Could not fetch URL|ConnectionError)", output):
        return JobError(f"{where}: the package index cannot be reached from this machine",
                        hint="try again online, or give a folder of wheels with --find-links DIR and --no-index")
    errors = [line.removeprefix("ERROR: ") for line in output.splitlines() if line.startswith("ERROR:")]
    last = errors[-1] if errors else (output.strip().splitlines() or ["no output"])[-1]
    return JobError(f"{where}: {what} failed: {' '.join(last.split())[:300]}",
                    hint="fix the requirements (pip's output above says what it could not do)")


# ------------------------------------------------------------------------------ what is missing
def missing(reqs: Requirements) -> list[Distribution]:
    """What this interpreter's environment lacks for `reqs`, as pip's resolver decides (cached by
    the requirements' hash)."""
    cache = root() / f"resolved-{reqs.hash()[:16]}-{PYTHON_TAG}.json"
    if cache.is_file():
        try:
            return [Distribution(d["name"], d["version"], tuple(d["requires"])) for d in json.loads(cache.read_text())]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache: resolved again
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qtrain-req-") as tmp:
        file = Path(tmp) / "requirements.txt"
        file.write_text(reqs.text())
        report = Path(tmp) / "report.json"
        pip(["install", "--dry-run", "--quiet", "--report", str(report), "-r", str(file)], reqs, "resolving")
        found = [Distribution(i["metadata"]["name"], i["metadata"]["version"],
                              tuple(i["metadata"].get("requires_dist") or ()))
                 for i in json.loads(report.read_text()).get("install", [])]
    tmp_cache = cache.with_suffix(".tmp")
    tmp_cache.write_text(json.dumps([{"name": d.name, "version": d.version, "requires": list(d.requires)}
                                     for d in found]))
    os.replace(tmp_cache, cache)
    return found


def closure(reqs: Requirements) -> list[Distribution]:
    """Every distribution `reqs` needs, with its dependencies: those pip would add here, and those
    this environment already has (their installed versions)."""
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    added = {normal(d.name): d for d in missing(reqs)}
    found: dict[str, Distribution] = {}
    todo = [Requirement(r) for r in reqs.requirements]
    env = default_environment()
    while todo:
        req = todo.pop()
        key = normal(req.name)
        if key in found or (req.marker is not None and not req.marker.evaluate({**env, "extra": ""})):
            continue
        dist = added.get(key)
        if dist is None:
            try:
                have = metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                continue  # pip found it satisfied some other way (a marker): nothing to ship
            dist = Distribution(have.metadata["Name"], have.version, tuple(have.requires or ()))
        found[key] = dist
        for line in dist.requires:
            sub = Requirement(line)
            if sub.marker is None or sub.marker.evaluate({**env, "extra": ",".join(req.extras) or ""}) \
                    or any(sub.marker.evaluate({**env, "extra": e}) for e in req.extras):
                todo.append(sub)
    return sorted(found.values(), key=lambda d: normal(d.name))


# ----------------------------------------------------------------------------------- the site
def ensure_site(reqs: Requirements, log: Callable[[str], None] = lambda line: None) -> Path:
    """The folder of what this interpreter lacks for `reqs` (made once per hash)."""
    folder = root() / f"site-{reqs.hash()[:16]}-{PYTHON_TAG}"
    if (folder / ".complete").is_file():
        return folder
    todo = missing(reqs)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root()))
    try:
        if todo:
            log(f"installing {', '.join(d.pin for d in todo)} for {reqs.where} (once)")
            pip(["install", "--quiet", "--no-deps", "--target", str(staging), *reqs.options,
                 *[d.pin for d in todo]], reqs, "installing", log)
        (staging / ".complete").write_text("\n".join(d.pin for d in todo) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def job_site(loaded: Any, log: Callable[[str], None] = lambda line: None) -> tuple[Requirements | None, Path | None]:
    """(the job's requirements, the folder of what this interpreter lacks for them), or (None,
    None) for a job that names none."""
    from jobs.requirements import find_requirements

    reqs = find_requirements(loaded.job, loaded.base_dir)
    return (reqs, ensure_site(reqs, log)) if reqs is not None else (None, None)


def installed(site: Path) -> list[str]:
    """What a site folder added (name==version each)."""
    marker = site / ".complete"
    return [line for line in marker.read_text().splitlines() if line] if marker.is_file() else []


def describe(reqs: Requirements, site: Path) -> dict[str, Any]:
    return {"requirements": list(reqs.requirements), "requirements_hash": reqs.hash(), "site": str(site),
            "installed": installed(site)}
