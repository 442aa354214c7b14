"""`qtrain results gc`: what the store holds that is provably debris, and its removal.

Debris is: a folder in runs/ that no run owns and that holds nothing a run produces (a model,
metrics, a checkpoint, run.json: such a folder is kept, whatever the index says, and named, since
`qtrain results reindex` indexes it); what a `results rm` that died left in runs/.trash; temporary
files of retrievals and reindexes that died; and runs recorded but never given a task long ago.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from submit.store.index import TRASH, Store
from submit.store.mirror import holds_results


def garbage(store: Store, older_than: float = 3600.0) -> dict[str, list[Path | str]]:
    """What `gc` would remove, and what it keeps although no run owns it (`kept_with_results`).
    Temporary files and unsubmitted runs younger than `older_than` seconds are left alone: the
    work they belong to may be going on now."""
    runs_dir = store.root / "runs"
    with store.connect() as db:
        known = {r["run_id"] for r in db.execute("SELECT run_id FROM runs")}
        stale_cut = datetime.fromtimestamp(time.time() - older_than, timezone.utc)
        half = [r["run_id"] for r in db.execute(
            "SELECT run_id FROM runs WHERE task_uuid IS NULL AND state='submitted' AND created < ?",
            (stale_cut.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),))]
    trash = runs_dir / TRASH
    unowned = [p for p in sorted(runs_dir.iterdir())  # (.trash below; .locks holds the runs' locks)
               if p.is_dir() and p.name not in known and not p.name.startswith(".")]
    kept = [p for p in unowned if holds_results(p)]
    orphans = [p for p in unowned if p not in kept]
    orphans += sorted(trash.iterdir()) if trash.is_dir() else []  # removals that died midway
    cutoff = time.time() - older_than
    temps = [p for d in sorted(runs_dir.iterdir()) if d.name in known
             for p in d.rglob(".*") if p.is_file() and p.name.endswith((".tmp", ".part"))
             and p.stat().st_mtime < cutoff]
    temps += [p for p in sorted(store.root.glob(".index.sqlite.*")) if p.stat().st_mtime < cutoff]
    half = [run_id for run_id in half if not holds_results(store.artifacts_dir(run_id))]
    return {"orphan_folders": orphans, "temporary_files": temps, "half_written_runs": half,
            "kept_with_results": kept}


def collect(store: Store, garbage: dict[str, list[Path | str]]) -> None:
    for path in garbage["orphan_folders"]:
        if Path(path).is_dir() and (Path(path).parent.name == TRASH or not holds_results(Path(path))):
            shutil.rmtree(path, ignore_errors=True)  # (looked at again: nothing written since)
        elif not Path(path).is_dir():
            Path(path).unlink(missing_ok=True)
    for path in garbage["temporary_files"]:
        Path(path).unlink(missing_ok=True)
    for run_id in garbage["half_written_runs"]:
        with store.write() as db:  # still half-written (no task) now?
            row = db.execute("SELECT task_uuid FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None or row["task_uuid"] or holds_results(store.artifacts_dir(str(run_id))):
                continue
            db.execute("UPDATE runs SET state='failed', error=? WHERE run_id=?",
                       ("submission never completed", run_id))
        store.remove(str(run_id))
