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
daemon stops what a killed one left in its instance folders (`processes.stop_in`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable

from submit.emulator.processes import (PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, children, containers, kill_group,
                                       prctl, remove_containers, send)


def run(serve: Callable[[int | None], int], docker: bool, announce: Callable[[str], None]) -> int:
    """Run `serve(keeper pid)` in a child process and clean up after it; returns its exit status.
    Where there can be no keeper, `serve(None)` runs in this process."""
    keeper = os.getpid()
    if not sys.platform.startswith("linux") or not prctl(PR_SET_CHILD_SUBREAPER, 1):
        return serve(None)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # the daemon: it serves, then exits as any process does (atexit hooks run)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != keeper:  # the keeper died before the line above
            os._exit(1)
        return serve(keeper)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a stop sent here goes to the daemon
        signal.signal(signum, lambda s, frame: send(child, s))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    stopped = stop_descendants()
    removed = remove_containers([cid for cid, _ in containers(child)]) if docker else 0
    if code < 0 or stopped or removed:
        how = f"was killed by signal {-code}" if code < 0 else f"ended (status {code})"
        left = f"; stopped {stopped} process(es) and {removed} container(s) it left" if stopped or removed \
            else ""
        announce(f"qtrain emulator: the daemon (pid {child}) {how}{left}")
    return code if code >= 0 else 128 - code


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
                kill_group(pid)
                stopped.add(pid)
        while True:  # reap what died (zombies still count as children until then)
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.02)
    return len(stopped)
