"""A task's files: its resources staged from the buckets into each instance's folder (prefix
filtering, strip-prefix, cached by ETag across tasks like Qarnot's cache TTL; more added to running
instances by `update_resources()`), and what the instances write uploaded to the result bucket
(whitelist/blacklist honoured) when each ends, and periodically or at once when snapshots are
asked.  `resultsCount` grows with each upload, which is what tells the SDK that there is something
new to download.

Kept apart from the task's state machine (`tasks.py`), which mixes it in: it reads the task's
body, instances and manager (storage), and changes nothing of its state but `resultsCount`.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid as uuidlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from submit.emulator.wire import RequestError, safe_relpath, stamp

if TYPE_CHECKING:
    from submit.emulator.tasks import Instance

NOT_RUNNING = "invalid operation on non running task"  # Qarnot's 403 for an ended task


class TaskFiles:
    """Mixed into `tasks.Task`."""

    def update_resources(self) -> int:
        """PATCH /tasks/{uuid} (`task.update_resources()`): what the resource buckets hold now is
        added to the running instances' folders (additive: nothing is deleted).  Returns the files
        added or replaced."""
        with self.lock:
            if self.done:
                raise RequestError(403, f"task {self.uuid} is {self.state}: {NOT_RUNNING}")
        if self.state == "Submitted":
            return 0  # it has not staged anything yet: it will stage what is there when it starts
        return self._materialise(only_new=True)

    def _materialise(self, only_new: bool = False) -> int:
        storage = self.manager.storage
        staged: list[tuple[PurePosixPath, Path]] = []
        for b in self.body.buckets:
            name = b.get("bucketName")
            prefix = (((b.get("filtering") or {}).get("prefixFiltering") or {}).get("prefix")) or ""
            strip = (((b.get("resourcesTransformation") or {}).get("stripPrefix") or {}).get("prefix")) or ""
            for obj in storage.list(name, prefix):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = safe_relpath(key[len(strip):] if strip and key.startswith(strip) else key)
                if rel is None:
                    continue
                staged.append((rel, storage.cached(name, key, obj["ETag"], obj.get("Size"))))
        added = 0
        for inst in self.instances.values():
            if only_new and inst.state != "Running":
                continue
            inst.workdir.mkdir(parents=True, exist_ok=True)
            for rel, src in staged:
                if only_new and self.resource_files.get(str(rel)) == (src.stat().st_size, src.stat().st_mtime_ns):
                    continue  # staged already, as it is
                added += 1
                dest = inst.workdir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    dest.unlink()
                try:
                    os.link(src, dest)  # read-only cache files: an instance can replace, not alter
                except OSError:
                    shutil.copyfile(src, dest)
        for rel, src in staged:
            st = src.stat()
            self.resource_files[str(rel)] = (st.st_size, st.st_mtime_ns)
        return added

    def _changed_files(self, inst: "Instance", whitelist: str | None, blacklist: str | None):
        if not inst.workdir.is_dir():
            return
        for path in sorted(inst.workdir.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(inst.workdir).as_posix()
            st = path.stat()
            sig = (st.st_size, st.st_mtime_ns)
            if self.resource_files.get(rel) == sig or inst.uploaded.get(rel) == sig:
                continue  # an untouched resource, or already uploaded as it is
            if whitelist and not re.search(whitelist, rel):
                continue
            if blacklist and re.search(blacklist, rel):
                continue
            yield rel, path, sig

    def _upload(self, inst: "Instance", whitelist: str | None, blacklist: str | None,
                bucket: str | None = None, prefix: str = "") -> int:
        bucket = bucket or self.body.result_bucket
        if not bucket:
            return 0
        n = 0
        for rel, path, sig in list(self._changed_files(inst, whitelist, blacklist)):
            try:
                self.manager.storage.put(bucket, prefix + rel, path)
            except FileNotFoundError:
                continue  # deleted while we looked: a temporary file
            inst.uploaded[rel] = sig
            if rel not in inst.results:
                inst.results.append(rel)
            n += 1
        if n:
            with self.lock:
                self.results_count += 1
        return n

    def _upload_all(self) -> None:
        for inst in self.instances.values():
            self._upload(inst, self.body.results_whitelist, self.body.results_blacklist)

    def take_snapshot(self, config: dict[str, Any]) -> None:
        for inst in self.instances.values():
            if inst.state == "Running":
                self._upload(inst, config.get("whitelist"), config.get("blacklist"),
                             config.get("bucket"), config.get("bucketPrefix") or "")

    def set_periodic_snapshot(self, config: dict[str, Any]) -> None:
        """Snapshot every `config["interval"]` seconds until the task ends (the newest settings
        apply from the next snapshot on)."""
        with self.lock:
            self.snapshot = config
            if self._snapshot_thread is None and not self.done:
                self._snapshot_thread = threading.Thread(target=self._snapshot_loop, daemon=True,
                                                         name=f"snapshots-{self.uuid[:8]}")
                self._snapshot_thread.start()

    def _snapshot_loop(self) -> None:
        while not self.done:
            interval = max(1, int(self.snapshot.get("interval") or 60))
            for _ in range(interval * 10):
                if self.done:
                    return
                time.sleep(0.1)
            try:
                self.take_snapshot(self.snapshot)
            except Exception as exc:  # noqa: BLE001 - a failed snapshot is logged, not fatal
                self.log(self.ids[0], f"[emulator] snapshot failed: {exc}", "stderr")

    def instant_snapshot(self, config: dict[str, Any]) -> str:
        sid = str(uuidlib.uuid4())
        now = stamp()
        self.snapshots[sid] = {"id": sid, "taskUuid": self.uuid, "triggerDate": now,
                               "lastUpdateDate": now, "snapshotConfig": config, "status": "InProgress"}
        try:
            self.take_snapshot(config)
            self.snapshots[sid]["status"] = "Success"
        except Exception:  # noqa: BLE001
            self.snapshots[sid]["status"] = "Failure"
        self.snapshots[sid]["lastUpdateDate"] = stamp()
        return sid
