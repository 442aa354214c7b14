"""Security faults and hostile input: the emulator's storage refuses a wrong secret and listens on
127.0.0.1 only, secrets are 0600; a YAML alias bomb, result keys that climb out of the run folder,
links in a data folder, path fields a job never reads, image references that are options, huge
sweeps and shell syntax in every field that could reach a command line are refused or inert."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from jobs.errors import JobError
from jobs.imageref import parse_image
from jobs.load import load_job
from tests import datagen
from tests.faults.conftest import one_line_error

pytestmark = pytest.mark.faults


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets process `pid` listens on (from /proc, no tools)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.add((address, int(port, 16)))
    return found


def test_the_emulator_refuses_a_wrong_secret_listens_on_loopback_only_and_keeps_secrets_0600(world):
    from botocore.exceptions import ClientError

    assert world.cli("emulator", "start").code == 0
    assert world.s3().list_buckets()["Buckets"] == []  # the identity: email + token
    with pytest.raises(ClientError) as refused:
        world.s3(secret="not-the-token").list_buckets()
    assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")
    assert world.api("/info").status_code == 200
    import requests

    assert requests.get(world.daemon()["url"] + "/info", headers={"Authorization": "wrong"}, timeout=10).status_code == 401

    weed = int((world.emulator_home / "s3" / "weed.pid").read_text())
    for pid in (world.daemon()["pid"], weed):
        sockets = _listening(pid)
        assert sockets, pid
        assert {address for address, _ in sockets} == {"0100007F"}, sockets  # 127.0.0.1, nothing else
    for secret in (world.root / "config" / "emulator-token", world.emulator_home / "s3" / "identities.json"):
        assert secret.stat().st_mode & 0o777 == 0o600, secret


def test_a_yaml_alias_bomb_is_refused_at_once(world):
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefg"[i]
        levels.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    bomb = world.root / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nname: bomb\ntask: classification\n"
                    "data: {path: table.csv, target: label}\nsweep: {grid: {model.hidden: *h}}\n")
    started = time.monotonic()
    result = world.cli("check", bomb, timeout=60)
    assert result.code == 2 and "aliases" in one_line_error(result)
    assert time.monotonic() - started < 20


def test_result_keys_that_climb_out_are_never_written_outside_the_run_folder(world):
    from submit.backends.qarnot import results_bucket

    run = world.cli("run", world.job(), "--json").json()
    s3 = world.s3()
    bucket = results_bucket(run["run_id"])
    from botocore.exceptions import ClientError

    stored = []
    for key in ("../escaped.txt", "out/../../escaped2.txt", "/absolute.txt", "out/../../../../tmp/escaped3.txt",
                "out/%2e%2e/%2e%2e/escaped4.txt", "out//..//..//escaped5.txt"):
        try:  # the storage may refuse a key itself (SeaweedFS refuses `..`): refused is fine too
            s3.put_object(Bucket=bucket, Key=key, Body=b"hostile")
            stored.append(key)
        except ClientError:
            pass
    assert stored  # at least some reach the bucket, so the client's own guard is what is tested
    fetched = world.cli("fetch", run["run_id"], "--json")
    assert fetched.code == 0, fetched.err
    folder = Path(run["artifacts_dir"]).resolve()
    assert not Path("/tmp/escaped3.txt").exists()
    for path in [*world.root.rglob("*escaped*"), *world.root.rglob("absolute.txt")]:
        assert folder in path.resolve().parents, path  # inside the run's folder, if anywhere


def test_a_link_out_of_a_data_folder_is_refused_before_anything_is_uploaded(world):
    from tests import datagen

    folder = world.root / "dataset_dollarstreet"
    datagen.dollar_street(folder, n_train=40, n_test=20)
    secret = world.root / "secret.txt"
    secret.write_text("a key")
    (folder / "leak.npy").symlink_to(secret)
    result = world.cli("run", "dollar-street-cnn", "--set", f"data.path={folder}")
    line = one_line_error(result)
    assert result.code == 2 and "symbolic link" in line and "leak.npy" in line
    if (world.emulator_home / "daemon.json").exists():  # started while the job was checked
        assert world.api("/tasks").json() == []
        keys = [o["Key"] for b in world.s3().list_buckets()["Buckets"]
                for o in world.s3().list_objects_v2(Bucket=b["Name"]).get("Contents", [])]
        assert keys == [], keys


def test_shell_syntax_in_job_fields_is_data_never_a_command(world):
    marker = world.root / "pwned"
    hostile = f"$(touch {marker}); `touch {marker}` | touch {marker} && touch {marker}"
    name = f"table;$(touch {marker}).csv".replace("/", "_")
    job = world.job(data_name=name)
    result = world.cli("run", job, "--tag", f"t={hostile}", "--note", hostile, "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["state"] == "succeeded" and data["note"] == hostile and data["tags"]["t"] == hostile
    refused = world.cli("run", job, "--set", f"name={hostile}")  # a name must be a plain word
    assert refused.code == 2 and "name" in one_line_error(refused)
    assert not marker.exists()


def _table_job(tmp_path, **data):
    datagen.small_table(tmp_path / "table.csv")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**datagen.SMALL_JOB, "data": {**datagen.SMALL_JOB["data"], **data}}))
    return path


@pytest.mark.parametrize("field", ["labels", "test_labels"])
def test_a_labels_field_a_table_never_reads_is_refused_naming_file_and_field(emulator, tmp_path, field, qtrain):
    secret = tmp_path / "shadow"
    secret.write_text("root:x")
    job = _table_job(tmp_path, **{field: str(secret)})
    with pytest.raises(JobError) as refused:
        load_job(job)
    line = refused.value.one_line()
    assert str(job) in line and f"data.{field}" in line and "never be read" in line
    result = qtrain("run", job, "--dry-run")  # the CLI: one line, exit 2, nothing listed or sent
    assert result.code == 2 and "Traceback" not in result.err and "shadow" not in result.out
    unset = qtrain("run", job, "--dry-run", "--set", f"data.{field}=", "--json")  # `--set F=` unsets it
    assert unset.code == 0, unset.err
    assert [f["path"] for f in unset.json()["files"]] == ["data/table.csv", "job.json"]


def test_links_in_a_data_folder_are_refused_unless_followed_and_then_named(emulator, tmp_path, qtrain):
    folder = tmp_path / "ds"
    datagen.dollar_street(folder, n_train=40, n_test=20)
    inside = folder / "extra.npy"
    np.save(inside, np.zeros(3))
    (folder / "again.npy").symlink_to(inside)  # a link that stays inside the folder is refused too
    outside = tmp_path / "secret.npy"
    np.save(outside, np.ones(3))
    refused = qtrain("run", "dollar-street-cnn", "--set", f"data.path={folder}", "--dry-run")
    assert refused.code == 2 and "again.npy" in refused.err and "data.follow_symlinks" in refused.err
    (folder / "leak.npy").symlink_to(outside)
    (folder / "loop").symlink_to(folder)  # a link to the folder itself: never walked forever
    followed = qtrain("run", "dollar-street-cnn", "--set", f"data.path={folder}", "--set",
                      "data.follow_symlinks=true", "--dry-run", "--json", "--recheck")
    assert followed.code == 0, followed.err
    files = {f["path"]: f for f in followed.json()["files"]}
    assert files["data/ds/leak.npy"]["link_to"] == str(outside)  # sent, and said so
    assert "link_to" not in files["data/ds/again.npy"] and not any("loop" in p for p in files)
    assert f"is a link to {outside}, outside the folder" in followed.err
    assert followed.json()["total_bytes"] == sum(f["bytes"] for f in files.values())


@pytest.mark.parametrize("image", ["--privileged", "-v/:/host", "Qtrain/Runner:latest", "runner:bad tag",
                                   "runner@sha256:short", "a//b", "runner:" + "x" * 200, ""])
def test_image_references_that_are_not_references_are_refused(image, qtrain):
    with pytest.raises(ValueError):
        parse_image(image)
    result = qtrain("check", "penguins", "--set", f"resources.image={image}")
    assert result.code == 2 and "resources.image" in result.err and "Traceback" not in result.err


def test_a_huge_sweep_and_an_alias_bomb_in_any_field_are_refused_within_a_second(tmp_path, qtrain, monkeypatch):
    job = _table_job(tmp_path)
    grid = "{" + ", ".join(f"{k}: [{', '.join(str(v) for v in range(10))}]" for k in
                           ("train.seed", "train.epochs", "split.random_state", "train.batch_size",
                            "model.dropout", "train.lr")) + "}"
    started = time.monotonic()
    huge = qtrain("check", job, "--set", f"sweep={grid}")
    assert huge.code == 2 and "1,000,000 trials" in huge.err and "QTRAIN_MAX_TRIALS" in huge.err
    monkeypatch.setenv("QTRAIN_MAX_TRIALS", "5")
    assert "more than the limit of 5" in qtrain("check", job, "--set", "sweep={train.seed: [1,2,3,4,5,6]}").err
    bomb = "{a: &a [x,x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], " \
           "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], " \
           "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]}"
    by_set = qtrain("check", job, "--set", f"data.options={bomb}")
    assert by_set.code == 2 and "data.options" in by_set.err and "aliases" in by_set.err
    in_file = tmp_path / "bomb.yaml"
    in_file.write_text(job.read_text().replace("data:\n", f"data:\n  options: {bomb}\n"))
    from_file = qtrain("check", in_file)
    assert from_file.code == 2 and "expands to more than" in from_file.err
    assert time.monotonic() - started < 5  # four refusals, each well within a second
