"""Memory that does not grow with the number of images (issue 25, part 2), measured in one
invocation: `qtrain train` of a CNN on an image folder of `--small` PNG files and on one of
`--large` files of the same size (32x32 RGB), in turn, `--repeats` times each, and, for reference,
the large folder's images as a `.npy` array (which is held in memory whole).  Both folders train
for the same number of steps (the small one for large/small times the epochs): the allocator and
oneDNN's caches grow with the steps taken, to a plateau of about 100 MB, whatever the data.

Each run is its own process; its peak memory is the peak, sampled every 20 ms, of the proportional
set size (PSS: shared pages split between the processes that map them) summed over the process
and its DataLoader workers.

    peak PSS (large folder) / peak PSS (small folder)     goal <= 1.2

    python bench/image_memory.py [--small 2000] [--large 20000] [--repeats 3]
        -> prints, writes bench/results/image_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT  # noqa: E402

SIDE = 32


def write_folder(folder: Path, n: int, seed: int = 0) -> None:
    """`n` RGB PNG files of SIDE x SIDE in 4 class folders: a bright square whose place is the class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % 4
        pixels = rng.integers(0, 90, (SIDE, SIDE, 3), dtype=np.uint8)
        y, x = divmod(c, 2)
        half = SIDE // 2
        pixels[y * half + 2:(y + 1) * half - 2, x * half + 2:(x + 1) * half - 2] += 120
        path = folder / f"c{c}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(path, compress_level=1)


def pss(pid: int) -> int:
    """PSS in bytes of `pid` and every process below it (0 for one gone meanwhile)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def peak_of(command: list[str]) -> tuple[int, float]:
    """(peak PSS of the command's process tree, seconds it ran)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, pss(proc.pid))
        time.sleep(0.02)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    return peak, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "image_memory.json")
    args = parser.parse_args()
    import numpy as np

    qtrain = str(Path(sys.executable).with_name("qtrain"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        write_folder(tmp / "large", args.large)
        (tmp / "small").mkdir()
        for c in sorted((tmp / "large").iterdir()):  # the small folder: the first files of each class
            (tmp / "small" / c.name).mkdir()
            for f in sorted(c.iterdir())[:args.small // 4]:
                os.link(f, tmp / "small" / c.name / f.name)
        from PIL import Image

        files = sorted((tmp / "large").rglob("*.png"))
        np.save(tmp / "x.npy", np.stack([np.asarray(Image.open(f)).transpose(2, 0, 1) for f in files]))
        np.save(tmp / "y.npy", np.array([int(f.parent.name[1:]) for f in files]))
        print(f"{args.large:,} and {args.small:,} PNG files of {SIDE}x{SIDE} RGB, and the large set as .npy "
              f"({(tmp / 'x.npy').stat().st_size / 1e6:.0f} MB), made in {time.perf_counter() - t0:.0f} s", flush=True)
        job = tmp / "job.yaml"
        job.write_text("name: memory\ntask: classification\nmodel: {kind: cnn}\n"
                       "train: {epochs: 1, batch_size: 128}\ndata: {path: large}\n")
        same_steps = f"train.epochs={max(1, args.large // args.small)}"
        ways = {"small": ["--set", f"data.path={tmp / 'small'}", "--set", same_steps],
                "large": ["--set", f"data.path={tmp / 'large'}"],
                "large_npy": ["--set", f"data.path={tmp / 'x.npy'}", "--set", f"data.labels={tmp / 'y.npy'}"]}
        rows: dict[str, list[dict]] = {k: [] for k in ways}
        for i in range(args.repeats):
            for way, sets in (list(ways.items()) if i % 2 == 0 else list(ways.items())[::-1]):
                peak, seconds = peak_of([qtrain, "train", str(job), "--out", str(tmp / f"out-{way}-{i}"), *sets])
                rows[way].append({"peak_pss_bytes": peak, "seconds": seconds})
                print(f"  {way:9} #{i}: peak {peak / 2**20:7.1f} MiB, {seconds:.1f} s", flush=True)
    ratio = [b["peak_pss_bytes"] / a["peak_pss_bytes"] for a, b in zip(rows["small"], rows["large"])]
    npy = [b["peak_pss_bytes"] / a["peak_pss_bytes"] for a, b in zip(rows["small"], rows["large_npy"])]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "small_images": args.small, "large_images": args.large, "image": f"{SIDE}x{SIDE} RGB PNG",
        "repeats": args.repeats, "runs": rows,
        "peak_ratio_large_over_small": {"median": statistics.median(ratio), "min": min(ratio), "max": max(ratio)},
        "peak_ratio_large_npy_over_small_folder": {"median": statistics.median(npy), "min": min(npy), "max": max(npy)},
        "goal": "peak ratio large/small folder <= 1.2", "met": statistics.median(ratio) <= 1.2,
    }
    args.out.write_text(json.dumps(result, indent=2))
    r, n = result["peak_ratio_large_over_small"], result["peak_ratio_large_npy_over_small_folder"]
    print(f"peak memory, {args.large:,} files / {args.small:,} files: median x{r['median']:.3f} "
          f"[{r['min']:.3f}..{r['max']:.3f}]; the {args.large:,} as an in-memory array: x{n['median']:.2f}  -> {args.out}")


if __name__ == "__main__":
    main()
