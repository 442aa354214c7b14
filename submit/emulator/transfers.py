"""A task's files: its resources staged from the buckets into each instance's folder (prefix
filtering, strip-prefix, cached by ETag across tasks like Qarnot's cache TTL; more added to running
instances by `update_resources()`), and what the instances write uploaded to the result bucket
(whitelist/blacklist honoured) when each ends, and for snapshots.  `results_count` grows with each
upload, which is what tells the SDK that there is something new to download.

A task holds one `TaskFiles` (`task.files`); nothing here knows of a task's states.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from submit.emulator.fields import safe_relpath
from submit.emulator.instances import Instance
from submit.emulator.storage import Storage
from submit.emulator.wire import TaskBody


class TaskFiles:
    def __init__(self, storage: Storage, body: TaskBody, instances: dict[int, Instance]):
        self.storage = storage
        self.body = body
        self.instances = instances  # the task's own dict: instances read back replace its entries
        self.resource_files: dict[str, tuple[int, int]] = {}  # relpath -> (size, mtime) as staged
        self.results_count = 0
        self.lock = threading.Lock()

    def stage(self, only_new: bool = False) -> int:
        """The resource buckets' files into every instance's folder (with `only_new`, what is new
        or changed since, into the running instances only).  Returns the files added or replaced."""
        staged: list[tuple[PurePosixPath, Path]] = []
        for b in self.body.buckets:
            name = b.get("bucketName")
            prefix = (((b.get("filtering") or {}).get("prefixFiltering") or {}).get("prefix")) or ""
            strip = (((b.get("resourcesTransformation") or {}).get("stripPrefix") or {}).get("prefix")) or ""
            for obj in self.storage.list(name, prefix):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = safe_relpath(key[len(strip):] if strip and key.startswith(strip) else key)
                if rel is None:
                    continue
                staged.append((rel, self.storage.cached(name, key, obj["ETag"], obj.get("Size"))))
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

    def _changed(self, inst: Instance, whitelist: str | None,
                 blacklist: str | None) -> Iterator[tuple[str, Path, tuple[int, int]]]:
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

    def upload(self, inst: Instance, whitelist: str | None, blacklist: str | None,
               bucket: str | None = None, prefix: str = "") -> int:
        """What the instance wrote since its last upload, into `bucket` (the result bucket by
        default) under `prefix`.  Returns the files sent."""
        bucket = bucket or self.body.result_bucket
        if not bucket:
            return 0
        n = 0
        for rel, path, sig in list(self._changed(inst, whitelist, blacklist)):
            try:
                self.storage.put(bucket, prefix + rel, path)
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

    def upload_results(self) -> None:
        """Every instance's results (the task's whitelist and blacklist)."""
        for inst in self.instances.values():
            self.upload(inst, self.body.results_whitelist, self.body.results_blacklist)

    def snapshot(self, config: dict[str, Any]) -> None:
        """The running instances' files, as a snapshot's `config` asks (its filters, bucket, prefix)."""
        for inst in self.instances.values():
            if inst.state == "Running":
                self.upload(inst, config.get("whitelist"), config.get("blacklist"),
                            config.get("bucket"), config.get("bucketPrefix") or "")
