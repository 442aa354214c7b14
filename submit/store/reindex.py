"""`qtrain results reindex`: a new index built from the run folders' own records."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from datetime import datetime, timezone
from typing import Any

from jobs.results import read_json
from submit.store.index import Store
from submit.store.mirror import RECORD, RECORD_FORMAT
from submit.store.schema import SCHEMA, migrate


def reindex(store: Store) -> dict[str, Any]:
    """A new index.sqlite from the run folders' records (the old one, if any, kept beside it
    as index.sqlite.damaged-<time>).  Returns what was found."""
    store.ensure_writable()
    records, skipped = [], []
    for folder in sorted((store.root / "runs").iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        data = read_json(folder / RECORD)
        if not data or data.get("format") != RECORD_FORMAT or data.get("run", {}).get("run_id") != folder.name:
            skipped.append(folder.name)
            continue
        records.append(data)
    fresh = store.root / f".index.sqlite.{secrets.token_hex(3)}"
    db = sqlite3.connect(fresh, isolation_level=None)
    try:
        db.executescript(SCHEMA)
        migrate(db)
        db.execute("BEGIN")
        for data in records:
            run = data["run"]
            cols = list(run)
            db.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                       [run[c] for c in cols])
            db.executemany("INSERT INTO states VALUES (?,?,?,?)",
                           [(run["run_id"], h["state"], h["at"], h.get("detail")) for h in data["states"]])
            db.executemany("INSERT INTO metrics VALUES (?,?,?)",
                           [(run["run_id"], int(t), json.dumps(m)) for t, m in data["metrics"].items()])
            db.executemany("INSERT INTO tags VALUES (?,?,?)",
                           [(run["run_id"], k, v) for k, v in data["tags"].items()])
        db.execute("COMMIT")
    finally:
        db.close()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    kept = None
    for suffix in ("", "-wal", "-shm"):
        old = store.root / f"index.sqlite{suffix}"
        if old.exists():
            if suffix == "":
                kept = store.root / f"index.sqlite.damaged-{stamp}"
                os.replace(old, kept)
            else:
                old.unlink()
    os.replace(fresh, store.db_path)
    store.open_index()
    return {"runs": len(records), "skipped": skipped, "old_index": str(kept) if kept else None}
