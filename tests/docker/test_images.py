"""An image folder through the docker executor (marker `docker`): the runner image decodes it
(Pillow is in the image) and trains with the folder's class names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from submit.emulator import daemon
from tests.submit.run.test_image_data import run_image_folder

pytestmark = pytest.mark.docker


def test_an_image_folder_in_the_runner_image(qtrain, tmp_path, docker_home):
    with daemon.isolated(docker_home, "docker"):
        data = run_image_folder(qtrain, tmp_path)
    assert json.loads((Path(data["artifacts_dir"]) / "run.json").read_text())["execution"].startswith("docker")
