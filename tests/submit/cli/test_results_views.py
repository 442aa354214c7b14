"""What `results show`, `compare` and `list` print: a script job's own results and settings, and
tables that fit the terminal (COLUMNS=80 and wide).  A real SQLite store and the real CLI."""

from __future__ import annotations

import re

from submit.store import Store
from tests.submit.cli.test_results import classification, make_run

SCRIPT = {"name": "rain", "data": {"path": "weather.csv"},
          "script": {"path": "code/train.py", "args": {"data": "${QTRAIN_DATA}", "epochs": 3, "lr": 0.01}}}
# what a model job has and a script job does not: never a script run's setting
MODEL_ONLY = re.compile(r"\b(model\.|train\.(epochs|lr|batch_size|optimizer|loss)\b|split\.|preprocess\.)")


def script_metrics(score: float, accuracy: float | None = None) -> dict:
    """metrics.json of a script job (runner/userscript.py): log_metrics' values, and the split
    metrics of its predictions when it logged some."""
    metrics = {"task": None, "reported": {"my_score": score, "phase": "final"}, "notes": [],
               "timings": {"total_seconds": 1.5}}
    if accuracy is not None:
        metrics.update(task="classification", test={"n": 100, "accuracy": accuracy, "f1_macro": accuracy - 0.1},
                       val={"n": 50, "accuracy": accuracy + 0.01, "loss": 0.4})
    return metrics


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------- show
def test_show_of_a_script_run_has_what_it_reported_and_its_own_settings(tmp_path, qtrain):
    store = Store(tmp_path)
    run = make_run(store, "rain", job=SCRIPT, metrics=script_metrics(0.93, accuracy=0.88))
    shown = qtrain("results", "show", run.run_id, "--store", tmp_path)
    assert shown.code == 0, shown.err
    assert "None" not in shown.out.split()
    assert re.search(r"my_score\s+.*0\.9300", shown.out) and re.search(r"phase\s+.*final", shown.out)
    assert re.search(r"accuracy\s+.*0\.8900\s+.*0\.8800", shown.out)  # val and test of its predictions
    assert "script.args.lr" in shown.out and "data.path" in shown.out and not MODEL_ONLY.search(shown.out)
    data = qtrain("results", "show", run.run_id, "--json", "--store", tmp_path).json()
    assert set(data["hyperparameters"]) <= {"name", "script", "data", "train", "resources"}
    assert set(data["hyperparameters"]["train"]) == {"seed", "device", "threads"}


def test_show_of_a_script_run_that_reported_nothing_says_so(tmp_path, qtrain):
    store = Store(tmp_path)
    quiet = make_run(store, "quiet", job={"name": "quiet", "script": {"path": "x.py"}},
                     metrics={"task": None, "reported": {}, "notes": [], "timings": {"total_seconds": 0.2}})
    shown = qtrain("results", "show", quiet.run_id, "--store", tmp_path)
    assert shown.code == 0 and "None" not in shown.out.split()
    assert "no metrics reported" in shown.out
    assert "data.path" not in shown.out  # a script job without data has no data.path
    only_reported = make_run(store, "rain", job=SCRIPT, metrics=script_metrics(0.5))
    shown = qtrain("results", "show", only_reported.run_id, "--store", tmp_path).out
    assert "my_score" in shown and "no metrics reported" not in shown and "None" not in shown.split()


# ---------------------------------------------------------------------------------- compare
def _script_sweep(store: Store, trials: int, lrs=None):
    lrs = lrs or [round(0.001 * (i + 1), 4) for i in range(trials)]
    run = make_run(store, "rain", job={**SCRIPT, "sweep": {"script.args.lr": lrs}}, trials=trials)
    for t in range(trials):
        store.set_metrics(run.run_id, script_metrics(0.5 + t / 100, accuracy=0.7 + t / 100), trial=t)
    return store.get(run.run_id)


def test_compare_of_a_script_sweep_has_only_a_script_jobs_settings_and_its_reported_metrics(tmp_path, qtrain):
    store = Store(tmp_path)
    sweep = _script_sweep(store, 3, lrs=[0.001, 0.01, 0.1])
    table = qtrain("results", "compare", sweep.run_id, "--json", "--store", tmp_path).json()
    assert table["settings"]["script.args.lr"] == [0.001, 0.01, 0.1] and table["differs"] == ["script.args.lr"]
    assert not [k for k in table["settings"] if MODEL_ONLY.search(k)], table["settings"]
    assert table["settings"]["script.path"] == ["code/train.py"] * 3
    assert table["metrics"]["reported my_score"] == [0.5, 0.51, 0.52] and table["best"]["reported my_score"] == [2]
    assert table["metrics"]["val loss"] == [0.4] * 3  # every split metric of a script's predictions
    human = qtrain("results", "compare", sweep.run_id, "--store", tmp_path)
    assert human.code == 0 and "reported my_score" in human.out and "* script.args.lr" in human.out
    assert not MODEL_ONLY.search(human.out), human.out


def test_compare_of_two_script_runs_shows_what_they_reported(tmp_path, qtrain):
    store = Store(tmp_path)
    a = make_run(store, "rain", job=SCRIPT, metrics=script_metrics(0.7))
    other = {**SCRIPT, "script": {**SCRIPT["script"], "args": {**SCRIPT["script"]["args"], "lr": 0.1}}}
    b = make_run(store, "rain", job=other, metrics=script_metrics(0.9))
    table = qtrain("results", "compare", a.run_id, b.run_id, "--json", "--store", tmp_path).json()
    assert table["metrics"]["reported my_score"] == [0.7, 0.9] and table["best"]["reported my_score"] == [1]
    assert table["metrics"]["reported phase"] == ["final", "final"]
    assert "script.args.lr" in table["differs"] and not [k for k in table["settings"] if MODEL_ONLY.search(k)]
    assert "epochs run" not in table["metrics"]  # nobody has it: no row of dashes
    human = qtrain("results", "compare", a.run_id, b.run_id, "--store", tmp_path).out
    assert "reported my_score" in human and not MODEL_ONLY.search(human)


# ------------------------------------------------------------------------------ terminal width
def test_compare_of_a_24_trial_sweep_fits_80_columns_and_a_wide_terminal(tmp_path, qtrain, monkeypatch):
    store = Store(tmp_path)
    sweep = _script_sweep(store, 24)
    monkeypatch.setenv("COLUMNS", "80")
    narrow = qtrain("results", "compare", sweep.run_id, "--store", tmp_path)
    assert narrow.code == 0, narrow.err
    assert max(len(line) for line in narrow.out.splitlines()) <= 80, narrow.out
    for t in range(24):  # every trial, with its lr and its numbers
        row = next((line for line in narrow.out.splitlines() if re.search(rf"\btrial {t}\b", line)), "")
        assert f"{0.001 * (t + 1):.4f}" in row and f"{0.7 + t / 100:.4f}" in row, (t, narrow.out)
    said = [line for line in narrow.out.splitlines() if "left out" in line]
    assert said and "--json" in said[0] and "widen the terminal" in said[0]
    assert len(lines(narrow.out)) < 40  # no column of empty boxes

    monkeypatch.setenv("COLUMNS", "400")  # 24 trials of 7-digit numbers: 320
    wide = qtrain("results", "compare", sweep.run_id, "--store", tmp_path).out
    header = next(line for line in wide.splitlines() if "trial 0" in line)
    assert all(f"trial {t}" in header for t in range(24))  # one column a trial, as it fits
    assert "left out" not in wide and "reported my_score" in wide


def test_results_list_fits_80_columns_and_says_what_it_left_out(tmp_path, qtrain, monkeypatch):
    store = Store(tmp_path)
    make_run(store, "a-rather-long-job-name-for-a-table", metrics=classification(0.91, 0.8))
    make_run(store, "reg", metrics={"task": "regression", "test": {"r2": 0.9, "rmse": 1.5}}, task="regression")
    monkeypatch.setenv("COLUMNS", "80")
    narrow = qtrain("results", "list", "--no-refresh", "--footprint", "--store", tmp_path).out
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    assert "a-rather-long-job-name" in narrow and "0.9100" in narrow  # a long run id folds, its metrics stay
    said = narrow[narrow.index("columns left out"):]
    assert "(widen the terminal, or --json)" in said and "co2_g" in said
    monkeypatch.setenv("COLUMNS", "250")
    wide = qtrain("results", "list", "--no-refresh", "--footprint", "--store", tmp_path).out
    assert "left out" not in wide and all(name in wide for name in ("co2_g", "rmse", "f1_macro", "backend"))


def test_a_confusion_matrix_of_many_classes_fits_80_columns(tmp_path, qtrain, monkeypatch):
    store = Store(tmp_path)
    run = make_run(store, "digits", metrics=classification(0.9, 0.9))
    classes = [f"class-{i}" for i in range(12)]
    rows = [",".join(["true\\pred", *classes])] + [",".join([c, *(str(1000 * (i == j)) for j in range(12))])
                                                   for i, c in enumerate(classes)]
    (store.artifacts_dir(run.run_id) / "confusion_matrix.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("COLUMNS", "80")
    narrow = qtrain("results", "show", run.run_id, "--store", tmp_path).out
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    assert all(c in narrow for c in classes)  # every row is there
    said = next(line for line in narrow.splitlines() if "left out" in line)
    assert "confusion_matrix.csv" in said
    monkeypatch.setenv("COLUMNS", "300")
    assert "left out" not in qtrain("results", "show", run.run_id, "--store", tmp_path).out
