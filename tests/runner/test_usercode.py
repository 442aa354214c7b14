"""Your own nn.Module (`model.kind: module`): trained as the built-in kinds are, and every mistake
in it one line naming the file, the line and the field, found by `qtrain check` before anything is
sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs.load import load_job
from runner.api import load_model, run_job

MLP = '''import torch
from torch import nn


class MLP(nn.Module):
    """The built-in mlp, written by hand: the same layers, built in the same order."""

    def __init__(self, in_features, num_classes, hidden=(64, 64)):
        super().__init__()
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
'''

SETTINGS = {"name": "penguins-mlp", "task": "classification",
            "data": {"path": "palmerpenguins", "target": "species"},
            "train": {"epochs": 12, "seed": 3}}


def _job(folder: Path, code: str = MLP, **model) -> Path:
    (folder / "net.py").write_text(code)
    job = {**SETTINGS, "model": {"kind": "module", "source": "net.py", "class": "MLP",
                                 "args": {"hidden": [32, 16]}, **model}}
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    return folder / "job.yaml"


def test_an_mlp_written_as_a_module_gives_the_metrics_of_kind_mlp(tmp_path):
    mine = run_job(load_job(_job(tmp_path)), tmp_path / "module")
    builtin = tmp_path / "builtin.yaml"
    builtin.write_text(yaml.safe_dump({**SETTINGS, "model": {"kind": "mlp", "hidden": [32, 16]}}))
    theirs = run_job(load_job(builtin), tmp_path / "mlp")
    for split in ("train", "val", "test"):
        assert mine[split] == theirs[split], split
    assert mine["epochs_run"] == theirs["epochs_run"] and mine["train_loss"] == theirs["train_loss"]
    # the results folder rebuilds it with its own copy of the code: predict works from there
    assert (tmp_path / "module" / "code" / "net.py").read_text() == MLP
    (tmp_path / "net.py").unlink()
    predictor = load_model(tmp_path / "module")
    assert type(predictor.model).__name__ == "MLP"


def test_a_sweep_varies_the_modules_arguments(tmp_path):
    path = _job(tmp_path)
    job = yaml.safe_load(path.read_text())
    job["sweep"] = {"model.args.hidden": [[8], [16, 8]]}
    job["train"]["epochs"] = 3
    path.write_text(yaml.safe_dump(job))
    run_job(load_job(path), tmp_path / "out")
    sweep = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [t["overrides"] for t in sweep["trials"]] == [{"model.args.hidden": [8]}, {"model.args.hidden": [16, 8]}]


def test_a_module_in_a_folder_is_named_module_colon_class(tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "__init__.py").write_text("")
    (tmp_path / "nets" / "tables.py").write_text(MLP)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**SETTINGS, "train": {"epochs": 2}, "model": {
        "kind": "module", "source": "nets", "class": "nets.tables:MLP"}}))
    out = run_job(load_job(tmp_path / "job.yaml"), tmp_path / "out")
    assert out["epochs_run"] == 2 and (tmp_path / "out" / "code" / "nets" / "tables.py").is_file()


BROKEN = [
    ("syntax", MLP.replace("class MLP(nn.Module):", "class MLP(nn.Module)"), {},
     ["net.py:5", "syntax error", "class MLP(nn.Module)"]),
    ("missing class", MLP, {"class": "MPL"}, ["model.class MPL", "did you mean 'MLP'"]),
    ("unexpected argument", MLP, {"args": {"hidden": [8], "width": 3}}, ["model.args.width", "takes no argument"]),
    ("missing argument", MLP.replace("hidden=(64, 64)", "hidden"), {"args": {}}, ["model.args.hidden", "needs hidden"]),
    ("wrong output", MLP.replace("nn.Linear(width, num_classes)", "nn.Linear(width, 10)"), {},
     ["MLP returns (32, 10) for 3 classes"]),
    ("missing package", "import not_a_package_here\n" + MLP, {}, ["net.py:1", "not_a_package_here",
                                                                  "resources.requirements"]),
    ("failing forward", MLP.replace("return self.head(self.features(x))", "return self.head(x)"), {},
     ["net.py:", "return self.head(x)", "forward fails"]),
    ("not python", MLP, {"source": "job.yaml"}, ["model.source", "not a Python file"]),
    ("no such file", MLP, {"source": "nowhere.py"}, ["model.source", "not found"]),
]


@pytest.mark.parametrize("code, model, said", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_mistakes_in_the_module_are_one_line_at_check(tmp_path, qtrain, code, model, said):
    result = qtrain("check", _job(tmp_path, code, **model))
    lines = result.err.strip().splitlines()
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1
    error = next(ln for ln in lines if ln.startswith("error:"))
    for part in said:
        assert part in error, (part, error)
    assert "qtrain-check-" not in error  # the user's file, never its staged copy
