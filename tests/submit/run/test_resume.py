"""`qtrain resume` means what it says (issue 28): a succeeded run goes on only to a larger
--epochs, which becomes its new total; --epochs at or below the checkpoint's epoch is refused; one
resume of a run at a time; a data file that is gone is named as missing.  Every refusal is one
line, before anything is sent."""

from __future__ import annotations


import yaml

from submit.store import Store
from tests import datagen
from tests.helpers import run_lock_held

SHORT = ["--set", "train.epochs=3", "--set", "train.early_stopping=null", "--set", "train.checkpoint_every=1",
         "--set", "split.val_size=0"]


def _tasks(emulator) -> int:
    import requests

    return len(requests.get(f"{emulator.url}/tasks", headers={"Authorization": emulator.token}, timeout=30).json())


def _one_line(result) -> str:
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


def test_a_succeeded_run_goes_on_only_to_more_epochs_which_become_its_total(emulator, qtrain, tmp_path):
    store = tmp_path / "store"
    first = qtrain("run", "penguins", *SHORT, "--json", "--store", store)
    assert first.code == 0, first.err
    run_id = first.json()["run_id"]
    tasks = _tasks(emulator)

    plain = _one_line(qtrain("resume", run_id, "--store", store))
    assert "succeeded" in plain and "--epochs" in plain
    same = _one_line(qtrain("resume", run_id, "--epochs", "3", "--store", store))
    assert "epoch 3" in same and "--epochs" in same
    assert _tasks(emulator) == tasks  # nothing was sent

    more = qtrain("resume", run_id, "--epochs", "5", "--json", "--store", store)
    assert more.code == 0, more.err
    data = more.json()
    assert data["state"] == "succeeded" and data["resumed_from"] == run_id
    assert data["metrics"]["epochs_run"] == 5 and data["metrics"]["resumed_from_epoch"] == 3
    assert Store(store).get(data["run_id"]).job["train"]["epochs"] == 5


def test_one_resume_of_a_run_at_a_time(emulator, qtrain, tmp_path):
    store = tmp_path / "store"
    run_id = qtrain("run", "penguins", *SHORT, "--json", "--store", store).json()["run_id"]
    with run_lock_held(store, run_id, "resume"):
        tasks = _tasks(emulator)
        line = _one_line(qtrain("resume", run_id, "--epochs", "5", "--store", store))
        assert "another qtrain is resuming" in line and _tasks(emulator) == tasks


def test_a_data_file_that_is_gone_is_named_as_missing(emulator, qtrain, tmp_path):
    datagen.small_table(tmp_path / "table.csv")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(datagen.SMALL_JOB))
    store = tmp_path / "store"
    run_id = qtrain("run", job, *SHORT, "--json", "--store", store).json()["run_id"]
    (tmp_path / "table.csv").unlink()
    line = _one_line(qtrain("resume", run_id, "--epochs", "5", "--store", store))
    assert "table.csv" in line and "missing" in line and "changed" not in line
