"""`qtrain image build|push`: the runner images (docker/Dockerfile), built online or offline.

Offline (a machine with no registry, like CI here): the base image is made with debootstrap +
`docker import` when none is given (cached as qtrain/base:bookworm), and the Python packages come
from docker/wheelhouse, filled on the host by `pip download` (skipped while the requirements file
is unchanged).  Docker's layer cache does the rest: a code change rebuilds two COPY layers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.errors import QtrainError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = PROJECT_ROOT / "docker"
WHEELHOUSE = DOCKER_DIR / "wheelhouse"
CPU_TAG = "qtrain/runner:latest"
GPU_TAG = "qtrain/runner:gpu"
OFFLINE_BASE = "qtrain/base:bookworm"
GPU_BASE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
TORCH_INDEX = {"cpu": "https://download.pytorch.org/whl/cpu", "gpu": "https://download.pytorch.org/whl/cu128"}


@dataclass
class Built:
    tag: str
    image_id: str
    seconds: float
    source_digest: str


def docker_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 20 s"
    if proc.returncode != 0:
        return "no Docker engine answers (" + " ".join(proc.stderr.split())[:200] + ")"
    return None


@functools.lru_cache(maxsize=32)
def inspect(tag: str) -> dict | None:
    """`docker image inspect` of a local image (one call, remembered), or None when it is not here
    or no engine runs."""
    if shutil.which("docker") is None:
        return None
    proc = subprocess.run(["docker", "image", "inspect", "--format",
                           "{{json .Id}} {{json .RepoDigests}} {{json .Config.Labels}}", "--", tag],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    ident, digests, labels = (json.loads(part) for part in proc.stdout.split(" ", 2))
    return {"id": ident, "repo_digests": digests or [], "labels": labels or {}}


def image_id(tag: str) -> str | None:
    """The local image's id (sha256:...), or None when it is not here (or no engine runs)."""
    info = _fresh_inspect(tag)
    return info["id"] if info else None


def _fresh_inspect(tag: str) -> dict | None:
    inspect.cache_clear()  # builds and removals happen between calls: ask again
    return inspect(tag)


def image_digest(tag: str) -> str | None:
    """What identifies the image a task will run: its registry digest once pushed, else its id."""
    info = inspect(tag)
    if not info:
        return None
    return info["repo_digests"][0] if info["repo_digests"] else info["id"]


def stale_image(tag: str) -> bool:
    """Is the local image `tag` a qtrain runner built from other code than this checkout's?"""
    info = inspect(tag)
    label = (info or {}).get("labels", {}).get("org.qtrain.source-digest")
    if not label or label == "unknown" or not (DOCKER_DIR / "Dockerfile").is_file():
        return False
    return label not in (source_digest(DOCKER_DIR / f"requirements-{k}.txt") for k in ("cpu", "gpu"))


def source_digest(requirements: Path) -> str:
    """sha256 over what goes into the image: jobs/, runner/ and the requirements file."""
    h = hashlib.sha256()
    files = [requirements, DOCKER_DIR / "Dockerfile"]
    for pkg in ("jobs", "runner"):
        files += sorted(p for p in (PROJECT_ROOT / pkg).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts)
    for f in files:
        h.update(f.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _reference(value: str, what: str) -> str:
    """`value` when it is an image reference; a one-line error naming `what` otherwise."""
    from jobs.imageref import image_error

    problem = image_error(value)
    if problem:
        raise QtrainError(f"{what}: {problem}")
    return value


def _require_checkout() -> None:
    if not (DOCKER_DIR / "Dockerfile").is_file():
        raise QtrainError(f"{DOCKER_DIR / 'Dockerfile'}: not found",
                          hint="image build runs from a qtrain checkout (git clone ...; pip install -e .)")


def _run(cmd: list[str], what: str, log, **kwargs) -> None:
    """Run a build step, streaming its output to `log` (line by line)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    tail: list[str] = []
    for line in proc.stdout:  # type: ignore[union-attr]
        line = line.rstrip()
        tail = (tail + [line])[-8:]
        log(line)
    if proc.wait() != 0:
        raise QtrainError(f"{what} failed (exit status {proc.returncode}): " + " | ".join(tail[-3:]))


def ensure_offline_base(log) -> str:
    """qtrain/base:bookworm (Debian minbase + python3 + venv), made once with debootstrap."""
    if image_id(OFFLINE_BASE):
        return OFFLINE_BASE
    if shutil.which("debootstrap") is None:
        raise QtrainError("--offline needs a base image and debootstrap is not installed",
                          hint="apt-get install debootstrap, or give --base IMAGE")
    if os.geteuid() != 0:
        raise QtrainError("--offline makes its base image with debootstrap, which needs root",
                          hint="run it as root once, or give --base IMAGE")
    with tempfile.TemporaryDirectory(prefix="qtrain-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"making {OFFLINE_BASE} with debootstrap (about a minute, once)")
        _run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm",
              str(rootfs)], "debootstrap", log)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "-", OFFLINE_BASE], stdin=tar.stdout,
                             capture_output=True, text=True)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise QtrainError(f"docker import of the debootstrap base failed: {imp.stderr.strip()}")
    return OFFLINE_BASE


def ensure_wheelhouse(requirements: Path, log) -> None:
    """docker/wheelhouse holds every pinned wheel (pip download on the host), refreshed only when
    the requirements file changes."""
    stamp = WHEELHOUSE / ".requirements.sha256"
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == want:
        log(f"wheelhouse up to date ({WHEELHOUSE})")
        return
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "-d", str(WHEELHOUSE), "-r", str(requirements)]
    if sys.version_info[:2] != (3, 11):  # the debootstrap base (bookworm) has Python 3.11
        cmd[4:4] = ["--python-version", "3.11"]
    log("filling the wheelhouse with pip download")
    _run(cmd, "pip download", log)
    stamp.write_text(want + "\n")


def build(*, gpu: bool = False, tag: str | None = None, offline: bool = False,
          base: str | None = None, log=print) -> Built:
    _require_checkout()
    problem = docker_problem()
    if problem:
        raise QtrainError(f"cannot build the runner image: {problem}",
                          hint="start Docker (dockerd), or run jobs with the process executor")
    kind = "gpu" if gpu else "cpu"
    tag = _reference(tag or (GPU_TAG if gpu else CPU_TAG), "--tag")
    if base is not None:
        _reference(base, "--base")
    requirements = DOCKER_DIR / f"requirements-{kind}.txt"
    if offline:
        if gpu and base is None:
            raise QtrainError("--offline --gpu needs --base: a CUDA base image already on this machine")
        base = base or ensure_offline_base(log)
        ensure_wheelhouse(requirements, log)
    base = base or (GPU_BASE if gpu else None)
    digest = source_digest(requirements)
    cmd = ["docker", "build", "-f", str(DOCKER_DIR / "Dockerfile"), "-t", tag,
           "--build-arg", f"REQUIREMENTS=docker/requirements-{kind}.txt",
           "--build-arg", f"TORCH_INDEX={TORCH_INDEX[kind]}",
           "--build-arg", f"OFFLINE={1 if offline else 0}",
           "--build-arg", f"QTRAIN_SOURCE_DIGEST={digest}"]
    if base:
        cmd += ["--build-arg", f"BASE={base}"]
    cmd += ["--", str(PROJECT_ROOT)]
    t0 = time.perf_counter()
    _run(cmd, "docker build", log, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return Built(tag, image_id(tag) or "", time.perf_counter() - t0, digest)


def push(source: str, target: str, log=print) -> str:
    """Tag the local image as `target` and push it; returns the pushed digest."""
    problem = docker_problem()
    if problem:
        raise QtrainError(f"cannot push: {problem}")
    _reference(source, "the image")
    _reference(target, "the target")
    if image_id(source) is None:
        raise QtrainError(f"image {source} is not on this machine", hint="qtrain image build first")
    if source != target:
        _run(["docker", "tag", "--", source, target], "docker tag", log)
    _run(["docker", "push", "--", target], "docker push", log)
    inspect.cache_clear()  # the push added a registry digest
    return image_digest(target) or ""


# ------------------------------------------------------------------------------ derived images
REQUIREMENTS_LABEL = "org.qtrain.requirements-hash"
BASE_LABEL = "org.qtrain.base-id"
DERIVED = """\
FROM {base}
USER root
COPY wheels/ /tmp/qtrain-wheels/
COPY requirements.txt /tmp/qtrain-requirements.txt
RUN python -m pip install --no-cache-dir --disable-pip-version-check --no-index \\
      --find-links /tmp/qtrain-wheels -r /tmp/qtrain-requirements.txt \\
    && rm -rf /tmp/qtrain-wheels /tmp/qtrain-requirements.txt
LABEL {requirements_label}={requirements_hash} {base_label}={base_id}
USER {user}
"""


def derived_tag(image: str, reqs) -> str:
    """The image a job with requirements runs: `IMAGE-req-<hash>` (its tag, suffixed)."""
    from jobs.imageref import parse_image

    ref = parse_image(image)
    tag = ref.docker_tag.split("@")[0]
    return f"{ref.name}:{tag[:100]}-req-{reqs.hash()[:12]}"


def derived_state(image: str, reqs) -> str:
    """ok | missing | stale (built from another build of its base)."""
    info = _fresh_inspect(derived_tag(image, reqs))
    if info is None:
        return "missing"
    base = inspect(image)
    if base is not None and info["labels"].get(BASE_LABEL) != base["id"]:
        return "stale"
    return "ok"


def _image_packages() -> dict[str, set[str]]:
    """The runner image's packages (normalised name -> versions), from its pinned requirements."""
    from submit.run.environment import normal

    found: dict[str, set[str]] = {}
    for kind in ("cpu", "gpu"):
        path = DOCKER_DIR / f"requirements-{kind}.txt"
        for line in path.read_text().splitlines() if path.is_file() else []:
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                found.setdefault(normal(name), set()).add(version.split("+")[0].strip())
    return found


def _image_python(base: str) -> str:
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", "--", base, "-c",
                           "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise QtrainError(f"image {base}: its Python cannot be run ({' '.join(proc.stderr.split())[:200]})")
    return proc.stdout.strip()


def build_derived(reqs, base: str = CPU_TAG, log=print) -> Built:
    """The runner image `base` plus the packages of `reqs` (`derived_tag`), built unless an
    up-to-date one is here.  The wheels come from this machine's package index or the
    requirements' --find-links folders (`pip download`): the build itself needs no network."""
    from submit.run.environment import closure, normal, pip

    t0 = time.perf_counter()
    problem = docker_problem()
    if problem:
        raise QtrainError(f"resources.requirements: the image with them cannot be built: {problem}",
                          hint="start Docker, or use the process executor")
    _reference(base, "the base image")
    base_info = _fresh_inspect(base)
    if base_info is None:
        raise QtrainError(f"resources.requirements: the base image {base} is not on this machine",
                          hint="qtrain image build (or docker pull it) first")
    tag = derived_tag(base, reqs)
    if derived_state(base, reqs) == "ok":
        return Built(tag, image_id(tag) or "", 0.0, base_info["labels"].get("org.qtrain.source-digest", ""))
    has = _image_packages()
    need = [d for d in closure(reqs) if d.version.split("+")[0] not in has.get(normal(d.name), set())]
    user = subprocess.run(["docker", "image", "inspect", "--format", "{{.Config.User}}", "--", base],
                          capture_output=True, text=True).stdout.strip() or "root"
    with tempfile.TemporaryDirectory(prefix="qtrain-derived-") as tmp:
        ctx = Path(tmp)
        (ctx / "wheels").mkdir()
        if need:
            log(f"fetching {len(need)} wheel(s) for {tag}: {', '.join(d.pin for d in need)}")
            python = _image_python(base)
            extra = [] if python == f"{sys.version_info[0]}.{sys.version_info[1]}" else \
                ["--python-version", python, "--only-binary=:all:"]
            pip(["download", "--quiet", "--no-deps", "-d", str(ctx / "wheels"), *extra, *reqs.options,
                 *[d.pin for d in need]], reqs, "fetching the wheels")
        (ctx / "requirements.txt").write_text(reqs.text(options=False))
        (ctx / "Dockerfile").write_text(DERIVED.format(base=base, requirements_label=REQUIREMENTS_LABEL,
                                                       requirements_hash=reqs.hash(), base_label=BASE_LABEL,
                                                       base_id=base_info["id"], user=user))
        log(f"building {tag} (once for these requirements)")
        _run(["docker", "build", "-t", tag, "--", str(ctx)], f"docker build of {tag}",
             lambda line: log(line) if line.startswith(("Step ", "Successfully built")) else None,
             env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return Built(tag, image_id(tag) or "", time.perf_counter() - t0,
                 base_info["labels"].get("org.qtrain.source-digest", ""))
