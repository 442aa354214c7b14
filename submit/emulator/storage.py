"""The emulator's own S3 client (to its S3 server) and its object cache: how resources reach an
instance's folder and how results leave it.  Nothing of a task's life is decided here."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any


class Storage:
    def __init__(self, s3_url: str, cache_dir: Path):
        import boto3
        import botocore.config

        self.client = boto3.session.Session().client(
            "s3", endpoint_url=s3_url, aws_access_key_id="qtrain-emulator",
            aws_secret_access_key="qtrain-emulator", region_name="us-east-1",
            config=botocore.config.Config(s3={"addressing_style": "path"}))
        self.cache_dir = cache_dir
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
            return True
        except Exception:  # noqa: BLE001 - 404 and friends
            return False

    def list(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
        return out

    def cached(self, bucket: str, key: str, etag: str) -> Path:
        """The object's bytes in the local cache (downloaded once per ETag, like Qarnot's cache)."""
        name = hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()
        path = self.cache_dir / name
        with self._lock:
            if not path.exists():
                tmp = path.with_suffix(".part")
                self.client.download_file(bucket, key, str(tmp))
                tmp.chmod(0o444)
                tmp.replace(path)
        return path

    def put(self, bucket: str, key: str, path: Path) -> None:
        self.client.upload_file(str(path), bucket, key)
