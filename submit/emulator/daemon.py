"""The emulator as a process: `serve` in the foreground, or a detached daemon found through its
state file (`<state dir>/emulator/daemon.json`: pid, API and S3 URLs, executor, log, data folder).

What it keeps lives in its data folder (`<state dir>/emulator/`, or `--state DIR`), and outlives it;
one emulator at a time serves a data folder (it holds `emulator.lock`, which names its pid):
    tasks.sqlite   every task, its states, errors and outputs (state.py)
    s3/            the buckets, on disk (SeaweedFS, s3server.py)
    cache/         resources downloaded for instances (by ETag)
    tasks/<pid>/   the instance folders of the running daemon (removed when it is gone)

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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from jobs import settings
from jobs.errors import QtrainError
from jobs.results import atomic_write
from submit.emulator.processes import pid_alive, send, stop_in


@dataclass
class Endpoint:
    """Where a running emulator answers."""

    url: str
    s3_url: str
    token: str
    pid: int
    executor: str
    log: Path
    data: Path | None = None
    storage: str = "seaweedfs"


def home() -> Path:
    return settings.paths().state_dir() / "emulator"


def state_file() -> Path:
    return home() / "daemon.json"


def log_file() -> Path:
    return home() / "daemon.log"


def data_dir(state: str | Path | None = None) -> Path:
    """Where the emulator keeps its tasks and buckets: --state DIR, else its home."""
    folder = Path(state).expanduser().absolute() if state else home()
    if folder.exists() and not folder.is_dir():
        raise QtrainError(f"--state {folder}: not a folder", hint="give the folder the emulator keeps its "
                                                                  "tasks and buckets in (it is made if missing)")
    return folder


LOCK = "emulator.lock"  # in the data folder: held by the emulator that serves it, and naming its pid


def hold_data(data: Path) -> IO[str]:
    """The data folder, for this emulator alone: an exclusive lock held for as long as the returned
    file is open (a kill -9 releases it).  A second emulator is refused before it touches anything
    of the first's (its identity, its pid files, its storage, its tasks)."""
    data.mkdir(parents=True, exist_ok=True)
    lock = open(data / LOCK, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise QtrainError(f"the emulator's data folder {data} is in use by another emulator (pid {holder})",
                          hint="stop that one first (qtrain emulator stop, or Ctrl-C where it serves), or give "
                               "this one a folder of its own with --state DIR") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


# what `emulator reset` wipes (daemon.json, the log and the start lock stay)
DATA_ENTRIES = ("tasks.sqlite", "tasks.sqlite-wal", "tasks.sqlite-shm", "s3", "cache", "tasks")


def token_file() -> Path:
    return settings.paths().config_dir() / "emulator-token"


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
    atomic_write(path, token + "\n", mode=0o600)
    return token


# ------------------------------------------------------------------------------- foreground
def serve(port: int = 0, token: str | None = None, executor: str = "process", host: str = "127.0.0.1",
          s3_port: int = 0, write_state: bool = False, announce=print, state: str | Path | None = None,
          keeper: int | None = None) -> None:
    """Run the API and S3 servers until SIGTERM/SIGINT; abort every task on the way out.  Tasks and
    buckets are kept in the data folder: a restart finds them (those that were running end as
    Failure).  `keeper`: the process that cleans up after this one (supervisor.py)."""
    from submit.emulator.fields import Limits

    given = settings.emulator()  # every setting of the emulator, refused before anything starts
    limits = Limits.configured()
    data = data_dir(state)
    lock = hold_data(data)  # before anything of the folder is read or written
    try:
        _serve(data, port, token or ensure_token(), executor, host, s3_port, write_state, announce, keeper,
               given, limits)
    finally:
        lock.close()


def _serve(data: Path, port: int, token: str, executor: str, host: str, s3_port: int, write_state: bool,
           announce, keeper: int | None, given: settings.Emulator, limits) -> None:
    from submit.emulator.api import Api, make_server
    from submit.emulator.executors import make_executor
    from submit.emulator.fields import EMAIL
    from submit.emulator.manager import TaskManager
    from submit.emulator.s3server import make_s3
    from submit.emulator.state import StateError, TaskStore
    from submit.emulator.storage import Storage

    # the executor first: its warm interpreter imports torch while the S3 server comes up (a cold
    # first run waits for both; one after the other cost ~2 s more)
    runner = make_executor(executor)
    s3 = make_s3(given.storage, data / "s3", EMAIL, token, host, s3_port)
    try:
        s3_url = s3.start()
    except BaseException:
        runner.close()
        raise
    try:
        store = None
        if s3.persistent:  # tasks kept over buckets that were not would point at nothing
            try:
                store = TaskStore(data / "tasks.sqlite")
            except StateError as exc:
                raise QtrainError(f"the emulator's task state cannot be read: {exc}",
                                  hint="qtrain emulator reset wipes it (tasks and buckets)") from None
        else:
            announce(f"qtrain emulator: storage {s3.kind} keeps nothing: tasks and buckets end with the daemon")
        manager = TaskManager(data / "tasks" / str(os.getpid()),
                              Storage(s3.direct_url, data / "cache", EMAIL, token),
                              runner, store=store, hardware_mode=given.hardware, limits=limits)
    except BaseException:
        s3.stop()
        runner.close()
        raise
    _remove_old_work_dirs(data / "tasks", announce)  # after the restore, which uploads what they held
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
        _write_state({"pid": os.getpid(), "supervisor": keeper, "url": url,
                      "s3_url": s3_url, "executor": executor, "started": time.time(), "log": str(log_file()),
                      "data": str(data), "storage": s3.kind})
    restored = len(manager.tasks)
    announce(f"qtrain emulator: API {url}  S3 {s3_url} ({s3.kind})  executor {executor}  data {data}"
             f"{f'  ({restored} tasks kept)' if restored else ''}  (pid {os.getpid()})")
    if hasattr(s3, "restart"):
        threading.Thread(target=watch_storage, args=(s3, announce, stopping), name="storage-watch",
                         daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stopping.set()  # the storage is stopped on purpose from here on
        manager.shutdown()
        manager.executor.close()
        shutil.rmtree(manager.work_dir, ignore_errors=True)
        server.server_close()
        s3.stop()
        if write_state:
            _clear_state(os.getpid())
        announce("qtrain emulator: stopped")


def watch_storage(s3, announce, stopping: threading.Event, every: float = 0.5) -> None:
    """Restart the storage server on the same data whenever it dies (a crash, an OOM kill, a stray
    kill -9), until the daemon stops; the transfers under way retry meanwhile (storage.py)."""
    while not stopping.wait(every):
        code = s3.exit_status()
        if code is None:
            continue
        old = s3.pid
        started = time.monotonic()
        try:
            s3.restart()
        except QtrainError as exc:
            announce(f"qtrain emulator: the storage (weed, pid {old}) died (exit status {code}) and could not be "
                     f"restarted: {exc.one_line()}; trying again in 5 s")
            stopping.wait(5)
            continue
        announce(f"qtrain emulator: the storage (weed, pid {old}) died (exit status {code}): restarted it on "
                 f"the same data (weed, pid {s3.pid}, answering after {time.monotonic() - started:.1f} s)")


def health(endpoint: Endpoint, timeout: float = 5.0) -> dict[str, str]:
    """Whether the daemon's API and its storage answer now: "answers", or why not."""
    import urllib.error
    import urllib.request

    from submit.emulator.fields import EMAIL
    from submit.emulator.s3server import s3_client

    found = {}
    request = urllib.request.Request(f"{endpoint.url}/info", headers={"Authorization": endpoint.token})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            found["api"] = "answers" if answer.status == 200 else f"answers {answer.status}"
    except (OSError, urllib.error.URLError) as exc:
        found["api"] = f"does not answer ({getattr(exc, 'reason', exc)})"
    try:
        s3_client(endpoint.s3_url, EMAIL, endpoint.token, attempts=1, timeout=timeout).list_buckets()
        found["storage"] = "answers"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        found["storage"] = f"does not answer ({type(exc).__name__}: {str(exc)[:120]})"
    return found


def _remove_old_work_dirs(root: Path, announce=print) -> None:
    """The instance folders of emulators that are gone (copies of datasets; what they held that
    mattered was uploaded when their tasks were read back), and any process still working in
    them (an emulator killed with its keeper, or on a system without one): stopped and said."""
    if root.is_dir():
        for old in root.iterdir():
            if old.is_dir() and old.name != str(os.getpid()) and not (
                    old.name.isdigit() and pid_alive(int(old.name))):
                stopped = stop_in(old)
                if stopped:
                    announce(f"qtrain emulator: stopped {len(stopped)} process(es) left running by emulator "
                             f"{old.name} (pids {', '.join(map(str, stopped))})")
                shutil.rmtree(old, ignore_errors=True)


def _write_state(data: dict[str, Any]) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data))


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
                    data.get("executor", "process"), Path(data.get("log") or log_file()),
                    Path(data["data"]) if data.get("data") else None, data.get("storage", "moto"))


def default_executor() -> str:
    """QTRAIN_EMULATOR_EXECUTOR, else `docker` where an engine answers and the runner image is
    there, else `process`."""
    from submit.image import CPU_TAG, docker_problem, image_id

    chosen = settings.emulator().executor
    if chosen:
        return chosen
    return "docker" if docker_problem() is None and image_id(CPU_TAG) else "process"


def start(executor: str | None = None, port: int = 0, timeout: float = 90,
          state: str | Path | None = None) -> tuple[Endpoint, bool]:
    """The running daemon, started (detached) if needed.  Returns (endpoint, started_now).
    Several `qtrain run` starting at once share one daemon: the first starts it under a lock."""
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start_locked(executor, port, timeout, state)


def _start_locked(executor: str | None, port: int, timeout: float,
                  state: str | Path | None) -> tuple[Endpoint, bool]:
    current = running()
    if current is not None:
        if executor and executor != current.executor:
            raise QtrainError(f"the emulator is already running with the {current.executor} executor",
                              hint="qtrain emulator stop first, then start it with --executor")
        if state and current.data and data_dir(state) != current.data:
            raise QtrainError(f"the emulator is already running with its data in {current.data}",
                              hint="qtrain emulator stop first, then start it with --state")
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
    cmd = [sys.executable, "-m", "submit.emulator.daemon", "--port", str(port), "--executor", executor,
           "--state", str(data_dir(state))]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, close_fds=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = _read_state()
        if data and proc.pid in (data.get("pid"), data.get("supervisor")):
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
    """Stop the daemon (its running tasks are aborted).  False when none was running; a daemon that
    exits between being found here and being signalled (another stop, its own end) is stopped."""
    current = running()
    if current is None:
        return False
    keeper = (_read_state() or {}).get("supervisor")
    deadline = time.monotonic() + timeout
    if send(current.pid, signal.SIGTERM):  # else it exited since it was found: stopped all the same
        while time.monotonic() < deadline and pid_alive(current.pid):
            time.sleep(0.05)
        if pid_alive(current.pid):
            send(current.pid, signal.SIGKILL)
    while keeper and time.monotonic() < deadline + 15 and pid_alive(int(keeper)):
        time.sleep(0.05)  # the keeper has cleaned up after it once it is gone
    state_file().unlink(missing_ok=True)
    return True


@contextmanager
def isolated(home_dir: Path, executor: str = "process",
             env: dict[str, str | None] | None = None) -> Iterator[Endpoint]:
    """A daemon of its own, its state and config under `home_dir` (beside any other, a user's
    included), with `env` set for its time (None: unset), all stopped and restored on the way
    out: what the tests and the benchmarks run against."""
    env = {"QTRAIN_STATE_DIR": str(home_dir / "state"), "QTRAIN_CONFIG_DIR": str(home_dir / "config"),
           **(env or {})}
    with settings.overriding(env):
        endpoint, started = start(executor)
        if not started:  # not ours to stop
            raise QtrainError(f"{home_dir}: an emulator already runs from this folder",
                              hint="give each its own folder")
        try:
            yield endpoint
        finally:
            stop()


def reset(state: str | Path | None = None) -> dict[str, int]:
    """Stop the daemon and wipe its data (tasks, buckets, cache).  The token stays.  Returns what
    went: {"tasks": n, "bytes": size}."""
    stop()
    data = data_dir(state)
    gone = {"tasks": 0, "bytes": 0}
    db = data / "tasks.sqlite"
    if db.is_file():
        import sqlite3

        try:
            with sqlite3.connect(db) as conn:
                gone["tasks"] = conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        except sqlite3.DatabaseError:
            pass
    for name in DATA_ENTRIES:
        path = data / name
        if path.is_dir():
            gone["bytes"] += sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(path)
        elif path.exists():
            gone["bytes"] += path.stat().st_size
            path.unlink()
    return gone


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m submit.emulator.daemon")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--executor", default="process")
    parser.add_argument("--state", default=None)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every S3 request
    announce = lambda m: print(time.strftime("%Y-%m-%d %H:%M:%S"), m, flush=True)  # noqa: E731
    from submit.emulator.supervisor import run

    def serve_here(keeper: int | None) -> int:
        try:
            serve(port=args.port, executor=args.executor, write_state=True, announce=announce, state=args.state,
                  keeper=keeper)
        except QtrainError as exc:
            announce(f"qtrain emulator: {exc}")
            return 1
        return 0

    return run(serve_here, docker=args.executor == "docker", announce=announce)


if __name__ == "__main__":
    sys.exit(main())
