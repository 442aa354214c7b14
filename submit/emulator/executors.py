"""How the emulator runs one task instance: an executor turns an `InstanceSpec` (the task's facts,
folder, image, GPU wish, CPU share) into a `Running` process whose stdout/stderr the task reads line
by line, that it can wait on and kill.

    process.py   DOCKER_CMD's words in the instance's folder, standing in for the runner image
    docker.py    the task's image, as Qarnot's docker profiles run it
"""

from __future__ import annotations

from submit.emulator.docker import DockerExecutor
from submit.emulator.process import ProcessExecutor

EXECUTORS = {"process": ProcessExecutor, "docker": DockerExecutor}


def make_executor(name: str) -> ProcessExecutor | DockerExecutor:
    try:
        return EXECUTORS[name]()
    except KeyError:
        raise ValueError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})") from None
