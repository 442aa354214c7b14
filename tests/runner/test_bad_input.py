"""Bad input: a one-line error naming the problem, a non-zero exit, no traceback, from check and train."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

BASE = "name: bad\ntask: classification\ndata:\n  path: data.csv\n  target: y\n"
GOOD_CSV = "a,b,y\n1,2,x\n3,4,z\n5,6,x\n7,8,z\n9,10,x\n11,12,z\n"

CASES = {
    "unknown-key": (BASE + "epochz: 3\n", GOOD_CSV, "epochz: unknown field"),
    "negative-epochs": (BASE + "train:\n  epochs: -5\n", GOOD_CSV, "train.epochs: Input should be greater than 0"),
    "missing-target-column": (BASE.replace("target: y", "target: label"), GOOD_CSV,
                              "data.target column 'label' is not in the data"),
    "missing-file": (BASE.replace("data.csv", "nowhere.csv"), None, "nowhere.csv: file not found"),
    "regression-on-text": (BASE.replace("classification", "regression"), GOOD_CSV,
                           "task is regression but target 'y' holds text such as 'x'"),
    "empty-csv": (BASE, "", "the file is empty"),
    "header-only-csv": (BASE, "a,b,y\n", "the dataset has no rows"),
    "target-all-missing": (BASE, "a,b,y\n1,2,\n3,4,\n", "target column 'y' has no values"),
    "yaml-syntax": ("name: bad\ntask: [classification\n", GOOD_CSV, "YAML syntax error at line"),
    "unknown-task": (BASE.replace("classification", "clustering"), GOOD_CSV,
                     "task: Input should be 'classification' or 'regression'"),
    "cnn-on-table": (BASE + "model:\n  kind: cnn\n", GOOD_CSV, "model.kind cnn needs image data"),
    "drop-unknown-column": (BASE + "  drop: [nope]\n", GOOD_CSV, "data.drop names columns that are not in the data: nope"),
    "unknown-builtin": (BASE.replace("data.csv", "sklearn:nosuch"), None, "unknown built-in dataset"),
    "one-class": (BASE, "a,y\n1,x\n2,x\n3,x\n", "only one class"),
    "inf-in-a-column": (BASE, GOOD_CSV.replace("5,6,x", "5,inf,x"),
                        "column 'b' holds infinite values (1 row(s), the first is data row 3)"),
    "not-utf8": (BASE, GOOD_CSV.replace("z", "\u00e9").encode("latin-1"), "it is not utf-8 text"),
    "nul-bytes": (BASE, b"\0" * (1 << 20), "it holds NUL bytes (the first at offset 0)"),
    "unknown-encoding": (BASE + "  encoding: klingon\n", GOOD_CSV, "data.encoding: unknown text encoding"),
    "labels-never-read": (BASE + "  labels: y.npy\n", GOOD_CSV, "data.labels: labels go with a .npy file of images"),
    "image-as-an-option": (BASE + "resources:\n  image: --privileged\n", GOOD_CSV,
                           "resources.image: '--privileged' starts with '-'"),
}


@pytest.mark.parametrize("command", ["check", "train"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(qtrain, tmp_path, case, command):
    job, csv, expected = CASES[case]
    (tmp_path / "job.yaml").write_text(job)
    if isinstance(csv, bytes):
        (tmp_path / "data.csv").write_bytes(csv)
    elif csv is not None:
        (tmp_path / "data.csv").write_text(csv)
    args = [command, tmp_path / "job.yaml"] + (["--out", tmp_path / "out"] if command == "train" else [])
    result = qtrain(*args)
    assert result.code == 2
    assert expected in result.err
    assert "Traceback" not in result.err + result.out
    lines = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.err
    if command == "train":  # nothing half-written
        assert not (tmp_path / "out" / "metrics.json").exists()


def test_rows_with_missing_target_are_dropped_with_a_count(qtrain, tmp_path):
    (tmp_path / "job.yaml").write_text(BASE + "train:\n  epochs: 2\n")
    (tmp_path / "data.csv").write_text(GOOD_CSV + "13,14,\n15,16,\n")
    result = qtrain("check", tmp_path / "job.yaml")
    assert result.code == 0, result.err
    assert "dropped 2 of 8 rows whose target 'y' is missing" in result.err


def test_real_process_exit_code_and_stderr(tmp_path):
    (tmp_path / "job.yaml").write_text(BASE + "train:\n  epochs: 0\n")
    proc = subprocess.run([sys.executable, "-m", "submit", "check", str(tmp_path / "job.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: Invalid job file")
    assert "train.epochs" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_latin1_table_reads_with_its_encoding_and_nul_data_is_refused_at_once(qtrain, tmp_path):
    (tmp_path / "job.yaml").write_text(BASE + "  encoding: latin-1\n")
    header, rows = GOOD_CSV.split("\n", 1)
    (tmp_path / "data.csv").write_bytes((header + "\n" + rows * 10).replace("z", "\u00e9").encode("latin-1"))
    result = qtrain("check", tmp_path / "job.yaml", "--json")
    assert result.code == 0, result.err
    assert set(result.json()["classes"]) == {"x", "\u00e9"}
    (tmp_path / "job.yaml").write_text(BASE)
    with open(tmp_path / "data.csv", "wb") as fh:  # 1 GiB of NULs, sparse: only the first bytes are read
        fh.truncate(1 << 30)
    started = time.monotonic()
    refused = qtrain("check", tmp_path / "job.yaml")
    assert refused.code == 2 and "NUL bytes" in refused.err and time.monotonic() - started < 5


@pytest.mark.parametrize("labels,expected", [("missing.npy", "data.labels {}: file not found"),
                                             ("folder", "data.labels {}: it is a folder"),
                                             ("text.npy", "data.labels {}: cannot read it as .npy")])
def test_a_bad_labels_file_is_one_line_naming_data_labels(qtrain, tmp_path, labels, expected):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((10, 8, 8), dtype=np.float32))
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.npy").write_text("1,2,3")
    (tmp_path / "job.yaml").write_text(f"name: img\ntask: classification\ndata: {{path: x.npy, labels: {labels}}}\n")
    for command in (["check"], ["train", "--out", tmp_path / "out"], ["run", "--dry-run"]):
        result = qtrain(command[0], tmp_path / "job.yaml", *command[1:])
        assert result.code == 2 and "Traceback" not in result.err, result.err
        assert expected.format(tmp_path / labels) in result.err
