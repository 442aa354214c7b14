"""The results contract (`jobs/results.py`): the selection rule, the hashes, and that it is the one
place where the contract is spelled."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from jobs import results as R
from jobs.files import job_files
from jobs.load import load_job
from jobs.results import Metrics, TrialResult, dataset_hash, job_hash, select_best, summarize

ROOT = Path(__file__).resolve().parents[2]


def _m(task="classification", val=None, test=None, train_loss=None) -> Metrics:
    head = "accuracy" if task == "classification" else "rmse"
    return Metrics(task=task, val=None if val is None else {head: val},
                   test=None if test is None else {head: test}, train_loss=train_loss)


def test_the_best_trial_is_chosen_on_validation_never_on_test():
    rows = [TrialResult(trial=0, metrics=_m(val=0.90, test=0.80)),
            TrialResult(trial=1, metrics=_m(val=0.85, test=0.95))]
    s = select_best("classification", rows)
    assert (s.best.trial, s.best.value, s.selection, s.note) == (0, 0.90, "val_accuracy", None)


def test_regression_picks_the_smallest_validation_rmse():
    s = summarize("regression", {0: _m("regression", 3.0, 2.0), 1: _m("regression", 2.5, 4.0),
                                 2: _m("regression", 2.9, 1.0)})
    assert s.best.trial == 1 and s.selection == "val_rmse"


def test_without_validation_the_training_loss_chooses_and_it_is_said():
    s = summarize("classification", {0: _m(test=0.99, train_loss=0.4), 1: _m(test=0.5, train_loss=0.1)})
    assert s.best.trial == 1 and s.selection == "train_loss" and "split.val_size" in s.note


def test_failed_trials_are_listed_and_skipped_and_ties_go_to_the_first():
    s = summarize("classification", {0: None, 1: _m(val=0.7, test=0.6), 2: _m(val=0.7, test=0.9)},
                  overrides=[{"a": 0}, {"a": 1}, {"a": 2}])
    assert [r.trial for r in s.trials] == [0, 1, 2] and s.trials[0].metrics is None
    assert s.best.trial == 1 and s.best.overrides == {"a": 1}
    # metrics from the store's index are plain dicts; a foreign object is not a trial's metrics
    s = summarize("classification", {0: {"task": "classification", "val": {"accuracy": 0.5}},
                                     1: {"not": "metrics"}})
    assert s.best.trial == 0 and s.trials[1].metrics is None
    assert summarize("classification", {0: None}).best is None


def test_non_finite_numbers_are_never_chosen():
    s = summarize("classification", {0: _m(val=float("nan"), test=0.9, train_loss=0.1),
                                     1: _m(val=0.6, test=0.5, train_loss=0.2)})
    assert s.selection == "train_loss" and s.best.trial == 0  # not every trial has a validation score


def test_trial_folders():
    assert R.trial_dir(3) == "trial-3" and R.trial_of("trial-3") == 3
    assert R.trial_of("trial-x") is None and R.trial_of("out") is None


def test_hashes_do_not_depend_on_where_the_files_are(tmp_path, write_job):
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "t.csv").write_text("x,y\n1,a\n2,b\n")
    job_a = load_job(write_job({"name": "t", "task": "classification",
                                "data": {"path": "a/t.csv", "target": "y"}}, "a.yaml"))
    job_b = load_job(write_job({"name": "t", "task": "classification",
                                "data": {"path": str(tmp_path / "b" / "t.csv"), "target": "y"}}, "b.yaml"))
    files_a, files_b = job_files(job_a.job, job_a.base_dir), job_files(job_b.job, job_b.base_dir)
    assert [f.remote for f in files_a] == ["data/t.csv"]
    assert job_hash(job_a.job) == job_hash(job_b.job)
    assert dataset_hash(job_a.job, files_a) == dataset_hash(job_b.job, files_b)
    (tmp_path / "b" / "t.csv").write_text("x,y\n1,a\n3,b\n")
    assert dataset_hash(job_a.job, files_a) != dataset_hash(job_b.job, job_files(job_b.job, job_b.base_dir))
    assert job_hash(job_a.job) != job_hash(load_job(tmp_path / "a.yaml", ["train.seed=1"]).job)


def test_a_built_in_dataset_is_named_by_its_options():
    a, b = load_job("circles"), load_job("circles", ["data.options.noise=0.3"])
    assert dataset_hash(a.job, []) != dataset_hash(b.job, [])
    assert dataset_hash(a.job, []) == dataset_hash(load_job("circles").job, [])


# the contract's names, spelled only in jobs/results.py (and jobs/files.py for job.json)
CONTRACT = [R.METRICS, R.RUN_INFO, R.SWEEP, R.HISTORY, R.LOSS_CURVE, R.PREDICTIONS, R.MODEL,
            R.CHECKPOINT, R.CONFUSION, R.CONFUSION_PCT, R.CONFUSION_PNG, "job.json"]


def _string_constants(path: Path):
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


@pytest.mark.parametrize("package", ["runner", "submit"])
def test_no_reader_or_writer_spells_the_contract_itself(package):
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, text in _string_constants(path):
            if any(re.fullmatch(rf"(.*/)?{re.escape(name)}", text) for name in CONTRACT) \
                    or text.startswith("trial-"):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not found, "use jobs.results (or jobs.files) instead:\n" + "\n".join(found)
