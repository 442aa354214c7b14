"""Mistakes are one line and exit 2, never a traceback nor a silent wrong answer (issue 28): ports
and state folders that cannot be, data that is not text, outputs that cannot be written, a price
table that is not there, filters that cannot match, and terminal control characters in user text."""

from __future__ import annotations

import json

import pytest

from submit.store import Store

QUICK = ["--set", "train.epochs=2", "--set", "split.val_size=0", "--set", "train.early_stopping=null"]


def one_line(result) -> str:
    lines = result.err.strip().splitlines()
    assert result.code == 2, (result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.err, result.err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A penguins model trained here (`qtrain train`), and a CSV of new rows for it."""
    from jobs.load import load_job
    from runner.api import run_job

    folder = tmp_path_factory.mktemp("trained")
    run_job(load_job("penguins", ["train.epochs=2", "split.val_size=0", "train.early_stopping=null"]), folder / "out")
    from palmerpenguins import load_penguins

    load_penguins().head(20).to_csv(folder / "new.csv", index=False)
    return folder


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_that_cannot_be_is_one_line(qtrain, port):
    assert "--port" in one_line(qtrain("emulator", "serve", "--port", port, "--executor", "process"))


def test_a_state_folder_that_is_a_file_is_one_line(qtrain, tmp_path):
    afile = tmp_path / "passwd"
    afile.write_text("root:x:0:0\n")
    line = one_line(qtrain("emulator", "serve", "--port", "0", "--state", afile, "--executor", "process"))
    assert "--state" in line and str(afile) in line and "not a folder" in line


def test_predict_on_binary_data_and_into_a_folder_or_unwritable_path_is_one_line(qtrain, trained, tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 40)
    assert "garbage.bin" in one_line(qtrain("predict", trained / "out", garbage))
    new = trained / "new.csv"
    assert str(tmp_path) in one_line(qtrain("predict", trained / "out", new, "--out", tmp_path))
    assert "missing-folder" in one_line(qtrain("predict", trained / "out", new, "--out",
                                                tmp_path / "missing-folder" / "preds.csv"))


def test_predict_names_non_numbers_in_a_numeric_column(qtrain, trained, tmp_path):
    import pandas as pd

    frame = pd.read_csv(trained / "new.csv")
    frame["bill_length_mm"] = frame["bill_length_mm"].astype(object)
    frame.loc[3, "bill_length_mm"] = "forty"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    result = qtrain("predict", trained / "out", bad, "--out", tmp_path / "preds.csv")
    said = result.err
    assert "bill_length_mm" in said and "forty" in said and "Traceback" not in said, said
    if result.code == 0:  # predicted, the value read as missing and said so: never an empty answer
        preds = pd.read_csv(tmp_path / "preds.csv")
        assert len(preds) == 20 and preds["predicted"].notna().sum() >= 19
    else:
        one_line(result)


def test_a_price_table_that_is_not_there_is_one_line(qtrain, monkeypatch, tmp_path):
    monkeypatch.setenv("QTRAIN_PRICES", str(tmp_path / "nonexistent.toml"))
    line = one_line(qtrain("run", "penguins", "--estimate", "--backend", "local"))
    assert "QTRAIN_PRICES" in line and "nonexistent.toml" in line


def _two_runs(store_dir) -> tuple[str, str]:
    store = Store(store_dir)
    ids = []
    for name in ("a", "b"):
        run = store.create_run(job_name="penguins", job_hash="h", dataset_hash="d", backend="local",
                               profile="docker-batch", job={"name": "penguins", "task": "classification"})
        store.set_metrics(run.run_id, {"test": {"accuracy": 0.9}, "task": "classification"})
        store.set_state(run.run_id, "succeeded")
        store.update(run.run_id, retrieved=True)
        ids.append(run.run_id)
    return ids[0], ids[1]


def test_filters_that_cannot_match_are_one_line(qtrain, tmp_path):
    _two_runs(tmp_path)
    line = one_line(qtrain("results", "list", "--no-refresh", "--where", "test.accuracy>abc", "--store", tmp_path))
    assert "abc" in line and "number" in line
    assert "--limit" in one_line(qtrain("results", "list", "--no-refresh", "--limit", "-1", "--store", tmp_path))


def test_compare_plot_into_a_folder_or_unwritable_path_is_one_line(qtrain, tmp_path):
    a, b = _two_runs(tmp_path / "store")
    assert str(tmp_path) in one_line(qtrain("results", "compare", a, b, "--plot", tmp_path, "--store",
                                            tmp_path / "store"))
    assert "missing-folder" in one_line(qtrain("results", "compare", a, b, "--plot",
                                               tmp_path / "missing-folder" / "c.png", "--store", tmp_path / "store"))


def test_terminal_control_characters_in_notes_and_tags_are_shown_escaped(qtrain, tmp_path):
    a, _ = _two_runs(tmp_path)
    evil = "\x1b[2J\x1b[31mwiped\x07"
    assert qtrain("results", "note", a, evil, "--store", tmp_path).code == 0
    assert qtrain("results", "tag", a, f"who={evil}", "--store", tmp_path).code == 0
    for args in (("results", "show", a), ("results", "list", "--no-refresh"), ("results", "tag", a, "k=v")):
        out = qtrain(*args, "--store", tmp_path).out
        assert "\x1b" not in out and "\x07" not in out, out
    shown = qtrain("results", "show", a, "--store", tmp_path).out
    assert "\\x1b[2J\\x1b[31mwiped\\x07" in shown, shown  # every character said, none acted on
    stored = json.loads(qtrain("results", "show", a, "--json", "--store", tmp_path).out.strip().splitlines()[-1])
    assert stored["note"] == evil  # kept as given; only shown escaped
