"""How the emulator runs one task instance.

An executor turns an `InstanceSpec` (command, working directory, environment, image, GPU wish)
into a `Running` process whose stdout/stderr the task reads line by line, that it can wait on and
kill.  `process` runs the command with `sh -c` in the instance's folder, as the runner image would
run it; `docker` (issue 4) runs the task's image.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# Where `python -m runner` finds the runner when the process executor stands in for the image.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class InstanceSpec:
    task_uuid: str
    instance_id: int
    command: str
    workdir: Path
    env: dict[str, str]  # the task's constants + the Qarnot variables
    image: str | None = None  # DOCKER_REPO:DOCKER_TAG
    gpu: bool = False
    threads: int = 1  # CPU share of this instance
    notes: list[str] = field(default_factory=list)  # lines the executor adds to the instance's output


class Running:
    """A started instance: its output `streams` (name -> iterator of byte lines that ends when the
    instance does), `wait()` -> exit status, `kill()`."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pid = proc.pid
        self.streams: dict[str, Iterator[bytes]] = {
            "stdout": iter(proc.stdout.readline, b""),  # type: ignore[union-attr]
            "stderr": iter(proc.stderr.readline, b""),  # type: ignore[union-attr]
        }

    def wait(self) -> int:
        return self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Stop the instance and everything it started (its own process group)."""
        if not self.alive():
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class WarmRunning(Running):
    """An instance forked from the warm interpreter; its output is tailed from files."""

    def __init__(self, proc, out: Path, err: Path):  # proc: multiprocessing.Process
        self.proc = proc
        self.pid = proc.pid
        self.streams = {"stdout": _tail(out, self.alive), "stderr": _tail(err, self.alive)}

    def wait(self) -> int:
        self.proc.join()
        code = self.proc.exitcode
        return 128 - code if code is not None and code < 0 else int(code or 0)

    def alive(self) -> bool:
        return self.proc.is_alive()


def _tail(path: Path, alive) -> Iterator[bytes]:
    """Lines appended to `path` until the writer is gone and the file is read to its end."""
    with open(path, "rb") as fh:
        partial = b""
        while True:
            running = alive()
            chunk = fh.read()
            if chunk:
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    yield line + b"\n"
            elif not running:
                if partial:
                    yield partial
                return
            else:
                time.sleep(0.05)


# Modules the warm interpreter imports once, so an instance does not pay for them (seconds).
PRELOAD = ["numpy", "pandas", "sklearn", "torch", "torch._dynamo", "matplotlib.pyplot", "runner.run"]


def python_module_argv(command: str) -> list[str] | None:
    """`python -m pkg [args]` (no shell syntax) -> ["pkg", args...]; anything else -> None."""
    if any(c in command for c in "|&;<>()$`\\\"'*?~\n"):
        return None
    parts = command.split()
    if len(parts) >= 3 and parts[0] in ("python", "python3") and parts[1] == "-m":
        return parts[2:]
    return None


def _warm_child(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str,
                threads: int) -> None:
    """Runs in a process forked from the warm interpreter: become `python -m argv` in `cwd`."""
    import runpy

    os.setsid()
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "torch" in sys.modules:  # OpenMP read OMP_NUM_THREADS when torch was imported
        sys.modules["torch"].set_num_threads(threads)
    sys.path.insert(0, cwd)
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


class ProcessExecutor:
    """Runs DOCKER_CMD in the instance's folder, standing in for the runner image: with `sh -c`,
    this interpreter's `python` first on PATH and the runner importable.  A plain `python -m MODULE`
    command is forked from a warm interpreter that has already imported torch and the runner
    (multiprocessing's forkserver), which saves the seconds those imports cost per instance."""

    name = "process"

    def __init__(self, warm: bool = True) -> None:
        self._ctx = None
        if warm:
            import multiprocessing

            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(PRELOAD)
            threading.Thread(target=self._warm_up, daemon=True).start()

    def _warm_up(self) -> None:
        try:
            proc = self._ctx.Process(target=int)  # starts the fork server and its imports
            proc.start()
            proc.join()
        except Exception:  # noqa: BLE001 - no warm path then: every instance uses sh -c
            self._ctx = None

    def describe(self) -> str:
        return f"process (sh -c DOCKER_CMD with {sys.executable}{', warm' if self._ctx else ''})"

    def close(self) -> None:
        """Nothing outlives the instances, which the task manager has already stopped."""

    def environment(self, spec: InstanceSpec) -> dict[str, str]:
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": os.environ.get("HOME", str(spec.workdir)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHONPATH": str(PROJECT_ROOT),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(spec.threads),
            "MKL_NUM_THREADS": str(spec.threads),
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(spec.workdir.parent / f".mpl-{spec.instance_id}"),
        }
        if spec.gpu:
            if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
                env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU profile gets no GPU, as on Qarnot
        env.update(spec.env)
        env.pop("QTRAIN_IMAGE_DIGEST", None)  # no image runs here: run.json must not claim one
        return env

    def start(self, spec: InstanceSpec) -> Running:
        env = self.environment(spec)
        argv = python_module_argv(spec.command)
        if self._ctx is not None and argv:
            out = spec.workdir.parent / f".{spec.instance_id}.stdout"
            err = spec.workdir.parent / f".{spec.instance_id}.stderr"
            out.write_bytes(b"")
            err.write_bytes(b"")
            proc = self._ctx.Process(target=_warm_child, daemon=False, args=(
                argv, str(spec.workdir), env, str(out), str(err), spec.threads))
            proc.start()
            return WarmRunning(proc, out, err)
        proc = subprocess.Popen(
            ["sh", "-c", spec.command], cwd=spec.workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        return Running(proc)


class DockerRunning(Running):
    """A `docker run` in the foreground: its output streams through the client's pipes; a kill
    goes to the container (the client alone would leave it running)."""

    def __init__(self, proc: subprocess.Popen, name: str):
        super().__init__(proc)
        self.name = name

    def kill(self) -> None:
        if self.alive():
            subprocess.run(["docker", "kill", self.name], capture_output=True, timeout=60)
        super().kill()


class DockerExecutor:
    """Runs each instance in the task's image (DOCKER_REPO:DOCKER_TAG), like Qarnot's docker
    profiles: the instance folder mounted at /job, constants and Qarnot variables in the
    environment, no network, a CPU and memory share, `--gpus all` for a GPU profile where the
    NVIDIA runtime exists.  Containers carry this emulator's label and are removed when they end,
    when the emulator stops, and (for an emulator that was killed) when the next one starts."""

    name = "docker"
    LABEL = "org.qtrain.emulator"

    def __init__(self) -> None:
        self.owner = str(os.getpid())
        info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                              capture_output=True, text=True)
        self.nvidia = info.returncode == 0 and "nvidia" in info.stdout
        self._digests: dict[str, str | None] = {}
        self.remove_containers(stale_only=True)

    def describe(self) -> str:
        return "docker" + (" (NVIDIA runtime)" if self.nvidia else "")

    def remove_containers(self, stale_only: bool = False) -> None:
        """Remove this emulator's containers (or, at start, those of emulators that are gone)."""
        proc = subprocess.run(["docker", "ps", "-a", "--filter", f"label={self.LABEL}", "--format",
                               "{{.ID}} {{.Label \"" + self.LABEL + "\"}}"], capture_output=True, text=True)
        doomed = []
        for line in proc.stdout.splitlines():
            cid, _, owner = line.partition(" ")
            mine = owner == self.owner
            gone = not owner.isdigit() or not pid_alive(int(owner))
            if (gone if stale_only else mine or gone):
                doomed.append(cid)
        if doomed:
            subprocess.run(["docker", "rm", "-f", *doomed], capture_output=True)

    def close(self) -> None:
        self.remove_containers()

    def _digest(self, image: str) -> str | None:
        if image not in self._digests:
            proc = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                                  capture_output=True, text=True)
            self._digests[image] = proc.stdout.strip() if proc.returncode == 0 else None
        return self._digests[image]

    def start(self, spec: InstanceSpec) -> Running:
        if not spec.image:
            raise ValueError("DOCKER_REPO is not set: the docker executor needs an image")
        name = f"qtrain-{spec.task_uuid[:8]}-{spec.instance_id}"
        env = dict(spec.env)
        env.update({"QARNOT_RESOURCES_DIRECTORY": "/job", "QARNOT_RESULTS_DIRECTORY": "/job",
                    "OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads)})
        digest = self._digest(spec.image)
        if digest:
            env["QTRAIN_IMAGE_DIGEST"] = digest
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        memory_mb = max(512, int(total_mb * 0.9 * spec.threads / (os.cpu_count() or 1)))
        cmd = ["docker", "run", "--rm", "--name", name, "--label", f"{self.LABEL}={self.owner}",
               "--network", "none", "--cpus", str(spec.threads), "--memory", f"{memory_mb}m",
               "--pull", "never", "-v", f"{spec.workdir}:/job", "-w", "/job"]
        if os.geteuid() == 0:
            spec.workdir.chmod(0o777)  # the image's own non-root user writes there
        else:
            cmd += ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]  # files stay the user's
        if spec.gpu:
            if self.nvidia:
                cmd += ["--gpus", "all"]
            else:
                spec.notes.append("[emulator] Docker has no NVIDIA runtime here: the instance runs on the CPU")
        for key in env:
            cmd += ["-e", key]  # values through the environment, never on a command line
        cmd.append(spec.image)
        if spec.command.strip():
            cmd += ["sh", "-c", spec.command]
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        return DockerRunning(proc, name)


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


def host_has_gpu() -> bool:
    """An NVIDIA GPU this host can hand to an instance (checked without importing torch)."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


EXECUTORS = {"process": ProcessExecutor, "docker": DockerExecutor}


def make_executor(name: str):
    try:
        return EXECUTORS[name]()
    except KeyError:
        raise ValueError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})") from None
