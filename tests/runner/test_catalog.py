"""Every catalog job that runs offline trains end to end and meets its target with a fixed seed.

Jobs whose data cannot be shipped run on generated files with the real schema (tests/datagen.py);
their targets are "clearly better than the naive baseline" since the seeds' numbers belong to the
real data.  Each run's results contract is checked file by file, and `predict` must reproduce it.

A threshold holds with room on any CPU: torch's kernels differ by CPU (AVX-512, AVX2, none; oneDNN's
ISA; the threads), their rounding moves a short training's path as a change of seed does, and a
figure still climbing moves with it.  So each is set below the lowest of the CPU's kernel paths and
of a few seeds, measured (comments: what was reached), and a short run is held to its baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.results import CLASSIFICATION_FILES, RESULT_FILES
from runner.data import read_idx
from runner.predict import load_model

pytestmark = pytest.mark.slow


def check_contract(out: Path, task: str) -> dict:
    for name in RESULT_FILES + (CLASSIFICATION_FILES if task == "classification" else ()):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train", "test", "baseline", "timings", "device", "epochs_run", "early_stop_epoch"):
        assert key in metrics, key
    assert metrics["timings"]["samples_per_second"] > 0
    names = (["accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
              "per_class"] if task == "classification" else ["rmse", "mae", "r2"])
    for split in ("test", "baseline"):
        assert all(k in metrics[split] for k in names), (split, metrics[split].keys())
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == list(range(1, metrics["epochs_run"] + 1))
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((out / "run.json").read_text())
    assert len(run["job_hash"]) == 64 and len(run["dataset_hash"]) == 64
    assert run["versions"]["torch"] and run["seed"] == run["job"]["train"]["seed"]
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == metrics["test"]["n"]
    if task == "classification":
        counts = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
        assert counts.to_numpy().sum() == metrics["test"]["n"]
        assert np.trace(counts.to_numpy()) == (preds["true"].astype(str) == preds["predicted"].astype(str)).sum()
        assert list(counts.columns) == [str(c) for c in counts.index]
        pct = pd.read_csv(out / "confusion_matrix_pct.csv", index_col=0).to_numpy()
        assert np.allclose(pct.sum(axis=1)[counts.sum(axis=1).to_numpy() > 0], 100, atol=0.1)
        assert abs(metrics["test"]["accuracy"] - (preds["true"].astype(str) == preds["predicted"].astype(str)).mean()) < 1e-9
    return metrics


def train(qtrain, job, out: Path, *sets: str) -> dict:
    args = ["train", job, "--out", out]
    for s in sets:
        args += ["--set", s]
    result = qtrain(*args)
    assert result.code == 0, result.err
    assert "[qtrain] epoch=1/" in result.out  # one progress line per epoch
    return json.loads((out / "metrics.json").read_text())


def test_penguins_beats_the_seed(qtrain, tmp_path):
    m = train(qtrain, "penguins", tmp_path)
    check_contract(tmp_path, "classification")
    assert m["test"]["accuracy"] >= 0.97
    assert m["test"]["per_class"]["Chinstrap"]["recall"] > 0.9  # the seed never predicted it
    # predict reproduces the run's test predictions from the raw rows
    from palmerpenguins import load_penguins

    preds = pd.read_csv(tmp_path / "predictions.csv")
    raw = load_penguins().loc[preds["row"]]
    again = load_model(tmp_path).predict(raw)
    assert list(again["predicted"]) == list(preds["predicted"])
    assert np.allclose(again["prob_Chinstrap"], preds["prob_Chinstrap"], atol=1e-6)


def test_circles_reaches_the_noise_ceiling(qtrain, tmp_path):
    m = train(qtrain, "circles", tmp_path)
    check_contract(tmp_path, "classification")
    assert m["test"]["n"] == 100 and m["test"]["accuracy"] >= 0.78
    assert "roc_auc" in m["test"]


def test_digits_cnn(qtrain, tmp_path):
    m = train(qtrain, "digits-cnn", tmp_path)
    check_contract(tmp_path, "classification")
    assert m["test"]["accuracy"] >= 0.95  # the catalog's target, 0.97, with seed 0: 0.989; other seeds 0.967-0.986


def test_mnist_cnn_on_idx_files_and_predict(qtrain, tmp_path, data_dir):
    m = train(qtrain, "mnist-cnn", tmp_path, f"data.path={data_dir / 'mnist'}", "train.epochs=10")
    check_contract(tmp_path, "classification")
    assert m["test"]["n"] == 300  # the t10k files are the test split
    assert m["test"]["accuracy"] >= 0.8  # reached 0.913-0.95 by kernel path, 0.977-0.99 other seeds; chance 0.1
    images = read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    np.save(tmp_path / "new.npy", images)
    result = qtrain("predict", tmp_path, tmp_path / "new.npy", "--out", tmp_path / "p.csv")
    assert result.code == 0, result.err
    again = pd.read_csv(tmp_path / "p.csv")
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert (again["predicted"].to_numpy() == preds["predicted"].to_numpy()).all()


def test_mnist_mlp_on_pkl_gz(qtrain, tmp_path, data_dir):
    m = train(qtrain, "mnist-mlp", tmp_path, f"data.path={data_dir / 'mnist.pkl.gz'}",
              "train.epochs=8")
    check_contract(tmp_path, "classification")
    assert m["test"]["accuracy"] >= 0.8  # reached 0.897-0.92 by kernel path and seed


def test_weather_sunshine_beats_persistence(qtrain, tmp_path, data_dir):
    csv = data_dir / "weather_prediction_dataset_light.csv"
    m = train(qtrain, "weather-sunshine", tmp_path, f"data.path={csv}")
    check_contract(tmp_path, "regression")
    assert m["baseline"]["kind"].startswith("persistence")
    assert m["early_stop_epoch"] is not None and m["early_stop_epoch"] < 1000
    assert m["test"]["rmse"] < 0.85 * m["baseline"]["rmse"]
    preds = pd.read_csv(tmp_path / "predictions.csv")
    raw = pd.read_csv(csv)
    # the label is tomorrow's value: row i's true value is row i+1's BASEL_sunshine
    assert np.allclose(preds["true"], raw["BASEL_sunshine"].to_numpy()[preds["row"] + 1], atol=1e-4)
    again = load_model(tmp_path).predict(raw.loc[preds["row"]])
    assert np.allclose(again["predicted"], preds["predicted"], atol=1e-4)


def test_rain_australia_with_class_weights(qtrain, tmp_path, data_dir):
    csv = data_dir / "weatherAUS.csv"
    result_args = ("train", "rain-australia", "--out", tmp_path, "--set", f"data.path={csv}")
    result = qtrain(*result_args)
    assert result.code == 0, result.err
    assert "rows whose target 'RainTomorrow' is missing" in result.err
    m = json.loads((tmp_path / "metrics.json").read_text())
    check_contract(tmp_path, "classification")
    assert m["test"]["balanced_accuracy"] > 0.75 > m["baseline"]["balanced_accuracy"]
    assert m["test"]["per_class"]["Yes"]["recall"] > 0.6
    assert 0.8 < m["test"]["roc_auc"] <= 1


def test_dollar_street_cnn_then_transfer(qtrain, tmp_path, data_dir):
    folder = data_dir / "dataset_dollarstreet"
    first = tmp_path / "cnn"
    m = train(qtrain, "dollar-street-cnn", first, f"data.path={folder}", "train.epochs=12",
              "model.filters=16", "train.lr=0.003")
    check_contract(first, "classification")
    assert m["test"]["n"] == 100 and m["test"]["accuracy"] >= 0.4  # chance: 0.1; seed: 0.3
    second = tmp_path / "transfer"
    t = train(qtrain, "transfer", second, f"data.path={folder}",
              f"model.backbone={first / 'model.pt'}", "train.epochs=8")
    check_contract(second, "classification")
    assert t["parameters"]["trainable"] < t["parameters"]["total"] / 2  # backbone frozen
    assert t["test"]["accuracy"] >= 0.3  # twice the baseline (0.15): 0.54 here, 0.42 from another seed's CNN
    # the saved transfer model rebuilds without the backbone file
    (first / "model.pt").unlink()
    preds = pd.read_csv(second / "predictions.csv")
    x = np.load(folder / "test_images.npy")
    assert list(load_model(second).predict(x)["predicted"].astype(str)) == list(preds["predicted"].astype(str))


def test_grid_search_runs_every_trial_and_picks_one(qtrain, tmp_path):
    result = qtrain("train", "grid-search", "--out", tmp_path, "--set", "train.epochs=3")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert len(summary["trials"]) == 6 and summary["selection"] == "val_accuracy"
    for i in range(6):
        check_contract(tmp_path / f"trial-{i}", "classification")
    values = [t["metrics"]["val"]["accuracy"] for t in summary["trials"]]
    assert summary["best"]["value"] == max(values)
    # one trial alone, as a Qarnot instance runs it
    one = tmp_path / "one"
    assert qtrain("train", "grid-search", "--out", one, "--trial", "4", "--set", "train.epochs=3").code == 0
    run = json.loads((one / "run.json").read_text())
    assert run["trial"] == 4 and run["job"]["model"]["n_layers"] == 2 and run["job"]["model"]["dropout"] == 0.5


def test_rain_tutorial_runs_the_tutorials_own_script(qtrain, tmp_path, data_dir):
    """Seed 000's workflow as a script job: the tutorial's script, its preprocessing, MLP and Adam
    loop; qtrain scores its test predictions."""
    result = qtrain("train", "rain-tutorial", "--out", tmp_path, "--set", f"data.path={data_dir / 'weatherAUS.csv'}",
                    "--set", "script.args.epochs=100")
    assert result.code == 0, result.err
    m = json.loads((tmp_path / "metrics.json").read_text())
    preds = pd.read_csv(tmp_path / "predictions.csv")  # the script's own file
    # learned: a majority-class guess has balanced accuracy 0.5 and AUC 0.5; reached 0.69 and 0.85
    # (0.67-0.74 and 0.82-0.87 over the script's seeds; its accuracy, 0.79-0.83, sits within 0.04 of
    # the 78% majority, too close to tell learning from rounding)
    assert m["test"]["n"] == len(preds) and m["test"]["balanced_accuracy"] > 0.6
    assert m["test"]["roc_auc"] > 0.75 and m["epochs_run"] == 100
    counts = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert list(counts.columns) == ["No", "Yes"] and counts.to_numpy().sum() == len(preds)


def test_mnist_cnn_module_is_the_builtin_mnist_cnn(qtrain, tmp_path, data_dir):
    """Seed 004's own Net class as a module job: the same network as the built-in mnist-cnn, so with
    the same seed the same metrics; predict rebuilds it from the code kept with the run.  Three
    epochs are 57 steps, mid-descent (training loss 1.15 of 2.3): the accuracy they reach is
    0.73-0.77 by the CPU's kernel path and 0.73-0.87 by seed, so it is held to the run's own
    majority-class baseline (0.07), not to a figure."""
    sets = (f"data.path={data_dir / 'mnist'}", "train.epochs=3")
    mine = train(qtrain, "mnist-cnn-module", tmp_path / "module", *sets)
    check_contract(tmp_path / "module", "classification")
    builtin = train(qtrain, "mnist-cnn", tmp_path / "builtin", *sets)
    assert mine["test"] == builtin["test"] and mine["train_loss"] == builtin["train_loss"]
    assert mine["test"]["accuracy"] >= mine["baseline"]["accuracy"] + 0.4  # two epochs already: 0.63
    images = read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz")
    np.save(tmp_path / "new.npy", images)
    result = qtrain("predict", tmp_path / "module", tmp_path / "new.npy", "--out", tmp_path / "p.csv")
    assert result.code == 0, result.err
    again = pd.read_csv(tmp_path / "p.csv")
    preds = pd.read_csv(tmp_path / "module" / "predictions.csv")
    assert (again["predicted"].to_numpy() == preds["predicted"].to_numpy()).all()
