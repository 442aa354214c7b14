"""`qtrain results reindex`: a new index built from the run folders, which never loses a run.

Each run folder gives its run, from (in this order of trust) its own record (`.run-record.json`,
checked field by field), the old index's row when that index can still be read (the record is
then written again), or what the folder holds (run.json, metrics: `mirror.entry_from_files`,
tagged `needs-attention` and listed).  A run the old index holds without a folder is kept too, so
the new index holds at least every run the old one did before it replaces it.  The old index is
kept as `index.sqlite.bak` (one backup, the latest).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from jobs.errors import QtrainError
from submit.store.index import Store
from submit.store.mirror import RECORD, entry_from_files, parse_record
from submit.store.schema import RUN_COLUMNS, SCHEMA, migrate

BACKUP = "index.sqlite.bak"
RECORD_LIMIT = 16 << 20  # bytes: a record is a few kB; anything past this is not one


def reindex(store: Store) -> dict[str, Any]:
    """Rebuild index.sqlite from the run folders; returns what it found."""
    store.ensure_writable()
    old = _old_entries(store.db_path)
    entries: dict[str, dict[str, Any]] = {}
    repaired: list[str] = []
    attention: dict[str, str] = {}
    for folder in sorted((store.root / "runs").iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            entries[folder.name] = parse_record(_read_record(folder / RECORD), folder.name)
            continue
        except FileNotFoundError:
            why = "is missing"
        except (OSError, ValueError) as exc:  # (json's errors are ValueErrors)
            why = f"cannot be read: {exc}"
        if old is not None and folder.name in old:
            entries[folder.name] = old[folder.name]
            repaired.append(folder.name)
        else:
            entries[folder.name] = entry_from_files(folder, why)
            attention[folder.name] = why
    for run_id, entry in (old or {}).items():
        entries.setdefault(run_id, entry)  # in the index and without a folder (yet): kept
    backup = _replace(store, entries, old)
    store.open_index()
    if repaired or attention:
        with store.write() as db:  # their records, whole again: the next reindex reads them
            for run_id in repaired + list(attention):
                store._mirror(db, run_id)
    return {"runs": len(entries), "repaired": repaired, "needs_attention": sorted(attention),
            "reasons": attention, "old_index": "healthy" if old is not None else "unreadable or absent",
            "backup": str(backup) if backup else None}


def _read_record(path: Path) -> Any:
    if path.stat().st_size > RECORD_LIMIT:
        raise ValueError(f"{path.stat().st_size} bytes, more than a record can be")
    return json.loads(path.read_text(encoding="utf-8"))


def _old_entries(db_path: Path) -> dict[str, dict[str, Any]] | None:
    """Every run the current index holds, or None when there is none or it cannot be read."""
    if not db_path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{db_path.absolute().as_uri()}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            found = {}
            for row in db.execute("SELECT * FROM runs"):
                have = row.keys()
                run = {c: row[c] if c in have else None for c in RUN_COLUMNS}
                run.update({"retrieved": run["retrieved"] or 0, "info_json": run["info_json"] or "{}"})
                found[run["run_id"]] = {"run": run, "states": [], "metrics": {}, "tags": {}}
            for row in db.execute("SELECT run_id, state, at, detail FROM states ORDER BY rowid"):
                if row["run_id"] in found:
                    found[row["run_id"]]["states"].append({"state": row["state"], "at": row["at"],
                                                           "detail": row["detail"]})
            for row in db.execute("SELECT run_id, trial, metrics FROM metrics"):
                if row["run_id"] in found:
                    found[row["run_id"]]["metrics"][row["trial"]] = json.loads(row["metrics"])
            for row in db.execute("SELECT run_id, key, value FROM tags"):
                if row["run_id"] in found:
                    found[row["run_id"]]["tags"][row["key"]] = row["value"]
            return found
        finally:
            db.close()
    except (sqlite3.DatabaseError, ValueError):
        return None


def _replace(store: Store, entries: dict[str, dict[str, Any]], old: dict[str, Any] | None) -> Path | None:
    """The new index written beside the old one, checked, then put in its place; the old one is
    the backup.  Nothing is left behind when this fails part-way."""
    fresh = store.root / f".index.sqlite.{secrets.token_hex(3)}"
    columns = list(RUN_COLUMNS)  # the index's own names, never the record's
    try:
        db = sqlite3.connect(fresh, isolation_level=None)
        try:
            db.executescript(SCHEMA)
            migrate(db)
            db.execute("BEGIN")
            for entry in entries.values():
                run = entry["run"]
                db.execute(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                           [run[c] for c in columns])
                db.executemany("INSERT INTO states VALUES (?,?,?,?)",
                               [(run["run_id"], h["state"], h["at"], h.get("detail")) for h in entry["states"]])
                db.executemany("INSERT INTO metrics VALUES (?,?,?)",
                               [(run["run_id"], int(t), json.dumps(m)) for t, m in entry["metrics"].items()])
                db.executemany("INSERT INTO tags VALUES (?,?,?)",
                               [(run["run_id"], k, v) for k, v in entry["tags"].items()])
            db.execute("COMMIT")
            held = {r[0] for r in db.execute("SELECT run_id FROM runs")}
        finally:
            db.close()
        lost = sorted(set(old or {}) - held)
        if lost:
            raise QtrainError(f"the rebuilt index would lack {len(lost)} run(s) the current one holds "
                              f"({', '.join(lost[:3])}): the current index is kept", hint="please report it")
        backup = None
        if store.db_path.exists():
            backup = store.root / BACKUP
            os.replace(store.db_path, backup)
        for suffix in ("-wal", "-shm"):
            (store.root / f"index.sqlite{suffix}").unlink(missing_ok=True)
        os.replace(fresh, store.db_path)
        return backup
    finally:
        fresh.unlink(missing_ok=True)
