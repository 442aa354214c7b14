"""One real emulator daemon for the session (API + moto S3 over HTTP, detached like a user's), in
throwaway config/state folders, stopped at the end; and SDK connections to it."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    from submit.emulator import daemon

    home = tmp_path_factory.mktemp("qtrain-home")
    saved = {k: os.environ.get(k) for k in ("QTRAIN_STATE_DIR", "QTRAIN_CONFIG_DIR",
                                             "QARNOT_CLIENT_TOKEN")}
    os.environ["QTRAIN_STATE_DIR"] = str(home / "state")
    os.environ["QTRAIN_CONFIG_DIR"] = str(home / "config")
    os.environ.pop("QARNOT_CLIENT_TOKEN", None)  # the default backend must be the emulator
    endpoint, started = daemon.start("process")
    assert started
    try:
        yield endpoint
    finally:
        daemon.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
def store_dir(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def csv_job(tmp_path, write_job):
    """A small classification table on disk (so that it is uploaded), and its job file."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["label"] = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    frame.to_csv(tmp_path / "table.csv", index=False)
    return write_job({"name": "table", "task": "classification",
                      "data": {"path": "table.csv", "target": "label"},
                      "model": {"hidden": [16]}, "train": {"epochs": 3}})
