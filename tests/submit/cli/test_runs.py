"""`qtrain run --dry-run` against the real emulator: the same path as the run up to the sending
(the check, the requirements resolved by pip, the placement, the estimate), so it refuses, in
the same one line, whatever the run refuses; and it sends nothing, creating no bucket and no task."""

from __future__ import annotations

import uuid

import pytest
import yaml

from submit.store import Store
from tests import datagen

pytestmark = pytest.mark.usefixtures("emulator")


def _job(tmp_path, **fields):
    datagen.small_table(tmp_path / "table.csv")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**datagen.SMALL_JOB, **fields}))
    return path


def _error(result) -> str:
    assert result.code == 2 and "Traceback" not in result.err, result.out + result.err
    [line] = [x for x in result.err.strip().splitlines() if not x.startswith("[qtrain] warning:")]
    return line


def _emulator_has(conn) -> tuple[set[str], set[str]]:
    """(its buckets, its tasks), asked through the SDK."""
    return {b.uuid for b in conn.buckets()}, {t.uuid for t in conn.all_tasks()}


@pytest.mark.parametrize("resources, words", [
    ({"nodes": 2, "profile": "docker-batch"}, ["resources.nodes 2", "docker-batch", "not a cluster profile"]),
    ({"nodes": 65}, ["65 instances", "maxInstances", "resources.nodes"]),
    ({"profile": "gpu", "procs_per_node": 2}, ["resources.procs_per_node 2", "GPU"]),
    ({"profile": "no-such-profile"}, ["no-such-profile", "docker-batch"]),
])
def test_the_dry_run_refuses_a_placement_in_the_runs_own_line(qtrain, tmp_path, conn, resources, words):
    job = _job(tmp_path, resources=resources)
    before = _emulator_has(conn)
    dry = _error(qtrain("run", job, "--dry-run", "--store", tmp_path / "store"))
    real = _error(qtrain("run", job, "--store", tmp_path / "store"))
    assert dry == real, (dry, real)
    for word in words:
        assert word in dry, dry
    assert _emulator_has(conn) == before and Store(tmp_path / "store").list() == []


def test_the_dry_run_refuses_a_sweep_larger_than_a_task_may_be(qtrain, tmp_path, conn):
    job = _job(tmp_path, train={"epochs": 1}, sweep={"train.lr": [0.001 * (i + 1) for i in range(65)]})
    dry = _error(qtrain("run", job, "--dry-run"))
    assert "65 instances" in dry and "maxInstances" in dry and "sweep" in dry, dry


def test_the_dry_run_refuses_a_requirement_pip_cannot_resolve(qtrain, tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "requirements.txt").write_text("--no-index\n--find-links wheels\nqtrain-no-such-package==1.0\n")
    job = _job(tmp_path, resources={"requirements": "requirements.txt"})
    dry = _error(qtrain("run", job, "--dry-run"))
    assert "resources.requirements" in dry and "qtrain-no-such-package" in dry, dry


def test_a_dry_run_over_the_estimates_limit_is_refused(qtrain, tmp_path):
    dry = _error(qtrain("run", _job(tmp_path), "--dry-run", "--max-cost", "0"))
    assert "--max-cost" in dry, dry


def test_a_valid_dry_run_estimates_and_creates_no_bucket_and_no_task(qtrain, tmp_path, conn, monkeypatch):
    monkeypatch.setenv("QTRAIN_DATA_BUCKET", f"qtrain-dry-{uuid.uuid4().hex[:8]}")  # a bucket nobody made yet
    before = _emulator_has(conn)
    result = qtrain("run", _job(tmp_path), "--dry-run", "--json", "--store", tmp_path / "store")
    assert result.code == 0, result.err
    assert _emulator_has(conn) == before
    plan = result.json()
    assert plan["dry_run"] and plan["send"]["objects"] == 1  # the emulator lacks the table: it would go
    assert plan["placement"] == {"profile": "docker-batch", "gpu": False, "instances": 1, "nodes": 1,
                                 "procs_per_node": 1}
    assert plan["estimate"]["cost_eur"] >= 0 and "estimate: ~" in result.err
    assert not (tmp_path / "store").exists()  # nothing recorded
