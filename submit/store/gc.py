"""`qtrain results gc`: what the store holds that no run owns, and its removal."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from submit.store.index import TRASH, Store


# ---------------------------------------------------------------------------- garbage
def garbage(store: Store, older_than: float = 3600.0) -> dict[str, list[Path | str]]:
    """What `gc` would remove: folders in runs/ no run owns (and runs/.trash), temporary
    files of retrievals that died (older than `older_than` seconds, so a retrieval going on
    now keeps its own), and half-written runs: submitted more than `older_than` seconds ago
    and never given a task, so nothing can ever come of them."""
    runs_dir = store.root / "runs"
    with store.connect() as db:
        known = {r["run_id"] for r in db.execute("SELECT run_id FROM runs")}
        stale_cut = datetime.fromtimestamp(time.time() - older_than, timezone.utc)
        half = [r["run_id"] for r in db.execute(
            "SELECT run_id FROM runs WHERE task_uuid IS NULL AND state='submitted' AND created < ?",
            (stale_cut.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),))]
    trash = runs_dir / TRASH
    orphans = [p for p in sorted(runs_dir.iterdir()) if p.is_dir() and p.name not in known
               and p != trash]
    orphans += sorted(trash.iterdir()) if trash.is_dir() else []  # removals that died midway
    cutoff = time.time() - older_than
    temps = [p for d in sorted(runs_dir.iterdir()) if d.name in known
             for p in d.rglob(".*") if p.is_file() and p.name.endswith((".tmp", ".part"))
             and p.stat().st_mtime < cutoff]
    return {"orphan_folders": orphans, "temporary_files": temps, "half_written_runs": half}


def collect(store: Store, garbage: dict[str, list[Path | str]]) -> None:
    for path in garbage["orphan_folders"]:
        if Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)
    for path in garbage["temporary_files"]:
        Path(path).unlink(missing_ok=True)
    for run_id in garbage["half_written_runs"]:
        with store.write() as db:  # still half-written (no task) now?
            row = db.execute("SELECT task_uuid FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None or row["task_uuid"]:
                continue
            db.execute("UPDATE runs SET state='failed', error=? WHERE run_id=?",
                       ("submission never completed", run_id))
        store.remove(str(run_id))
