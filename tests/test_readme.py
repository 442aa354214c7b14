"""Examples that run (issue 36): every block of the README is run by a test, extracted from the file,
so an example that breaks fails the suite.

- `bash` blocks run as they are (bash -e) in a folder of their own, against the session's emulator
  (the set-up and test commands of "The two commands" are what .ci/run itself runs);
- `console` blocks: each `$ command` runs, and each line shown after it must be among what it
  printed (`...` stands for anything);
- `yaml` blocks are job files (a fragment completed with the job it extends): checked, then
  trained for a couple of epochs;
- the `python` block is a script job's script, trained;
- `text` blocks are synopses: every `qtrain` command they name exists, and every option they show
  is in that command's `--help`.
In the default run: about 20 s."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import datagen


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
KNOWN = {"", "text", "bash", "console", "yaml", "python"}
RUN_BY_CI = ("pip install", "python -m pytest")  # "The two commands": .ci/run runs them itself


def blocks(kind: str) -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(2)) for m in BLOCK.finditer(text) if m.group(1) == kind]


def _ids(found: list[tuple[int, str]]) -> list[str]:
    return [f"README.md:{line}" for line, _ in found]


MODULE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, in_features, num_classes, dropout=0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.body(x)
'''

MAIN = '''
for epoch in range(1, 4):
    print(f"Train Epoch: {epoch} [0/60000 (0%)]\\tLoss: {1 / epoch:.6f}")
    print(f"Test set: Average loss: {0.1 / epoch:.4f}, Accuracy: {9800 + epoch}/10000 (98%)")
'''


def _titanic(path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"rownames": range(1, n + 1), "pclass": rng.integers(1, 4, n),
                          "sex": rng.choice(["male", "female"], n), "age": rng.normal(30, 12, n).round(),
                          "fare": rng.gamma(2, 15, n).round(2)})
    frame.loc[rng.random(n) < 0.1, "age"] = np.nan
    frame["survived"] = ((frame["sex"] == "female") ^ (rng.random(n) < 0.2)).astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


@pytest.fixture
def sandbox(tmp_path) -> Path:
    """A user's folder with the files the README's examples name."""
    _titanic(tmp_path / "data" / "titanic.csv")
    datagen.weather_aus(tmp_path / "data" / "weatherAUS.csv", rows=600)
    shutil.copy(tmp_path / "data" / "weatherAUS.csv", tmp_path / "weatherAUS.csv")
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "vision.py").write_text(MODULE)
    (tmp_path / "rain-tutorial").mkdir()
    shutil.copy(ROOT / "jobs" / "catalog" / "rain-tutorial" / "train.py", tmp_path / "rain-tutorial" / "train.py")
    (tmp_path / "requirements.txt").write_text("pyyaml>=6  # what the script needs (the runner has it already)\n")
    (tmp_path / "main.py").write_text(MAIN)
    return tmp_path


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "COLUMNS": "120"}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_every_block_is_of_a_kind_a_test_runs():
    text = README.read_text()
    kinds = [m.group(1) for m in BLOCK.finditer(text)]
    assert set(kinds) <= KNOWN, set(kinds) - KNOWN
    assert kinds.count("") == 1  # the layout of the repository, at the top: not an example
    assert len(blocks("bash")) >= 3 and blocks("console") and blocks("yaml") and blocks("python") and blocks("text")


BASH = blocks("bash")


@pytest.mark.parametrize("line, block", BASH, ids=_ids(BASH))
def test_the_bash_blocks_run(emulator, sandbox, line, block):
    if any(marker in block for marker in RUN_BY_CI):
        pytest.skip("one of the two commands: .ci/run runs it on a clean clone")
    done = _shell(block, sandbox)
    assert done.returncode == 0, f"README.md:{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


CONSOLE = blocks("console")


def _matches(expected: str, lines: list[str]) -> bool:
    pattern = re.compile(".*".join(re.escape(part) for part in expected.split("...")))
    return any(pattern.fullmatch(line) for line in lines)


@pytest.mark.parametrize("line, block", CONSOLE, ids=_ids(CONSOLE))
def test_the_console_blocks_print_what_they_show(emulator, sandbox, line, block):
    steps: list[tuple[str, list[str]]] = []
    for text in block.splitlines():
        if text.startswith("$ "):
            steps.append((text[2:], []))
        elif text.strip():
            steps[-1][1].append(text)
    for command, expected in steps:
        done = _shell(command, sandbox)
        printed = (done.stdout + done.stderr).splitlines()
        for want in expected:
            assert _matches(want, printed), f"README.md:{line}: {command}\nwanted: {want}\ngot:\n" + "\n".join(printed)


YAML = blocks("yaml")


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def complete(job: dict) -> dict:
    """A fragment as the job it extends: a model's on the titanic example's table, a script's on its
    own, anything else on the catalog's penguins."""
    if "name" in job:
        return job
    if "script" in job:
        base = {"name": "example"}
    elif "model" in job:
        base = {"name": "example", "task": "classification",
                "data": {"path": "data/titanic.csv", "target": "survived", "drop": ["rownames"]}}
    else:
        base = yaml.safe_load((ROOT / "jobs" / "catalog" / "penguins.yaml").read_text())
    return _merged(base, job)


@pytest.mark.parametrize("line, block", YAML, ids=_ids(YAML))
def test_the_job_files_check_and_train(qtrain, sandbox, line, block):
    job = complete(yaml.safe_load(block))
    path = sandbox / f"readme-{line}.yaml"
    path.write_text(yaml.safe_dump(job))
    checked = qtrain("check", path)
    assert checked.code == 0, f"README.md:{line}\n{checked.err[-3000:]}"
    if job.get("script"):
        short = ["--set", "script.args.epochs=2"] if "epochs" in (job["script"].get("args") or {}) else []
    else:
        short = ["--set", "train.epochs=2", "--set", "train.refit=false"]
    trained = qtrain("train", path, "--out", sandbox / f"out-{line}", *short)
    assert trained.code == 0, f"README.md:{line}\n{trained.err[-3000:]}"


PYTHON = blocks("python")


@pytest.mark.parametrize("line, block", PYTHON, ids=_ids(PYTHON))
def test_the_python_block_runs_as_a_script_job(qtrain, sandbox, line, block):
    import json

    (sandbox / "example.py").write_text(block)
    trained = qtrain("train", sandbox / "example.py", "--out", sandbox / "out")
    assert trained.code == 0, f"README.md:{line}\n{trained.err[-3000:]}"
    metrics = json.loads((sandbox / "out" / "metrics.json").read_text())
    assert "accuracy" in metrics["test"] and metrics["reported"] == {"my_score": 0.9} and metrics["epochs_run"] == 5


def synopsis() -> list[tuple[int, list[list[str]], list[str]]]:
    """(README line, the commands it may name, options) of each command a synopsis names: a part
    after ` | ` names a command of its own (`status RUN | fetch RUN`) or of the line's group
    (`results tag RUN | untag RUN`)."""
    found = []
    for line, block in blocks("text"):
        for offset, text in enumerate(block.splitlines()):
            code = text.split("  #")[0].strip()
            if not code.startswith("qtrain "):
                continue
            group: list[str] = []
            for part in code[len("qtrain "):].split(" | "):
                part = part.strip().removeprefix("qtrain ")
                words = []
                for word in part.split():
                    if not re.fullmatch(r"[a-z][a-z-]*", word):
                        break
                    words.append(word)
                group = group or words[:1]
                candidates = [words, group + words] if words and words[:1] != group else [words or group]
                found.append((line + 1 + offset, candidates, re.findall(r"--[a-z][a-z-]*", part)))
    return found


def test_every_command_and_option_of_the_synopses_exists(qtrain):
    named = synopsis()
    assert len(named) > 30
    for line, candidates, options in named:
        helped = None
        for words in candidates:
            helped = qtrain(*words, "--help")
            if helped.code == 0:
                break
        assert helped.code == 0, f"README.md:{line}: qtrain {' '.join(candidates[-1])} is not a command"
        for option in options:
            assert option in helped.out, f"README.md:{line}: qtrain {' '.join(words)} has no {option}"
