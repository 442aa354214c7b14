"""The `process` executor: DOCKER_CMD's words run in the instance's folder, standing in for the
runner image (there is no image, so no default command).  A plain `python -m MODULE` is forked
from a warm interpreter that has already imported torch and the runner (multiprocessing's
forkserver), which saves the seconds those imports cost per instance."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from runner.api import PRELOAD_MODULE, become
from submit.emulator.commands import python_module_argv
from submit.emulator.instances import InstanceSpec, Running, tail

# Where `python -m runner` finds the runner when the process executor stands in for the image.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class WarmRunning(Running):
    """An instance forked from the warm interpreter; its output is tailed from files."""

    def __init__(self, proc, out: Path, err: Path, status: Path):  # proc: multiprocessing.Process
        self.proc = proc
        self.pid = proc.pid
        self.status = status
        # only `wait` (the instance's thread) asks the process for its state: two threads that
        # poll a forkserver child at once race to read its exit status, and the loser overwrites
        # it with 255 or blocks (python/cpython#130895); the others learn the end from this event,
        # which also wakes the tails at once, so the last lines are not 0.05 s late
        self.ended = threading.Event()
        self.streams = {"stdout": tail(out, self.alive, self.ended.wait),
                        "stderr": tail(err, self.alive, self.ended.wait)}

    def wait(self) -> int:
        try:
            self.proc.join()
        finally:
            self.ended.set()
        code = self.proc.exitcode
        if code == 255:
            # multiprocessing's forkserver can fail to report a child's status under load and say
            # 255 (python/cpython#140867): the child wrote its own status as it exited
            try:
                code = int(self.status.read_text())
            except (OSError, ValueError):
                pass
        return 128 - code if code is not None and code < 0 else int(code or 0)

    def alive(self) -> bool:
        return not self.ended.is_set()


def _warm_child(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str,
                threads: int, status: str) -> None:
    """In a process forked from the warm interpreter: `runner.warm.become` with the instance's
    environment only (never the daemon's), its exit status also written to `status`."""
    code = become(argv, cwd, env, out, err, threads, replace_env=True)
    try:
        Path(status).write_text(str(code))
    except OSError:
        pass
    sys.exit(code)


class ProcessExecutor:
    """Runs DOCKER_CMD's words in the instance's folder, standing in for the runner image: this
    interpreter's `python` first on PATH and the runner importable (there is no image, so no
    default command: a task without DOCKER_CMD fails, saying so).  A plain `python -m MODULE`
    command is forked from a warm interpreter that has already imported torch and the runner
    (multiprocessing's forkserver), which saves the seconds those imports cost per instance."""

    name = "process"

    def __init__(self, warm: bool = True) -> None:
        self._ctx = None
        if warm:
            import multiprocessing

            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload([PRELOAD_MODULE])
            threading.Thread(target=self._warm_up, daemon=True).start()

    def _warm_up(self) -> None:
        try:
            proc = self._ctx.Process(target=int)  # starts the fork server and its imports
            proc.start()
            proc.join()
        except Exception:  # noqa: BLE001 - no warm path then: every instance is a new process
            self._ctx = None

    def describe(self) -> str:
        return f"process (DOCKER_CMD with {sys.executable}{', warm' if self._ctx else ''})"

    def close(self) -> None:
        """Nothing outlives the instances, which the task manager has already stopped."""

    def open_cluster(self, task_uuid: str, ids: list[int], share: Path) -> tuple[list[str], dict[str, str], None]:
        """A cluster task's nodes on this machine: all on loopback, which is one port space, so the
        rendezvous port is a free one (MASTER_PORT); the shared folder by its path (QTRAIN_SHARE_DIR).
        Returns (hosts, environment, network)."""
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return ["127.0.0.1"] * len(ids), {"MASTER_PORT": str(port), "QTRAIN_SHARE_DIR": str(share)}, None

    def close_cluster(self, network: str | None) -> None:
        """Nothing to remove: loopback stays."""

    def environment(self, spec: InstanceSpec, execution: str) -> dict[str, str]:
        """What stands in for the image's environment (this interpreter first on PATH, the runner
        importable, matplotlib headless), under the instance's own (`spec.environment`)."""
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": os.environ.get("HOME", str(spec.workdir)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONPATH": str(PROJECT_ROOT),
            "PYTHONUNBUFFERED": "1",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(spec.workdir.parent / f".mpl-{spec.instance_id}"),
        }
        if spec.gpu:
            if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
                env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU profile gets no GPU, as on Qarnot
        env.update(spec.environment(execution=execution))  # no image runs here: none is claimed
        return env

    def start(self, spec: InstanceSpec) -> Running:
        warm = self._ctx is not None and python_module_argv(spec.argv(spec.constants)) is not None
        env = self.environment(spec, "process-warm" if warm else "process")
        words = spec.argv(env)
        if words is None:
            raise ValueError("DOCKER_CMD is not set: the process executor has no image whose default "
                             "command it could run (set DOCKER_CMD, or use the docker executor)")
        argv = python_module_argv(words)
        if warm and argv:
            out = spec.workdir.parent / f".{spec.instance_id}.stdout"
            err = spec.workdir.parent / f".{spec.instance_id}.stderr"
            status = spec.workdir.parent / f".{spec.instance_id}.status"
            out.write_bytes(b"")
            err.write_bytes(b"")
            status.unlink(missing_ok=True)
            proc = self._ctx.Process(target=_warm_child, daemon=False, args=(
                argv, str(spec.workdir), env, str(out), str(err), spec.threads, str(status.absolute())))
            proc.start()
            return WarmRunning(proc, out, err, status)
        program = shutil.which(words[0], path=env["PATH"]) if "/" not in words[0] else words[0]
        if program is None:
            raise ValueError(f"DOCKER_CMD: {words[0]!r} is not a program on this machine's PATH")
        proc = subprocess.Popen(
            [program, *words[1:]], cwd=spec.workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        return Running(proc)
