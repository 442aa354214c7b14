"""Small helpers shared by test folders: waiting on a condition, and the processes that run in a
task's folder (found by their working directory, as the emulator itself finds orphans)."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def sh(script: str) -> str:
    """A DOCKER_CMD that runs `script` in a shell: Qarnot runs DOCKER_CMD's words with no shell in
    between (its own samples write `sh -c "..."`), and so does the emulator."""
    return "sh -c " + shlex.quote(script)


def wait_for(predicate, timeout: float = 60, every: float = 0.2):
    """The predicate's first true value, polled every `every` seconds; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s: {predicate}")


def processes_in(folder: Path | str) -> list[int]:
    """Pids of the processes whose working directory lies in (or names) `folder`."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if str(folder) in cwd:
                found.append(int(proc.name))
    return found


def kill_instance(task_uuid: str) -> None:
    """SIGKILL the process that runs in the task's instance folder (a machine lost mid-training)."""
    pids = processes_in(task_uuid)
    if not pids:
        raise AssertionError(f"no process runs task {task_uuid}")
    os.kill(pids[0], signal.SIGKILL)


@contextmanager
def foreground_emulator(tmp_path, **env):
    """An emulator of its own (`qtrain emulator serve`, process executor) with `env` (its modes and
    limits), its state under `tmp_path`; yields a `qarnot` SDK connection to it."""
    import qarnot

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full = {**os.environ, "QTRAIN_STATE_DIR": str(tmp_path / "state"), "QTRAIN_CONFIG_DIR": str(tmp_path / "config"),
            **env}
    proc = subprocess.Popen([sys.executable, "-m", "submit", "emulator", "serve", "--port", str(port),
                             "--token", "mode-token", "--executor", "process"], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "qtrain emulator: API" in line, line
        yield qarnot.connection.Connection(client_token="mode-token", cluster_url=f"http://127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel of `files` (module path -> source), as `pip wheel` would make it: a
    package index of one's own, with no network and no build backend."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: qtrain-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    contents[f"{info}/top_level.txt"] = "\n".join(sorted({p.split("/")[0].removesuffix(".py") for p in files})) + "\n"
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


def docker_skip_reason() -> str | None:
    """Why the docker tests cannot run here (no engine, or no runner image), else None."""
    from submit.image import CPU_TAG, docker_problem, image_id

    problem = docker_problem()
    if problem:
        return f"no Docker engine: {problem}"
    if image_id(CPU_TAG) is None:
        return f"the runner image {CPU_TAG} is not built (qtrain image build --offline)"
    return None


def _hold_run_lock(root: str, run_id: str, name: str, ready) -> None:
    from submit.store import Store

    with Store(Path(root)).run_lock(run_id, name):
        ready.set()
        time.sleep(600)  # until killed: flock lets go with the process


@contextmanager
def run_lock_held(store_root: Path | str, run_id: str, name: str):
    """Another process holds the run's `name` lock (as a concurrent qtrain would) while the block runs."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_run_lock, args=(str(store_root), run_id, name, ready))
    holder.start()
    try:
        assert ready.wait(60), "the lock holder did not start"
        yield
    finally:
        holder.kill()
        holder.join(30)
