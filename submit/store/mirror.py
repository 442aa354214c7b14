"""Each run's own copy of its index entry (`.run-record.json` in its folder), written inside the
transaction that changed the entry, so that a lost or damaged index can be rebuilt from the run
folders (`submit.store.reindex`)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobs.results import CHECKPOINT, METRICS, MODEL, RUN_INFO, TRIAL_PREFIX, atomic_write, read_json
from submit.store.records import STATES
from submit.store.schema import RUN_COLUMNS

RECORD = ".run-record.json"  # each run folder's copy of its index entry (`Store.reindex`)
RECORD_FORMAT = "qtrain-run-record/1"


def write_record(db: sqlite3.Connection, folder: Path, run_id: str) -> None:
    """The run's index entry, also in its own folder (RECORD), written inside the transaction
    that changed it (so in the same order as the index): `submit.store.reindex` rebuilds the index from
    these when index.sqlite is lost or damaged."""
    row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
    record = {
        "format": RECORD_FORMAT, "run": {k: row[k] for k in row.keys()},
        "states": [dict(r) for r in db.execute(
            "SELECT state, at, detail FROM states WHERE run_id=? ORDER BY rowid", (run_id,))],
        "metrics": {str(r["trial"]): json.loads(r["metrics"]) for r in db.execute(
            "SELECT trial, metrics FROM metrics WHERE run_id=?", (run_id,))},
        "tags": {r["key"]: r["value"] for r in db.execute(
            "SELECT key, value FROM tags WHERE run_id=?", (run_id,))},
    }
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1, sort_keys=True)
    try:
        if (folder / RECORD).read_text() == text:
            return  # unchanged: a repeated fetch touches nothing
    except OSError:
        pass
    atomic_write(folder / RECORD, text)


def parse_record(data: Any, run_id: str) -> dict[str, Any]:
    """A run folder's record, checked field by field (the columns it names are the index's own,
    never taken from the file); ValueError saying what is wrong."""
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise ValueError(f"not a {RECORD_FORMAT} record")
    run = data.get("run")
    if not isinstance(run, dict):
        raise ValueError("its run entry is not an object")
    unknown = sorted(set(run) - set(RUN_COLUMNS))
    if unknown:
        raise ValueError(f"its run entry has fields the index does not: {', '.join(map(repr, unknown))[:120]}")
    for column, (kind, nullable) in RUN_COLUMNS.items():
        value = run.get(column)
        if value is None and nullable:
            continue
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"its {column} is {type(value).__name__}, not {kind.__name__}")
    if run["run_id"] != run_id:
        raise ValueError(f"it is the record of run {run['run_id'][:80]!r}")
    if run["state"] not in STATES:
        raise ValueError(f"its state {run['state'][:40]!r} is not a run state")
    states, metrics, tags = data.get("states"), data.get("metrics"), data.get("tags")
    if not isinstance(states, list) or not all(
            isinstance(h, dict) and h.get("state") in STATES and isinstance(h.get("at"), str)
            and isinstance(h.get("detail"), (str, type(None))) for h in states):
        raise ValueError("its states are not a list of {state, at, detail}")
    if not isinstance(metrics, dict) or not all(
            isinstance(t, str) and t.lstrip("-").isdigit() and isinstance(m, dict) for t, m in metrics.items()):
        raise ValueError("its metrics are not {trial: object}")
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ValueError("its tags are not {key: value}")
    return {"run": {c: run.get(c) for c in RUN_COLUMNS}, "states": states,
            "metrics": {int(t): m for t, m in metrics.items()}, "tags": tags}


RUN_ID = re.compile(r"(\d{8})-(\d{6})-(.+)-[0-9a-f]{6}")


def entry_from_files(folder: Path, why: str) -> dict[str, Any]:
    """A run's index entry made from what its folder holds (run.json, metrics.json, its trials'),
    for a run whose record cannot be read: never the whole truth (its backend, task and history
    are not in those files), so it is tagged `needs-attention` with why, and its state is what
    the files show (metrics: it finished; none: failed)."""
    trials = sorted((int(p.name[len(TRIAL_PREFIX):]), p) for p in folder.glob(f"{TRIAL_PREFIX}*")
                    if p.is_dir() and p.name[len(TRIAL_PREFIX):].isdigit())
    places = [p for _, p in trials] or [folder]
    info = next((r for r in (read_json(p / RUN_INFO) for p in places) if isinstance(r, dict)), {}) or {}
    metrics = {}
    for trial, place in (trials or [(-1, folder)]):
        found = read_json(place / METRICS)
        if isinstance(found, dict):
            metrics[trial] = found
    named = RUN_ID.fullmatch(folder.name)
    created = (datetime.strptime(named.group(1) + named.group(2), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
               if named else datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc))
    at = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    state = "succeeded" if metrics else "failed"
    text = lambda key, default: info.get(key) if isinstance(info.get(key), str) else default  # noqa: E731
    job = info.get("job") if isinstance(info.get("job"), dict) else {}
    run = {
        "run_id": folder.name, "created": at,
        "job_name": text("job_name", named.group(3) if named else folder.name),
        "job_hash": text("job_hash", "unknown"), "dataset_hash": text("dataset_hash", "unknown"),
        "backend": "unknown", "profile": "unknown", "task_uuid": None, "state": state,
        "error": None if metrics else f"rebuilt by reindex ({why}); its folder holds no metrics",
        "trials": len(trials), "uploaded_bytes": 0, "job_json": json.dumps(job, sort_keys=True),
        "retrieved": 1, "note": None, "info_json": json.dumps({"rebuilt_by_reindex": why}),
    }
    return {"run": run, "states": [{"state": state, "at": at, "detail": "rebuilt by reindex from its folder"}],
            "metrics": metrics, "tags": {"needs-attention": f"record {why}"[:500]}}


def holds_results(folder: Path) -> bool:
    """Does this folder (a run's, its trials' below) hold what a run produced?"""
    return any(next(folder.rglob(name), None) is not None for name in (MODEL, METRICS, CHECKPOINT, RUN_INFO))
