"""The job file: short form, defaults, overrides, sweeps, catalog, and the messages on bad input."""

from __future__ import annotations

import re

import pytest

from jobs import CATALOG_DIR, JobError, load_job
from jobs.load import sweep_trials
from jobs.results import job_hash


def test_short_form_gets_sensible_defaults(write_job):
    path = write_job({"name": "titanic", "task": "classification",
                      "data": {"path": "data/titanic.csv", "target": "survived", "drop": ["rownames"]}})
    job = load_job(path).job
    assert job.split.random_state == 0 and job.split.test_size == 0.2
    assert job.model.kind == "mlp" and job.train.loss == "auto"
    assert job.resources.profile == "cpu"
    assert job.data.drop == ["rownames"]


@pytest.mark.parametrize("content, field", [
    ({"name": "x", "task": "classification", "data": {"path": "a.csv", "target": "y"}, "epochs": 3},
     "epochs: unknown field"),
    ({"name": "x", "task": "classification", "data": {"path": "a.csv", "target": "y"},
      "train": {"epochs": -1}}, "train.epochs: Input should be greater than 0"),
    ({"name": "x", "task": "clustering", "data": {"path": "a.csv"}}, "task: Input should be"),
    ({"name": "x", "task": "regression", "data": {"path": "a.csv", "target": "y"},
      "split": {"val_size": 0}, "train": {"early_stopping": {"patience": 3}}}, "set split.val_size"),
    ({"name": "x", "task": "classification", "data": {"path": "a.csv", "target": "y"},
      "model": {"kind": "cnn", "filterz": 3}}, "model.filterz: unknown field"),
], ids=["unknown-key", "negative-epochs", "unknown-task", "early-stop-without-val", "model-typo"])
def test_invalid_job_names_file_and_field(write_job, content, field):
    path = write_job(content)
    with pytest.raises(JobError) as info:
        load_job(path)
    message = info.value.one_line()
    assert message.startswith(f"Invalid job file {path}")
    assert field in message
    assert "\n" not in message


def test_yaml_syntax_error_gives_line(write_job):
    path = write_job("name: x\ntask: [classification\n")
    with pytest.raises(JobError, match=r"YAML syntax error at line \d+"):
        load_job(path)


def test_overrides_parse_yaml_values_and_reach_nested_fields(write_job, tmp_path, monkeypatch):
    path = write_job({"name": "x", "task": "classification", "data": {"path": "a.csv", "target": "y"}})
    monkeypatch.chdir(tmp_path)
    job = load_job(path, ["train.epochs=7", "model.hidden=[8, 4]", "train.batch_size=full",
                          "data.path=other.csv"]).job
    assert job.train.epochs == 7 and job.model.hidden == [8, 4] and job.train.batch_size == "full"
    assert job.data.path == str(tmp_path / "other.csv")  # --set paths are relative to the cwd
    with pytest.raises(JobError, match="expected key.path=value"):
        load_job(path, ["train.epochs"])
    with pytest.raises(JobError, match="train.epochs"):
        load_job(path, ["train.epochs=abc"])


def test_sweep_trials_are_the_grid_in_order(write_job):
    path = write_job({"name": "g", "task": "classification", "data": {"path": "sklearn:digits"},
                      "model": {"kind": "cnn"}, "sweep": {"model.n_layers": [1, 2],
                                                          "model.dropout": [0.2, 0.5, 0.8]}})
    loaded = load_job(path)
    assert len(loaded.trials) == 6
    assert loaded.trials[4] == {"model.n_layers": 2, "model.dropout": 0.5}
    trial = loaded.trial(4).job
    assert trial.model.n_layers == 2 and trial.model.dropout == 0.5 and trial.sweep == {}
    with pytest.raises(JobError, match="trial 6 does not exist"):
        loaded.trial(6)
    assert sweep_trials({}) == []


def test_invalid_sweep_value_is_caught_at_load(write_job):
    path = write_job({"name": "g", "task": "classification", "data": {"path": "sklearn:digits"},
                      "sweep": {"train.epochs": [1, -2]}})
    with pytest.raises(JobError, match=r"sweep trial 1: train.epochs=-2.*greater than 0"):
        load_job(path)


def test_job_hash_changes_with_content(write_job):
    path = write_job({"name": "x", "task": "classification", "data": {"path": "a.csv", "target": "y"}})
    assert job_hash(load_job(path).job) == job_hash(load_job(path).job)
    assert job_hash(load_job(path).job) != job_hash(load_job(path, ["train.seed=1"]).job)


@pytest.mark.parametrize("name", sorted(p.stem for p in CATALOG_DIR.glob("*.yaml")))
def test_catalog_job_is_valid_and_documents_the_seed(name):
    loaded = load_job(name)
    assert loaded.job.name == name
    text = (CATALOG_DIR / f"{name}.yaml").read_text()
    header = text.split("name:")[0]
    assert text.startswith("#") and re.search(r"\bseeds? 00[0-4]\b", header), header  # which seed


def test_missing_job_file_lists_catalog(tmp_path):
    with pytest.raises(JobError, match="job file not found.*penguins"):
        load_job(tmp_path / "nope.yaml")


def test_a_python_file_is_a_script_job_with_the_defaults(tmp_path):
    """`qtrain run train.py -- ARGS` (issue 36): as `sky launch` and `modal run` take a file."""
    (tmp_path / "my train!.py").write_text("print('hello')\n")
    loaded = load_job(tmp_path / "my train!.py", ["train.seed=3"], ["--epochs", "3", "-v"])
    job = loaded.job
    assert job.name == "my-train" and job.script.path == "my train!.py" and job.script.args == ["--epochs", "3", "-v"]
    assert job.task is None and job.data is None and job.train.seed == 3 and loaded.base_dir == tmp_path
    assert load_job(tmp_path / "my train!.py").job.script.args == {}


def test_words_after_the_double_dash_need_a_script_job(tmp_path, write_job):
    path = write_job({"name": "t", "task": "classification", "data": {"path": "palmerpenguins", "target": "species"}})
    with pytest.raises(JobError, match=r"the words after -- are a script's command line, and .* is not a script job"):
        load_job(path, [], ["--epochs", "3"])
    (tmp_path / "t.py").write_text("")
    (tmp_path / "s.yaml").write_text("name: s\nscript: {path: t.py, args: {epochs: 2}}\n")
    assert load_job(tmp_path / "s.yaml", [], ["--lr", "0.1"]).job.script.args == ["--lr", "0.1"]
