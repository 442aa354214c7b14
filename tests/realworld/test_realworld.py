"""Code that no one here wrote (issue 36), run through `qtrain run` on the real emulator (process
executor) in every placement: one node, two nodes, two processes a node.

The code comes from package registries at test time, through the jobs' own
`resources.requirements`, never copied into this repository: Hugging Face's ViT (transformers, Apache
2.0) as a module job, whose forward returns a `ModelOutput` or, with `return_dict=False`, a tuple;
Lightning's demo Transformer and WikiText2 (lightning, Apache 2.0) trained by Lightning's Trainer with
its default loggers; torch's SummaryWriter, lazy layers and batchnorm.  What this repository holds is
the few lines that build them for qtrain's data, and the data, made here.  Its own tier (`-m
realworld`, run by .ci/run: the first run installs transformers and lightning, about a minute).
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
import yaml

from tests import datagen

pytestmark = [pytest.mark.realworld, pytest.mark.usefixtures("emulator")]

PLACEMENTS = {"1node": {}, "2nodes": {"nodes": 2}, "2procs": {"procs_per_node": 2}}

VIT = '''
from transformers import ViTConfig, ViTForImageClassification


class ViT(ViTForImageClassification):
    """Hugging Face's ViT built for qtrain's data; its forward is theirs (pixel_values, head_mask=None, ...)."""

    def __init__(self, input_shape, num_classes, tuple_output=False):
        channels, height, _ = input_shape
        super().__init__(ViTConfig(image_size=height, patch_size=7, num_channels=channels, hidden_size=48,
                                   num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                   num_labels=num_classes))
        self.tuple_output = tuple_output

    def forward(self, pixel_values, **kwargs):  # theirs; a tuple (logits,) when asked, as return_dict=False gives
        return super().forward(pixel_values, return_dict=not self.tuple_output, **kwargs)
'''

LAZY = '''
from torch import nn


class Net(nn.Module):
    """torch's lazy layers and batchnorm: shapes learnt from the first batch."""

    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.LazyConv2d(8, 3), nn.LazyBatchNorm2d(), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.body(x)
'''

LIGHTNING = '''
"""Lightning's getting-started shape: its demo Transformer on WikiText2 (lightning.pytorch.demos), a
LightningModule that logs, the Trainer with its default loggers, DDP when torchrun's variables say so."""
import argparse
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.demos import Transformer, WikiText2
from torch.utils.data import DataLoader, random_split


class LitTransformer(L.LightningModule):
    def __init__(self, vocab_size):
        super().__init__()
        self.model = Transformer(vocab_size=vocab_size, ninp=32, nhead=2, nhid=32, nlayers=1)

    def step(self, batch):
        inputs, target = batch
        return torch.nn.functional.nll_loss(self.model(inputs, target), target.view(-1))

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("train_loss", loss, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.step(batch), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.5)


parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--epochs", type=int, default=2)
args = parser.parse_args()
L.seed_everything(0)
dataset = WikiText2(data_dir=Path(args.data), download=False)
train, val = random_split(dataset, [len(dataset) - 24, 24], generator=torch.Generator().manual_seed(0))
world, devices = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=devices, num_nodes=world // devices,
                    strategy="ddp" if world > 1 else "auto", limit_train_batches=10, enable_progress_bar=False)
trainer.fit(LitTransformer(dataset.vocab_size), DataLoader(train, batch_size=8), DataLoader(val, batch_size=8))
print(f"trained on {trainer.world_size} process(es)", flush=True)
'''

SUMMARY_WRITER = '''
import argparse
import torch
from torch.utils.tensorboard import SummaryWriter

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()
torch.manual_seed(0)
x = torch.randn(256, 4)
y = (x[:, 0] - x[:, 1] > 0).long()
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
writer = SummaryWriter()  # runs/<date>_<host>/ in the working folder: the one that comes home
for epoch in range(args.epochs):
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x[:200]), y[:200])
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        accuracy = (model(x[200:]).argmax(1) == y[200:]).float().mean().item()
    writer.add_scalar("Loss/train", loss.item(), epoch)
    writer.add_scalar("Accuracy/val", accuracy, epoch)
writer.close()
'''


def _run(qtrain, tmp_path: Path, job: dict) -> dict:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    result = qtrain("run", tmp_path / "job.yaml", "--json", "--store", tmp_path / "store")
    assert result.code == 0, (result.out + result.err)[-4000:]
    run = result.json()
    assert run["state"] == "succeeded" and run["retrieved"]
    return run


@pytest.mark.parametrize("placement, tuple_output", [("1node", False), ("2nodes", True), ("2procs", False)])
def test_hugging_face_vit_as_a_module_job(qtrain, tmp_path, placement, tuple_output):
    datagen.mnist_idx(tmp_path / "mnist", n_train=1200, n_test=300)
    (tmp_path / "vit.py").write_text(VIT)
    run = _run(qtrain, tmp_path, {
        "name": "vit", "task": "classification", "data": {"path": "mnist"},
        "model": {"kind": "module", "source": "vit.py", "class": "ViT", "args": {"tuple_output": tuple_output}},
        "train": {"epochs": 12, "lr": 0.001, "batch_size": 32, "early_stopping": None},
        "resources": {"requirements": ["transformers>=4.40"], **PLACEMENTS[placement]}})
    metrics = run["metrics"]
    assert metrics["test"]["accuracy"] > metrics["baseline"]["accuracy"] + 0.1, metrics["test"]
    if placement != "1node":
        assert metrics["distributed"]["world_size"] == 2


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_torch_lazy_layers_and_batchnorm_in_every_placement(qtrain, tmp_path, placement):
    datagen.mnist_idx(tmp_path / "mnist", n_train=1200, n_test=300)
    (tmp_path / "net.py").write_text(LAZY)
    run = _run(qtrain, tmp_path, {
        "name": "lazy", "task": "classification", "data": {"path": "mnist"},
        "model": {"kind": "module", "source": "net.py", "class": "Net"},
        "train": {"epochs": 3, "batch_size": 32}, "resources": PLACEMENTS[placement]})
    metrics = run["metrics"]
    assert metrics["test"]["accuracy"] > metrics["baseline"]["accuracy"] + 0.4 and metrics["parameters"]["total"] > 0


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_a_lightning_script_with_its_default_loggers(qtrain, tmp_path, placement):
    random.seed(0)
    words = "the a cat dog sat on mat ran to house big small red blue and then".split()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "wikitext-2.txt").write_text(
        "".join(" ".join(random.choice(words) for _ in range(12)) + "\n" for _ in range(400)))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text(textwrap.dedent(LIGHTNING))
    run = _run(qtrain, tmp_path, {
        "name": "lightning", "data": {"path": "text"},
        "script": {"path": "code/train.py", "args": {"data": "${QTRAIN_DATA}", "epochs": 3}},
        "resources": {"requirements": ["lightning>=2.2"], **PLACEMENTS[placement]}})
    metrics = run["metrics"]  # from its TensorBoard (or CSV) logger's files, as it wrote them
    assert metrics["epochs_run"] == 3 and 0 < metrics["val"]["loss"] and 0 < metrics["train_loss"]
    world = 1 if placement == "1node" else 2
    logs = qtrain("logs", run["run_id"], "--store", tmp_path / "store")
    assert f"trained on {world} process(es)" in logs.out


def test_a_script_that_logs_with_summary_writer(qtrain, tmp_path):
    pytest.importorskip("tensorboard", reason="SummaryWriter needs tensorboard (pip install 'qtrain[tensorboard]')")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "train.py").write_text(textwrap.dedent(SUMMARY_WRITER))
    run = _run(qtrain, tmp_path, {"name": "writer", "task": "classification",
                                  "script": {"path": "code/train.py", "args": {"epochs": 6}},
                                  "resources": {"requirements": ["tensorboard"]}})  # SummaryWriter's, as check says
    metrics = run["metrics"]
    assert metrics["epochs_run"] == 6 and metrics["val"]["accuracy"] > 0.8 and metrics["train_loss"] > 0
    shown = qtrain("results", "show", run["run_id"], "--store", tmp_path / "store")
    assert "accuracy" in shown.out and "None" not in shown.out
