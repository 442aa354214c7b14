"""Follow, retrieve, cancel and every reader of a run's results, on the in-memory fake backend:
the real CLI, the real SQLite store and real trained models, with the task's life and its
numbers scripted, so that each case runs in milliseconds and the numbers are exactly known."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from jobs.load import load_job
from jobs.results import MODEL, NO_VALIDATION, trial_dir
from runner.predict import load_model
from runner.run import run_job
from submit.backends import BACKENDS
from submit.backends.base import BackendUnreachable
from submit.run.follow import Retry, follow
from submit.run.retrieve import retrieve
from submit.store import Store
from submit.ui import Ui
from tests.submit.fake_backend import FakeBackend

SWEEP = ["--set", "split.val_size=0.2", "--set", "sweep={train.seed: [0, 1]}"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[int, Path]:
    """Two real penguins models (seeds 0 and 1): their folders hold the whole results contract."""
    root = tmp_path_factory.mktemp("trained")
    out = {}
    for seed in (0, 1):
        out[seed] = root / f"seed-{seed}"
        run_job(load_job("penguins", ["train.epochs=2", f"train.seed={seed}", "split.val_size=0.2"]),
                out[seed])
    return out


def results_of(trained: dict[int, Path], numbers: dict[int, dict]) -> dict[str, bytes]:
    """The result bucket of a 2-trial sweep: trial i is model i with metrics overridden by
    `numbers[i]` ({"val": acc or None, "test": acc, "train_loss": x})."""
    files = {}
    for trial, spec in numbers.items():
        folder = trained[trial]
        for path in folder.iterdir():
            files[f"out/{trial_dir(trial)}/{path.name}"] = path.read_bytes()
        metrics = json.loads((folder / "metrics.json").read_text())
        if spec.get("val") is None:
            metrics.pop("val", None)
        else:
            metrics["val"]["accuracy"] = spec["val"]
        metrics["test"]["accuracy"] = spec["test"]
        metrics["train_loss"] = spec.get("train_loss", metrics["train_loss"])
        files[f"out/{trial_dir(trial)}/metrics.json"] = json.dumps(metrics).encode()
    return files


@pytest.fixture
def fake(monkeypatch):
    backend = FakeBackend()
    monkeypatch.setitem(BACKENDS, "fake", lambda start=True: backend)
    monkeypatch.setenv("QTRAIN_POLL_SECONDS", "0")
    return backend


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


def test_every_reader_of_a_sweep_uses_the_validation_best_trial(qtrain, fake, store, trained, tmp_path):
    # trial 0 is better on validation, trial 1 on test: the test set must not choose
    fake.script.results = results_of(trained, {0: {"val": 0.90, "test": 0.80},
                                               1: {"val": 0.85, "test": 0.95}})
    run = qtrain("run", "penguins", *SWEEP, "--backend", "fake", "--json", "--store", store)
    assert run.code == 0, run.err
    data = run.json()
    assert data["best"]["trial"] == 0 and data["selection"] == "val_accuracy"
    assert data["metrics"]["test"]["accuracy"] == 0.80
    assert "trials (best: 0, chosen on val_accuracy)" in run.err  # the table, on stderr under --json
    art = Path(data["artifacts_dir"])
    assert json.loads((art / "sweep.json").read_text())["best"]["trial"] == 0

    listed = qtrain("results", "list", "--json", "--store", store).json()
    assert listed[0]["headline"] == {"metric": "accuracy", "value": 0.80}
    assert listed[0]["test"]["accuracy"] == 0.80
    assert "0.8000" in qtrain("results", "list", "--store", store).out

    shown = qtrain("results", "show", data["run_id"], "--json", "--store", store).json()
    assert shown["best"]["trial"] == 0 and shown["metrics"]["test"]["accuracy"] == 0.80
    human = qtrain("results", "show", data["run_id"], "--store", store).out
    assert "best: 0" in human and "metrics of trial 0" in human

    # a sweep alone: its trials side by side, each with its own settings and metrics
    compared = qtrain("results", "compare", data["run_id"], "--json", "--store", store).json()
    assert compared["runs"] == ["trial 0", "trial 1"]
    assert compared["metrics"]["val accuracy"] == [0.90, 0.85] and compared["best"]["val accuracy"] == [0]
    assert compared["metrics"]["test accuracy"] == [0.80, 0.95]

    # predict RUN uses trial 0's model, not trial 1's
    frame = pd.read_csv(trained[0] / "predictions.csv")
    rows = _penguin_features().iloc[frame["row"].to_numpy()]
    rows.to_csv(tmp_path / "new.csv", index=False)
    result = qtrain("predict", data["run_id"], tmp_path / "new.csv", "--out", tmp_path / "p.csv",
                    "--store", store)
    assert result.code == 0, result.err
    predicted = pd.read_csv(tmp_path / "p.csv")
    expected = {t: load_model(trained[t] / MODEL).predict(rows) for t in (0, 1)}
    prob = [c for c in predicted.columns if c.startswith("prob_")]
    assert (predicted[prob].to_numpy() - expected[0][prob].to_numpy()).max() < 1e-6
    assert (predicted[prob].to_numpy() - expected[1][prob].to_numpy()).max() > 1e-4


def _penguin_features() -> pd.DataFrame:
    import palmerpenguins

    frame = palmerpenguins.load_penguins()
    return frame.drop(columns=["species"])


def test_without_a_validation_split_trials_are_chosen_on_the_training_loss(qtrain, fake, store, trained):
    fake.script.results = results_of(trained, {0: {"val": None, "test": 0.95, "train_loss": 0.30},
                                               1: {"val": None, "test": 0.80, "train_loss": 0.20}})
    run = qtrain("run", "penguins", "--set", "sweep={train.seed: [0, 1]}", "--backend", "fake",
                 "--json", "--store", store)
    data = run.json()
    assert data["best"]["trial"] == 1 and data["selection"] == "train_loss"
    assert data["selection_note"] == NO_VALIDATION and data["metrics"]["test"]["accuracy"] == 0.80
    human = qtrain("results", "show", data["run_id"], "--store", store).out
    assert "chosen on train_loss" in human and "no validation split" in human


def test_a_sweep_with_a_failed_trial_is_judged_on_the_others(qtrain, fake, store, trained):
    files = results_of(trained, {0: {"val": 0.70, "test": 0.99}, 1: {"val": 0.80, "test": 0.90}})
    fake.script.results = {k: v for k, v in files.items() if not k.startswith("out/trial-0/")}
    fake.script.states = ["Submitted", "FullyExecuting", "Failure"]
    fake.script.errors = ["instance 0: the command exited with status 1"]
    run = qtrain("run", "penguins", *SWEEP, "--backend", "fake", "--json", "--store", store)
    assert run.code == 1
    data = run.json()
    assert data["state"] == "failed" and "status 1" in data["error"]
    assert data["best"]["trial"] == 1 and data["trials"][0]["metrics"] is None
    listed = qtrain("results", "list", "--json", "--store", store).json()
    assert listed[0]["headline"]["value"] == 0.90


def _submitted(fake, store_dir: Path, qtrain, *args: str):
    data = qtrain("run", "penguins", "--set", "train.epochs=1", *args, "--backend", "fake",
                  "--detach", "--json", "--store", store_dir).json()
    store = Store(store_dir)
    return store, store.get(data["run_id"])


def test_following_survives_a_lost_connection(qtrain, fake, store, capfd):
    fake.script.states = ["Submitted", "FullyExecuting", "FullyExecuting", "Success"]
    fake.script.output = ["[qtrain] epoch=1/1 train_loss=0.5\n"]
    fake.script.unreachable = {2, 3}
    db, run = _submitted(fake, store, qtrain)
    naps = []
    ui = Ui()
    status = follow(run, fake, db, ui, retry=Retry(ui, "qtrain fetch", sleep=naps.append))
    assert status.state == "Success" and naps == [0.5, 1.0]
    err = capfd.readouterr()
    assert err.err.count("trying again") == 2 and "connection back" in err.out
    assert "epoch=1/1" in err.out


def test_following_gives_up_on_a_connection_that_stays_lost(qtrain, fake, store):
    fake.script.unreachable = set(range(1, 1000))
    db, run = _submitted(fake, store, qtrain)
    ui = Ui()
    naps = []
    with pytest.raises(BackendUnreachable, match="gave up") as exc:
        follow(run, fake, db, ui, retry=Retry(ui, f"qtrain fetch {run.run_id}", limit=3, sleep=naps.append))
    assert f"qtrain fetch {run.run_id}" in exc.value.one_line()
    assert naps == [0.5, 1.0, 2.0] and db.get(run.run_id).state == "submitted"  # nothing lost


def test_retrieve_is_idempotent_and_keeps_the_metrics(qtrain, fake, store, trained):
    fake.script.results = {f"out/{p.name}": p.read_bytes() for p in trained[0].iterdir()}
    fake.script.states = ["Success"]
    db, run = _submitted(fake, store, qtrain)
    ui = Ui()
    first = retrieve(run, fake, db, ui)
    before = {p: p.stat().st_mtime_ns for p in db.artifacts_dir(run.run_id).rglob("*") if p.is_file()}
    second = retrieve(run, fake, db, ui)
    after = {p: p.stat().st_mtime_ns for p in db.artifacts_dir(run.run_id).rglob("*") if p.is_file()
             if not p.name.startswith("task-")}
    assert first.state == second.state == "succeeded"
    assert first.metrics == second.metrics and first.metrics[-1]["task"] == "classification"
    assert {p: t for p, t in before.items() if not p.name.startswith("task-")} == after


def test_cancel_aborts_the_task_and_keeps_what_it_uploaded(qtrain, fake, store):
    fake.script.states = ["FullyExecuting"]  # runs until aborted
    fake.script.results = {"out/checkpoint.pt": b"checkpoint"}
    db, run = _submitted(fake, store, qtrain)
    result = qtrain("cancel", run.run_id, "--json", "--store", store)
    assert result.code == 1 and result.json()["state"] == "cancelled"
    assert run.task_uuid in fake.aborted
    assert (db.artifacts_dir(run.run_id) / "checkpoint.pt").read_bytes() == b"checkpoint"
    again = qtrain("cancel", run.run_id, "--store", store)
    assert again.code == 1 and "already ended: cancelled" in again.out


def test_a_task_that_vanished_marks_the_run_failed(qtrain, fake, store):
    db, run = _submitted(fake, store, qtrain)
    fake.requests.clear()  # as if the task had been deleted on the backend
    result = qtrain("fetch", run.run_id, "--store", store)
    # sent, then failed: exit 3 (not 2, "a mistake to fix, nothing sent"), and the run is named
    assert result.code == 3 and "not found" in result.err and "Traceback" not in result.err
    assert f"run {run.run_id}:" in result.err
    assert db.get(run.run_id).state == "failed" and "the task is gone" in db.get(run.run_id).error


def test_result_keys_that_cannot_be_files_here_are_skipped_one_warning_each(qtrain, fake, store):
    """Keys a storage may hold but no folder can: climbing out, absolute, a name over 255 bytes,
    a key below another key's file, and a local folder where a file should go.  The rest lands."""
    good = {"out/metrics.json": b"{}", "out/history.csv": b"epoch\n1\n", "out/sub/ok.txt": b"ok"}
    odd = {"../escaped.txt": "climbs out", "out/../../x.txt": "climbs out", "/abs.txt": "absolute",
           "out/" + "n" * 256 + ".txt": "longer than 255", "out/" + "é" * 200: "longer than 255",
           "out/history.csv/inner.txt": "below out/history.csv", "out/blocked": "cannot be written here"}
    fake.script.results = {**good, **{k: b"odd" for k in odd}}
    db, run = _submitted(fake, store, qtrain)
    (db.artifacts_dir(run.run_id) / ".incoming" / "out" / "blocked").mkdir(parents=True)  # a folder in the way
    result = qtrain("fetch", run.run_id, "--store", store)
    assert "Traceback" not in result.err, result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:") and "skipped" in line]
    assert len(warnings) == len(odd), result.err
    for key, why in odd.items():
        assert sum(repr(key) in line and why in line for line in warnings) == 1, (key, result.err)
    folder = db.artifacts_dir(run.run_id)
    assert (folder / "history.csv").read_bytes() == good["out/history.csv"]
    assert (folder / "sub" / "ok.txt").read_bytes() == b"ok"
    assert not list(folder.parent.parent.rglob("escaped.txt")) and not list(folder.rglob("*.part"))
