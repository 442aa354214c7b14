"""The emulator's process housekeeping, written once: is a pid alive, signal a process with all it
started, find the processes working in a folder or re-parented to us (/proc), the Linux `prctl`s
that tie a child's life to ours, and the emulator's Docker containers (found by their label).

Signalling a group is the runner's `signal_instance` (the warm fork server inside the image needs
it too, and the image holds no `submit/`), and the `prctl`s are `runner.procs`' (a script's process
and a distributed worker need them too): one definition each, reached through the runner's door.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from runner.api import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, die_with_parent, prctl
from runner.api import signal_instance as signal_group

__all__ = ["LABEL", "PR_SET_CHILD_SUBREAPER", "PR_SET_PDEATHSIG", "WARM_LABEL", "children", "containers",
           "die_with_parent", "kill_group", "pid_alive", "prctl", "processes_in", "remove_containers", "send",
           "signal_group", "stop_in", "stop_orphan"]

# every container the emulator starts carries LABEL=<the daemon's pid> (removed with the daemon,
# or by the next daemon once that pid is gone); a warm one also WARM_LABEL=<its image id>
LABEL = "org.qtrain.emulator"
WARM_LABEL = "org.qtrain.warm"


def pid_alive(pid: int) -> bool:
    """Is process `pid` alive (a zombie, or an exited child of ours, is not)?"""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, now reaped
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def send(pid: int, sig: int) -> bool:
    """`sig` to process `pid`; False when there is none any more: a process found alive may exit
    before it is signalled (a daemon stopped twice at once, or ending as its stop comes)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def kill_group(pid: int) -> None:
    """SIGKILL `pid` with everything it started."""
    signal_group(pid, signal.SIGKILL)


def _cwd_in(pid: int | str, folder: Path) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return cwd == str(folder) or cwd.startswith(str(folder) + os.sep)


def processes_in(folder: Path) -> list[int]:
    """The pids whose working directory is `folder` or lies below it (from /proc)."""
    root = Path("/proc")
    return [int(p.name) for p in (root.iterdir() if root.is_dir() else []) if p.name.isdigit() and _cwd_in(p.name, folder)]


def stop_in(folder: Path) -> list[int]:
    """SIGKILL (with what they started) the processes working in `folder`; returns their pids."""
    found = processes_in(folder)
    for pid in found:
        kill_group(pid)
    return found


def stop_orphan(pid: int | None, folder: Path) -> bool:
    """Kill an instance process a dead emulator left behind, if `pid` still is one: a process whose
    working directory lies in `folder` (a reused pid is left alone).  True if it was."""
    if not pid or not _cwd_in(pid, folder):
        return False
    kill_group(pid)
    return True


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


def containers(owner: int | None = None) -> list[tuple[str, str]]:
    """(container id, its owner's pid as labelled) of the emulator's containers: all of them, or
    the daemon `owner`'s only."""
    label = LABEL if owner is None else f"{LABEL}={owner}"
    try:
        proc = subprocess.run(["docker", "ps", "-a", "--filter", f"label={label}", "--format",
                               "{{.ID}} {{.Label \"" + LABEL + "\"}}"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [tuple(line.partition(" ")[::2]) for line in proc.stdout.splitlines() if line.strip()]  # type: ignore[misc]


def remove_containers(ids: list[str]) -> int:
    """`docker rm -f` the containers `ids`; returns how many were asked for."""
    if ids:
        try:
            subprocess.run(["docker", "rm", "-f", "--", *ids], capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            return 0
    return len(ids)
