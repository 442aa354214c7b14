"""What a job sends: exactly the files it reads.  Path fields its format never opens are refused,
links in data folders are refused unless the job says to follow them (and then the ones leading
out are named), image references are validated, and `qtrain run --dry-run` lists every byte."""

from __future__ import annotations


import time

import numpy as np
import pytest
import yaml

from jobs.files import job_files, unread_fields
from jobs.load import load_job
from jobs.results import job_hash
from tests import datagen


def _table_job(tmp_path, **data):
    datagen.small_table(tmp_path / "table.csv")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**datagen.SMALL_JOB, "data": {**datagen.SMALL_JOB["data"], **data}}))
    return path


def test_labels_are_read_and_sent_with_a_npy_of_images(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 8, 8), dtype=np.float32))
    np.save(tmp_path / "y.npy", np.arange(10) % 2)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "img", "task": "classification",
                                   "data": {"path": "x.npy", "labels": "y.npy"}}))
    loaded = load_job(job)
    assert unread_fields(loaded.job, loaded.base_dir) == {}
    assert [f.remote for f in job_files(loaded.job, loaded.base_dir)] == ["data/x.npy", "labels/y.npy"]


def test_the_dry_run_lists_every_file_and_byte_and_sends_nothing(tmp_path, qtrain, emulator):
    job = _table_job(tmp_path)
    result = qtrain("run", job, "--dry-run", "--store", tmp_path / "store")
    assert result.code == 0, result.err
    size = (tmp_path / "table.csv").stat().st_size
    assert "data/table.csv" in result.out and f"{size:,}" in result.out and "Nothing was sent" in result.out
    assert not (tmp_path / "store").exists()  # nothing recorded (no bucket, no task: tests/submit/cli/test_runs.py)


def test_new_fields_at_their_default_keep_every_job_hash():
    job = load_job("penguins").job
    assert job.data.follow_symlinks is False and job.data.encoding == "utf-8"
    before = job_hash(job)
    assert job_hash(job.model_copy(update={"data": job.data.model_copy(update={"encoding": "latin-1"})})) != before
    # the hash of penguins as the first version computed it (no follow_symlinks, no encoding)
    assert before == "7a2011504c2d9d7ef86e6cf911f24d2fcd7cb49e40e48658c70fbb7446d15578"


@pytest.mark.parametrize("image,repo,tag", [
    ("qtrain/runner:latest", "qtrain/runner", "latest"),
    ("qtrain/runner", "qtrain/runner", "latest"),
    ("localhost:5000/team/runner", "localhost:5000/team/runner", "latest"),
    ("registry.example.com:443/a/b_c-d.e:1.2-rc", "registry.example.com:443/a/b_c-d.e", "1.2-rc"),
    ("ghcr.io/org/runner@sha256:" + "a" * 64, "ghcr.io/org/runner", "latest@sha256:" + "a" * 64),
    ("runner:1@sha256:" + "b" * 64, "runner", "1@sha256:" + "b" * 64),
])
def test_valid_references_split_into_docker_repo_and_tag(image, repo, tag):
    from submit.backends.qarnot import split_image

    assert split_image(image) == (repo, tag)


def _qtrain(*args, cwd, timeout=60):
    """The CLI in a process of its own, so that a hang fails the test instead of the suite."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "submit", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", ["device", "fifo", "socket"])
def test_a_special_file_as_data_is_refused_at_once_by_its_type(tmp_path, kind):
    import os
    import socket
    import time

    if kind == "device":
        special = "/dev/zero"
    elif kind == "fifo":
        special = tmp_path / "pipe.csv"
        os.mkfifo(special)
    else:
        special = tmp_path / "sock.csv"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(special))
    job = tmp_path / "job.yaml"
    job.write_text(f"name: special\ntask: classification\ndata:\n  path: {special}\n  target: y\n")
    for args in (("check", job), ("run", job, "--dry-run")):
        started = time.monotonic()
        result = _qtrain(*args, cwd=tmp_path)
        assert time.monotonic() - started < 20
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "data.path" in lines[0] and str(special) in lines[0], result.stderr
        assert {"device": "device", "fifo": "FIFO", "socket": "socket"}[kind] in lines[0]


def test_a_special_file_inside_a_data_folder_is_refused_naming_it(tmp_path):
    import os

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.npy").write_bytes(b"")
    os.mkfifo(folder / "b.npy")
    job = tmp_path / "job.yaml"
    job.write_text(f"name: special\ntask: classification\ndata:\n  path: {folder}\n")
    result = _qtrain("check", job, cwd=tmp_path)
    assert result.returncode == 2 and "b.npy" in result.stderr and "FIFO" in result.stderr, result.stderr


def test_a_job_file_is_read_only_up_to_a_bound(tmp_path):
    job = tmp_path / "huge.yaml"
    job.write_text("name: huge\ntask: classification\ndata: {path: palmerpenguins, target: species}\n"
                   + "#" * (2 << 20) + "\n")
    result = _qtrain("check", job, cwd=tmp_path)
    assert result.returncode == 2 and "huge.yaml" in result.stderr and "MiB" in result.stderr, result.stderr


def test_a_table_larger_than_free_memory_is_refused_before_it_is_read(tmp_path, qtrain):
    from jobs.memory import available_bytes

    free = available_bytes()
    assert free is not None and free > 0  # /proc/meminfo (and the cgroup's limit) are read here
    with open(tmp_path / "huge.csv", "wb") as fh:
        fh.truncate(free + (1 << 30))  # sparse: as large as it says, and no disk used
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"name": "huge", "task": "classification",
                                                       "data": {"path": "huge.csv", "target": "y"}}))
    for command in (("check",), ("run", "--dry-run")):
        started = time.monotonic()
        result = qtrain(*command, tmp_path / "job.yaml")
        assert result.code == 2 and "Traceback" not in result.err
        assert "huge.csv is" in result.err and "GiB of memory free" in result.err and "data.max_rows" in result.err
        assert time.monotonic() - started < 30  # said at load: nothing hashed or read
