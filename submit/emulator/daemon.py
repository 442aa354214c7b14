"""The emulator as a process: `serve` in the foreground, or a detached daemon found through its
state file (`<state dir>/emulator/daemon.json`: pid, API and S3 URLs, executor, log).

The token is generated at first start and kept in `<config dir>/emulator-token` with 0600
permissions; the daemon reads it from there (never from its command line, which `ps` shows).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.errors import QtrainError
from submit import config
from submit.emulator.executors import pid_alive


@dataclass
class Endpoint:
    """Where a running emulator answers."""

    url: str
    s3_url: str
    token: str
    pid: int
    executor: str
    log: Path


def home() -> Path:
    return config.state_dir() / "emulator"


def state_file() -> Path:
    return home() / "daemon.json"


def log_file() -> Path:
    return home() / "daemon.log"


def token_file() -> Path:
    return config.config_dir() / "emulator-token"


def ensure_token() -> str:
    """The emulator's token, made (0600) on first use."""
    path = token_file()
    if path.is_file():
        token = path.read_text().strip()
        if token:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


# ------------------------------------------------------------------------------- foreground
def serve(port: int = 0, token: str | None = None, executor: str = "process", host: str = "127.0.0.1",
          s3_port: int = 0, write_state: bool = False, announce=print) -> None:
    """Run the API and S3 servers until SIGTERM/SIGINT; abort every task on the way out."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from submit.emulator.api import Api, make_server
    from submit.emulator.executors import make_executor
    from submit.emulator.storage import Storage
    from submit.emulator.tasks import TaskManager

    token = token or ensure_token()
    s3 = ThreadedMotoServer(ip_address=host, port=s3_port, verbose=False)
    s3.start()
    _, s3_bound = s3.get_host_and_port()
    s3_url = f"http://{host}:{s3_bound}"
    manager = TaskManager(_work_dir(), Storage(s3_url, home() / "cache"), make_executor(executor))
    server = make_server(Api(manager, token, s3_url), host, port)
    url = f"http://{host}:{server.server_address[1]}"

    stopping = threading.Event()

    def stop(signum, frame):  # noqa: ARG001
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if write_state:
        _write_state({"pid": os.getpid(), "url": url, "s3_url": s3_url, "executor": executor,
                      "started": time.time(), "log": str(log_file())})
    announce(f"qtrain emulator: API {url}  S3 {s3_url}  executor {executor}  (pid {os.getpid()})")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        manager.shutdown()
        manager.executor.close()
        shutil.rmtree(manager.work_dir, ignore_errors=True)
        server.server_close()
        s3.stop()
        if write_state:
            _clear_state(os.getpid())
        announce("qtrain emulator: stopped")


def _work_dir() -> Path:
    """This process's task folders.  Those of emulators that are gone are removed: their tasks
    lived in memory and went with them, and the folders hold copies of every dataset."""
    root = home() / "tasks"
    if root.is_dir():
        for old in root.iterdir():
            if old.is_dir() and not (old.name.isdigit() and pid_alive(int(old.name))):
                shutil.rmtree(old, ignore_errors=True)
    return root / str(os.getpid())


def _write_state(data: dict[str, Any]) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _clear_state(pid: int) -> None:
    data = _read_state()
    if data and data.get("pid") == pid:
        state_file().unlink(missing_ok=True)


def _read_state() -> dict[str, Any] | None:
    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------- daemon
def running() -> Endpoint | None:
    """The running daemon, or None (a stale state file is removed)."""
    data = _read_state()
    if not data:
        return None
    if not pid_alive(int(data["pid"])):
        state_file().unlink(missing_ok=True)
        return None
    return Endpoint(data["url"], data["s3_url"], ensure_token(), int(data["pid"]),
                    data.get("executor", "process"), Path(data.get("log") or log_file()))


def default_executor() -> str:
    """QTRAIN_EMULATOR_EXECUTOR, else `docker` where an engine answers and the runner image is
    there, else `process`."""
    from submit.image import CPU_TAG, docker_problem, image_id

    if config.EMULATOR_EXECUTOR:
        return config.EMULATOR_EXECUTOR
    return "docker" if docker_problem() is None and image_id(CPU_TAG) else "process"


def start(executor: str | None = None, port: int = 0, timeout: float = 60) -> tuple[Endpoint, bool]:
    """The running daemon, started (detached) if needed.  Returns (endpoint, started_now).
    Several `qtrain run` starting at once share one daemon: the first starts it under a lock."""
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start_locked(executor, port, timeout)


def _start_locked(executor: str | None, port: int, timeout: float) -> tuple[Endpoint, bool]:
    current = running()
    if current is not None:
        if executor and executor != current.executor:
            raise QtrainError(f"the emulator is already running with the {current.executor} executor",
                              hint="qtrain emulator stop first, then start it with --executor")
        return current, False
    ensure_token()
    executor = executor or default_executor()
    if executor == "docker":
        from submit.image import docker_problem

        problem = docker_problem()
        if problem:
            raise QtrainError(f"the docker executor needs a Docker engine: {problem}",
                              hint="start dockerd, or use --executor process")
    elif executor != "process":
        raise QtrainError(f"unknown executor {executor!r}", hint="choose docker or process")
    home().mkdir(parents=True, exist_ok=True)
    log = open(log_file(), "ab")
    cmd = [sys.executable, "-m", "submit.emulator.daemon", "--port", str(port), "--executor", executor]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, close_fds=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = _read_state()
        if data and data.get("pid") == proc.pid:
            return running() or _fail_start(proc), True
        if proc.poll() is not None:
            _fail_start(proc)
        time.sleep(0.05)
    proc.terminate()
    _fail_start(proc)
    raise AssertionError("unreachable")


def _fail_start(proc: subprocess.Popen) -> Endpoint:
    tail = ""
    try:
        tail = " | ".join(log_file().read_text(errors="replace").strip().splitlines()[-3:])
    except OSError:
        pass
    raise QtrainError(f"the local emulator did not start (exit status {proc.poll()}): {tail}",
                      hint=f"see {log_file()}")


def stop(timeout: float = 30) -> bool:
    """Stop the daemon (its running tasks are aborted).  False when none was running."""
    current = running()
    if current is None:
        return False
    os.kill(current.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(current.pid):
        time.sleep(0.05)
    if pid_alive(current.pid):
        os.kill(current.pid, signal.SIGKILL)
    state_file().unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m submit.emulator.daemon")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--executor", default="process")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every S3 request
    serve(port=args.port, executor=args.executor, write_state=True,
          announce=lambda m: print(time.strftime("%Y-%m-%d %H:%M:%S"), m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
