"""The remembered check (`submit/checks.py`): an unchanged job, data and code is not checked
again; a change to any of them is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner
from jobs.load import load_job
from submit.run import checks


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRAIN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def table_job(tmp_path, write_job):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    frame["y"] = np.where(frame["a"] > 0, "p", "n")
    frame.to_csv(tmp_path / "t.csv", index=False)
    return write_job({"name": "t", "task": "classification", "data": {"path": "t.csv", "target": "y"}})


def test_a_passed_check_is_remembered_and_any_change_checks_again(state, table_job, tmp_path):
    first, remembered = checks.check(load_job(table_job))
    assert not remembered and first["splits"]["train"] == 130  # 200 rows - 20% test - 15% validation
    again, remembered = checks.check(load_job(table_job))
    assert remembered and again == first
    assert checks.check(load_job(table_job), recheck=True)[1] is False

    # the job changes
    assert checks.check(load_job(table_job, ["train.lr=0.01"]))[1] is False
    # a data file gets new bytes of the same size
    data = tmp_path / "t.csv"
    text = data.read_text()
    swapped = text.replace(",p\n", ",P\n", 1)
    assert len(swapped) == len(text) and swapped != text
    data.write_text(swapped)
    report, remembered = checks.check(load_job(table_job))
    assert not remembered and set(report["classes"]) == {"n", "p", "P"}


def test_a_failed_check_is_never_remembered(state, table_job):
    from jobs.errors import QtrainError

    for _ in range(2):
        with pytest.raises(QtrainError, match="nope"):
            checks.check(load_job(table_job, ["data.target=nope"]))
    assert not list((state / "checks").glob("*.json"))


def test_the_code_version_follows_the_source(tmp_path):
    root = tmp_path / "runner"
    shutil.copytree(Path(runner.__file__).parent, root)
    before = checks.code_version.__wrapped__((root,))
    (root / "train.py").write_text((root / "train.py").read_text() + "\n# a change\n")
    assert checks.code_version.__wrapped__((root,)) != before


def test_the_check_key_includes_the_code_version(state, table_job, monkeypatch):
    loaded = load_job(table_job)
    key = checks.check_key(loaded)
    monkeypatch.setattr(checks, "code_version", lambda: "another version of the code")
    assert checks.check_key(loaded) != key


def test_a_remembered_check_imports_no_torch(state, table_job):
    checks.check(load_job(table_job))
    out, err = _check_in_a_new_process(state, table_job, "", "'torch' in sys.modules, 'pandas' in sys.modules")
    assert out == ["True", "False", "False"], err


def test_a_full_check_does_not_import_dynamo(state, table_job):
    """torch._dynamo (0.7 s) is not needed for a verdict: no job compiles."""
    out, err = _check_in_a_new_process(state, table_job, ", recheck=True",
                                       "'torch' in sys.modules, 'torch._dynamo' in sys.modules")
    assert out == ["False", "True", "False"], err


def _check_in_a_new_process(state, job, args: str, probes: str) -> tuple[list[str], str]:
    """Run `check(load_job(job){args})` in a fresh interpreter; print whether it was remembered,
    then `probes` (expressions over sys.modules)."""
    code = ("import sys; from jobs.load import load_job; from submit.run.checks import check; "
            f"print(check(load_job({str(job)!r}){args})[1], {probes})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QTRAIN_STATE_DIR": str(state)})
    return proc.stdout.split(), proc.stderr
