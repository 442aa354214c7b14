"""An image folder sent to the real emulator (process executor) through the real CLI (issue 25,
part 1): it trains end to end with the folder's class names, its corrupt file skipped and named,
and a bad image input is one line that uploads nothing.  Through the docker executor:
tests/docker/test_images.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import datagen
from tests.runner.test_images import _job, _missing
from tests.submit.run.test_script_jobs import _uploaded


def run_image_folder(qtrain, root: Path) -> dict:
    """`qtrain run` of a generated image folder (3 classes, mixed sizes, one corrupt file): it
    trains, with the folder's class names, and names the skipped file.  Its summary."""
    datagen.image_folder(root / "shapes")
    result = qtrain("run", _job(root), "--json", "--store", root / "store")
    assert result.code == 0, result.err
    data = result.json()
    assert data["state"] == "succeeded" and data["metrics"]["test"]["accuracy"] >= 0.9
    folder = Path(data["artifacts_dir"])
    assert (folder / "confusion_matrix.csv").read_text().splitlines()[0] == "true,bars,cross,rings"
    assert "bars/broken-0.png" in result.err
    return data


def test_an_image_folder_trains_on_the_emulator(emulator, qtrain, tmp_path):
    run_image_folder(qtrain, tmp_path)


@pytest.mark.usefixtures("keep_remote")  # it looks at the task or bucket afterwards
def test_a_data_folder_named_out_does_not_travel_back_as_results(emulator, qtrain, tmp_path):
    """Results are what the task writes under out/; a class folder that happens to be called `out`
    (unpacked from its shard in the task) is data, and stays out of the result bucket."""
    from submit.backends.qarnot import results_bucket

    datagen.image_folder(tmp_path / "shapes", per_class=20, corrupt=0)
    (tmp_path / "shapes" / "rings").rename(tmp_path / "shapes" / "out")
    result = qtrain("run", _job(tmp_path), "--json", "--store", tmp_path / "store", "--set", "train.epochs=1")
    assert result.code == 0, result.err
    keys = set(_objects(emulator, "", bucket=results_bucket(result.json()["run_id"])))
    assert any(k.startswith("out/") for k in keys)
    assert not [k for k in keys if not k.startswith("out/")]
    folder = Path(result.json()["artifacts_dir"])
    assert (folder / "confusion_matrix.csv").read_text().splitlines()[0] == "true,bars,cross,out"
    assert not (folder / ".incoming" / "data").exists()


def test_a_bad_image_listing_uploads_nothing(emulator, qtrain, tmp_path):
    path = _job(tmp_path, **_missing(tmp_path))
    before = _uploaded(emulator)
    result = qtrain("run", path, "--store", tmp_path / "store")
    assert result.code == 2 and "2 of 3 files do not exist" in result.err.strip().splitlines()[-1]
    assert _uploaded(emulator) == before


def _objects(emulator, prefix: str = "datasets/", bucket: str | None = None) -> dict[str, tuple[str, object]]:
    """The data bucket's (or `bucket`'s) objects under `prefix`: key -> (ETag, LastModified)."""
    from jobs import settings
    from submit.emulator.fields import EMAIL
    from submit.emulator.s3server import s3_client

    s3 = s3_client(emulator.s3_url, EMAIL, emulator.token, attempts=1, timeout=10)
    listed = s3.list_objects_v2(Bucket=bucket or settings.submission().data_bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listed}


def test_changing_one_image_resends_its_shard_only(emulator, qtrain, tmp_path, monkeypatch):
    from jobs import shards

    monkeypatch.setattr(shards, "SHARD_BYTES", 40_000)  # tens of shards of this small folder
    monkeypatch.setattr(shards, "MAX_SHARD_BYTES", 160_000)
    datagen.image_folder(tmp_path / "shapes", per_class=60)
    job = _job(tmp_path, strict=False)
    store = ["--store", tmp_path / "store", "--set", "train.epochs=1"]
    plan = qtrain("run", job, "--dry-run", "--json", *store[2:]).json()
    first = qtrain("run", job, "--json", *store)
    assert first.code == 0, first.err
    before = _objects(emulator)
    ours = {o["key"] for o in plan["objects"]}
    assert len(ours) >= 5 and ours <= set(before) and all(o["kind"] == "shard" for o in plan["objects"])

    again = qtrain("run", job, "--json", *store)  # unchanged: nothing of the data is sent again
    assert again.code == 0 and again.json()["uploaded_bytes"] == 0, again.err
    assert again.json()["dataset_hash"] == first.json()["dataset_hash"]

    changed = tmp_path / "shapes" / "rings" / "017.png"
    changed.write_bytes(changed.read_bytes() + b"\0")  # one byte more: the same image, another file
    dry = qtrain("run", job, "--dry-run", "--json", *store[2:]).json()
    assert dry["send"]["objects"] == 1  # the dry run asks the running emulator what it lacks
    [resent] = [o for o in dry["objects"] if o["sent"]]
    third = qtrain("run", job, "--json", *store)
    assert third.code == 0, third.err
    after = _objects(emulator)
    assert set(after) - set(before) == {resent["key"]}  # its shard, and nothing else
    assert all(after[k] == before[k] for k in before)  # the other objects untouched
    assert third.json()["dataset_hash"] != first.json()["dataset_hash"]
    assert resent["bytes"] <= third.json()["uploaded_bytes"] <= resent["bytes"] * 1.5 + 4096
