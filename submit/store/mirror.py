"""Each run's own copy of its index entry (`.run-record.json` in its folder), written inside the
transaction that changed the entry, so that a lost or damaged index can be rebuilt from the run
folders (`submit.store.reindex`)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from jobs.results import atomic_write

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
