"""The results store on a real SQLite file: records, state history, lookup, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from jobs import QtrainError
from submit.store import Store


def make_run(store: Store, name: str = "penguins", **kw):
    args = dict(job_name=name, job_hash="a" * 64, dataset_hash="b" * 64, backend="local",
                profile="cpu", job={"name": name}, trials=0)
    args.update(kw)
    return store.create_run(**args)


def test_run_lifecycle_is_recorded_with_times(tmp_path):
    store = Store(tmp_path)
    run = make_run(store)
    assert run.state == "submitted" and store.artifacts_dir(run.run_id).is_dir()
    store.update(run.run_id, task_uuid="1234-uuid", uploaded_bytes=42)
    store.set_state(run.run_id, "running")
    store.set_state(run.run_id, "running")  # repeated states are not duplicated
    store.set_metrics(run.run_id, {"test": {"accuracy": 0.98}})
    store.set_state(run.run_id, "succeeded")
    again = Store(tmp_path).get(run.run_id)
    assert [h["state"] for h in again.history] == ["submitted", "running", "succeeded"]
    assert again.history[0]["at"] <= again.history[-1]["at"]
    assert again.task_uuid == "1234-uuid" and again.uploaded_bytes == 42 and again.done
    assert again.metrics[-1]["test"]["accuracy"] == 0.98


def test_lookup_by_prefix_or_suffix(tmp_path):
    store = Store(tmp_path)
    a, b = make_run(store, "alpha"), make_run(store, "beta")
    assert store.resolve(a.run_id[-6:]) == a.run_id
    assert store.get(b.run_id).job_name == "beta"
    with pytest.raises(QtrainError, match="ambiguous"):
        store.resolve(a.run_id[:8])  # both start with the same timestamp date
    with pytest.raises(QtrainError, match="not in the store"):
        store.resolve("nope")
    assert [r.job_name for r in store.list()] == ["beta", "alpha"]


def _writer(root: str, worker: int, n: int) -> None:
    store = Store(Path(root))
    for i in range(n):
        run = make_run(store, f"w{worker}-{i}")
        store.set_state(run.run_id, "running")
        store.set_metrics(run.run_id, {"i": i, "worker": worker})
        store.set_state(run.run_id, "succeeded")


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = Store(tmp_path).list()
    assert len(runs) == 60 and len({r.run_id for r in runs}) == 60
    assert all(r.state == "succeeded" for r in runs)
    assert sorted((r.metrics[-1]["worker"], r.metrics[-1]["i"]) for r in runs) == \
        [(w, i) for w in range(4) for i in range(15)]  # every write, each in its own run


def test_unwritable_store_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(QtrainError, match="cannot create it"):
        Store(tmp_path / "file" / "store")


def test_an_interrupt_after_commit_is_not_masked(tmp_path, monkeypatch):
    """Ctrl-C delivered as COMMIT returns: the run is written, and the caller sees the interrupt."""
    import sqlite3

    store = Store(tmp_path)
    run = make_run(store)

    class Interrupting(sqlite3.Connection):
        def execute(self, sql, *args):
            result = super().execute(sql, *args)
            if sql == "COMMIT":
                raise KeyboardInterrupt
            return result

    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=Interrupting, **k))
    with pytest.raises(KeyboardInterrupt):
        store.set_state(run.run_id, "running")
    monkeypatch.undo()
    assert Store(tmp_path).get(run.run_id).state == "running"
