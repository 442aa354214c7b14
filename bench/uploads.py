"""Uploads that send only what changed (issue 25, part 3), measured in one invocation against a
local emulator of its own (its S3 front over HTTP, as the SDK reaches Qarnot's):

- a generated image folder (`--images` PNG files of noise, about 10 KB each: 20,000 make about
  200 MB) uploaded as qtrain packs it (`submit.run.package` + the backend's upload: shards of small
  files, several at a time), against the reference, the folder sent file by file with boto3's
  `upload_file` (one object each, one after another, as the Qarnot SDK's `add_directory` does);
  each into an empty bucket, `--pairs` times in rotation: objects and seconds, the ratio's median
  and spread;
- then, in qtrain's bucket: one file changed (bytes sent, goal <= one shard), and the folder sent
  again unchanged (data bytes sent, goal 0).

    python bench/uploads.py [--images 20000] [--pairs 3]  -> prints, writes bench/results/uploads.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT  # noqa: E402
from submit.emulator import daemon  # noqa: E402


def write_folder(folder: Path, n: int) -> int:
    """`n` PNG files of RGB noise (56x56: about 9.6 KB each) in 10 class folders; their bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    total = 0
    for i in range(n):
        path = folder / f"class{i % 10}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8), "RGB").save(path, compress_level=1)
        total += path.stat().st_size
    return total


def data_objects(s3, bucket: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="datasets/"):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "uploads.json")
    args = parser.parse_args()
    from jobs import shards
    from jobs.files import _sha256
    from jobs.load import load_job
    from submit.backends import get_backend
    from submit.emulator.fields import EMAIL
    from submit.emulator.s3server import s3_client
    from submit.run.package import build_package

    with tempfile.TemporaryDirectory() as tmp_name, daemon.isolated(Path(tmp_name) / "home", "process") as endpoint:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        folder_bytes = write_folder(tmp / "images", args.images)
        print(f"{args.images:,} PNG files, {folder_bytes / 1e6:.0f} MB, written in {time.perf_counter() - t0:.0f} s",
              flush=True)
        (tmp / "job.yaml").write_text("name: uploads\ntask: classification\ndata: {path: images, image_size: 56}\n"
                                      "model: {kind: cnn}\n")
        files = sorted(p for p in (tmp / "images").rglob("*.png"))
        s3 = s3_client(endpoint.s3_url, EMAIL, endpoint.token, attempts=3, timeout=60)
        backend = get_backend("local")

        def qtrain_round(bucket: str) -> dict:
            os.environ["QTRAIN_DATA_BUCKET"] = bucket
            _sha256.cache_clear()  # each `qtrain run` is a new process: it hashes the files again
            t0 = time.perf_counter()
            package = build_package(load_job(tmp / "job.yaml"))
            objects = package.objects
            t1 = time.perf_counter()
            before = data_objects(s3, bucket) if s3_bucket_exists(s3, bucket) else {}
            sent = backend.upload(package)
            t2 = time.perf_counter()
            after = data_objects(s3, bucket)
            new = {k: v for k, v in after.items() if k not in before}
            return {"objects": len(objects), "shards": sum(1 for o in objects if o.shard),
                    "largest_shard_bytes": max(o.payload for o in objects), "hash_seconds": t1 - t0,
                    "upload_seconds": t2 - t1, "sent_bytes": sent, "new_objects": len(new),
                    "new_object_bytes": sum(new.values()), "dataset_hash": package.dataset_hash}

        def per_file_round(bucket: str) -> dict:
            s3.create_bucket(Bucket=bucket)
            t0 = time.perf_counter()
            for path in files:
                s3.upload_file(str(path), bucket, f"datasets/{path.relative_to(tmp).as_posix()}")
            return {"objects": len(files), "upload_seconds": time.perf_counter() - t0}

        rounds = []
        for i in range(args.pairs):
            order = ("qtrain", "per_file") if i % 2 == 0 else ("per_file", "qtrain")
            row = {}
            for way in order:
                row[way] = qtrain_round(f"bench-q{i}") if way == "qtrain" else per_file_round(f"bench-f{i}")
            rounds.append(row)
            print(f"  #{i}: qtrain {row['qtrain']['objects']} objects in {row['qtrain']['upload_seconds']:.1f} s "
                  f"(+ hashing {row['qtrain']['hash_seconds']:.1f} s); per file {row['per_file']['objects']:,} "
                  f"objects in {row['per_file']['upload_seconds']:.1f} s", flush=True)
        # in the first qtrain bucket: one file changed, then nothing changed
        victim = files[len(files) // 2]
        victim.write_bytes(victim.read_bytes() + b"\0")
        changed = qtrain_round("bench-q0")
        unchanged = qtrain_round("bench-q0")
    ratio = [r["qtrain"]["upload_seconds"] / r["per_file"]["upload_seconds"] for r in rounds]
    with_hash = [(r["qtrain"]["upload_seconds"] + r["qtrain"]["hash_seconds"]) / r["per_file"]["upload_seconds"]
                 for r in rounds]
    first = rounds[0]["qtrain"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "images": args.images, "folder_bytes": folder_bytes, "pairs": args.pairs,
        "shard_target_bytes": shards.SHARD_BYTES, "rounds": rounds,
        "objects": {"qtrain": first["objects"], "per_file": len(files)},
        "seconds_ratio_qtrain_over_per_file": {"median": statistics.median(ratio), "min": min(ratio),
                                               "max": max(ratio)},
        "seconds_ratio_with_hashing": {"median": statistics.median(with_hash), "min": min(with_hash),
                                       "max": max(with_hash)},
        "one_file_changed": {"new_objects": changed["new_objects"], "sent_bytes": changed["new_object_bytes"],
                             "largest_shard_bytes": first["largest_shard_bytes"]},
        "unchanged": {"new_objects": unchanged["new_objects"], "sent_data_bytes": unchanged["new_object_bytes"],
                      "sent_bytes": unchanged["sent_bytes"]},
        "goal": "one changed file sends at most one shard; unchanged sends 0 bytes",
        "met": changed["new_objects"] == 1 and changed["new_object_bytes"] <= 1.1 * first["largest_shard_bytes"]
        + (1 << 20) and unchanged["sent_bytes"] == 0,
    }
    args.out.write_text(json.dumps(result, indent=2))
    r = result["seconds_ratio_qtrain_over_per_file"]
    print(f"objects: {first['objects']} vs {len(files):,}; seconds qtrain/per-file: median x{r['median']:.3f} "
          f"[{r['min']:.3f}..{r['max']:.3f}] (with hashing x{result['seconds_ratio_with_hashing']['median']:.3f}); "
          f"one file changed: {changed['new_objects']} object, {changed['new_object_bytes']:,} bytes; unchanged: "
          f"{unchanged['sent_bytes']} bytes  -> {args.out}")


def s3_bucket_exists(s3, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except Exception:  # noqa: BLE001 - absent (404) or not ours: nothing to list
        return False


if __name__ == "__main__":
    main()
