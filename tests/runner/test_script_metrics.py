"""A script's metrics with no edit to the script (issue 36): `script.metrics` regexes on what it
prints, TensorBoard event files and Lightning CSVLogger files in its output folder; and the
plainest scripts (`print("hello")`, a script that fails) work whatever the job's `task` says."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from jobs.load import load_job_dict
from runner.scriptlogs import column, from_series


def _job(root: Path, body: str, **fields) -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "train.py").write_text(textwrap.dedent(body))
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "plain", "script": {"path": "code/train.py", **fields.pop("script", {})},
                                    **fields}))
    return path


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("task", ["classification", "regression", None])
def test_a_hello_script_succeeds_whatever_the_task_says(tmp_path, qtrain, task):
    path = _job(tmp_path, 'print("hello")', **({"task": task} if task else {}))
    result = qtrain("train", path, "--out", tmp_path / "out")
    assert result.code == 0, result.err
    assert "hello" in result.out and "internal error" not in result.err
    metrics = _metrics(tmp_path / "out")
    assert metrics["task"] == task and any(n.startswith("no metrics reported") for n in metrics["notes"])


def test_a_failing_script_says_its_own_status_and_last_stderr_line(tmp_path, qtrain):
    path = _job(tmp_path, """
        import sys
        print("working", flush=True)
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ValueError: the shapes (32, 10) and (3,) do not match", file=sys.stderr)
        sys.exit(3)
    """, task="classification")
    result = qtrain("train", path, "--out", tmp_path / "out")
    assert result.code == 1 and "internal error" not in result.err
    line = [ln for ln in result.err.splitlines() if ln.startswith("error:")]
    assert line == ["error: the script exited with status 3: ValueError: the shapes (32, 10) and (3,) do not match "
                    "(its stderr says why (qtrain logs RUN --stderr))"]


MNIST_LIKE = """
    for epoch in range(1, 4):
        for batch in range(3):
            print(f"Train Epoch: {epoch} [{batch * 640}/60000 ({batch}%)]\\tLoss: {1.0 / (epoch + batch):.6f}")
        print(f"\\nTest set: Average loss: {0.05 / epoch:.4f}, Accuracy: {9800 + 30 * epoch}/10000 ({98 + epoch // 3}%)\\n")
    print("Test set: Average loss: 0.0321, Accuracy: 9890/10000 (99%)")
"""


def test_script_metrics_read_final_values_and_curves_from_the_output(tmp_path, qtrain):
    path = _job(tmp_path, MNIST_LIKE, script={"metrics": {
        "test.loss": r"Average loss: ([0-9.]+)",
        "test.accuracy": r"Accuracy: (?P<correct>\d+)/\d+ \((?P<value>\d+)%\)",
        "train_loss": r"Train Epoch: (?P<epoch>\d+) .*Loss: (?P<value>[0-9.]+)",
        "val_loss": r"Average loss: ([0-9.]+)"}})
    out = tmp_path / "out"
    result = qtrain("train", path, "--out", out)
    assert result.code == 0, result.err
    metrics = _metrics(out)
    assert metrics["test"] == {"loss": 0.0321, "accuracy": 0.99}  # "(99%)": a percentage, as a fraction
    assert metrics["epochs_run"] == 4 and metrics["train_loss"] == pytest.approx(1 / 5)  # epoch 3's last batch
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0]["train_loss"]) == pytest.approx(1 / 3) and float(rows[1]["val_loss"]) == 0.025
    assert metrics["val"]["loss"] == 0.0321  # the 4th match of val_loss, a curve, is epoch 4's
    # live: an epoch line for each epoch as soon as the next began, the last one at the end
    shown = [ln for ln in result.out.splitlines() if ln.startswith("[qtrain] epoch=")]
    assert len(shown) == 4 and shown[0].startswith("[qtrain] epoch=1 ") and "train_loss=0.333333" in shown[0]
    assert (out / "loss_curve.png").is_file() and not any("no metrics" in n for n in metrics["notes"])


def test_a_value_that_is_not_a_number_is_a_note_not_a_failure(tmp_path, qtrain):
    path = _job(tmp_path, 'print("accuracy: high")\nprint("accuracy: 0.9")',
                script={"metrics": {"test.accuracy": r"accuracy: (\S+)"}})
    assert qtrain("train", path, "--out", tmp_path / "out").code == 0
    metrics = _metrics(tmp_path / "out")
    assert metrics["test"] == {"accuracy": 0.9}
    assert any("script.metrics.test.accuracy matched 'high'" in n for n in metrics["notes"])


@pytest.mark.parametrize("metrics, expected", [
    ({"Test Loss": "x: (1)"}, "script.metrics: 'Test Loss': name a metric like val_accuracy"),
    ({"test.loss": "loss: ([0-9."}, "script.metrics: test.loss: 'loss: ([0-9.' is not a regular expression"),
    ({"test.loss": "loss: [0-9.]+"}, "has no group to take the value from"),
])
def test_a_bad_metric_definition_is_one_line_at_check(tmp_path, qtrain, metrics, expected):
    path = _job(tmp_path, "print(1)", script={"metrics": metrics})
    result = qtrain("check", path)
    assert result.code == 2 and expected in result.err and len(result.err.strip().splitlines()) == 1


SUMMARY_WRITER = """
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter()  # runs/<date>_<host>/ in its working folder, the output folder
    for epoch in range(5):
        writer.add_scalar("Loss/train", 1.0 / (epoch + 1), epoch)
        writer.add_scalar("Loss/val", 1.2 / (epoch + 1), epoch)
        writer.add_scalar("Accuracy/val", 0.5 + epoch / 10, epoch)
    writer.add_scalar("Accuracy/test", 0.93, 4)
    writer.close()
"""


def test_tensorboard_event_files_become_curves_and_final_metrics(tmp_path, qtrain):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (pip install 'qtrain[tensorboard]')")
    path = _job(tmp_path, SUMMARY_WRITER, task="classification")
    out = tmp_path / "out"
    result = qtrain("train", path, "--out", out)
    assert result.code == 0, result.err
    metrics = _metrics(out)
    assert metrics["test"]["accuracy"] == pytest.approx(0.93) and metrics["val"]["accuracy"] == pytest.approx(0.9)
    assert metrics["epochs_run"] == 5 and metrics["train_loss"] == pytest.approx(0.2)
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]  # add_scalar's steps 0..4 are epochs 1..5
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(rows[0])


def test_lightning_csv_logger_files_map_steps_to_epochs(tmp_path, qtrain):
    # what lightning.pytorch.loggers.CSVLogger writes: one row a log call, step and epoch (0-based)
    path = _job(tmp_path, """
        import csv, os
        os.makedirs("lightning_logs/version_0")
        with open("lightning_logs/version_0/metrics.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", "step", "train_loss_step", "train_loss_epoch", "val_loss", "val_acc"])
            w.writerow([0, 49, 0.9, "", "", ""])
            w.writerow([0, 99, "", 0.8, 0.7, 0.6])
            w.writerow([1, 149, 0.5, "", "", ""])
            w.writerow([1, 199, "", 0.4, 0.35, 0.8])
    """)
    out = tmp_path / "out"
    assert qtrain("train", path, "--out", out).code == 0
    metrics = _metrics(out)
    assert metrics["val"] == {"loss": 0.35, "acc": 0.8} and metrics["train"] == {"loss": 0.4}
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [(r["epoch"], r["train_loss"], r["val_acc"]) for r in rows] == [("1", "0.8", "0.6"), ("2", "0.4", "0.8")]


def test_a_logged_tag_is_named_by_its_split():
    assert [column(t) for t in ("Loss/train", "Accuracy/test", "val_acc", "train_loss_epoch", "lr", "valid/f1")] == \
        ["train_loss", "test_accuracy", "val_acc", "train_loss", "lr", "val_f1"]
    found = from_series({"epoch": [(9, 0.0), (19, 1.0)], "val_loss": [(9, 0.5), (19, 0.25)]})
    assert found.rows == {1: {"val_loss": 0.5}, 2: {"val_loss": 0.25}} and found.finals == {"val": {"loss": 0.25}}


def test_script_args_may_be_the_command_line_as_it_is(tmp_path):
    loaded = load_job_dict({"name": "x", "script": {"path": "t.py", "args": ["--epochs", 3, "-v"]}}, tmp_path)
    assert loaded.job.script.args == ["--epochs", "3", "-v"]


SWEPT = """
    import argparse
    from runner import script as qtrain
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int)
    width = parser.parse_args().width
    for epoch in (1, 2):  # the widest fits the training rows best and generalises worst
        qtrain.log_epoch(epoch, 2, train_loss=1.0 / width, {fields})
"""


def test_a_script_sweep_chooses_on_the_validation_metric_it_reports(tmp_path, qtrain):
    path = _job(tmp_path, SWEPT.format(fields="val_accuracy=1.0 - width / 100"),
                script={"args": {"width": 8}}, sweep={"script.args.width": [8, 16, 32]})
    result = qtrain("train", path, "--out", tmp_path / "out")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert summary["selection"] == "val_accuracy" and summary["best"]["trial"] == 0 and summary["note"] is None


def test_a_script_sweep_without_validation_says_what_a_script_can_do(tmp_path, qtrain):
    path = _job(tmp_path, SWEPT.format(fields="seen=1"), script={"args": {"width": 8}},
                sweep={"script.args.width": [8, 32]})
    result = qtrain("train", path, "--out", tmp_path / "out")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert summary["selection"] == "train_loss" and summary["best"]["trial"] == 1
    assert "script.metrics" in summary["note"] and "split.val_size" not in summary["note"]
    assert "split.val_size" not in result.out + result.err


def test_a_script_sweep_that_reports_nothing_to_compare_still_ends_with_its_report(tmp_path, qtrain):
    """A stranger's first sweep of a plain script: no validation metric, no training loss, a
    test metric only; the sweep says what it lacks and writes its table and plot (it crashed on
    the missing bars)."""
    path = _job(tmp_path, 'import sys\nprint(f"Accuracy: {sys.argv[-1]}")', task="classification",
                script={"args": {"lr": 0.1}, "metrics": {"test.accuracy": "Accuracy: ([0-9.]+)"}},
                sweep={"script.args.lr": [0.1, 0.5]})
    result = qtrain("train", path, "--out", tmp_path / "out")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert summary["best"] is None and "reports no metric to compare its trials on" in summary["note"]
    from runner.api import write_sweep_report
    from jobs.results import SweepSummary

    write_sweep_report(tmp_path / "out", SweepSummary.model_validate(summary))
    assert (tmp_path / "out" / "sweep.png").is_file() and (tmp_path / "out" / "sweep.csv").is_file()
