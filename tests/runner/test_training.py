"""Training-loop behaviour: determinism, checkpoints and resume, early stopping, class weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from jobs import QtrainError, load_job
from runner.run import run_job
from runner.train import select_device

ROOT = Path(__file__).resolve().parents[2]


def metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_same_seed_same_result_on_cpu(tmp_path):
    job = load_job("penguins", ["train.epochs=10"])
    a = run_job(job, tmp_path / "a")
    b = run_job(job, tmp_path / "b")
    assert a["test"] == b["test"]
    c = run_job(load_job("penguins", ["train.epochs=10", "train.seed=1"]), tmp_path / "c")
    assert c["train"]["log_loss"] != a["train"]["log_loss"]


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = run_job(load_job("penguins", ["train.epochs=8"]), tmp_path / "straight")
    out = tmp_path / "resumed"
    run_job(load_job("penguins", ["train.epochs=4"]), out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 4
    resumed = run_job(load_job("penguins", ["train.epochs=8"]), out, resume=True)
    assert resumed["resumed_from_epoch"] == 4 and resumed["epochs_run"] == 8
    assert resumed["test"] == straight["test"]
    assert resumed["train"]["log_loss"] == pytest.approx(straight["train"]["log_loss"], rel=1e-5)
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == list(range(1, 9))


def test_resume_refuses_another_jobs_checkpoint(tmp_path):
    run_job(load_job("penguins", ["train.epochs=2"]), tmp_path)
    with pytest.raises(QtrainError, match="belongs to a different job"):
        run_job(load_job("penguins", ["train.epochs=4", "model.hidden=[8]"]), tmp_path, resume=True)


def test_checkpoint_every_n_epochs(tmp_path, capfd):
    run_job(load_job("circles", ["train.epochs=6", "train.checkpoint_every=2"]), tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 6


def test_early_stopping_restores_best_epoch(tmp_path):
    job = load_job("circles", ["split.val_size=0.2", "train.epochs=400", "train.lr=0.2",
                               "model.hidden=[64, 64]", "model.activation=relu",
                               "train.early_stopping={monitor: val_loss, patience: 5}"])
    m = run_job(job, tmp_path)
    assert m["early_stop_epoch"] is not None and m["early_stop_epoch"] < 400
    assert m["best_epoch"] == m["early_stop_epoch"] - 5
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["val_loss"].idxmin() + 1 == m["best_epoch"]
    assert m["val"]["log_loss"] == pytest.approx(history["val_loss"].min(), rel=1e-4)


def test_class_weights_raise_minority_recall(tmp_path, data_dir):
    path = f"data.path={data_dir / 'weatherAUS.csv'}"
    plain = run_job(load_job("rain-australia", [path, "train.class_weights=none"]), tmp_path / "a")
    weighted = run_job(load_job("rain-australia", [path]), tmp_path / "b")
    assert weighted["test"]["per_class"]["Yes"]["recall"] > plain["test"]["per_class"]["Yes"]["recall"]


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(QtrainError, match="no CUDA device"):
            select_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_mixed_precision_run(tmp_path):
    m = run_job(load_job("digits-cnn", ["train.epochs=5", "train.device=cuda"]), tmp_path)
    assert m["device"].startswith("cuda") and m["test"]["accuracy"] > 0.9


def test_imputation_and_onehot_keep_rows(tmp_path, write_job):
    frame = pd.DataFrame({"num": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0] * 3,
                          "cat": ["a", "b", None, "a", "b", "c", "a", "b", "c", "a"] * 3,
                          "y": ["p", "q"] * 15})
    frame.to_csv(tmp_path / "d.csv", index=False)
    job = write_job({"name": "imp", "task": "classification",
                     "data": {"path": "d.csv", "target": "y"},
                     "preprocess": {"missing": "impute"}, "train": {"epochs": 2}})
    from runner.run import check_job

    report = check_job(load_job(job))
    assert report["data"]["rows"] == 30
    # a column with gaps in training gets a missing flag beside its imputed values
    assert report["feature_names"] == ["num", "cat=a", "cat=b", "cat=c", "num=<missing>", "cat=<missing>"]


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - PyPI's torchvision fails to import beside some torch builds
        return False
    return True


def test_torchvision_backbone_needs_weights_and_torchvision(tmp_path, write_job):
    from runner.run import check_job

    base = {"name": "tv", "task": "classification", "data": {"path": "sklearn:digits"},
            "model": {"kind": "transfer", "backbone": "torchvision:densenet121"}}
    with pytest.raises(QtrainError, match="needs its weights file"):
        check_job(load_job(write_job(base)))
    base["model"]["weights"] = "nowhere.pth"
    with pytest.raises(QtrainError, match="nowhere.pth: file not found"):
        check_job(load_job(write_job(base)))
    if not _torchvision_works():
        (tmp_path / "w.pth").write_bytes(b"")
        base["model"]["weights"] = "w.pth"
        with pytest.raises(QtrainError, match="needs a working torchvision"):
            check_job(load_job(write_job(base)))


@pytest.mark.skipif(not _torchvision_works(), reason="torchvision does not import beside this torch")
def test_torchvision_densenet_backbone_trains_a_head(tmp_path, write_job):
    import torchvision

    torch.save(torchvision.models.densenet121(weights=None).state_dict(), tmp_path / "d.pth")
    job = write_job({"name": "tv", "task": "classification", "data": {"path": "sklearn:digits"},
                     "model": {"kind": "transfer", "backbone": "torchvision:densenet121",
                               "weights": "d.pth", "resize": 32}, "train": {"epochs": 1}})
    m = run_job(load_job(job), tmp_path / "out")
    assert m["parameters"]["trainable"] < m["parameters"]["total"] / 10


def test_epoch_line_round_trips_through_the_parser():
    from jobs.results import parse_epoch_line
    from runner import log

    line = log.epoch_line({"epoch": "3/20", "train_loss": 0.41234, "val_accuracy": 0.875,
                           "elapsed": 1.23456})
    assert line == "[qtrain] epoch=3/20 train_loss=0.41234 val_accuracy=0.875 elapsed=1.235s"
    # Qarnot prefixes multi-instance stdout with the instance number
    assert parse_epoch_line("2> " + line) == {"epoch": "3/20", "train_loss": "0.41234",
                                                  "val_accuracy": "0.875", "elapsed": "1.235s"}
    assert parse_epoch_line("[qtrain] done: test accuracy=0.9") is None


def test_auto_batch_size_grows_with_a_large_table(tmp_path):
    from runner.train import resolve_batch_size

    assert resolve_batch_size("auto", 344) == 64 and resolve_batch_size("auto", 10_240) == 64
    assert resolve_batch_size("auto", 10_241) == 128 and resolve_batch_size("auto", 40_000) == 256
    assert resolve_batch_size("auto", 60_000, images=True) == 64
    assert resolve_batch_size("full", 500) == 500 and resolve_batch_size(1024, 300) == 300
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32_000, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["y"] = x.sum(axis=1)
    frame.to_csv(tmp_path / "big.csv", index=False)
    (tmp_path / "job.yaml").write_text("name: big\ntask: regression\ndata: {path: big.csv, target: y}\n"
                                       "train: {epochs: 1}\n")
    m = run_job(load_job(tmp_path / "job.yaml"), tmp_path / "out")
    assert m["batch_size"] == 256  # 20,800 training rows (65% of 32,000: the default 15% validation)
    m = run_job(load_job(tmp_path / "job.yaml", ["train.batch_size=64"]), tmp_path / "out64")
    assert m["batch_size"] == 64


def test_timed_checkpoints_keep_within_two_percent_of_the_training_time(tmp_path):
    """train.checkpoint_minutes: a checkpoint when the minutes have passed, but never more often
    than 50 times the last save's duration."""
    from runner.run import build
    from runner.train import Trainer

    loaded = load_job("penguins", ["train.checkpoint_minutes=0.001"])  # 0.06 s
    b = build(loaded)
    trainer = Trainer(b.model, b.prepared, loaded.job, b.device, "h", tmp_path / "checkpoint.pt")
    assert not trainer.checkpoint_due()  # the clock starts with the trainer
    trainer._saved_at -= 1.0
    assert trainer.checkpoint_due()
    trainer.save_checkpoint(1, 0)
    assert (tmp_path / "checkpoint.pt").is_file() and not trainer.checkpoint_due()
    trainer._save_seconds = 1.0  # a slow save: next one 50 s later, whatever the minutes say
    trainer._saved_at -= 10.0
    assert not trainer.checkpoint_due()
    trainer._saved_at -= 41.0
    assert trainer.checkpoint_due()
    off = load_job("penguins", ["train.checkpoint_minutes=0"])
    quiet = Trainer(b.model, b.prepared, off.job, b.device, "h", tmp_path / "c2.pt")
    quiet._saved_at -= 3600
    assert not quiet.checkpoint_due()


def test_training_imports_no_dynamo_and_steps_as_torch_does(tmp_path):
    """The optimiser's step without torch's `_use_grad` wrapper (which imports torch._dynamo, 0.8 s,
    for torch.compile only) gives the same model, bit for bit, as torch's own step."""
    import json as json_module
    import subprocess
    import sys
    from unittest import mock

    from jobs.load import load_job
    from runner import optim
    from runner.run import run_job

    code = ("import sys, pathlib; from jobs.load import load_job; from runner.run import run_job; "
            f"run_job(load_job('penguins', ['train.epochs=3', 'train.optimizer=adamw']), pathlib.Path({str(tmp_path / 'fresh')!r})); "
            "print('torch._dynamo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split()[-1:] == ["False"], proc.stderr[-2000:]
    for optimizer in ("adam", "sgd", "rmsprop"):
        over = ["train.epochs=5", f"train.optimizer={optimizer}", "train.schedule=cosine"]
        ours = run_job(load_job("penguins", over), tmp_path / f"ours-{optimizer}")
        with mock.patch.object(optim, "_step_without_dynamo", lambda optimizer: None):
            torchs = run_job(load_job("penguins", over), tmp_path / f"torch-{optimizer}")
        assert json_module.dumps(ours["test"], sort_keys=True) == json_module.dumps(torchs["test"], sort_keys=True)


def test_the_optimizer_is_fused_where_torch_has_the_kernel_and_resumes_an_unfused_ones_state():
    """Adam, AdamW and SGD take torch's fused kernel for float parameters on the CPU (one kernel a
    step, not a dozen ops a tensor); a complex parameter keeps the per-tensor step and still
    trains; a checkpoint's optimizer state written before (unfused, the step count on the CPU)
    loads into the fused one and it steps on from there as the unfused one does."""
    import copy

    from torch import nn

    from jobs.spec import TrainSpec
    from runner.optim import make_optimizer

    def model(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    for name in ("adam", "adamw", "sgd"):
        assert make_optimizer(model(), TrainSpec(optimizer=name)).defaults["fused"] is True
    assert "fused" not in make_optimizer(model(), TrainSpec(optimizer="rmsprop")).defaults

    class Complex(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, dtype=torch.complex64))
    c = Complex()
    opt = make_optimizer(c, TrainSpec(optimizer="adam"))
    assert not opt.defaults["fused"]
    c.w.grad = torch.ones(3, dtype=torch.complex64)
    opt.step()
    assert not torch.equal(c.w.detach(), torch.ones(3, dtype=torch.complex64))

    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def steps(net, opt, n):
        for _ in range(n):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()

    before, after = model(), model()
    old = torch.optim.Adam(before.parameters(), lr=0.01)  # as an earlier qtrain built it
    steps(before, old, 3)
    after.load_state_dict(before.state_dict())
    fused = make_optimizer(after, TrainSpec(optimizer="adam", lr=0.01))
    fused.load_state_dict(copy.deepcopy(old.state_dict()))  # as read back from a checkpoint file
    assert fused.defaults["fused"] is True
    steps(before, old, 3)
    steps(after, fused, 3)
    for a, b in zip(before.parameters(), after.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation,pooled_first", [("relu", True), ("tanh", True), ("gelu", False)])
def test_a_monotone_activation_runs_after_the_pooling_with_the_same_outputs_and_gradients(activation, pooled_first):
    """Max pooling commutes with a never-decreasing activation: the cnn pools first (a quarter
    of the values to activate), the outputs and gradients are the textbook order's, and the
    parameters keep their names (a model.pt from before loads)."""
    from torch import nn

    from runner.models import ACTIVATIONS, build_from_arch, make_arch

    acts = tuple(ACTIVATIONS.values())

    job = load_job("mnist-cnn", [f"model.activation={activation}"]).job
    net = build_from_arch(make_arch(job.model, (1, 28, 28), 10, None, classification=True))
    layers = list(net.features)
    textbook, i = [], 0  # conv, activation, pool: the order the seed's notebook writes
    while i < len(layers):
        if isinstance(layers[i], nn.MaxPool2d) and i + 1 < len(layers) and isinstance(layers[i + 1], acts):
            assert pooled_first  # pooled, then activated
            textbook += [layers[i + 1], layers[i]]
            i += 2
            continue
        textbook.append(layers[i])
        i += 1
    assert sum(isinstance(m, nn.MaxPool2d) for m in textbook) == 3
    assert (textbook != layers) == pooled_first  # pooled first exactly when the activation allows
    x = torch.randn(8, 1, 28, 28, requires_grad=True)
    ours = net.head(net.features(x))
    grad_ours = torch.autograd.grad(ours.sum(), x)[0]
    ref = net.head(nn.Sequential(*textbook)(x))
    grad_ref = torch.autograd.grad(ref.sum(), x)[0]
    assert torch.allclose(ours, ref) and torch.allclose(grad_ours, grad_ref)
    assert {k for k in net.state_dict()} >= {"features.0.weight", "features.3.weight", "features.6.weight"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_training_memory_is_kept_for_the_next_step():
    """A step's megabytes freed are kept (not handed back and faulted in again next step) once
    the runner has set the allocator up; without it, glibc gives a large block straight back."""
    import subprocess

    probe = ("import sys, torch\nfrom runner.train import keep_freed_memory\n"
             "if sys.argv[1] == 'keep': keep_freed_memory()\n"
             "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
             "x = torch.ones(48 << 20, dtype=torch.uint8); before = rss(); del x\n"
             "print(before - rss())\n")
    given_back = {how: int(subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True,
                                          check=True, cwd=str(ROOT)).stdout) for how in ("keep", "default")}
    assert given_back["default"] > 40 << 20 and given_back["keep"] < 8 << 20, given_back
