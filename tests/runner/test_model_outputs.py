"""Models return what they return (issue 36): a module job trains a network whose forward gives a
tuple (torchvision's GoogLeNet in training mode), a dict or a Hugging Face-style ModelOutput, whose
layers are lazy, that has batchnorm or a `forward(x, mask=None)`; `predict` and `resume` work for
each; anything else is one line at `check`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from jobs.load import load_job
from runner.api import load_model, run_job

HEAD = """
import collections, dataclasses
import torch
from torch import nn
"""

SHAPES = {
    "lazy": """
        class Net(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.body = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.LazyLinear(num_classes))
            def forward(self, x):
                return self.body(x)
    """,
    "batchnorm": """
        class Net(nn.Module):
            def __init__(self, in_features, num_classes):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(in_features, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                          nn.Linear(16, num_classes))
            def forward(self, x):
                return self.body(x)
    """,
    "tuple": """
        class Net(nn.Module):  # GoogLeNet's shape in training mode: the logits, then an auxiliary head's
            def __init__(self, in_features, num_classes):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(in_features, 16), nn.ReLU())
                self.head, self.aux = nn.Linear(16, num_classes), nn.Linear(16, num_classes)
            def forward(self, x):
                h = self.body(x)
                return (self.head(h), self.aux(h)) if self.training else self.head(h)
    """,
    "dict": """
        class Net(nn.Module):
            def __init__(self, in_features, num_classes):
                super().__init__()
                self.body, self.head = nn.Linear(in_features, 16), nn.Linear(16, num_classes)
            def forward(self, x):
                h = torch.relu(self.body(x))
                return {"hidden": h, "logits": self.head(h)}
    """,
    "modeloutput": """
        @dataclasses.dataclass
        class Output(collections.OrderedDict):  # transformers.utils.ModelOutput's shape: keys and attributes
            loss: object = None
            logits: torch.Tensor = None
            def __post_init__(self):
                self["logits"] = self.logits
        class Net(nn.Module):
            def __init__(self, in_features, num_classes):
                super().__init__()
                self.body, self.head = nn.Linear(in_features, 16), nn.Linear(16, num_classes)
            def forward(self, x):
                return Output(logits=self.head(torch.relu(self.body(x))))
    """,
    "mask": """
        class Net(nn.Module):
            def __init__(self, input_size, n_classes):
                super().__init__()
                self.body = nn.Linear(input_size, n_classes)
            def forward(self, x, mask=None):
                return self.body(x if mask is None else x * mask)
    """,
}


def _job(folder: Path, body: str, **train) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.py").write_text(HEAD + textwrap.dedent(body))
    job = {"name": "shapes", "task": "classification", "data": {"path": "palmerpenguins", "target": "species"},
           "model": {"kind": "module", "source": "net.py", "class": "Net"},
           "train": {"epochs": 6, "lr": 0.03, "refit": False, "early_stopping": None, "checkpoint_every": 1, **train}}
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    return folder / "job.yaml"


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_module_trains_predicts_and_resumes_whatever_it_returns(tmp_path, qtrain, shape):
    path = _job(tmp_path, SHAPES[shape])
    checked = qtrain("check", path, "--json")
    assert checked.code == 0, checked.err
    out = tmp_path / "out"
    metrics = run_job(load_job(path), out)
    assert metrics["test"]["accuracy"] > metrics["baseline"]["accuracy"] and metrics["parameters"]["total"] > 0
    # predict: the saved model, rebuilt from its code, gives the run's own test predictions
    predictor = load_model(out)
    rows = pd.read_csv(out / "predictions.csv")
    import palmerpenguins

    frame = palmerpenguins.load_penguins().loc[rows["row"]]
    again = predictor.predict(frame)
    assert list(again["predicted"]) == list(rows["predicted"])
    # resume: two more epochs from its checkpoint
    resumed = run_job(load_job(path, ["train.epochs=8"]), out, resume=True)
    assert resumed["resumed_from_epoch"] == 6 and resumed["epochs_run"] == 8


def test_a_lazy_module_counts_real_parameters(tmp_path, qtrain):
    path = _job(tmp_path, SHAPES["lazy"])
    features = qtrain("check", path, "--json").json()["features"]  # the first LazyLinear learnt them from a batch
    metrics = run_job(load_job(path), tmp_path / "out")
    assert metrics["parameters"]["total"] == (features * 16 + 16) + (16 * 3 + 3)


@pytest.mark.parametrize("body, said", [
    ("""
        class Net(nn.Module):
            def __init__(self, in_features):
                super().__init__()
                self.body = nn.Linear(in_features, 3)
            def forward(self, x):
                return "logits"
    """, "model.class Net: forward returns str (qtrain takes a tensor, a tuple or list (its first element), or a dict "
         "or object with logits (Hugging Face's ModelOutput))"),
    ("""
        class Net(nn.Module):
            def __init__(self, in_features):
                super().__init__()
                self.body = nn.Linear(in_features, 3)
            def forward(self, x):
                return {"scores": self.body(x)}
    """, "model.class Net: forward returns a dict without logits (its keys: scores)"),
    ("""
        class Net(nn.Module):
            def __init__(self, in_features):
                super().__init__()
                self.body = nn.Linear(in_features, 3)
            def forward(self, x):
                return [None, self.body(x)]
    """, "model.class Net: forward returns a list whose first element is NoneType, not a tensor"),
])
def test_an_output_qtrain_cannot_take_is_one_line_at_check(tmp_path, qtrain, body, said):
    result = qtrain("check", _job(tmp_path, body))
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert result.code == 2 and len(errors) == 1 and said in errors[0], result.err
    assert "Traceback" not in result.err


def test_the_hook_leaves_the_modules_state_dict_as_it_is(tmp_path):
    out = tmp_path / "out"
    run_job(load_job(_job(tmp_path, SHAPES["tuple"])), out)
    saved = torch.load(out / "model.pt", weights_only=True)["model_state"]
    assert set(saved) == {"body.0.weight", "body.0.bias", "head.weight", "head.bias", "aux.weight", "aux.bias"}
