"""An image folder sent to the real emulator (process executor) through the real CLI (issue 25,
part 1): it trains end to end with the folder's class names, its corrupt file skipped and named,
and a bad image input is one line that uploads nothing.  Through the docker executor:
tests/docker/test_images.py."""

from __future__ import annotations

from pathlib import Path

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


def test_a_bad_image_listing_uploads_nothing(emulator, qtrain, tmp_path):
    path = _job(tmp_path, **_missing(tmp_path))
    before = _uploaded(emulator)
    result = qtrain("run", path, "--store", tmp_path / "store")
    assert result.code == 2 and "2 of 3 files do not exist" in result.err.strip().splitlines()[-1]
    assert _uploaded(emulator) == before
