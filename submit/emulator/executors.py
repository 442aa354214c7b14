"""How the emulator runs one task instance.

An executor turns an `InstanceSpec` (command, working directory, environment, image, GPU wish)
into a `Running` process whose stdout/stderr the task reads line by line, that it can wait on and
kill.  The command is DOCKER_CMD as Qarnot runs it (`command_argv`): split into words like a shell
would split them, `${NAME}` replaced in each word, and no shell in between; in `docker` it follows
the image in `docker run` (so the image's ENTRYPOINT is honoured, and no DOCKER_CMD runs the
image's default command); `process` runs the words in the instance's folder, standing in for the
runner image.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


# Where `python -m runner` finds the runner when the process executor stands in for the image.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a task constant that can be an environment variable
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def split_command(command: str) -> list[str]:
    """DOCKER_CMD's words, split as a POSIX shell splits them (quotes group, no `#` comments, no
    expansion): `sh -c "cat a | tr a b"` -> ["sh", "-c", "cat a | tr a b"].  ValueError when a
    quote is not closed."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def command_argv(command: str | None, env: dict[str, str]) -> list[str] | None:
    """The instance's argv from DOCKER_CMD: its words with `${NAME}` replaced by the constant or
    Qarnot variable of that name (INSTANCE_ID, FRAME_ID, ...; an unknown name is left as it is,
    word by word, so a value never splits into more words).  None when there is no command: the
    image's own runs."""
    if command is None or not command.strip():
        return None
    return [REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), word) for word in split_command(command)]


@dataclass
class InstanceSpec:
    task_uuid: str
    instance_id: int
    argv: list[str] | None  # DOCKER_CMD as words (`command_argv`); None: the image's default command
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
        from runner.warm import signal_instance

        if not self.alive():
            return
        signal_instance(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            signal_instance(self.pid, signal.SIGKILL)


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
        self.streams = {"stdout": _tail(out, self.alive, self.ended.wait),
                        "stderr": _tail(err, self.alive, self.ended.wait)}

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


def _tail(path: Path, alive, nap=time.sleep) -> Iterator[bytes]:
    """Lines appended to `path` until the writer is gone and the file is read to its end;
    `nap(seconds)` waits between reads (returning early when the writer ends)."""
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
                nap(0.05)


def python_module_argv(argv: list[str] | None) -> list[str] | None:
    """["python", "-m", pkg, args...] -> [pkg, args...] (what a warm interpreter can run);
    anything else -> None."""
    if argv and len(argv) >= 3 and argv[0] in ("python", "python3") and argv[1] == "-m":
        return argv[2:]
    return None


def _warm_child(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str,
                threads: int, status: str) -> None:
    """In a process forked from the warm interpreter: `runner.warm.become` with the instance's
    environment only (never the daemon's), its exit status also written to `status`."""
    from runner.warm import become

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
            self._ctx.set_forkserver_preload(["runner.preloaded"])  # runner.imports.PRELOAD
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
        if spec.argv is None:
            raise ValueError("DOCKER_CMD is not set: the process executor has no image whose default "
                             "command it could run (set DOCKER_CMD, or use the docker executor)")
        env = self.environment(spec)
        argv = python_module_argv(spec.argv)
        if self._ctx is not None and argv:
            out = spec.workdir.parent / f".{spec.instance_id}.stdout"
            err = spec.workdir.parent / f".{spec.instance_id}.stderr"
            status = spec.workdir.parent / f".{spec.instance_id}.status"
            out.write_bytes(b"")
            err.write_bytes(b"")
            status.unlink(missing_ok=True)
            env["QTRAIN_EXECUTION"] = "process-warm"
            proc = self._ctx.Process(target=_warm_child, daemon=False, args=(
                argv, str(spec.workdir), env, str(out), str(err), spec.threads, str(status.absolute())))
            proc.start()
            return WarmRunning(proc, out, err, status)
        env["QTRAIN_EXECUTION"] = "process"
        program = shutil.which(spec.argv[0], path=env["PATH"]) if "/" not in spec.argv[0] else spec.argv[0]
        if program is None:
            raise ValueError(f"DOCKER_CMD: {spec.argv[0]!r} is not a program on this machine's PATH")
        proc = subprocess.Popen(
            [program, *spec.argv[1:]], cwd=spec.workdir, env=env, stdin=subprocess.DEVNULL,
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
    WARM_LABEL = "org.qtrain.warm"  # a long-lived container of one image (its id), see WarmContainer

    def __init__(self, warm: bool | None = None, preload: str | None = None) -> None:
        self.owner = str(os.getpid())
        info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                              capture_output=True, text=True)
        self.nvidia = info.returncode == 0 and "nvidia" in info.stdout
        self.remove_containers(stale_only=True)
        self.warm = (os.environ.get("QTRAIN_DOCKER_WARM", "1") != "0") if warm is None else warm
        self._warm: dict[tuple[str, bool], WarmContainer] = {}
        self._lock = threading.Lock()
        self.root: Path | None = None  # the task folders' root, mounted into warm containers
        # an image to warm as soon as the root is known: the default runner image
        self.preload = preload or os.environ.get("QTRAIN_WARM_IMAGE", "qtrain/runner:latest")

    def describe(self) -> str:
        return "docker" + (" (NVIDIA runtime)" if self.nvidia else "") + (", warm" if self.warm else "")

    def set_root(self, root: Path) -> None:
        """The folder every instance folder lives under; a default image is warmed from now."""
        self.root = root
        image_id = self._digest(self.preload) if self.warm and self.preload else None
        if image_id:
            threading.Thread(target=self._warm_container, args=(self.preload, image_id, False),
                             daemon=True).start()

    def _warm_container(self, image: str, image_id: str | None, gpu: bool) -> "WarmContainer | None":
        """The ready warm container of the image as it is now (`image_id`); one is started (and
        None returned: this instance runs in a fresh container) when there is none, or the image
        was rebuilt."""
        if not self.warm or self.root is None or image_id is None:
            return None
        with self._lock:
            for key, old in list(self._warm.items()):
                if old.image == image and key[0] != image_id:  # rebuilt since: retire the old one
                    del self._warm[key]
                    old.stop()
            current = self._warm.get((image_id, gpu))
            if current is not None and current.failed():
                del self._warm[(image_id, gpu)]
                current.stop()
                current = None
            if current is None:
                self._warm[(image_id, gpu)] = WarmContainer.start(self, image, image_id, gpu)
                return None
        return current if current.ready() else None

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
        """The id of the image the tag names now (not cached: an image can be rebuilt)."""
        return self._inspect(image)[0]

    def _inspect(self, image: str) -> tuple[str | None, bool]:
        """(the id of the image the tag names now, does it have an ENTRYPOINT?)."""
        proc = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}} {{json .Config.Entrypoint}}",
                               "--", image], capture_output=True, text=True)
        if proc.returncode != 0:
            return None, False
        image_id, _, entrypoint = proc.stdout.strip().partition(" ")
        return image_id, entrypoint not in ("", "null", "[]")

    def run_command(self, name: str, cpus: int, writable: Path, gpu: bool,
                    labels: dict[str, str] | None = None) -> list[str]:
        """`docker run` options every container of this emulator gets: its label (for clean-up),
        no network (as docker-batch), `cpus` and their share of the memory, never a pull, the
        GPUs when asked, and a user that can write to `writable` (the image's non-root user, or
        this user's uid so that the files stay theirs)."""
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        memory_mb = max(512, int(total_mb * 0.9 * cpus / (os.cpu_count() or 1)))
        cmd = ["docker", "run", "--rm", "--name", name, "--label", f"{self.LABEL}={self.owner}"]
        for key, value in (labels or {}).items():
            cmd += ["--label", f"{key}={value}"]
        cmd += ["--network", "none", "--cpus", str(cpus), "--memory", f"{memory_mb}m", "--pull", "never"]
        if os.geteuid() == 0:
            writable_tree(writable)
        else:
            cmd += ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]
        if gpu:
            cmd += ["--gpus", "all"]
        return cmd

    def start(self, spec: InstanceSpec) -> Running:
        if not spec.image:
            raise ValueError("DOCKER_REPO is not set: the docker executor needs an image")
        if spec.gpu and not self.nvidia:
            spec.notes.append("[emulator] Docker has no NVIDIA runtime here: the instance runs on the CPU")
        gpu = spec.gpu and self.nvidia
        image_id, entrypoint = self._inspect(spec.image)
        # the warm path runs `python -m ...` itself: only where the image would run exactly that
        argv = None if entrypoint else python_module_argv(spec.argv)
        warm = self._warm_container(spec.image, image_id, gpu) if argv else None
        if warm is not None:
            try:
                return warm.run(spec, argv)
            except OSError:
                pass  # the container went away between two instances: this one runs fresh
        name = f"qtrain-{spec.task_uuid[:8]}-{spec.instance_id}"
        env = dict(spec.env)
        env.update({"QARNOT_RESOURCES_DIRECTORY": "/job", "QARNOT_RESULTS_DIRECTORY": "/job",
                    "OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads),
                    "QTRAIN_EXECUTION": "docker"})
        if image_id:
            env["QTRAIN_IMAGE_DIGEST"] = image_id
        cmd = self.run_command(name, spec.threads, spec.workdir, gpu)
        cmd += ["-v", f"{spec.workdir}:/job", "-w", "/job"]
        for key in env:  # values through the environment, never on a command line
            if ENV_NAME.fullmatch(key):
                cmd.append(f"--env={key}")
            else:
                spec.notes.append(f"[emulator] constant {key!r} is not an environment variable name: not set")
        cmd += ["--", spec.image]  # the image is never read as an option (it is validated too)
        cmd += spec.argv or []  # after the image's ENTRYPOINT, if any; none: the image's CMD
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        return DockerRunning(proc, name)


class WarmContainer:
    """One long-lived container of an image in which `python -m runner.warm` has imported torch
    and the runner: each instance is forked in it (`runner/warm.py`), in its own folder under the
    task folders' root, which is mounted at the same path, with no network and as the image's
    non-root user like a fresh container; its CPU share is its thread count.  Labelled like the
    instance containers, so that it is removed with them (emulator stop, or the next start after a
    crash)."""

    def __init__(self, executor: DockerExecutor, image: str, image_id: str, gpu: bool, name: str,
                 socket_path: Path, proc: subprocess.Popen):
        self.executor, self.image, self.image_id, self.gpu = executor, image, image_id, gpu
        self.name, self.socket_path, self.proc = name, socket_path, proc

    @classmethod
    def start(cls, executor: DockerExecutor, image: str, image_id: str, gpu: bool) -> "WarmContainer":
        import hashlib

        root = executor.root
        key = hashlib.sha256(f"{image_id}{gpu}".encode()).hexdigest()[:12]
        name = f"qtrain-warm-{executor.owner}-{key}"
        socket_path = root / f".warm-{key}.sock"
        socket_path.unlink(missing_ok=True)
        cmd = executor.run_command(name, os.cpu_count() or 1, root, gpu, {executor.WARM_LABEL: image_id})
        cmd += ["-v", f"{root}:{root}", "-e", "MPLBACKEND=Agg", "-e", "PYTHONUNBUFFERED=1",
                "--", image, "python", "-m", "runner.warm", str(socket_path)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        return cls(executor, image, image_id, gpu, name, socket_path, proc)

    def ready(self) -> bool:
        return self.proc.poll() is None and self.socket_path.exists()

    def failed(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
        self.socket_path.unlink(missing_ok=True)

    def request(self, message: dict) -> socket.socket:
        import json

        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.socket_path))
        conn.sendall(json.dumps(message).encode() + b"\n")
        return conn

    def run(self, spec: InstanceSpec, argv: list[str]) -> Running:
        out = spec.workdir.parent / f".{spec.instance_id}.stdout"
        err = spec.workdir.parent / f".{spec.instance_id}.stderr"
        for path in (out, err):
            path.write_bytes(b"")
            path.chmod(0o666)
        if os.geteuid() == 0:
            spec.workdir.parent.chmod(0o777)
            writable_tree(spec.workdir)
        env = dict(spec.env)
        env.update({"QARNOT_RESOURCES_DIRECTORY": str(spec.workdir),
                    "QARNOT_RESULTS_DIRECTORY": str(spec.workdir),
                    "OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads),
                    "QTRAIN_IMAGE_DIGEST": self.image_id, "QTRAIN_EXECUTION": "docker-warm"})
        conn = self.request({"argv": argv, "cwd": str(spec.workdir), "env": env, "out": str(out),
                             "err": str(err), "threads": spec.threads})
        return WarmDockerRunning(self, conn, out, err)


class WarmDockerRunning(Running):
    """An instance forked in a warm container: output tailed from its files, its end read from
    the fork server's connection."""

    def __init__(self, container: WarmContainer, conn, out: Path, err: Path):
        import json

        self.container, self.conn = container, conn
        self.stream = conn.makefile("rb")
        first = json.loads(self.stream.readline() or b"{}")
        if "pid" not in first:
            raise OSError("the warm container did not start the instance")
        self.pid = first["pid"]
        self.code: int | None = None
        self.ended = threading.Event()
        threading.Thread(target=self._wait_exit, daemon=True).start()
        self.streams = {"stdout": _tail(out, self.alive, self.ended.wait),
                        "stderr": _tail(err, self.alive, self.ended.wait)}

    def _wait_exit(self) -> None:
        import json

        try:
            line = self.stream.readline()
            self.code = int(json.loads(line)["exit"]) if line else 137
        except (OSError, ValueError, KeyError):
            self.code = 137  # the container died under the instance
        finally:
            self.ended.set()
            self.conn.close()

    def wait(self) -> int:
        self.ended.wait()
        return int(self.code if self.code is not None else 137)

    def alive(self) -> bool:
        return not self.ended.is_set()

    def kill(self) -> None:
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not self.alive():
                return
            try:
                self.container.request({"signal": int(sig), "pid": self.pid}).close()
            except OSError:
                return
            self.ended.wait(grace)


def writable_tree(folder: Path) -> None:
    """Let the image's non-root user write in `folder` and every folder staged inside it (a resumed
    run's `out/` holds the checkpoint it replaces), as root's staging made them 0755."""
    for dirpath, _, _ in os.walk(folder):
        os.chmod(dirpath, 0o777)


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
