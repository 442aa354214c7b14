"""Shared fixtures: generated datasets with the seeds' schemas, the real CLI in-process, and one real
emulator daemon for the session (API + S3 over HTTP, detached like a user's) in throwaway
config/state folders, stopped at the end, with SDK connections to it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests import datagen


@pytest.fixture(scope="session", autouse=True)
def private_state(tmp_path_factory):
    """qtrain as a new user has it, whoever runs the tests: every variable qtrain reads unset (a
    user's QARNOT_CLIENT_TOKEN would send runs to Qarnot), and its config, state and store in
    throwaway folders, never the user's (nor their running emulator's); the emulator fixture
    narrows them further for its daemon."""
    from jobs import settings

    saved = dict(os.environ)
    for row in settings.describe():
        os.environ.pop(row["name"], None)
    home = tmp_path_factory.mktemp("qtrain-user")
    os.environ["QTRAIN_CONFIG_DIR"] = str(home / "config")
    os.environ["QTRAIN_STATE_DIR"] = str(home / "state")
    os.environ["QTRAIN_STORE"] = str(home / "store")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # tests send nothing anywhere
    # MLflow's own default is ./mlflow.db in the current folder: never the checkout
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/default.db"
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One folder of small generated datasets, made once per test session."""
    d = tmp_path_factory.mktemp("data")
    datagen.mnist_idx(d / "mnist", n_train=2400, n_test=300)
    datagen.mnist_pkl(d / "mnist.pkl.gz", n_train=2400, n_test=300)
    datagen.weather_light(d / "weather_prediction_dataset_light.csv")
    datagen.weather_aus(d / "weatherAUS.csv", rows=3000)
    datagen.dollar_street(d / "dataset_dollarstreet", n_train=240, n_test=100)
    return d


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out.strip().splitlines()[-1])


@pytest.fixture
def qtrain(capfd):
    """Run `qtrain ARGS...` through the real entry point; returns exit code, stdout, stderr."""
    from submit.cli import main

    def run(*args: str) -> CliResult:
        capfd.readouterr()
        code = main([str(a) for a in args])
        out, err = capfd.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def write_job(tmp_path):
    """Write a job file (YAML text or dict) into tmp_path and return its path."""
    import yaml

    def write(content, name: str = "job.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write

@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    from submit.emulator import daemon

    env = {"QTRAIN_EMULATOR_REQUEST_TIMEOUT": "5",  # a stalled client is dropped within a test's patience
           "QARNOT_CLIENT_TOKEN": None}  # the default backend must be the emulator
    with daemon.isolated(tmp_path_factory.mktemp("qtrain-home"), "process", env) as endpoint:
        yield endpoint


@pytest.fixture
def conn(emulator):
    """A `qarnot` SDK connection to the emulator, made the way a Qarnot user's script makes one."""
    import qarnot

    return qarnot.connection.Connection(client_token=emulator.token, cluster_url=emulator.url,
                                        storage_url=emulator.s3_url)


@pytest.fixture
def wait_task():
    """Poll a task until it ends (the SDK's own wait() sleeps 10 s between polls)."""

    def wait(task, timeout: float = 120, until=("Success", "Failure", "Cancelled")):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task.update(flushcache=True)
            if task.state in until:
                return task.state
            time.sleep(0.1)
        raise AssertionError(f"task {task.uuid} still {task.state} after {timeout}s")

    return wait


@pytest.fixture
def keep_remote(monkeypatch):
    """Runs keep their task and result bucket on the account once retrieved (QTRAIN_KEEP_REMOTE):
    for the tests that look at them afterwards (issue 42 deletes them by default)."""
    monkeypatch.setenv("QTRAIN_KEEP_REMOTE", "1")


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def csv_job(tmp_path, write_job):
    """A small classification table on disk (so that it is uploaded), and its job file."""
    datagen.small_table(tmp_path / "table.csv")
    return write_job(datagen.SMALL_JOB)


SEPARATE_TIERS = ("faults", "matrix", "realworld")  # each about as long as the default run, or longer


def pytest_collection_modifyitems(config, items):
    """The default run (`pytest -q`: no -m, no paths) leaves out the separate tiers (fault
    injection, the matrix, real-world code); `-m faults` (matrix, realworld), or naming their files
    or tests, runs them (.ci/run does)."""
    if config.option.markexpr or config.args_source != pytest.Config.ArgsSource.TESTPATHS:
        return
    separate = [item for item in items if any(item.get_closest_marker(m) for m in SEPARATE_TIERS)]
    if separate:
        config.hook.pytest_deselected(items=separate)
        items[:] = [item for item in items if item not in separate]
