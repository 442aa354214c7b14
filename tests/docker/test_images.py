"""An image folder through the docker executor (marker `docker`): the runner image decodes it
(Pillow is in the image) and trains with the folder's class names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import datagen
from tests.docker.test_docker import _skip_reason, emulator_at
from tests.runner.test_images import _job

pytestmark = pytest.mark.docker


def test_an_image_folder_in_the_runner_image(qtrain, tmp_path_factory, tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    datagen.image_folder(tmp_path / "shapes")
    with emulator_at(tmp_path_factory.mktemp("docker-images"), "docker"):
        result = qtrain("run", _job(tmp_path), "--json", "--store", tmp_path / "store")
    assert result.code == 0, result.err
    data = result.json()
    assert data["state"] == "succeeded" and data["metrics"]["test"]["accuracy"] >= 0.9
    folder = Path(data["artifacts_dir"])
    assert (folder / "confusion_matrix.csv").read_text().splitlines()[0] == "true,bars,cross,rings"
