"""How a dataset travels (jobs.shards, issue 25 part 3): small files in shards cut by their paths,
large ones alone, every object named by its content; a shard's tar is the same bytes for the same
files; the task unpacks what its manifest names and refuses what did not arrive or was altered."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from jobs import shards
from jobs.errors import DataError
from jobs.files import JobFile, file_sha256


def F(remote: str, local: Path) -> JobFile:
    return JobFile("data.path", remote, local)


def _folder(root: Path, n: int = 300, size: int = 2000) -> list[JobFile]:
    out = []
    for i in range(n):
        path = root / f"c{i % 3}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(i.to_bytes(4, "big") * (size // 4))
        out.append(F(f"data/img/{path.relative_to(root).as_posix()}", path))
    return out


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of about 40 KB, so a few hundred 2 KB files make tens of them."""
    monkeypatch.setattr(shards, "SHARD_BYTES", 40_000)
    monkeypatch.setattr(shards, "MAX_SHARD_BYTES", 160_000)


def test_small_files_travel_in_shards_of_about_the_target_size(tmp_path, small_shards):
    files = _folder(tmp_path)
    objects = shards.plan(files)
    assert all(o.shard for o in objects) and 5 <= len(objects) <= 60
    assert sorted(f.remote for o in objects for f in o.files) == sorted(f.remote for f in files)  # each once
    assert all(o.payload <= shards.MAX_SHARD_BYTES for o in objects)
    assert all(o.key == f"datasets/shards/{o.shard}.tar" and o.landing == f"shards/{o.shard}.tar" for o in objects)
    assert shards.plan(list(reversed(files))) == objects  # the order given does not matter


def test_changing_one_file_changes_its_shard_only_and_adding_one_at_most_splits_one(tmp_path, small_shards):
    files = _folder(tmp_path)
    before = {o.key for o in shards.plan(files)}
    files[123].local.write_bytes(b"changed" * 300)
    after = {o.key for o in shards.plan(files)}
    assert len(after - before) == 1 and len(before - after) == 1  # one shard replaced, the rest kept
    extra = tmp_path / "c1" / "0123a.png"
    extra.write_bytes(b"new" * 600)
    grown = {o.key for o in shards.plan(files + [F("data/img/c1/0123a.png", extra)])}
    assert 1 <= len(grown - after) <= 2 and len(after - grown) == 1


def test_a_large_file_travels_alone_at_its_place(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "ALONE_BYTES", 10_000)
    big = tmp_path / "table.csv"
    big.write_bytes(b"a,b\n" * 5000)
    files = _folder(tmp_path / "img", n=10) + [F("data/table.csv", big)]
    objects = shards.plan(files)
    alone = [o for o in objects if o.shard is None]
    assert len(alone) == 1 and len(objects) == 2
    assert alone[0].key == f"datasets/files/{file_sha256(big)}/data/table.csv" and alone[0].landing == "data/table.csv"


def test_a_shard_is_the_same_bytes_for_the_same_files_and_unpacks_where_they_belong(tmp_path, small_shards):
    files = _folder(tmp_path / "src", n=40)
    objects = shards.plan(files)
    task = tmp_path / "task"
    (task / shards.SHARD_FOLDER).mkdir(parents=True)
    for obj in objects:
        first, second = io.BytesIO(), io.BytesIO()
        shards.write_shard(obj, lambda f: f.local, first)
        shards.write_shard(obj, lambda f: f.local, second)
        assert first.getvalue() == second.getvalue()
        (task / obj.landing).write_bytes(first.getvalue())
    (task / shards.MANIFEST).write_bytes(shards.manifest(objects))
    assert shards.unpack(task) == 40
    for f in files:
        assert (task / f.remote).read_bytes() == f.local.read_bytes()
    assert not list((task / shards.SHARD_FOLDER).iterdir())  # each tar removed once unpacked
    assert shards.unpack(task) == 0  # a retried instance: unpacked already, nothing missing


def test_the_task_refuses_a_missing_shard_or_one_with_a_stranger_inside(tmp_path, small_shards):
    files = _folder(tmp_path / "src", n=40)
    objects = shards.plan(files)
    task = tmp_path / "task"
    (task / shards.SHARD_FOLDER).mkdir(parents=True)
    (task / shards.MANIFEST).write_bytes(shards.manifest(objects))
    with pytest.raises(DataError, match=f"{len(objects)} of the dataset's objects did not reach the task"):
        shards.unpack(task)
    for obj in objects:  # now each holds a path that leads out of the task
        with tarfile.open(task / obj.landing, "w") as tar:
            data = b"x"
            info = tarfile.TarInfo("../../outside.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="is not a file of this shard"):
        shards.unpack(task)
    assert not (tmp_path / "outside.txt").exists()


def test_the_manifest_names_shards_and_lone_files(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "ALONE_BYTES", 10_000)
    big = tmp_path / "x.npy"
    big.write_bytes(b"\0" * 20_000)
    objects = shards.plan(_folder(tmp_path / "img", n=5) + [F("data/x.npy", big)])
    body = json.loads(shards.manifest(objects))
    assert body["files"] == ["data/x.npy"] and len(body["shards"]) == 1
    assert len(next(iter(body["shards"].values()))) == 5
