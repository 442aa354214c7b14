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
