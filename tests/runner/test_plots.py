"""The plots say what they show: read back from the PNG the texts the figure carries (its
Description: titles, axis labels, ticks, legends, cell labels), not its pixels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jobs.load import load_job
from jobs.results import CONFUSION, CONFUSION_PNG, LOSS_CURVE, REGRESSION_PNG, SWEEP_CSV, SWEEP_PNG
from runner.run import run_job


def texts(path) -> dict:
    return json.loads(Image.open(path).text["Description"])


@pytest.fixture
def table(tmp_path):
    def make(n_classes: int | None, rows: int = 600):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(rows, 4))
        frame = pd.DataFrame(x, columns=list("abcd"))
        if n_classes is None:
            frame["y"] = x @ [1.0, 2.0, -1.0, 0.5] + rng.normal(scale=0.3, size=rows)
        else:
            label = rng.integers(0, n_classes, rows)
            frame["a"] += label * 0.7
            frame["y"] = [f"c{v:02d}" for v in label]
        path = tmp_path / f"table-{n_classes}.csv"
        frame.to_csv(path, index=False)
        return path

    return make


def test_training_curves_name_the_job_and_run_with_whole_epochs(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRAIN_RUN_ID", "20261124-120000-penguins-abc123")
    out = tmp_path / "out"
    run_job(load_job("penguins", ["train.epochs=3", "split.val_size=0.2"]), out)
    curve = texts(out / LOSS_CURVE)
    assert "penguins" in curve["title"] and "run 20261124-120000-penguins-abc123" in curve["title"]
    loss, metric = curve["axes"]
    assert loss["xlabel"] == metric["xlabel"] == "epoch"
    assert loss["xticks"] == ["1", "2", "3"] and metric["xticks"] == ["1", "2", "3"]
    assert loss["legend"] == ["train loss", "val loss"] and loss["ylabel"] == "loss"
    assert metric["legend"] == ["train accuracy", "val accuracy"] and metric["ylabel"] == "accuracy"
    assert "run 20261124-120000-penguins-abc123" in texts(out / CONFUSION_PNG)["axes"][0]["title"]


def test_without_a_run_id_the_title_names_the_results_folder(tmp_path):
    out = tmp_path / "my-experiment"
    run_job(load_job("penguins", ["train.epochs=2"]), out)
    assert "run my-experiment" in texts(out / LOSS_CURVE)["title"]


def test_a_regression_sweep_has_residual_plots_a_sweep_table_and_a_sweep_plot(tmp_path, table, write_job):
    job = write_job({"name": "reg", "task": "regression", "data": {"path": str(table(None)), "target": "y"},
                     "split": {"val_size": 0.2}, "train": {"epochs": 3},
                     "sweep": {"train.lr": [0.001, 0.01, 0.05]}})
    out = tmp_path / "sweep"
    run_job(load_job(job), out)
    reg = texts(out / "trial-1" / REGRESSION_PNG)
    assert "reg" in reg["title"] and "trial 1 (train.lr=0.01)" in reg["title"]
    scatter, residuals = reg["axes"]
    assert (scatter["xlabel"], scatter["ylabel"]) == ("actual", "predicted")
    assert residuals["ylabel"].startswith("residual") and residuals["xlabel"] == "predicted"
    assert texts(out / "trial-1" / LOSS_CURVE)["axes"][1]["legend"] == ["val rmse"]

    rows = pd.read_csv(out / SWEEP_CSV)
    assert list(rows["trial"]) == [0, 1, 2] and list(rows["train.lr"]) == [0.001, 0.01, 0.05]
    assert {"val_rmse", "test_rmse", "test_r2", "best"} <= set(rows.columns)
    best = int(rows["val_rmse"].idxmin())
    assert list(rows["best"]) == [i == best for i in range(3)]
    summary = texts(out / SWEEP_PNG)
    panel = summary["axes"][0]
    assert f"best: trial {best}, chosen on val_rmse" in panel["title"] and panel["ylabel"] == "rmse"
    assert panel["xticks"] == ["lr=0.001", "lr=0.01", "lr=0.05"] and "best" in panel["texts"]


@pytest.mark.parametrize("n_classes", [12, 20])
def test_confusion_matrices_leave_empty_cells_blank_and_label_the_rest(tmp_path, table, write_job, n_classes):
    job = write_job({"name": "many", "task": "classification",
                     "data": {"path": str(table(n_classes, rows=1500)), "target": "y"},
                     "train": {"epochs": 2, "refit": False}})  # trained once: the plot is the point
    out = tmp_path / "out"
    run_job(load_job(job), out)
    counts = pd.read_csv(out / CONFUSION, index_col=0).to_numpy()
    panel = texts(out / CONFUSION_PNG)["axes"][0]
    assert 0 < (counts > 0).sum() < counts.size  # some empty cells to leave blank
    assert len(panel["texts"]) == (counts > 0).sum()  # one label per non-empty cell, none on zeros
    assert not any(t.startswith("0%") or t == "0" for t in panel["texts"])
    assert panel["xticks"] == [f"c{i:02d}" for i in range(n_classes)]
