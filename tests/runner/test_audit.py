"""`qtrain check` judges the data against the task: one line per finding naming the column, what
it saw and the fix; errors stop (exit 2), warnings let the job through.  Small generated tables,
the real CLI.  (`qtrain run` of a job that fails the data check uploads nothing: tests/submit.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

N = 400


@pytest.fixture
def table(tmp_path, write_job):
    """write(frame_columns..., target=..., task=..., **job) -> a job file over a CSV of them."""
    rng = np.random.default_rng(0)
    base = pd.DataFrame({"carat": rng.uniform(0.2, 2.0, N), "depth": rng.normal(60, 2, N)})
    base["price"] = (base["carat"] * 4000 + rng.normal(0, 300, N)).round(2)
    base["size"] = np.where(base["carat"] > 1, "big", "small")

    def write(extra: dict | None = None, target: str = "size", task: str = "classification",
              rows: int = N, **job):
        frame = base.iloc[:rows].copy()
        for name, values in (extra or {}).items():
            frame[name] = values if np.isscalar(values) or values is None else values[:rows]
        frame.to_csv(tmp_path / "t.csv", index=False)
        return write_job({"name": "t", "task": task, "data": {"path": "t.csv", "target": target}, **job})

    return write


def check(qtrain, job, *args):
    result = qtrain("check", job, *args)
    assert "Traceback" not in result.err
    return result


def one_error(result) -> str:
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.err
    return lines[0]


def test_classification_of_a_continuous_target_is_an_error(qtrain, table):
    job = table(target="price", task="regression")
    line = one_error(check(qtrain, job, "--set", "task=classification"))
    assert "target 'price' is a number with" in line and "set task: regression" in line
    assert check(qtrain, job).code == 0


def test_stray_text_in_a_numeric_column_is_a_warning_and_stays_numeric(qtrain, table):
    age = np.random.default_rng(1).integers(20, 70, N).astype(object)
    age[[3, 7]] = ["unknown", "thirty"]
    result = check(qtrain, table({"age": age}), "--json")
    assert result.code == 0
    assert "column 'age' is numeric but for 2 value(s) such as 'unknown', 'thirty'" in result.err
    assert "data.na_values" in result.err
    report = result.json()
    # carat, depth, price, age and its missing flag: age is not one-hot encoded
    assert report["feature_names"] == ["carat", "depth", "price", "age", "age=<missing>"]
    assert any("'age'" in w for w in report["warnings"])


def test_identifier_and_constant_columns_are_warnings(qtrain, table):
    result = check(qtrain, table({"row_id": np.arange(N) + 1000, "name": [f"s{i}" for i in range(N)],
                                  "always": 1}, rows=150))  # (400 names would be a one-hot error)
    assert result.code == 0, result.err
    assert "column 'row_id' looks like an identifier" in result.err
    assert "column 'name' looks like an identifier" in result.err
    assert "column 'always' has a single value" in result.err and "data.drop" in result.err


def test_a_one_hot_explosion_is_an_error(qtrain, table, tmp_path):
    names = [f"stone-{i}" for i in range(N)]
    line = one_error(check(qtrain, table({"name": names})))
    assert "column 'name' has 400 distinct text values" in line and "data.drop" in line
    assert check(qtrain, table({"name": names}, data={"path": "t.csv", "target": "size", "drop": ["name"]})).code == 0


@pytest.mark.parametrize("copy", ["same", "renamed", "linear"])
def test_a_copy_of_the_target_is_an_error(qtrain, table, copy):
    rng = np.random.default_rng(0)
    carat = rng.uniform(0.2, 2.0, N)
    if copy == "linear":  # regression: price in another currency
        job = table({"price_usd": None}, target="price", task="regression")
        frame = pd.read_csv(job.parent / "t.csv")
        frame["price_usd"] = frame["price"] * 1.1 + 3
        frame.to_csv(job.parent / "t.csv", index=False)
        column = "price_usd"
    else:
        size = np.where(carat > 1, "big", "small")
        values = size if copy == "same" else np.where(carat > 1, "B", "S")
        job = table({"size_label": values})
        column = "size_label"
    line = one_error(check(qtrain, job))
    assert f"column '{column}' is a copy of the target" in line and "leakage" in line


def test_a_class_too_small_for_the_splits_is_a_warning(qtrain, table):
    job = table(target="kind")
    frame = pd.read_csv(job.parent / "t.csv")
    frame["kind"] = np.where(frame["carat"] > 1.1, "big", "small")
    frame.loc[5, "kind"] = "rare"
    frame.to_csv(job.parent / "t.csv", index=False)
    result = check(qtrain, job, "--set", "data.drop=[size]")
    assert result.code == 0
    assert "class(es) 'rare' (1 row) have fewer rows than the 3 splits need" in result.err


def test_did_you_mean_for_columns_and_job_fields(qtrain, table):
    job = table()
    line = one_error(check(qtrain, job, "--set", "data.target=Size"))
    assert "data.target column 'Size' is not in the data; did you mean 'size'?" in line
    line = one_error(check(qtrain, job, "--set", "data.drop=[carrat]"))
    assert "did you mean 'carat'?" in line
    line = one_error(check(qtrain, job, "--set", "train.epoch=3"))
    assert "train.epoch: unknown field; did you mean 'epochs'?" in line
    line = one_error(check(qtrain, job, "--set", "model.hiden=[8]"))
    assert "model.hiden: unknown field; did you mean 'hidden'?" in line
