"""Code travels like data (issue 23): a module's or script's folder is packaged by content (unchanged
code uploads nothing), what is not code stays home, a large folder is said and an oversized one
refused, `--dry-run` lists the code, and the code's hash is part of the job hash and the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs import code as jobs_code
from jobs.code import find_code
from jobs.load import load_job
from jobs.results import job_hash
from tests import datagen
from tests.runner.test_usercode import MLP, SETTINGS


def _project(root: Path) -> Path:
    """A code folder as people have them: a package, a venv, caches, git, data, notes."""
    (root / "nets").mkdir(parents=True)
    (root / "nets" / "__init__.py").write_text("")
    (root / "nets" / "tables.py").write_text(MLP)
    (root / "nets" / "__pycache__").mkdir()
    (root / "nets" / "__pycache__" / "tables.cpython-311.pyc").write_bytes(b"\0" * 100)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "myenv").mkdir()
    (root / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "myenv" / "lib.py").write_text("x = 1\n")
    (root / "notes.md").write_text("notes\n")
    (root / "big.bin").write_bytes(b"\0" * 1000)
    (root / ".qtrainignore").write_text("# stays home\n*.bin\nnotes.md\n")
    datagen.small_table(root / "table.csv")
    job = {**SETTINGS, "data": {"path": "table.csv", "target": "label"}, "train": {"epochs": 2},
           "model": {"kind": "module", "source": ".", "class": "nets.tables:MLP"}}
    (root / "job.yaml").write_text(yaml.safe_dump(job))
    return root / "job.yaml"


def test_only_code_travels_and_the_dry_run_lists_it(emulator, tmp_path, qtrain):
    path = _project(tmp_path / "proj")
    job = yaml.safe_load(path.read_text())
    job["model"]["source"] = "nets"  # the package folder itself: code/nets/...
    path.write_text(yaml.safe_dump(job))
    code = find_code(load_job(path).job, path.parent, path)
    assert [f.remote for f in code.files] == ["code/nets/__init__.py", "code/nets/tables.py"]
    job["model"]["source"] = "."  # the whole project: what is not code stays home
    path.write_text(yaml.safe_dump(job))
    code = find_code(load_job(path).job, path.parent, path)
    assert [f.remote for f in code.files] == ["code/nets/__init__.py", "code/nets/tables.py"]
    plan = qtrain("run", path, "--dry-run", "--json", "--backend", "local")
    assert plan.code == 0, plan.err
    listed = {f["path"]: f["kind"] for f in plan.json()["files"]}
    assert listed == {"data/table.csv": "data", "code/nets/__init__.py": "code", "code/nets/tables.py": "code",
                      "job.json": "job"}
    assert plan.json()["code_hash"] == code.hash()


def test_the_code_hash_is_part_of_the_job_hash(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    paths = [_project(a), _project(b)]
    jobs = [load_job(p) for p in paths]
    codes = [find_code(j.job, p.parent, p) for j, p in zip(jobs, paths)]
    assert codes[0].hash() == codes[1].hash()  # the same code wherever it lives
    assert job_hash(jobs[0].job, codes[0].hash()) == job_hash(jobs[1].job, codes[1].hash())
    (b / "nets" / "tables.py").write_text(MLP + "\n# changed\n")
    changed = find_code(jobs[1].job, b, paths[1])
    assert changed.hash() != codes[0].hash()
    assert job_hash(jobs[1].job, changed.hash()) != job_hash(jobs[0].job, codes[0].hash())


def test_a_large_code_folder_is_said_and_an_oversized_one_refused(emulator, tmp_path, qtrain, monkeypatch):
    path = _project(tmp_path)
    (tmp_path / "weights.npy").write_bytes(b"\0" * 5000)
    monkeypatch.setattr(jobs_code, "WARN_BYTES", 2000)
    plan = qtrain("run", path, "--dry-run", "--backend", "local")
    assert plan.code == 0 and "weights.npy" in plan.err and ".qtrainignore" in plan.err, plan.err
    monkeypatch.setattr(jobs_code, "LIMIT_BYTES", 4000)
    refused = qtrain("run", path, "--dry-run", "--backend", "local")
    assert refused.code == 2 and "more than the" in refused.err and "weights.npy" in refused.err


def test_unchanged_code_uploads_nothing_and_changed_code_only_itself(emulator, qtrain, tmp_path):
    path = _project(tmp_path)
    store = tmp_path / "store"
    first = qtrain("run", path, "--json", "--store", store)
    assert first.code == 0, first.err
    assert first.json()["state"] == "succeeded" and first.json()["info"]["code_hash"]
    again = qtrain("run", path, "--json", "--store", store)
    assert again.json()["uploaded_bytes"] == 0  # data, code and job.json: all there already
    (tmp_path / "nets" / "tables.py").write_text(MLP + "\n# a comment\n")
    changed = qtrain("run", path, "--json", "--store", store).json()
    job_json = len(json.dumps(yaml.safe_load(path.read_text())))  # about one job.json, plus the code
    assert 0 < changed["uploaded_bytes"] < len(MLP) + 200 + 3 * job_json
    assert changed["info"]["code_hash"] != first.json()["info"]["code_hash"]
    compared = qtrain("results", "compare", first.json()["run_id"], changed["run_id"], "--json", "--store", store)
    assert "code" in compared.json()["differs"]


@pytest.mark.parametrize("model", [{"class": "Missing"}, {"source": "missing.py"}],
                         ids=["missing class", "missing source"])
def test_a_broken_module_uploads_nothing(emulator, qtrain, tmp_path, model):
    import requests

    (tmp_path / "net.py").write_text(MLP)
    job = {**SETTINGS, "model": {"kind": "module", "source": "net.py", "class": "MLP", **model}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    tasks = len(requests.get(f"{emulator.url}/tasks", headers={"Authorization": emulator.token}, timeout=30).json())
    result = qtrain("run", tmp_path / "job.yaml", "--store", tmp_path / "store")
    assert result.code == 2 and "Traceback" not in result.err
    assert len(requests.get(f"{emulator.url}/tasks", headers={"Authorization": emulator.token}, timeout=30).json()) == tasks
    assert not list((tmp_path / "store" / "runs").glob("2*"))  # nothing recorded either


def test_job_files_are_not_code_and_config_files_are(tmp_path):
    """Issue 36: a job file beside the script (the one run, or another) travels as job.json, never
    as code: editing it changes neither the code nor its hash.  A config the script reads travels."""
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "config.yaml").write_text("lr: 0.1\nlayers: [8, 8]\n")
    (tmp_path / "name-only.yaml").write_text("name: not-a-job\nlr: 0.1\n")  # a config with a name: still code
    job = {"name": "s", "script": {"path": "train.py", "args": {"lr": 0.1}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    (tmp_path / "big.json").write_text(json.dumps({**job, "name": "s-big", "train": {"seed": 2}}))
    loaded = load_job(tmp_path / "job.yaml")
    code = find_code(loaded.job, loaded.base_dir, loaded.source)
    assert [f.remote for f in code.files] == ["code/config.yaml", "code/name-only.yaml", "code/train.py"]
    before = code.hash()
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**job, "script": {**job["script"], "args": {"lr": 0.5}}}))
    (tmp_path / "big.json").write_text(json.dumps({**job, "name": "s-big", "train": {"seed": 9}}))
    loaded = load_job(tmp_path / "job.yaml")
    assert find_code(loaded.job, loaded.base_dir, loaded.source).hash() == before
