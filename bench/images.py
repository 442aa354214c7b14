"""Image files as data (issue 25, first part), measured in one invocation: the seed-004 CNN
(catalog `mnist-cnn`) trained on the same MNIST-shaped images read two ways, in turn after a
warm-up round, `--repeats` times each:

- from MNIST IDX arrays (the reference), and
- from an image folder of PNG files (one subfolder per digit; the test set a second folder),
  the same images in the same order.

Figures: training samples/s (goal >= 0.8x the arrays'), the whole run's seconds (the folder pays
for decoding every file first), the load step alone, and the test accuracy (goal: within 0.5
points; PNG is lossless and the order is the same, so it should be identical).

    python bench/images.py [--repeats 3] [--epochs 2]  -> prints, writes bench/results/images.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, digits28  # noqa: E402
from bench.usercode import write_idx  # noqa: E402


def write_folder(folder: Path, x, y) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / str(label) / f"{i:05d}.png")


def main() -> None:
    import numpy as np

    from jobs.load import load_job
    from runner.api import run_job

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        x, y, xt, yt = digits28(n_train=6000, n_test=1000)
        order = np.argsort(y, kind="stable")  # the folder lists class by class: the arrays do too
        x, y = x[order], y[order]
        order = np.argsort(yt, kind="stable")
        xt, yt = xt[order], yt[order]
        (tmp / "idx").mkdir()
        for name, arr in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                          ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)):
            write_idx(tmp / "idx" / name, arr)
        write_folder(tmp / "train", x, y)
        write_folder(tmp / "test", xt, yt)
        png_bytes = sum(p.stat().st_size for p in tmp.glob("t*/*/*.png"))
        print(f"7000 images: IDX arrays, and {png_bytes:,} bytes of PNG files in two folders", flush=True)
        ways = {"arrays": [f"data.path={tmp / 'idx'}"],
                "folder": [f"data.path={tmp / 'train'}", f"data.test_path={tmp / 'test'}"]}
        rows: dict[str, list[dict]] = {k: [] for k in ways}
        catalog = ROOT / "jobs" / "catalog" / "mnist-cnn.yaml"
        for i in range(-1, args.repeats):  # round -1 warms up
            for way, sets in (list(ways.items()) if i % 2 == 0 else list(ways.items())[::-1]):
                loaded = load_job(catalog, overrides=[*sets, f"train.epochs={args.epochs}"])
                metrics = run_job(loaded, tmp / f"{way}-{i}")
                if i < 0:
                    continue
                t = metrics["timings"]
                rows[way].append({"samples_per_second": t["samples_per_second"], "load_seconds": t["load_seconds"],
                                  "total_seconds": t["total_seconds"], "accuracy": metrics["test"]["accuracy"]})
                print(f"  {way:7} #{i}: {t['samples_per_second']:7.0f} samples/s, load {t['load_seconds']:.2f} s, "
                      f"run {t['total_seconds']:.1f} s, test accuracy {metrics['test']['accuracy']:.4f}", flush=True)
    pairs = list(zip(rows["folder"], rows["arrays"]))
    speed = [f["samples_per_second"] / a["samples_per_second"] for f, a in pairs]
    total = [f["total_seconds"] / a["total_seconds"] for f, a in pairs]
    gap = max(abs(f["accuracy"] - a["accuracy"]) for f, a in pairs)
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "epochs": args.epochs, "repeats": args.repeats, "train_images": 6000, "test_images": 1000,
        "png_bytes": png_bytes, "runs": rows,
        "samples_per_second_ratio": {"median": statistics.median(speed), "min": min(speed), "max": max(speed)},
        "total_seconds_ratio": {"median": statistics.median(total), "min": min(total), "max": max(total)},
        "load_seconds": {way: statistics.median(r["load_seconds"] for r in rows[way]) for way in rows},
        "max_accuracy_gap_points": 100 * gap,
        "goal": "samples/s ratio >= 0.8; accuracy within 0.5 points",
        "met": statistics.median(speed) >= 0.8 and 100 * gap <= 0.5,
    }
    out = ROOT / "bench" / "results" / "images.json"
    out.write_text(json.dumps(result, indent=2))
    s, w = result["samples_per_second_ratio"], result["total_seconds_ratio"]
    print(f"folder/arrays samples/s: median x{s['median']:.3f} [{s['min']:.3f}..{s['max']:.3f}]; whole run "
          f"x{w['median']:.2f} [{w['min']:.2f}..{w['max']:.2f}] (load {result['load_seconds']['folder']:.2f} s vs "
          f"{result['load_seconds']['arrays']:.2f} s); accuracy gap {result['max_accuracy_gap_points']:.2f} points "
          f" -> {out}")


if __name__ == "__main__":
    main()
