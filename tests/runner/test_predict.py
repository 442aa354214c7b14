"""`qtrain predict` is as careful as training: the model's input columns, its missing-value rule,
unseen categories named, row numbers and an --id column kept, metrics when the target is there,
and the run's own test predictions reproduced exactly."""

from __future__ import annotations

import json
from io import StringIO

import numpy as np
import pandas as pd
import pytest

from jobs.load import load_job
from runner.run import run_job

N = 400


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A table with a numeric and a categorical feature, an id column and a few missing values."""
    folder = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(N)], "a": rng.normal(size=N),
                          "b": rng.normal(size=N), "colour": rng.choice(["red", "green", "blue"], N)})
    frame["label"] = np.where(frame["a"] + (frame["colour"] == "red") > 0.3, "yes", "no")
    frame.loc[[5, 17], "b"] = np.nan
    frame.to_csv(folder / "train.csv", index=False)
    return folder, frame


def trained(data, tmp_path, missing: str):
    folder, _ = data
    job = folder / f"job-{missing}.yaml"
    job.write_text(json.dumps({"name": "p", "task": "classification",
                               "data": {"path": "train.csv", "target": "label", "drop": ["id"]},
                               "preprocess": {"missing": missing},
                               "train": {"epochs": 5, "refit": False}}))  # trained once: predict is the point
    out = tmp_path / missing
    run_job(load_job(job), out)
    return out


def predict(qtrain, model, frame, tmp_path, *args):
    path = tmp_path / "new.csv"
    frame.to_csv(path, index=False)
    return qtrain("predict", model, path, *args)


def test_the_runs_own_test_rows_give_its_predictions(qtrain, data, tmp_path):
    model = trained(data, tmp_path, "impute")
    _, frame = data
    preds = pd.read_csv(model / "predictions.csv")
    result = predict(qtrain, model, frame.loc[preds["row"]], tmp_path)
    assert result.code == 0, result.err
    got = pd.read_csv(StringIO(result.out))
    assert list(got["row"]) == list(range(len(preds)))  # the row numbers of the file given
    assert list(got["predicted"]) == list(preds["predicted"])
    assert np.allclose(got["prob_yes"], preds["prob_yes"], atol=1e-6)


def test_a_missing_column_is_one_line_and_extra_columns_are_named(qtrain, data, tmp_path):
    model = trained(data, tmp_path, "impute")
    _, frame = data
    missing = predict(qtrain, model, frame.drop(columns=["colour"]), tmp_path)
    assert missing.code == 2 and "the model needs column(s) colour" in missing.err
    assert "Traceback" not in missing.err
    extra = predict(qtrain, model, frame.assign(note="x", other=1), tmp_path)
    assert extra.code == 0
    assert "ignored 3 column(s) the model was not trained on: id, note, other" in extra.err


def test_unseen_categories_are_named(qtrain, data, tmp_path):
    model = trained(data, tmp_path, "impute")
    _, frame = data
    odd = frame.head(10).copy()
    odd.loc[[2, 3], "colour"] = "purple"
    result = predict(qtrain, model, odd, tmp_path)
    assert result.code == 0
    assert "column 'colour': 2 row(s) hold categories never seen in training ('purple')" in result.err


def test_missing_values_follow_the_training_rule(qtrain, data, tmp_path):
    _, frame = data
    rows = frame.dropna().head(20).reset_index(drop=True)
    rows.loc[[1, 4], "a"] = np.nan
    rows.loc[6, "colour"] = np.nan

    dropped = predict(qtrain, trained(data, tmp_path, "drop"), rows, tmp_path, "--id", "id")
    assert dropped.code == 0, dropped.err
    assert "3 of 20 row(s) have missing features and get no prediction" in dropped.err
    got = pd.read_csv(StringIO(dropped.out))
    assert list(got["id"]) == list(rows["id"]) and list(got["row"]) == list(range(20))
    assert got.loc[[1, 4, 6], "predicted"].isna().all() and got["predicted"].notna().sum() == 17

    imputed = predict(qtrain, trained(data, tmp_path, "impute"), rows, tmp_path)
    assert imputed.code == 0
    assert "3 missing value(s) in 3 row(s) imputed as in training" in imputed.err
    assert pd.read_csv(StringIO(imputed.out))["predicted"].notna().all()


def test_with_the_target_column_the_metrics_are_printed_and_written(qtrain, data, tmp_path):
    model = trained(data, tmp_path, "impute")
    _, frame = data
    out = tmp_path / "preds.csv"
    result = predict(qtrain, model, frame, tmp_path, "--out", out)
    assert result.code == 0, result.err
    assert "metrics on new.csv (its label column)" in result.out and "accuracy" in result.out
    written = json.loads((tmp_path / "preds.metrics.json").read_text())
    predicted = pd.read_csv(out)
    assert written["n"] == N
    assert written["accuracy"] == pytest.approx((predicted["predicted"] == frame["label"]).mean())
    no_target = predict(qtrain, model, frame.drop(columns=["label"]), tmp_path)
    assert no_target.code == 0 and "metrics on" not in no_target.out + no_target.err
