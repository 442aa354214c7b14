"""Your script, qtrain's plumbing (issue 23): a script job runs the user's own training script with
its folders and arguments in its environment; what it reports through `runner.script` becomes
qtrain's results (metrics computed from its predictions, the confusion matrix, curves), a script
that reports nothing still runs, one that fails fails the run with its output kept, and the checks,
the smoke run and the time limit catch what they can before paying."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from jobs.load import load_job
from runner.scriptcheck import check_script
from runner.userscript import script_argv
from tests import datagen

CATALOG_SCRIPT = Path(__file__).resolve().parents[2] / "jobs" / "catalog" / "rain-tutorial" / "train.py"

# the tutorial's shape, written for plain Qarnot: its own arguments, its own files, no qtrain at all
PLAIN = textwrap.dedent("""
    import argparse, os
    import pandas as pd, torch
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    frame = pd.read_csv(args.data)
    x = torch.tensor(frame.select_dtypes("number").fillna(0).to_numpy(), dtype=torch.float32)
    model = torch.nn.Linear(x.shape[1], 2)
    for epoch in range(args.epochs):
        model(x).sum().backward()
    print(f"trained on {len(frame)} rows", flush=True)
    torch.save(model.state_dict(), "model.pt")
    with open("notes.txt", "w") as fh:
        fh.write(os.environ["QTRAIN_OUTPUT_DIR"])
""")

FAILING = textwrap.dedent("""
    import sys
    from pathlib import Path
    Path("partial.txt").write_text("half done")
    print("about to fail", flush=True)
    print("shapes (32, 10) and (3,) do not match", file=sys.stderr)
    sys.exit(3)
""")

SLEEPY = textwrap.dedent("""
    import time
    from runner import script as qtrain
    for epoch in range(1, 10_000):
        qtrain.log_epoch(epoch, 10_000, train_loss=1 / epoch)
        qtrain.save_checkpoint({"w": epoch}, epoch=epoch)
        time.sleep(0.2)
""")

REGRESSION = textwrap.dedent("""
    import numpy as np
    from runner import script as qtrain
    y = np.linspace(0, 10, 50)
    qtrain.log_predictions(y, y + 0.5)
    qtrain.log_metrics(my_score=0.25, label="ok")
""")


def _script_job(root: Path, body: str, job: dict | None = None, name: str = "train.py") -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / name).write_text(body)
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "scripted", "script": {"path": f"code/{name}"}, **(job or {})}))
    return path


def _tutorial(root: Path, epochs: int = 30, **extra) -> Path:
    datagen.weather_aus(root / "weatherAUS.csv", rows=1200)
    job = {"name": "tutorial", "data": {"path": "weatherAUS.csv"},
           "script": {"path": "code/train.py",
                      "args": {"data": "${QTRAIN_DATA}", "epochs": epochs, "lr": 0.01, "hidden": 16}}, **extra}
    return _write(root, job, CATALOG_SCRIPT.read_text())


def _write(root: Path, job: dict, body: str) -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "train.py").write_text(body)
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_the_tutorial_script_reports_and_qtrain_scores_it(tmp_path, qtrain):
    path = _tutorial(tmp_path)
    checked = qtrain("check", path, "--json")
    assert checked.code == 0, checked.err
    assert {"torch", "pandas", "numpy", "argparse"} <= set(checked.json()["imports"])
    out = tmp_path / "out"
    result = qtrain("train", path, "--out", out)
    assert result.code == 0, result.err
    shown = result.out + result.err
    assert "epoch=1/30" in shown and "epoch=30/30" in shown  # its epoch lines, as qtrain's own
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "classification" and metrics["epochs_run"] == 30 and metrics["epochs"] == 30
    test = metrics["test"]
    predictions = pd_read(out / "predictions.csv")  # the script's own file; qtrain's numbers agree with it
    assert test["n"] == len(predictions) > 250 and "roc_auc" in test and set(test["per_class"]) == {"No", "Yes"}
    assert (predictions["true"] == predictions["predicted"]).mean() == pytest.approx(test["accuracy"])
    confusion = (out / "confusion_matrix.csv").read_text().splitlines()
    assert confusion[0].split(",")[1:] == ["No", "Yes"]
    assert sum(int(v) for row in confusion[1:] for v in row.split(",")[1:]) == test["n"]
    for name in ("confusion_matrix.png", "loss_curve.png", "history.csv", "model.pt", "checkpoint.pt", "run.json"):
        assert (out / name).is_file(), name
    assert set(torch.load(out / "model.pt")) >= {"layers.0.weight"}
    info = json.loads((out / "run.json").read_text())
    assert info["job"]["script"]["args"]["epochs"] == 30 and info["dataset_files"] == ["data/weatherAUS.csv"]


def pd_read(path: Path):
    import pandas as pd

    return pd.read_csv(path)


def test_a_plain_qarnot_script_runs_with_only_its_paths_set(tmp_path, qtrain):
    datagen.weather_aus(tmp_path / "weatherAUS.csv", rows=200)
    path = _write(tmp_path, {"name": "plain", "data": {"path": "weatherAUS.csv"},
                             "script": {"path": "code/train.py", "args": {"data": "${QTRAIN_DATA}", "epochs": 3}}},
                  PLAIN)
    out = tmp_path / "out"
    result = qtrain("train", path, "--out", out)
    assert result.code == 0, result.err
    assert "trained on 200 rows" in result.out + result.err
    assert (out / "model.pt").is_file() and (out / "notes.txt").read_text() == str(out.resolve())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] is None and any("no metrics reported" in n for n in metrics["notes"])
    assert "no metrics reported" in result.out + result.err


def test_a_failing_script_fails_with_its_status_and_keeps_its_output(tmp_path, qtrain):
    path = _script_job(tmp_path, FAILING)
    out = tmp_path / "out"
    result = qtrain("train", path, "--out", out)
    assert result.code == 1
    assert "shapes (32, 10)" in result.err and "the script exited with status 3" in result.err
    assert (out / "partial.txt").read_text() == "half done" and (out / "metrics.json").is_file()


def test_regression_predictions_and_the_scripts_own_numbers(tmp_path, qtrain):
    path = _script_job(tmp_path, REGRESSION)
    out = tmp_path / "out"
    assert qtrain("train", path, "--out", out).code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "regression"
    assert metrics["test"]["rmse"] == pytest.approx(0.5) and metrics["test"]["mae"] == pytest.approx(0.5)
    assert metrics["reported"] == {"my_score": 0.25, "label": "ok"}
    assert (out / "regression.png").is_file()


def test_the_time_limit_stops_a_script_with_its_checkpoint(tmp_path, qtrain):
    path = _script_job(tmp_path, SLEEPY, {"resources": {"max_minutes": 0.05}})
    out = tmp_path / "out"
    result = qtrain("train", path, "--out", out)
    assert result.code == 124, result.out[-1500:] + result.err[-1500:]
    assert "resources.max_minutes" in result.err and "qtrain resume" in result.err
    saved = json.loads((out / "checkpoint.json").read_text())["epoch"]
    assert saved >= 1 and torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == saved
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("stopped by resources.max_minutes" in n for n in metrics["notes"])


def test_the_time_limit_stops_a_model_job_between_epochs(tmp_path, qtrain):
    datagen.small_table(tmp_path / "table.csv", rows=4000)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({
        "name": "limited", "task": "classification", "data": {"path": "table.csv", "target": "label"},
        "model": {"kind": "mlp", "hidden": [256, 256]},
        "train": {"epochs": 100_000, "batch_size": 32, "early_stopping": None},  # only the limit stops it
        "resources": {"max_minutes": 0.05}}))
    out = tmp_path / "out"
    result = qtrain("train", path, "--out", out)
    assert result.code == 124, result.out[-1500:] + result.err[-1500:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 1 <= metrics["epochs_run"] < 100_000 and "test" in metrics
    assert any("stopped by resources.max_minutes" in n for n in metrics["notes"])
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == metrics["epochs_run"]
    assert metrics["timings"]["total_seconds"] < 3 + 15, "stopped near its 3 s limit"


def test_script_arguments_become_its_command_line():
    env = {"QTRAIN_DATA": "/job/data/x.csv"}
    argv = script_argv({"data": "${QTRAIN_DATA}", "epochs": 5, "verbose": True, "quiet": False, "none": None,
                        "sizes": [1, 2], "unknown": "${NOT_SET}"}, env)
    assert argv == ["--data", "/job/data/x.csv", "--epochs", "5", "--verbose", "--sizes", "1", "2",
                    "--unknown", "${NOT_SET}"]


@pytest.mark.parametrize("body, expected", [
    ("import torch\ndef f(:\n    pass\n", "train.py:2: syntax error"),
    ("import os\nimport notapkg_xyz\n", "train.py:2: imports notapkg_xyz"),
    ("from notapkg_xyz.sub import thing\n", "train.py:1: imports notapkg_xyz"),
    # torch's own module, TensorBoard's writer: the runner image has torch, not tensorboard
    ("import torch\nfrom torch.utils.tensorboard import SummaryWriter\n", "train.py:2: imports tensorboard"),
])
def test_check_names_the_scripts_mistake_in_one_line(tmp_path, qtrain, body, expected):
    path = _script_job(tmp_path, body)
    result = qtrain("check", path)
    assert result.code == 2 and expected in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_check_accepts_optional_and_local_imports(tmp_path):
    body = "try:\n    import notapkg_xyz\nexcept ImportError:\n    notapkg_xyz = None\nimport helpers\nimport torch\n"
    path = _script_job(tmp_path, body)
    (tmp_path / "code" / "helpers.py").write_text("X = 1\n")
    report = check_script(load_job(path))
    assert report["imports"] == ["helpers", "torch"] and report["code_files"] == 2


def test_the_smoke_run_stops_early_and_catches_a_crash(tmp_path, qtrain):
    path = _tutorial(tmp_path / "ok", epochs=100_000)
    result = qtrain("check", path, "--smoke", "--json")
    assert result.code == 0, result.err
    shown = result.out + result.err
    assert "epoch=20/100000" in shown and "epoch=21/" not in shown  # it honoured QTRAIN_MAX_STEPS
    assert result.json()["smoke"]["steps"] == 20
    broken = _script_job(tmp_path / "broken", FAILING)
    result = qtrain("check", broken, "--smoke")
    assert result.code == 2 and "smoke run of code/train.py" in result.err and "status 3" in result.err


def test_a_local_sweep_over_a_script_argument(tmp_path, qtrain):
    path = _tutorial(tmp_path, epochs=5)
    job = yaml.safe_load(path.read_text())
    job["sweep"] = {"script.args.hidden": [8, 16]}
    path.write_text(yaml.safe_dump(job))
    out = tmp_path / "out"
    result = qtrain("train", path, "--out", out)
    assert result.code == 0, result.err
    summary = json.loads((out / "sweep.json").read_text())
    assert [t["overrides"] for t in summary["trials"]] == [{"script.args.hidden": 8}, {"script.args.hidden": 16}]
    assert summary["best"] is not None
    for i, hidden in ((0, 8), (1, 16)):
        model = torch.load(out / f"trial-{i}" / "model.pt")
        assert model["layers.0.weight"].shape[0] == hidden


def test_the_script_is_told_where_things_are_and_never_the_secrets(tmp_path, qtrain, monkeypatch):
    monkeypatch.setenv("QARNOT_CLIENT_TOKEN", "not-for-the-script")
    monkeypatch.setenv("DOCKER_REGISTRY_PASSWORD", "nor-this")
    monkeypatch.setenv("QTRAIN_REGISTRY_PASSWORD", "nor-that")
    datagen.small_table(tmp_path / "table.csv")
    body = ("import json, os\n"
            "json.dump({k: v for k, v in os.environ.items() if k.startswith(('QTRAIN_', 'QARNOT_CLIENT', 'DOCKER_'))},"
            " open('env.json', 'w'))\n")
    path = _write(tmp_path, {"name": "told", "data": {"path": "table.csv"}, "train": {"seed": 7},
                             "script": {"path": "code/train.py", "args": {"lr": 0.1}}}, body)
    out = tmp_path / "out"
    assert qtrain("train", path, "--out", out).code == 0
    env = json.loads((out / "env.json").read_text())
    assert env["QTRAIN_DATA"] == str(tmp_path / "table.csv") and env["QTRAIN_DATA_DIR"] == str(tmp_path)
    assert env["QTRAIN_OUTPUT_DIR"] == str(out.resolve()) and json.loads(env["QTRAIN_PARAMS"]) == {"lr": 0.1}
    assert env["QTRAIN_SEED"] == "7" and env["QTRAIN_DEVICE"] == "cpu" and env["QTRAIN_SMOKE"] == "0"
    assert "QTRAIN_CHECKPOINT" not in env and "QARNOT_CLIENT_TOKEN" not in env and "DOCKER_REGISTRY_PASSWORD" not in env
    assert "QTRAIN_REGISTRY_PASSWORD" not in env


def test_a_distributed_script_aborted_by_gloos_teardown_is_told_the_fix(monkeypatch):
    """torch's gloo aborts at exit (SIGABRT) when the group is destroyed while DDP holds it: the
    line names the signal and the fix; elsewhere a SIGABRT is only named."""
    from runner.userscript import ScriptFailed

    aborted = ["world 2 loss 1.02", "terminate called without an active exception"]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    failed = ScriptFailed(-6, aborted)
    assert failed.code == 1 and "status -6 (killed by SIGABRT): terminate called without" in failed.one_line()
    assert "`del model` before dist.destroy_process_group()" in failed.one_line()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert "del model" not in ScriptFailed(-6, aborted).one_line()
