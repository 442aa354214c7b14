"""The `docker` executor: each instance in the task's image (DOCKER_REPO:DOCKER_TAG), as on Qarnot's
docker profiles: the instance folder mounted at /job, constants and Qarnot variables in the
environment, no network, a CPU and memory share, `--gpus all` for a GPU profile where the NVIDIA
runtime exists.  A `python -m ...` instance is forked in a warm container of its image when one
is ready (`WarmContainer`, running `runner.warm`).  Containers carry the emulator's label
(`processes.LABEL`) and are removed when they end, when the emulator stops, and (for an emulator
that was killed) when the next one starts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

from jobs import settings
from submit.emulator.commands import ENV_NAME, python_module_argv
from submit.emulator.instances import InstanceSpec, Running, tail
from submit.emulator.processes import LABEL, WARM_LABEL, containers, pid_alive, remove_containers


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

    def __init__(self, warm: bool | None = None, preload: str | None = None) -> None:
        self.owner = str(os.getpid())
        info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                              capture_output=True, text=True)
        self.nvidia = info.returncode == 0 and "nvidia" in info.stdout
        self.remove_containers(stale_only=True)
        self.remove_networks(stale_only=True)
        given = settings.emulator()
        self.warm = given.docker_warm if warm is None else warm
        self._warm: dict[tuple[str, bool], WarmContainer] = {}
        self._lock = threading.Lock()
        self.root: Path | None = None  # the task folders' root, mounted into warm containers
        # an image to warm as soon as the root is known: the default runner image
        self.preload = preload or given.warm_image

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
        doomed = []
        for cid, owner in containers():
            mine = owner == self.owner
            gone = not owner.isdigit() or not pid_alive(int(owner))
            if (gone if stale_only else mine or gone):
                doomed.append(cid)
        remove_containers(doomed)

    def close(self) -> None:
        self.remove_containers()
        self.remove_networks()

    # ---------------------------------------------------------------------------- clusters
    def open_cluster(self, task_uuid: str, ids: list[int], share: Path) -> tuple[list[str], dict[str, str], str]:
        """A cluster task's network: its own, internal (the instances reach one another and nothing
        else, as docker-batch reaches nothing), labelled like the containers for clean-up.  The
        hosts are the instances' container names; /share is mounted in each.  Returns (hosts,
        environment, network)."""
        network = f"qtrain-net-{task_uuid[:12]}"
        proc = subprocess.run(["docker", "network", "create", "--internal", "--label", f"{LABEL}={self.owner}",
                               network], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 and "already exists" not in proc.stderr:
            raise OSError(f"docker network create {network}: {proc.stderr.strip()[:300]}")
        return [self.container_name(task_uuid, i) for i in ids], {}, network

    def close_cluster(self, network: str | None) -> None:
        if network:
            subprocess.run(["docker", "network", "rm", network], capture_output=True, timeout=60)

    def remove_networks(self, stale_only: bool = False) -> None:
        """Remove this emulator's task networks (at start: those of emulators that are gone)."""
        proc = subprocess.run(["docker", "network", "ls", "--filter", f"label={LABEL}", "--format",
                               f'{{{{.Name}}}} {{{{.Label "{LABEL}"}}}}'], capture_output=True, text=True)
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            name, _, owner = line.partition(" ")
            gone = not owner.isdigit() or not pid_alive(int(owner))
            if gone if stale_only else (owner == self.owner or gone):
                subprocess.run(["docker", "network", "rm", name], capture_output=True, timeout=60)

    @staticmethod
    def container_name(task_uuid: str, instance_id: int) -> str:
        return f"qtrain-{task_uuid[:8]}-{instance_id}"

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
                    labels: dict[str, str] | None = None, network: str | None = None) -> list[str]:
        """`docker run` options every container of this emulator gets: its label (for clean-up),
        no network (as docker-batch), `cpus` and their share of the memory, never a pull, the
        GPUs when asked, and a user that can write to `writable` (the image's non-root user, or
        this user's uid so that the files stay theirs)."""
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        memory_mb = max(512, int(total_mb * 0.9 * cpus / (os.cpu_count() or 1)))
        cmd = ["docker", "run", "--rm", "--name", name, "--label", f"{LABEL}={self.owner}"]
        for key, value in (labels or {}).items():
            cmd += ["--label", f"{key}={value}"]
        cmd += ["--network", network or "none", "--cpus", str(cpus), "--memory", f"{memory_mb}m", "--pull", "never"]
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
        # (and never a cluster task's instance: the warm container has no network)
        warmable = not entrypoint and spec.cluster is None and python_module_argv(spec.argv(spec.constants)) is not None
        warm = self._warm_container(spec.image, image_id, gpu) if warmable else None
        if warm is not None:
            try:
                return warm.run(spec)
            except OSError as exc:  # e.g. the container went away between two instances
                spec.notes.append(f"[emulator] the warm container could not take the instance ({exc}): "
                                  f"it runs in a fresh container")
        name = self.container_name(spec.task_uuid, spec.instance_id)
        env = spec.environment(folder="/job", execution="docker", image_digest=image_id)
        cluster = spec.cluster
        cmd = self.run_command(name, spec.threads, spec.workdir, gpu, network=cluster.network if cluster else None)
        cmd += ["-v", f"{spec.workdir}:/job", "-w", "/job"]
        if cluster is not None:
            if os.geteuid() == 0:
                writable_tree(cluster.share)
            cmd += ["-v", f"{cluster.share}:/share", "--hostname", name]
        for key in env:  # values through the environment, never on a command line
            if ENV_NAME.fullmatch(key):
                cmd.append(f"--env={key}")
            else:
                spec.notes.append(f"[emulator] constant {key!r} is not an environment variable name: not set")
        cmd += ["--", spec.image]  # the image is never read as an option (it is validated too)
        cmd += spec.argv(env) or []  # after the image's ENTRYPOINT, if any; none: the image's CMD
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        return DockerRunning(proc, name)


class WarmContainer:
    """One long-lived container of an image in which `python -m runner.warm` has imported torch
    and the runner: each instance is forked in it (`runner/warm.py`), in its own folder under the
    task folders' root, which is mounted at MOUNT (a path of its own: the root's own path may cross
    folders the image's non-root user cannot, such as root's 0700 home), with no network and as
    the image's non-root user like a fresh container; its CPU share is its thread count.  Labelled
    like the instance containers, so that it is removed with them (emulator stop, or the next start
    after a crash)."""

    MOUNT = "/qtrain/tasks"

    def __init__(self, executor: DockerExecutor, image: str, image_id: str, gpu: bool, name: str,
                 socket_path: Path, proc: subprocess.Popen):
        self.executor, self.image, self.image_id, self.gpu = executor, image, image_id, gpu
        self.name, self.socket_path, self.proc = name, socket_path, proc

    @classmethod
    def start(cls, executor: DockerExecutor, image: str, image_id: str, gpu: bool) -> "WarmContainer":
        root = executor.root
        key = hashlib.sha256(f"{image_id}{gpu}".encode()).hexdigest()[:12]
        name = f"qtrain-warm-{executor.owner}-{key}"
        socket_path = root / f".warm-{key}.sock"
        socket_path.unlink(missing_ok=True)
        cmd = executor.run_command(name, os.cpu_count() or 1, root, gpu, {WARM_LABEL: image_id})
        cmd += ["-v", f"{root}:{cls.MOUNT}", "-e", "MPLBACKEND=Agg", "-e", "PYTHONUNBUFFERED=1",
                "--", image, "python", "-m", "runner.warm", f"{cls.MOUNT}/{socket_path.name}"]
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

    def inside(self, path: Path) -> str:
        """A path under the task folders' root, as the container sees it."""
        return f"{self.MOUNT}/{path.relative_to(self.executor.root).as_posix()}"

    def request(self, message: dict) -> socket.socket:
        conn = connect_unix(self.socket_path)
        conn.sendall(json.dumps(message).encode() + b"\n")
        return conn

    def run(self, spec: InstanceSpec) -> Running:
        out = spec.workdir.parent / f".{spec.instance_id}.stdout"
        err = spec.workdir.parent / f".{spec.instance_id}.stderr"
        for path in (out, err):
            path.write_bytes(b"")
            path.chmod(0o666)
        if os.geteuid() == 0:
            spec.workdir.parent.chmod(0o777)
            writable_tree(spec.workdir)
        env = spec.environment(folder=self.inside(spec.workdir), execution="docker-warm", image_digest=self.image_id)
        argv = python_module_argv(spec.argv(env))
        conn = self.request({"argv": argv, "cwd": self.inside(spec.workdir), "env": env, "out": self.inside(out),
                             "err": self.inside(err), "threads": spec.threads})
        return WarmDockerRunning(self, conn, out, err)


class WarmDockerRunning(Running):
    """An instance forked in a warm container: output tailed from its files, its end read from
    the fork server's connection."""

    def __init__(self, container: WarmContainer, conn, out: Path, err: Path):
        self.container, self.conn = container, conn
        self.stream = conn.makefile("rb")
        first = json.loads(self.stream.readline() or b"{}")
        if "pid" not in first:
            raise OSError("the warm container did not start the instance")
        self.pid = first["pid"]
        self.code: int | None = None
        self.ended = threading.Event()
        threading.Thread(target=self._wait_exit, daemon=True).start()
        self.streams = {"stdout": tail(out, self.alive, self.ended.wait),
                        "stderr": tail(err, self.alive, self.ended.wait)}

    def _wait_exit(self) -> None:
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


def connect_unix(path: Path) -> socket.socket:
    """A connection to the unix socket at `path`, however deep: an AF_UNIX address holds 107
    bytes, so a longer path is reached through its folder's descriptor (/proc/self/fd/N/name)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) < 100:
            conn.connect(str(path))
            return conn
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            conn.connect(f"/proc/self/fd/{folder}/{path.name}")
        finally:
            os.close(folder)
        return conn
    except BaseException:
        conn.close()
        raise


def writable_tree(folder: Path) -> None:
    """Let the image's non-root user write in `folder` and every folder staged inside it (a resumed
    run's `out/` holds the checkpoint it replaces), as root's staging made them 0755."""
    for dirpath, _, _ in os.walk(folder):
        os.chmod(dirpath, 0o777)
