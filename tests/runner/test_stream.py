"""Image files decoded as training reads them (runner.stream, issue 25 part 2): a folder trains
exactly as the same images held in memory as an array, through decoding workers and the pixel
cache alike; nothing is left on disk after the run; a file that changes under a running job is
one clear error, not a crash."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from jobs.errors import DataError
from jobs.load import load_job
from runner import stream
from runner.api import run_job
from tests import datagen

SETTINGS = {"task": "classification", "model": {"kind": "cnn"},
            "train": {"epochs": 3, "seed": 5, "batch_size": 16}}


def _as_arrays(folder: Path, root: Path) -> tuple[Path, Path]:
    """The folder's images as x.npy / y.npy, in the order the folder is read (class, then name)."""
    from PIL import Image

    files = sorted(p for c in sorted(folder.iterdir()) for p in c.iterdir())
    x = np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in files])
    classes = sorted(c.name for c in folder.iterdir())
    y = np.array([classes.index(p.parent.name) for p in files])
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    return root / "x.npy", root / "y.npy"


def _train(root: Path, name: str, data: dict) -> dict:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **SETTINGS, "data": data}))
    run_job(load_job(path), root / f"out-{name}")
    return json.loads((root / f"out-{name}" / "metrics.json").read_text())


@pytest.mark.parametrize("cached", [True, False], ids=["pixel-cache", "decoded-each-epoch"])
def test_a_folder_trains_as_the_same_images_in_memory(tmp_path, monkeypatch, cached):
    datagen.image_folder(tmp_path / "shapes", per_class=30, sizes=((24, 24),), corrupt=0)
    x, y = _as_arrays(tmp_path / "shapes", tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    if not cached:  # a disk without room for the pixels: every epoch decodes the files again
        monkeypatch.setattr(stream.PixelCache, "fits", staticmethod(lambda rows, shape: False))
    assert stream.workers(58, 16) >= 1  # the training split (58 images) is decoded in a worker
    folder = _train(tmp_path, "folder", {"path": "shapes"})
    arrays = _train(tmp_path, "arrays", {"path": str(x), "labels": str(y)})
    for split in ("train", "test"):
        assert folder[split]["accuracy"] == arrays[split]["accuracy"]
        assert folder[split]["log_loss"] == pytest.approx(arrays[split]["log_loss"], rel=1e-4)
    assert folder["test"]["accuracy"] >= 0.9
    assert not list(scratch.iterdir())  # the pixel cache is gone with the run


def test_the_pixel_cache_gives_back_what_was_decoded(tmp_path):
    datagen.image_folder(tmp_path / "shapes", per_class=5, sizes=((20, 28),), corrupt=0)
    files = sorted((tmp_path / "shapes").rglob("*.*"))
    sums, bad, cache = stream.survey(files, 3, (20, 28))
    assert not bad and cache is not None
    direct = stream.decode_files(files, 3, (20, 28))
    rows = [4, 0, 9, 9, 2]
    assert np.array_equal(cache.read(rows), direct[rows])
    assert np.allclose(sums[:, :, 0], direct.reshape(len(files), 3, -1).sum(axis=2))
    path = cache.path
    del cache
    assert not os.path.exists(path)


def test_a_file_that_changes_under_a_running_job_is_one_clear_error(tmp_path):
    datagen.image_folder(tmp_path / "shapes", per_class=2, sizes=((16, 16),), corrupt=0)
    files = sorted((tmp_path / "shapes").rglob("*.*"))
    files[1].write_bytes(b"no longer an image")
    with pytest.raises(DataError, match=f"{files[1].name}: could be read when the data was loaded"):
        stream.decode_files(files, 3, (16, 16))
