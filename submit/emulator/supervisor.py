"""The daemon's keeper: a small parent process that owns everything the daemon starts.

`python -m submit.emulator.daemon` forks at once: the parent (this keeper) marks itself the child
subreaper of its tree (Linux PR_SET_CHILD_SUBREAPER) and waits; the child serves.  When the daemon
ends in any way, kill -9 included, the processes it started (instances in sessions of their own,
their workers, the multiprocessing fork server and resource tracker) are re-parented to the keeper
rather than to init, so the kernel itself tells it what is left: it kills each of them with its
process group, reaps them, removes the daemon's containers (docker executor), and exits.  The
daemon dies with its keeper too (PR_SET_PDEATHSIG).  The tasks that were running end as Failure
when the next daemon reads them back, with their last files uploaded (tasks.py `_end_interrupted`).

Elsewhere than Linux there is no keeper: the daemon runs in the process itself, and the next
daemon stops what a killed one left in its instance folders (daemon.py `_stop_leftovers`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ENV = "QTRAIN_EMULATOR_SUPERVISOR"  # the keeper's pid, in the daemon's environment
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
DOCKER_LABEL = "org.qtrain.emulator"  # = executors.DockerExecutor.LABEL, valued with the daemon's pid


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def run(serve: Callable[[], int], docker: bool, announce: Callable[[str], None]) -> int:
    """Run `serve` in a child process and clean up after it; returns its exit status."""
    keeper = os.getpid()
    if not sys.platform.startswith("linux") or not _prctl(PR_SET_CHILD_SUBREAPER, 1):
        return serve()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # the daemon: it serves, then exits as any process does (atexit hooks run)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != keeper:  # the keeper died before the line above
            os._exit(1)
        os.environ[ENV] = str(keeper)
        return serve()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a stop sent here goes to the daemon
        signal.signal(signum, lambda s, frame: _send(child, s))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    stopped = stop_descendants()
    containers = remove_containers(child) if docker else 0
    if code < 0 or stopped or containers:
        how = f"was killed by signal {-code}" if code < 0 else f"ended (status {code})"
        left = f"; stopped {stopped} process(es) and {containers} container(s) it left" if stopped or containers \
            else ""
        announce(f"qtrain emulator: the daemon (pid {child}) {how}{left}")
    return code if code >= 0 else 128 - code


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def stop_descendants(timeout: float = 15) -> int:
    """SIGKILL every process re-parented to this keeper (each with its process group), reap
    them, and go on until none is left (grandchildren arrive as their parents die)."""
    stopped: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(os.getpid())
        if not kids:
            break
        for pid in kids:
            if pid not in stopped:
                _kill_group(pid)
                stopped.add(pid)
        while True:  # reap what died (zombies still count as children until then)
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.02)
    return len(stopped)


def _kill_group(pid: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def remove_containers(owner: int) -> int:
    """`docker rm -f` the containers labelled as the daemon `owner`'s (instances, warm ones)."""
    try:
        listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={DOCKER_LABEL}={owner}"],
                                capture_output=True, text=True, timeout=60)
        ids = listed.stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", "--", *ids], capture_output=True, timeout=120)
        return len(ids)
    except (OSError, subprocess.TimeoutExpired):
        return 0
