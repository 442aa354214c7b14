"""Script jobs and the packages they need, sent to the real emulator (process executor) through the
real CLI (issue 23): live epoch lines, qtrain's confusion matrix, the model brought home, a killed
run resumed to the uninterrupted result, a sweep over a script argument, a package missing from the
runner that runs once resources.requirements names it, and every bad input refused before anything
is uploaded.  The same through the docker executor: tests/docker/test_docker.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from jobs import code as jobs_code
from tests import datagen
from tests.helpers import kill_instance, make_wheel, wait_for
from tests.runner.test_usercode import MLP, SETTINGS

# deterministic (full batch, seeded, no dropout), so that a resumed run ends where an
# uninterrupted one does; `pause` makes each epoch last long enough to be killed in
STEADY = textwrap.dedent("""
    import argparse, time
    import pandas as pd, torch
    from runner import script as qtrain

    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    torch.manual_seed(qtrain.seed())
    frame = pd.read_csv(args.data)
    x = torch.tensor(frame[["a", "b", "c"]].to_numpy(), dtype=torch.float32)
    y = torch.tensor((frame["label"] == "yes").to_numpy(), dtype=torch.long)
    train, test = slice(0, 300), slice(300, None)
    model = torch.nn.Sequential(torch.nn.Linear(3, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    start, state = 0, qtrain.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"]); optimizer.load_state_dict(state["optimizer"]); start = state["epoch"]
    for epoch in range(start + 1, args.epochs + 1):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[train]), y[train])
        loss.backward(); optimizer.step()
        qtrain.log_epoch(epoch, args.epochs, train_loss=loss.item())
        qtrain.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, epoch=epoch)
        time.sleep(args.pause)
    with torch.no_grad():
        proba = torch.softmax(model(x[test]), 1)
    qtrain.log_predictions(y[test], proba.argmax(1), proba=proba, classes=["no", "yes"])
    qtrain.save_model(model)
""")

GREETING = {"qtrain_greeting/__init__.py": "def hello(name):\n    return f'hello {name}'\n"}


def _steady(root: Path, **args) -> Path:
    datagen.small_table(root / "table.csv", rows=400)
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "train.py").write_text(STEADY)
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "steady", "data": {"path": "table.csv"},
                                    "script": {"path": "code/train.py",
                                               "args": {"data": "${QTRAIN_DATA}", "epochs": 12, **args}}}))
    return path


def test_a_script_job_runs_on_the_emulator_and_qtrain_keeps_its_results(emulator, qtrain, tmp_path):
    store = tmp_path / "store"
    result = qtrain("run", _steady(tmp_path), "--json", "--store", store)
    assert result.code == 0, result.err
    shown = result.out + result.err
    assert "epoch=1/12" in shown and "epoch=12/12" in shown  # its epoch lines, followed live
    data = result.json()
    assert data["state"] == "succeeded" and data["metrics"]["task"] == "classification"
    folder = Path(data["artifacts_dir"])
    confusion = (folder / "confusion_matrix.csv").read_text().splitlines()  # computed by qtrain
    assert confusion[0].split(",")[1:] == ["no", "yes"]
    assert sum(int(v) for row in confusion[1:] for v in row.split(",")[1:]) == 100 == data["metrics"]["test"]["n"]
    assert set(torch.load(folder / "model.pt")) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert (folder / "loss_curve.png").is_file() and (folder / "history.csv").read_text().count("\n") == 13
    assert data["kind"] == "script, classification"
    show = qtrain("results", "show", data["run_id"], "--store", store)
    assert "code hash" in show.out and "script.args.epochs" in show.out and "preprocess." not in show.out
    listed = qtrain("results", "list", "--json", "--store", store).json()
    assert listed[0]["run_id"] == data["run_id"]
    predict = qtrain("predict", data["run_id"], tmp_path / "table.csv", "--store", store)
    assert predict.code == 2 and "a script job" in predict.err and len(predict.err.strip().splitlines()) == 1


@pytest.mark.faults  # a fault injected: in the fault tier (pytest -m faults)
def test_a_killed_script_run_resumes_to_the_uninterrupted_result(emulator, qtrain, tmp_path):
    store = tmp_path / "store"
    path = _steady(tmp_path, epochs=80, pause=0.05)
    reference = qtrain("run", path, "--json", "--store", store).json()
    assert reference["state"] == "succeeded"
    run = qtrain("run", path, "--detach", "--json", "--store", store).json()
    wait_for(lambda: "epoch=10/80" in qtrain("logs", run["run_id"], "--store", store).out, timeout=60)
    kill_instance(run["task_uuid"])  # the machine died mid-training
    failed = qtrain("fetch", run["run_id"], "--json", "--store", store)
    assert failed.code == 1 and failed.json()["state"] == "failed"
    stopped_at = json.loads((Path(run["artifacts_dir"]) / "checkpoint.json").read_text())["epoch"]
    assert 10 <= stopped_at < 80

    resumed = qtrain("resume", run["run_id"], "--json", "--store", store)
    assert resumed.code == 0, resumed.err
    data = resumed.json()
    assert data["state"] == "succeeded" and data["resumed_from"] == run["run_id"]
    assert "resumed from its checkpoint" in resumed.out + resumed.err
    assert data["metrics"]["test"] == reference["metrics"]["test"]
    assert data["metrics"]["train_loss"] == reference["metrics"]["train_loss"]
    history = (Path(data["artifacts_dir"]) / "history.csv").read_text().splitlines()
    assert len(history) == 81  # the curves go on from the first run's epochs
    more = qtrain("resume", data["run_id"], "--epochs", "90", "--json", "--store", store)
    assert more.code == 0 and more.json()["metrics"]["epochs_run"] == 90  # --epochs: script.args.epochs


def test_a_sweep_over_a_script_argument(emulator, qtrain, tmp_path):
    path = _steady(tmp_path)
    job = yaml.safe_load(path.read_text())
    job["sweep"] = {"script.args.hidden": [4, 16]}
    path.write_text(yaml.safe_dump(job))
    result = qtrain("run", path, "--json", "--store", tmp_path / "store")
    assert result.code == 0, result.err
    data = result.json()
    assert len(data["trials"]) == 2 and data["state"] == "succeeded" and data["best"]["trial"] in (0, 1)
    for trial, hidden in ((0, 4), (1, 16)):
        weights = torch.load(Path(data["artifacts_dir"]) / f"trial-{trial}" / "model.pt")
        assert weights["0.weight"].shape == (hidden, 3)
    # compared, the trials have a script job's settings only (no model.kind, train.epochs, train.lr)
    compared = qtrain("results", "compare", data["run_id"], "--json", "--store", tmp_path / "store").json()
    assert compared["differs"] == ["script.args.hidden"] and compared["metrics"]["test accuracy"]
    assert {k.split(".")[0] for k in compared["settings"]} <= {"name", "script", "data", "train", "resources"}
    assert not {"train.epochs", "train.lr"} & set(compared["settings"])


def _greeting_job(root: Path, requirements: bool) -> Path:
    make_wheel(root / "wheels", "qtrain-greeting", "1.2.0", GREETING)
    (root / "requirements.txt").write_text("--no-index\n--find-links wheels\nqtrain-greeting==1.2.0\n")
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "train.py").write_text("import qtrain_greeting\nprint(qtrain_greeting.hello('qarnot'))\n")
    job = {"name": "greet", "script": {"path": "code/train.py"}}
    if requirements:
        job["resources"] = {"requirements": "requirements.txt"}
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_a_missing_package_fails_the_check_and_runs_once_required(emulator, qtrain, tmp_path):
    before = _uploaded(emulator)
    refused = qtrain("run", _greeting_job(tmp_path, requirements=False), "--store", tmp_path / "store")
    assert refused.code == 2 and "imports qtrain_greeting" in refused.err and "resources.requirements" in refused.err
    assert _uploaded(emulator) == before
    plan = qtrain("run", _greeting_job(tmp_path, requirements=True), "--dry-run", "--json")
    assert plan.json()["requirements"]["installed"] == ["qtrain-greeting==1.2.0"]
    result = qtrain("run", tmp_path / "job.yaml", "--json", "--store", tmp_path / "store")
    assert result.code == 0, result.err
    assert "hello qarnot" in result.out + result.err
    assert result.json()["info"]["requirements"]["installed"] == ["qtrain-greeting==1.2.0"]


# 9 MB printed at once: twice the emulator's ring of 4 MiB a stream, numbered lines of 1,000 characters
CHATTY = "import sys\nsys.stdout.write(''.join(f'{i:06d} ' + 'x' * 992 + '\\n' for i in range(9000)))\nprint('[end]')\n"


def test_output_past_the_emulators_buffer_says_what_was_left_out(emulator, qtrain, conn, tmp_path):
    store = tmp_path / "store"
    run = qtrain("run", _script(tmp_path, CHATTY), "--detach", "--json", "--store", store).json()
    wait_for(lambda: conn.retrieve_task(run["task_uuid"]).state in ("Success", "Failure", "Cancelled"), timeout=120)
    # followed only now (as `qtrain run` is when it falls behind): the lines dropped unread are counted
    fetched = qtrain("fetch", run["run_id"], "--store", store)
    assert fetched.code == 0, fetched.err
    skipped = [line for line in fetched.out.splitlines() if "of output skipped" in line]
    assert len(skipped) == 1 and skipped[0].startswith("[qtrain] ")
    assert skipped[0].endswith(f"qtrain logs {run['run_id']} has what is kept")
    assert "[end]" in fetched.out and "008999 xxx" in fetched.out  # the end, as it was kept

    logs = qtrain("logs", run["run_id"], "--store", store).out
    saved = (Path(run["artifacts_dir"]) / "task-stdout.txt").read_text()
    for text in (logs, saved):
        first, kept = text.split("\n", 1)
        assert "of earlier output left out" in first and "keeps the last 4 MiB of each stream" in first, first
        left_out = int(first.split()[1].replace(",", ""))
        oldest = int(kept.split(" ", 1)[0])  # the first numbered line kept
        assert 4 << 20 >= len(kept) > (4 << 20) - 1000 and "008999 " + "x" * 992 + "\n[end]\n" in kept
        assert oldest <= left_out < oldest + 50  # the lines before it: the numbered ones and the runner's few
        assert " MB) of earlier output left out" in first


# ------------------------------------------------------------------------- bad input: one line
def _uploaded(emulator) -> int:
    """Objects in every bucket of the emulator's storage."""
    from submit.emulator.fields import EMAIL
    from submit.emulator.s3server import s3_client

    s3 = s3_client(emulator.s3_url, EMAIL, emulator.token, attempts=1, timeout=10)
    return sum(len(s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])) for b in s3.list_buckets()["Buckets"])


def _module(root: Path, code: str = MLP, **model) -> Path:
    (root / "net.py").write_text(code)
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump({**SETTINGS, "model": {"kind": "module", "source": "net.py", "class": "MLP",
                                                          **model}}))
    return path


def _script(root: Path, body: str = "print('hi')\n", name: str = "train.py", **resources) -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / name).write_text(body)
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "script": {"path": f"code/{name}"},
                                    **({"resources": resources} if resources else {})}))
    return path


def _written(root: Path, job: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "job.yaml").write_text(yaml.safe_dump(job))
    return root / "job.yaml"


BAD = {
    "module syntax error": (lambda r: _module(r, MLP.replace("def forward(self, x):", "def forward(self, x)")),
                            "net.py:"),
    "missing class": (lambda r: _module(r, **{"class": "MPL"}), "did you mean"),
    "unexpected constructor argument": (lambda r: _module(r, args={"depth": 3}), "depth"),
    "wrong output shape": (lambda r: _module(r, MLP.replace("nn.Linear(width, num_classes)", "nn.Linear(width, 7)")),
                           "for 3 classes"),
    "script path missing": (lambda r: _written(r, {"name": "bad", "script": {"path": "nope.py"}}), "not found"),
    "script not Python": (lambda r: _script(r, name="train.txt"), "not a Python file"),
    "requirements file missing": (lambda r: _script(r, requirements="missing.txt"), "missing.txt: not found"),
    "requirements unparsable": (lambda r: _script(r, requirements=["numpy==="]), "cannot be parsed"),
    "package the index lacks": (lambda r: _script(r, requirements=["--no-index", "no-such-package-qtrain"]),
                                "no-such-package-qtrain"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_input_is_one_line_and_uploads_nothing(emulator, qtrain, tmp_path, case):
    make, expected = BAD[case]
    path = make(tmp_path)
    before = _uploaded(emulator)
    result = qtrain("run", path, "--store", tmp_path / "store")
    lines = result.err.strip().splitlines()
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert expected in lines[-1] and lines[-1].startswith("error:"), result.err
    assert _uploaded(emulator) == before
    assert not list((tmp_path / "store" / "runs").glob("2*"))  # nothing recorded either


def test_a_code_folder_over_the_limit_uploads_nothing(emulator, qtrain, tmp_path, monkeypatch):
    path = _script(tmp_path)
    (tmp_path / "code" / "weights.bin").write_bytes(b"\0" * 5000)
    monkeypatch.setattr(jobs_code, "LIMIT_BYTES", 4000)
    before = _uploaded(emulator)
    result = qtrain("run", path, "--store", tmp_path / "store")
    assert result.code == 2 and "weights.bin" in result.err and "more than the" in result.err
    assert _uploaded(emulator) == before


def test_a_failing_script_fails_the_run_and_its_output_comes_home(emulator, qtrain, tmp_path):
    body = "import sys\nopen('partial.txt', 'w').write('half')\nprint('bad shape here', file=sys.stderr)\nsys.exit(3)\n"
    result = qtrain("run", _script(tmp_path, body), "--json", "--store", tmp_path / "store")
    assert result.code == 1
    data = result.json()
    assert data["state"] == "failed" and "status 3" in data["error"] and "bad shape here" in data["error"]
    assert "bad shape here" in result.err  # the last lines of its stderr
    assert (Path(data["artifacts_dir"]) / "partial.txt").read_text() == "half"


def test_the_time_limit_ends_a_stuck_script_with_its_checkpoint(emulator, qtrain, tmp_path):
    body = textwrap.dedent("""
        import time
        from runner import script as qtrain
        for epoch in range(1, 100000):
            qtrain.save_checkpoint({"epoch": epoch}, epoch=epoch)
            time.sleep(0.2)
    """)
    path = _script(tmp_path, body, max_minutes=0.1)  # 6 s: the script starts (torch) and saves within it, even on a busy machine
    estimate = qtrain("run", path, "--estimate", "--json").json()["estimate"]
    assert estimate["bounded"] and 3 < estimate["wall_seconds"] < 60
    result = qtrain("run", path, "--json", "--store", tmp_path / "store")
    assert result.code == 1
    data = result.json()
    assert data["state"] == "failed" and "resources.max_minutes" in data["error"]
    assert json.loads((Path(data["artifacts_dir"]) / "checkpoint.json").read_text())["epoch"] >= 1
    unbounded = qtrain("run", _script(tmp_path / "free", body), "--max-cost", "1", "--store", tmp_path / "store")
    assert unbounded.code == 2 and "resources.max_minutes" in unbounded.err


def test_a_bare_script_runs_with_its_arguments_and_its_printed_metrics_come_home(emulator, qtrain, tmp_path):
    """Issue 36's first try: `qtrain run train.py -- ARGS`, a script that never imports qtrain and
    prints PyTorch's mnist example's last line; script.metrics (set with --set) reads test.loss."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import sys
        print("args", sys.argv[1:])
        print("Test set: Average loss: 0.0321, Accuracy: 9890/10000 (99%)")
    """))
    result = qtrain("run", script, "--set", "script.metrics={test.loss: 'Average loss: ([0-9.]+)'}", "--json",
                    "--", "--epochs", "2", "--lr", "0.1")
    assert result.code == 0, result.err
    run = result.json()
    assert run["state"] == "succeeded" and run["metrics"]["test"] == {"loss": 0.0321}
    assert "args ['--epochs', '2', '--lr', '0.1']" in result.out + result.err
    shown = qtrain("results", "show", run["run_id"])
    assert shown.code == 0 and "None" not in shown.out
    rows = [line.split() for line in shown.out.splitlines()]
    assert ["┃", "metric", "┃", "test", "┃"] in rows and ["│", "loss", "│", "0.0321", "│"] in rows, shown.out
    listed = qtrain("results", "list", "--where", "test.loss<0.05", "--json")
    assert [r["run_id"] for r in listed.json()] == [run["run_id"]]


def test_what_a_list_was_filtered_on_is_shown_and_reported_numbers_can_be_queried(emulator, qtrain, tmp_path):
    """A stranger's first hour: `--where reported.my_score>0.5` (a script's log_metrics) works, and
    the list shows the field it was filtered on, not only accuracy and F1."""
    script = tmp_path / "scored.py"
    script.write_text("from runner import script as qtrain\nqtrain.log_metrics(my_score=0.9)\n"
                      "print('Test set: Average loss: 0.0111, Accuracy: 99/100 (99%)')\n")
    run = qtrain("run", script, "--set", "script.metrics={test.loss: 'Average loss: ([0-9.]+)'}", "--json")
    assert run.code == 0, run.err
    run_id = run.json()["run_id"]
    listed = qtrain("results", "list", "--where", "reported.my_score>0.5", "--json")
    assert [r["run_id"] for r in listed.json()] == [run_id]
    shown = qtrain("results", "list", "--where", "test.loss<0.05", "--sort", "-reported.my_score")
    header = next(line for line in shown.out.splitlines() if "run" in line and "state" in line)
    assert "test.loss" in header and "reported.my_score" in header, shown.out


def test_a_scripts_option_given_before_the_double_dash_is_said_as_such(qtrain, tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    result = qtrain("run", tmp_path / "train.py", "--epochs", "3", "--dry-run")
    assert result.code == 2 and result.err.strip() == (
        f"error: --epochs is not an option of qtrain run (a script's own options go after --: "
        f"qtrain run {tmp_path / 'train.py'} --dry-run -- --epochs 3)")
    both = qtrain("train", tmp_path / "train.py", "--out", tmp_path / "o", "--set", "script.args.lr=1", "--", "-v")
    assert both.code == 2 and "--set script.args.lr and the words after -- both give" in both.err
