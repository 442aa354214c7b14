"""A matrix, not a sample (issue 36): every job kind x task x what it reports x placement, each a few
steps through `qtrain run` on the real emulator (process executor).  Every combination ends
`succeeded`, or is refused at `check` in one line with nothing sent.  Its own tier (`-m matrix`,
run by .ci/run); the docker executor's cells are in tests/docker/test_matrix_docker.py."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest
import yaml

from tests import datagen

pytestmark = [pytest.mark.matrix, pytest.mark.usefixtures("emulator")]

KINDS = ("builtin", "module", "script")
TASKS = ("classification", "regression", None)
REPORTS = ("predictions", "nothing")
NODES = (1, 2)

MODULE = """
from torch import nn


class Net(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, out_features))

    def forward(self, x):
        return self.body(x)
"""

# a script as people write them: its own arguments and data, DDP when torchrun's variables say so,
# qtrain's reporting API only where it reports predictions
SCRIPT = """
import argparse, os
import pandas as pd, torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--report", choices=["predictions", "nothing"])
parser.add_argument("--target", choices=["class", "number"])
args = parser.parse_args()
world = int(os.environ.get("WORLD_SIZE", "1"))
if world > 1:
    dist.init_process_group("gloo")
frame = pd.read_csv(args.data)
x = torch.tensor(frame[["b", "c"]].to_numpy(), dtype=torch.float32)
number = args.target == "number"
y = torch.tensor(frame["a"].to_numpy(), dtype=torch.float32)[:, None] if number else \\
    torch.tensor((frame["label"] == "yes").to_numpy(), dtype=torch.long)
model = torch.nn.Linear(2, 1 if number else 2)
if world > 1:
    model = torch.nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loss_fn = torch.nn.functional.mse_loss if number else torch.nn.functional.cross_entropy
for step in range(5):
    optimizer.zero_grad()
    loss = loss_fn(model(x[:300]), y[:300])
    loss.backward()
    optimizer.step()
print(f"world {world} loss {loss.item():.4f}", flush=True)
if args.report == "predictions":
    from runner import script as qtrain

    with torch.no_grad():
        out = model(x[300:])
    if number:
        qtrain.log_predictions(y[300:, 0], out[:, 0])
    else:
        qtrain.log_predictions(y[300:], out.argmax(1), proba=out.softmax(1), classes=["no", "yes"])
if world > 1:
    del model, optimizer  # DDP released first: torch's gloo may abort at exit otherwise (README, "Several nodes")
    dist.destroy_process_group()
"""


def _job(root: Path, kind: str, task: str | None, reports: str, nodes: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    datagen.small_table(root / "table.csv", rows=400)
    job: dict = {"name": f"m-{kind}-{task or 'none'}-{reports}-{nodes}", "resources": {"nodes": nodes}}
    if task:
        job["task"] = task
    if kind == "script":
        (root / "code").mkdir(exist_ok=True)
        (root / "code" / "train.py").write_text(textwrap.dedent(SCRIPT))
        job["data"] = {"path": "table.csv"}
        job["script"] = {"path": "code/train.py", "args": {
            "data": "${QTRAIN_DATA}", "report": reports,
            "target": "number" if task == "regression" else "class"}}
    else:
        job["data"] = {"path": "table.csv", "target": "a" if task == "regression" else "label"}
        job["train"] = {"epochs": 2, "refit": False}
        if reports == "nothing":  # nothing held out, so nothing to report on: refused at check
            job["split"] = {"test_size": 0, "val_size": 0}
        if kind == "module":
            (root / "net.py").write_text(MODULE)
            job["model"] = {"kind": "module", "source": "net.py", "class": "Net"}
        else:
            job["model"] = {"kind": "mlp", "hidden": [8]}
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _refusal(kind: str, task: str | None, reports: str) -> str | None:
    """What check says of a combination qtrain cannot train, or None."""
    if kind == "script":
        return None
    if reports == "nothing":  # a field's own check comes before the job's
        return "split.test_size: Input should be greater than 0"
    if task is None:
        return "task: required field is missing"
    return None


def _tasks(emulator) -> int:
    import requests

    return len(requests.get(f"{emulator.url}/tasks", headers={"Authorization": emulator.token}, timeout=30).json())


CELLS = list(itertools.product(KINDS, TASKS, REPORTS, NODES))


@pytest.mark.parametrize("kind, task, reports, nodes", CELLS,
                         ids=[f"{k}-{t or 'notask'}-{r}-{n}node" for k, t, r, n in CELLS])
def test_every_combination_succeeds_or_is_refused_in_one_line(qtrain, emulator, tmp_path, kind, task, reports, nodes):
    path = _job(tmp_path / "job", kind, task, reports, nodes)
    refused = _refusal(kind, task, reports)
    before = _tasks(emulator)
    result = qtrain("run", path, "--json", "--store", tmp_path / "store")
    if refused is not None:
        errors = [line for line in result.err.splitlines() if line.startswith("error:")]
        assert result.code == 2 and len(errors) == 1 and refused in errors[0], result.err[-2000:]
        assert "Traceback" not in result.err and _tasks(emulator) == before  # nothing sent
        return
    assert result.code == 0, (result.out + result.err)[-3000:]
    run = result.json()
    assert run["state"] == "succeeded" and run["retrieved"]
    metrics = run["metrics"]
    if reports == "predictions":
        headline = "rmse" if task == "regression" else "accuracy"
        assert headline in metrics["test"], metrics
        assert metrics["task"] == (task or "classification")
    else:
        assert any(note.startswith("no metrics reported") for note in metrics["notes"]), metrics
        assert metrics["task"] == task
    if kind == "script":
        logs = qtrain("logs", run["run_id"], "--store", tmp_path / "store")
        assert f"world {nodes} loss" in logs.out, logs.out[-2000:]
    elif nodes > 1:
        assert metrics["distributed"]["world_size"] == nodes
