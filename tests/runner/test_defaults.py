"""Defaults that show problems instead of hiding them: a validation split watched by early
stopping (best weights restored) and plotted, imputation that says what it filled, and a warning
when accuracy is no better than the majority class on an imbalanced table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from jobs.load import load_job


def short_job(tmp_path, frame: pd.DataFrame, **extra) -> str:
    frame.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "job.json").write_text(json.dumps({"name": "d", "task": "classification",
                                                   "data": {"path": "d.csv", "target": "y"}, **extra}))
    return str(tmp_path / "job.json")


def test_a_short_job_holds_out_validation_and_stops_early_on_it(tmp_path, qtrain):
    """On a table above 2,000 train + validation rows: a smaller one is cross-validated and refit
    (train.refit, tests/runner/test_refit.py)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2600, 3))
    frame = pd.DataFrame(x, columns=list("abc")).assign(y=np.where(x[:, 0] > 0, "p", "n"))
    job = load_job(short_job(tmp_path, frame, train={"epochs": 400}))
    assert job.job.split.val_size == 0.15
    assert job.job.train.early_stopping.monitor == "val_loss" and job.job.train.early_stopping.restore_best
    result = qtrain("train", tmp_path / "job.json", "--out", tmp_path / "out")
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 380 <= metrics["val"]["n"] <= 400 and metrics["monitor"] == "val_loss"  # about 15% of 2600
    assert "refit" not in metrics
    assert metrics["early_stop_epoch"] is not None and metrics["epochs_run"] < 400  # it stopped
    curve = json.loads(Image.open(tmp_path / "out" / "loss_curve.png").text["Description"])
    assert "val loss" in curve["axes"][0]["legend"]
    # saying so keeps the old behaviour
    off = load_job(short_job(tmp_path, frame, split={"val_size": 0}))
    assert off.job.train.early_stopping is None
    none = load_job(short_job(tmp_path, frame, train={"early_stopping": None}))
    assert none.job.split.val_size == 0.15 and none.job.train.early_stopping is None


def test_a_short_job_imputes_and_says_how_many_values(tmp_path, qtrain):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.choice(["u", "v"], 200),
                          "y": rng.choice(["p", "n"], 200)})
    frame.loc[[1, 2, 3], "a"] = np.nan
    frame.loc[[4, 5], "b"] = np.nan
    result = qtrain("check", short_job(tmp_path, frame), "--json")
    assert result.code == 0, result.err
    assert "imputed 5 missing value(s) in 5 row(s), column(s) a, b" in result.err
    report = result.json()
    assert report["data"]["rows"] == 200  # nothing dropped
    assert report["feature_names"][-2:] == ["a=<missing>", "b=<missing>"]
    dropped = qtrain("check", short_job(tmp_path, frame, preprocess={"missing": "drop"}), "--json")
    assert dropped.json()["data"]["rows"] == 195 and "dropped 5 of 200 rows" in dropped.err


def test_accuracy_near_the_majority_baseline_on_an_imbalanced_table_is_called_out(tmp_path, qtrain):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(2000, 3)), columns=list("abc"))
    frame["y"] = np.where(rng.random(2000) < 0.03, "rare", "common")  # nothing to learn, 3% rare
    result = qtrain("train", short_job(tmp_path, frame, train={"epochs": 3}), "--out", tmp_path / "out")
    assert result.code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    [note] = metrics["notes"]
    assert "within 2 points of always answering the majority class" in note
    assert "class 'rare' is" in note and "train.class_weights: balanced" in note and "balanced_accuracy" in note
    assert note in " ".join(result.err.split())
    balanced = qtrain("train", short_job(tmp_path, frame, train={"epochs": 3, "class_weights": "balanced"}),
                      "--out", tmp_path / "weighted")
    assert balanced.code == 0
    assert "notes" not in json.loads((tmp_path / "weighted" / "metrics.json").read_text())
