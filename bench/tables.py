"""Table defaults against the plain models a user would try first (issue 27).

For each table, on the same split (qtrain's test rows; the peers train on all the other rows, the
80% that qtrain splits into train and validation), over --splits splits (split.random_state
0, 1, ...), the mean test headline of:
  - qtrain's defaults: a job with `name`, `task`, `data.path` and `data.target` only, trained
    the way `qtrain train` does;
  - the linear peer: LogisticRegression (classification) or Ridge (regression), after median
    imputation and standard scaling of numbers and one-hot encoding of text (most frequent filled);
  - HistGradientBoosting (text columns as its categorical features);
  - the naive baseline: the most frequent class, or the training mean.

Headline: accuracy, or f1_macro where the smallest class is under 10% of the rows (classification);
r2 (regression).  Goal: qtrain >= max(linear, naive) - 0.01 on every table.  Where
HistGradientBoosting leads qtrain by more than 0.02, the table says so.

Tables: real ones that come offline with the packages (scikit-learn's bundled sets, palmerpenguins,
statsmodels' and vega_datasets' bundled data: `pip install -e ".[bench]"`) and generated ones only for the edges (heavy imbalance, many categories, missing
values, tiny n).

    python bench/tables.py [--splits 5] [--before] [--only NAME,...]
        -> prints a table, writes bench/results/tables.json (--before: also the defaults before issue 27,
           `train.refit: false`, on the same splits)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

IMBALANCED = 0.10  # smallest class share under which the headline is f1_macro


@dataclass
class Table:
    name: str
    task: str  # classification | regression
    source: str  # where it comes from
    load: Callable[[], tuple[pd.DataFrame, str]]  # -> (frame, target column)


# ------------------------------------------------------------------------------------ tables
def _sk(name: str) -> Callable[[], tuple[pd.DataFrame, str]]:
    def load():
        import sklearn.datasets as d

        frame = getattr(d, f"load_{name}")(as_frame=True).frame
        return frame, "target"
    return load


def _penguins():
    import palmerpenguins

    return palmerpenguins.load_penguins(), "species"


def _fair():  # affairs > 0: did she report any affair (6,366 women, 1974 survey)
    import statsmodels.datasets as d

    frame = d.fair.load_pandas().data
    frame["affair"] = np.where(frame.pop("affairs") > 0, "yes", "no")
    return frame, "affair"


def _anes96():  # 1996 US presidential vote (Clinton / Dole) from the election study
    import statsmodels.datasets as d

    frame = d.anes96.load_pandas().data.drop(columns=["logpopul"])  # log of popul, a copy
    return frame, "vote"


def _star98():  # share of a California school district's pupils above the national maths median
    import statsmodels.datasets as d

    frame = d.star98.load_pandas().data
    above, below = frame.pop("NABOVE"), frame.pop("NBELOW")
    frame["above"] = above / (above + below)
    return frame, "above"


def _randhie():  # doctor visits in the RAND health insurance experiment (20,190 person-years)
    import statsmodels.datasets as d

    return d.randhie.load_pandas().data, "mdvis"


def _weather():  # Seattle's daily weather (5 kinds, drizzle and snow rare); the date is an id
    from vega_datasets import local_data

    return local_data.seattle_weather().drop(columns=["date"]), "weather"


def _cars():  # miles per gallon of 1970s cars (horsepower has gaps); the car's name is an id
    from vega_datasets import local_data

    frame = local_data.cars().drop(columns=["Name"])
    frame["Year"] = pd.to_datetime(frame["Year"]).dt.year
    return frame, "Miles_per_Gallon"


def _imbalanced():  # 3% positives
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=4000, n_features=12, n_informative=5, weights=[0.97],
                               flip_y=0.01, class_sep=0.8, random_state=7)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    frame["label"] = np.where(y == 1, "rare", "common")
    return frame, "label"


def _categories():  # one text column of 150 values that carries most of the signal
    rng = np.random.default_rng(11)
    n, levels = 3000, 150
    effect = rng.normal(0, 1.5, levels)
    city = rng.integers(0, levels, n)
    x = rng.normal(size=(n, 3))
    logit = effect[city] + x @ np.array([0.8, -0.5, 0.3])
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["city"] = [f"city{c:03d}" for c in city]
    frame["bought"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return frame, "bought"


def _missing():  # breast cancer with a quarter of the feature values taken out at random
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(5)
    features = [c for c in frame.columns if c != "target"]
    mask = rng.random((len(frame), len(features))) < 0.25
    frame[features] = frame[features].mask(mask)
    return frame, "target"


def _tiny():  # 40 rows
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=40, n_features=5, n_informative=3, noise=20.0, random_state=3)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)])
    frame["y"] = y
    return frame, "y"


TABLES = [
    Table("breast_cancer", "classification", "scikit-learn", _sk("breast_cancer")),
    Table("wine", "classification", "scikit-learn", _sk("wine")),
    Table("digits", "classification", "scikit-learn", _sk("digits")),
    Table("penguins", "classification", "palmerpenguins", _penguins),
    Table("fair", "classification", "statsmodels", _fair),
    Table("anes96", "classification", "statsmodels", _anes96),
    Table("seattle_weather", "classification", "vega_datasets", _weather),
    Table("diabetes", "regression", "scikit-learn", _sk("diabetes")),
    Table("star98", "regression", "statsmodels", _star98),
    Table("randhie", "regression", "statsmodels", _randhie),
    Table("cars_mpg", "regression", "vega_datasets", _cars),
    Table("imbalanced_3pct", "classification", "generated", _imbalanced),
    Table("categories_150", "classification", "generated", _categories),
    Table("missing_25pct", "classification", "breast_cancer, values removed", _missing),
    Table("tiny_40", "regression", "generated", _tiny),
]


# ------------------------------------------------------------------------------------- scoring
def headline_of(frame: pd.DataFrame, target: str, task: str) -> str:
    if task == "regression":
        return "r2"
    shares = frame[target].dropna().astype(str).value_counts(normalize=True)
    return "f1_macro" if shares.min() < IMBALANCED else "accuracy"


def score(metric: str, y_true, y_pred) -> float:
    from sklearn.metrics import accuracy_score, f1_score, r2_score

    if metric == "r2":
        return float(r2_score(y_true, y_pred))
    if metric == "f1_macro":
        return float(f1_score(y_true, y_pred, average="macro"))
    return float(accuracy_score(y_true, y_pred))


def run_qtrain(csv: Path, target: str, task: str, random_state: int, out: Path,
               sets: list[str]) -> tuple[dict, np.ndarray, float]:
    """The defaults, as `qtrain train JOB --out OUT` runs them: (metrics, test rows, seconds)."""
    from jobs import load_job
    from runner.run import run_job

    job_file = csv.with_suffix(".yaml")
    job_file.write_text(f"name: {csv.stem}\ntask: {task}\ndata:\n  path: {csv.name}\n  target: {target}\n")
    extra = [f"split.random_state={random_state}"] if random_state else []
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        metrics = run_job(load_job(str(job_file), extra + sets), out)
    seconds = time.perf_counter() - t0
    rows = pd.read_csv(out / "predictions.csv")["row"].to_numpy()
    return metrics, rows, seconds


def peers(frame: pd.DataFrame, target: str, task: str, test_rows: np.ndarray, metric: str) -> dict:
    """The linear model, HistGradientBoosting and the naive baseline on qtrain's split."""
    from sklearn.compose import ColumnTransformer
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = frame[frame[target].notna()]
    test = frame.loc[test_rows]
    train = frame.drop(index=test_rows)
    features = [c for c in frame.columns if c != target]
    text = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])]
    numbers = [c for c in features if c not in text]
    y_train, y_test = train[target], test[target]
    if task == "classification":
        y_train, y_test = y_train.astype(str), y_test.astype(str)
    clf = task == "classification"

    def encoded():
        parts = [("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numbers)]
        if text:
            parts.append(("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                               OneHotEncoder(handle_unknown="ignore")), text))
        return ColumnTransformer(parts)

    cats = frame.assign(**{c: frame[c].astype("category") for c in text})  # HistGradientBoosting's categories
    models = {
        "linear": (make_pipeline(encoded(), LogisticRegression(max_iter=5000) if clf else Ridge()), train, test),
        "hgb": ((HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor)(
            categorical_features="from_dtype", random_state=0), cats.loc[train.index], cats.loc[test.index]),
        "naive": (DummyClassifier(strategy="most_frequent") if clf else DummyRegressor(strategy="mean"), train, test),
    }
    out = {}
    for name, (model, tr, te) in models.items():
        t0 = time.perf_counter()
        model.fit(tr[features], y_train)
        pred = model.predict(te[features])
        out[name] = {"value": score(metric, y_test, pred), "seconds": time.perf_counter() - t0}
    return out


def bench_table(table: Table, splits: int, tmp: Path, sets: list[str], before: bool = False) -> dict:
    frame, target = table.load()
    frame = frame.reset_index(drop=True)
    metric = headline_of(frame, target, table.task)
    csv = tmp / f"{table.name}.csv"
    frame.to_csv(csv, index=False)
    rounds = []
    for rs in range(splits):
        metrics, rows, seconds = run_qtrain(csv, target, table.task, rs, tmp / f"{table.name}-{rs}", sets)
        row = {"qtrain": {"value": float(metrics["test"][metric]), "seconds": seconds,
                          "refit": (metrics.get("refit") or {}).get("text")},
               **peers(frame, target, table.task, rows, metric)}
        if before:  # the defaults before issue 27: one split, the best validation epoch's weights
            old, old_rows, old_seconds = run_qtrain(csv, target, table.task, rs, tmp / f"{table.name}-{rs}-before",
                                                    sets + ["train.refit=false"])
            assert (old_rows == rows).all()
            row["before"] = {"value": float(old["test"][metric]), "seconds": old_seconds}
        rounds.append(row)
    ways = ("qtrain", "linear", "hgb", "naive") + (("before",) if before else ())
    mean = {way: statistics.fmean(r[way]["value"] for r in rounds) for way in ways}
    seconds = {way: statistics.fmean(r[way]["seconds"] for r in rounds) for way in ways}
    peer = max(mean["linear"], mean["naive"])
    return {"table": table.name, "task": table.task, "source": table.source, "rows": len(frame),
            "features": frame.shape[1] - 1, "metric": metric, "splits": splits, "mean": mean, "seconds": seconds,
            "rounds": rounds, "margin": mean["qtrain"] - peer, "ok": mean["qtrain"] >= peer - 0.01,
            "hgb_ahead": mean["hgb"] - mean["qtrain"] > 0.02}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=5, help="splits per table (split.random_state 0..N-1)")
    ap.add_argument("--only", help="comma-separated table names")
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="FIELD=VALUE",
                    help="a job override for every qtrain run (to try a default before making it one)")
    ap.add_argument("--before", action="store_true",
                    help="also train each split with train.refit=false (the defaults before issue 27)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tables.json")
    args = ap.parse_args()
    import torch

    chosen = [t for t in TABLES if not args.only or t.name in args.only.split(",")]
    results = []
    started = time.perf_counter()
    print(f"{'table':17s} {'metric':9s} {'rows':>6s}  {'qtrain':>7s} {'linear':>7s} {'hgb':>7s} {'naive':>7s}"
          f"  {'margin':>7s}  {'qtrain s':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for table in chosen:
            r = bench_table(table, args.splits, Path(tmp), args.sets, args.before)
            results.append(r)
            m = r["mean"]
            flag = ("" if r["ok"] else "  BELOW the linear peer") + ("  (hgb ahead)" if r["hgb_ahead"] else "")
            print(f"{r['table']:17s} {r['metric']:9s} {r['rows']:6d}  {m['qtrain']:7.4f} {m['linear']:7.4f} "
                  f"{m['hgb']:7.4f} {m['naive']:7.4f}  {r['margin']:+7.4f}  {r['seconds']['qtrain']:8.2f}"
                  + (f"  before {m['before']:7.4f} ({r['seconds']['before']:.2f} s)" if args.before else "") + flag,
                  flush=True)
    summary = {"tables": len(results), "ok": sum(r["ok"] for r in results),
               "worst_margin": min(r["margin"] for r in results),
               "before": {"ok": sum(r["mean"]["before"] >= max(r["mean"]["linear"], r["mean"]["naive"]) - 0.01
                                    for r in results),
                          "worst_margin": min(r["mean"]["before"] - max(r["mean"]["linear"], r["mean"]["naive"])
                                              for r in results)} if args.before else None,
               "hgb_ahead": [r["table"] for r in results if r["hgb_ahead"]],
               "seconds": time.perf_counter() - started,
               "goal": "qtrain >= max(linear, naive) - 0.01 on every table (mean over the splits)"}
    print(f"{summary['ok']}/{summary['tables']} tables at or above the linear peer within 0.01; worst margin "
          f"{summary['worst_margin']:+.4f}; {summary['seconds']:.0f} s")
    if args.only or args.sets:
        print("(a subset or overrides: not written)")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": {"cpu_threads": torch.get_num_threads(),
                                                "python": platform.python_version(), "torch": torch.__version__},
                                    "summary": summary, "tables": results}, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
