"""The emulator's own S3 client (to its S3 server) and its object cache: how resources reach an
instance's folder and how results leave it.  Nothing of a task's life is decided here.

A transfer that finds the storage gone (its server died, and the daemon restarts it: daemon.py
`watch_storage`) tries again for up to RETRY_SECONDS before it fails."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionError as StorageGone
from botocore.exceptions import HTTPClientError

from submit.emulator.s3server import s3_client

T = TypeVar("T")
RETRY_SECONDS = 60.0  # a restart of the storage takes ~1 s; its replay of a big volume longer


def retried(call: Callable[[], T], seconds: float = RETRY_SECONDS) -> T:
    """`call()`, again every half second while the storage does not answer, for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except (StorageGone, HTTPClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)

# below boto3's multipart threshold one request does: a plain PUT or GET costs ~4 ms for a small
# file where its transfer manager (threads, futures) costs ~25 ms in the daemon
SMALL = 8 * 1024 * 1024


class Storage:
    def __init__(self, s3_url: str, cache_dir: Path, access_key: str, secret: str):
        self.client = s3_client(s3_url, access_key, secret)  # the account's identity, as Qarnot's nodes
        self.quick = s3_client(s3_url, access_key, secret, attempts=1, timeout=2)  # for what /info shows
        self.cache_dir = cache_dir
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def exists(self, bucket: str) -> bool:
        """Does the storage have `bucket` (asked again for a while when it does not answer)?"""
        try:
            retried(lambda: self.client.head_bucket(Bucket=bucket), seconds=10)
            return True
        except ClientError:  # 404, 403: the storage says it has none
            return False

    def count(self) -> int:
        """How many buckets the account has (-1 when the storage does not answer)."""
        try:
            return len(self.quick.list_buckets().get("Buckets") or [])
        except Exception:  # noqa: BLE001
            return -1

    def list(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        def listing() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                out.extend(page.get("Contents", []))
            return out

        return retried(listing)

    def cached(self, bucket: str, key: str, etag: str, size: int | None = None) -> Path:
        """The object's bytes in the local cache (downloaded once per ETag, like Qarnot's cache)."""
        name = hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()
        path = self.cache_dir / name
        with self._lock:
            if not path.exists():
                tmp = path.with_suffix(".part")

                def download() -> None:
                    if size is not None and size < SMALL:
                        body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
                        with open(tmp, "wb") as fh:
                            shutil.copyfileobj(body, fh, 1 << 20)
                    else:
                        self.client.download_file(bucket, key, str(tmp))

                retried(download)
                tmp.chmod(0o444)
                tmp.replace(path)
        return path

    def put(self, bucket: str, key: str, path: Path) -> None:
        def upload() -> None:
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < SMALL:
                    self.client.put_object(Bucket=bucket, Key=key, Body=fh)
                else:
                    self.client.upload_fileobj(fh, bucket, key)

        retried(upload)
