"""The fault-injection suite's world: qtrain as a user runs it (separate processes, its own state,
config and store folders, the process executor), so that a test can kill any of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from submit.emulator.processes import pid_alive
from tests import datagen
from tests.conftest import CliResult
from tests.datagen import SMALL_JOB
from tests.helpers import wait_for


class World:
    def __init__(self, root: Path):
        self.root = root
        self.store = root / "store"
        self.env = {k: v for k, v in os.environ.items() if k != "QARNOT_CLIENT_TOKEN"}
        self.env.update({"QTRAIN_STATE_DIR": str(root / "state"), "QTRAIN_CONFIG_DIR": str(root / "config"),
                         "QTRAIN_STORE": str(self.store), "QTRAIN_EMULATOR_EXECUTOR": "process",
                         "PYTHONUNBUFFERED": "1"})

    # ------------------------------------------------------------------------------ the CLI
    def argv(self, *args) -> list[str]:
        return [sys.executable, "-m", "submit", *(str(a) for a in args)]

    def cli(self, *args, timeout: float = 300, env: dict | None = None) -> CliResult:
        proc = subprocess.run(self.argv(*args), env={**self.env, **(env or {})}, cwd=self.root,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)

    # --------------------------------------------------------------------------- the emulator
    @property
    def emulator_home(self) -> Path:
        return self.root / "state" / "emulator"

    def daemon(self) -> dict:
        return json.loads((self.emulator_home / "daemon.json").read_text())

    def token(self) -> str:
        return (self.root / "config" / "emulator-token").read_text().strip()

    def api(self, path: str):
        import requests

        return requests.get(self.daemon()["url"] + path, headers={"Authorization": self.token()}, timeout=30)

    def task_state(self, uuid: str) -> str:
        return self.api(f"/tasks/{uuid}").json()["state"]

    def wait_task(self, uuid: str, until=("Success", "Failure", "Cancelled"), timeout: float = 120) -> str:
        return wait_for(lambda: self.task_state(uuid) if self.task_state(uuid) in until else None, timeout)

    def s3(self, secret: str | None = None):
        from submit.emulator.fields import EMAIL
        from submit.emulator.s3server import s3_client

        return s3_client(self.daemon()["s3_url"], EMAIL, secret or self.token(), attempts=1, timeout=10)

    def kill_daemon(self) -> int:
        pid = self.daemon()["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 10)
        return pid

    # ------------------------------------------------------------------------------- a job
    def job(self, name: str = "table", data_name: str = "table.csv", **train) -> Path:
        """A small classification table and its job file."""
        datagen.small_table(self.root / data_name)
        job = {**SMALL_JOB, "name": name, "data": {**SMALL_JOB["data"], "path": data_name},
               "train": {**SMALL_JOB["train"], **train}}
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(job))
        return path


def one_line_error(result: CliResult) -> str:
    """The stderr of a refused command: one `error:` line, no traceback."""
    assert "Traceback" not in result.err, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.err
    return errors[0]


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.cli("emulator", "stop", timeout=60)
