"""Runner benchmark, all measured in one process against a reference run.

(a) The seed notebook's MNIST CNN trained the notebook's way (its training cell as written: a
    DataLoader, batch 8, over torchvision's MNIST dataset with ToTensor, the accuracy and loss
    tracked each step) against the qtrain runner (mnist-cnn catalog job: tensors on the device,
    batch 128) on the same 28x28 images, read from IDX arrays and from a folder of PNG files
    (decoded once, then read back from the pixel cache: runner/stream.py): images per second and
    test accuracy of each, `--pairs` rounds taken in turn (the order alternating), each ratio
    within its round, median and spread.  Also the same network on the same batches with nothing
    around it (a TensorDataset, nothing tracked: the reference before, kept as a second figure).
    Each way runs in a fresh process of its own, as a notebook and a task do: a process's history
    changes what its allocator does (a runner trained after other work in the same process
    faulted fewer pages than a task's fresh runner ever does).
    Goals (issue 25): runner / notebook >= 4.5 steadily; PNG folder / arrays >= 0.8.
(b) Seconds to reach 0.97 test accuracy on penguins and on digits: qtrain against scikit-learn's
    MLPClassifier (seed 003's comparison), same split.

    python bench/training.py [--images 6000] [--pairs 5]  -> prints a table, writes bench/results/training.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from bench.common import digits28  # noqa: E402
from jobs import load_job  # noqa: E402
from runner.run import run_job  # noqa: E402

WAYS = ("notebook", "bare_loop", "arrays", "png_folder")


class NotebookNet(nn.Module):
    """The seed notebook's network, verbatim."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5)
        self.conv2 = nn.Conv2d(32, 32, 5)
        self.conv3 = nn.Conv2d(32, 64, 3)
        self.dense1 = nn.Linear(64, 64)
        self.dense2 = nn.Linear(64, 10)
        self.maxpool1 = nn.MaxPool2d((2, 2), stride=(2, 2))

    def forward(self, x):
        x = self.maxpool1(F.relu(self.conv1(x)))
        x = self.maxpool1(F.relu(self.conv2(x)))
        x = self.maxpool1(F.relu(self.conv3(x)))
        x = x.view(-1, 64)
        return self.dense2(F.relu(self.dense1(x)))


class NotebookMNIST(torch.utils.data.Dataset):
    """What the notebook trains on: `torchvision.datasets.MNIST(..., transform=ToTensor())`.  Each
    item is made as torchvision makes it: the uint8 image as a PIL image, then `ToTensor`'s copy,
    channel-first float in [0, 1] (torchvision does not import beside this torch; its two
    functions are a few lines, reproduced here with Pillow)."""

    def __init__(self, x, y):
        self.data, self.targets = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        pic = Image.fromarray(img.numpy(), mode="L")  # MNIST.__getitem__
        tensor = torch.from_numpy(np.array(pic, np.uint8, copy=True))  # transforms.ToTensor()
        tensor = tensor.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
        return tensor.to(dtype=torch.get_default_dtype()).div(255), target


def notebook_way(x, y, xt, yt, epochs: int, bare: bool = False) -> dict:
    """The notebook's training cell as it is written (its DataLoader over the MNIST dataset, batch 8,
    and the accuracy and loss it tracks every step); `bare`: the same network and batches from a
    TensorDataset of ready tensors, nothing tracked (this benchmark's reference until now)."""
    torch.manual_seed(1)
    if bare:
        train = TensorDataset(torch.from_numpy(x[:, None].astype(np.float32) / 255), torch.from_numpy(y.astype(np.int64)))
    else:
        train = NotebookMNIST(x, y)
    train_loader = DataLoader(train, batch_size=8, shuffle=True)
    model = NotebookNet()
    loss_function = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    running_loss, correct, total = 0.0, 0.0, 0.0
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for i, data in enumerate(train_loader, 0):
            inputs, labels = data
            y_pred = model(inputs)
            loss = loss_function(y_pred, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(labels)
            if bare:
                continue
            _, predicted = torch.max(y_pred.data, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
            running_loss += loss.item()
            if i % 2000 == 1999:
                print(f"Loss: {running_loss / 2000}", file=sys.stderr)
                running_loss = 0.0
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        pred = model(torch.from_numpy(xt[:, None].astype(np.float32) / 255)).argmax(1).numpy()
    return {"images_per_second": seen / seconds, "train_seconds": seconds, "epochs": epochs,
            "test_accuracy": float((pred == yt).mean())}


def runner_way(folder: Path, out: Path, epochs: int, test: Path | None = None) -> dict:
    sets = [f"data.path={folder}", f"train.epochs={epochs}"] + ([f"data.test_path={test}"] if test else [])
    job = load_job("mnist-cnn", sets)
    with contextlib.redirect_stdout(io.StringIO()):
        m = run_job(job, out)
    return {"images_per_second": m["timings"]["samples_per_second"],
            "train_seconds": m["timings"]["train_seconds"], "epochs": epochs,
            "test_accuracy": m["test"]["accuracy"]}


def seconds_to(target: float, job_name: str, out: Path, step: int, limit: int) -> dict:
    """Smallest epoch count (multiple of `step`) whose run reaches `target`; its train time."""
    for epochs in range(step, limit + 1, step):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            m = run_job(load_job(job_name, [f"train.epochs={epochs}"]), out / f"{job_name}-{epochs}")
        if m["test"]["accuracy"] >= target:
            return {"seconds": m["timings"]["train_seconds"], "epochs": epochs,
                    "test_accuracy": m["test"]["accuracy"]}
    return {"seconds": None, "epochs": limit, "test_accuracy": m["test"]["accuracy"]}


def sklearn_to(target: float, x, y, xt, yt, limit: int = 400) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    for iters in (10, 20, 50, 100, 200, limit):
        clf = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=iters, random_state=0)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        seconds = time.perf_counter() - t0
        acc = float(clf.score(xt, yt))
        if acc >= target:
            return {"seconds": seconds, "max_iter": iters, "test_accuracy": acc}
    return {"seconds": None, "max_iter": limit, "test_accuracy": acc}


def split_arrays(job_name: str):
    """The exact train/test arrays the qtrain job uses, for sklearn."""
    from runner.data import load_dataset
    from runner.prepare import prepare

    lj = load_job(job_name)
    with contextlib.redirect_stderr(io.StringIO()):
        p = prepare(load_dataset(lj.job, lj.base_dir), lj.job)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    return flat(p.x["train"]), p.y["train"], flat(p.x["test"]), p.y["test"]


def one_way(way: str, data: Path, images: int) -> dict:
    """`way` of (a) in a fresh process."""
    import subprocess

    proc = subprocess.run([sys.executable, __file__, "--one", way, "--data", str(data), "--images", str(images)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{way} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6000, help="training images for (a)")
    ap.add_argument("--pairs", type=int, default=5, help="rounds of (a)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.json")
    ap.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # one way of (a), in this fresh process: its figures as JSON on the last line
        d = args.data
        if args.one in ("notebook", "bare_loop"):
            row = notebook_way(*digits28(n_train=args.images, n_test=400), epochs=2, bare=args.one == "bare_loop")
        elif args.one == "arrays":
            row = runner_way(d / "mnist", d / "runner", epochs=4)
        else:
            row = runner_way(d / "png-train", d / "png", 4, d / "png-test")
        print(json.dumps(row))
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x, y, xt, yt = digits28(n_train=args.images, n_test=400)
        folder = tmp / "mnist"
        folder.mkdir()
        from runner.data import write_idx

        write_idx(folder / "train-images-idx3-ubyte", x)
        write_idx(folder / "train-labels-idx1-ubyte", y)
        write_idx(folder / "t10k-images-idx3-ubyte", xt)
        write_idx(folder / "t10k-labels-idx1-ubyte", yt)
        from bench.images import write_folder

        write_folder(tmp / "png-train", x, y)
        write_folder(tmp / "png-test", xt, yt)
        rounds = []
        for i in range(-1, args.pairs):  # round -1 warms up
            ways = {way: (lambda way=way: one_way(way, tmp, args.images)) for way in WAYS}
            order = list(ways) if i % 2 == 0 else list(ways)[::-1]
            row = {way: ways[way]() for way in order}
            if i >= 0:
                rounds.append(row)
                print(f"  #{i}: notebook {row['notebook']['images_per_second']:.0f}, bare loop "
                      f"{row['bare_loop']['images_per_second']:.0f}, arrays "
                      f"{row['arrays']['images_per_second']:.0f}, png folder {row['png_folder']['images_per_second']:.0f}"
                      f" img/s", flush=True)

        def spread(values: list[float]) -> dict:
            return {"median": statistics.median(values), "min": min(values), "max": max(values)}

        speedup = [r["arrays"]["images_per_second"] / r["notebook"]["images_per_second"] for r in rounds]
        over_bare = [r["arrays"]["images_per_second"] / r["bare_loop"]["images_per_second"] for r in rounds]
        notebook_cost = [r["bare_loop"]["images_per_second"] / r["notebook"]["images_per_second"] for r in rounds]
        folder_ratio = [r["png_folder"]["images_per_second"] / r["arrays"]["images_per_second"] for r in rounds]
        median_round = sorted(rounds, key=lambda r: r["arrays"]["images_per_second"] / r["notebook"]["images_per_second"])[len(rounds) // 2]
        nb, rn = median_round["notebook"], median_round["arrays"]
        results = {"machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
                               "torch": torch.__version__},
                   "cnn_28x28": {"images": args.images, "pairs": args.pairs, "rounds": rounds,
                                 "notebook_dataloader_batch8": nb, "qtrain_runner": rn,
                                 "speedup_images_per_second": spread(speedup),
                                 "speedup_over_bare_loop": spread(over_bare),
                                 "bare_loop_over_notebook": spread(notebook_cost),
                                 "png_folder_over_arrays": spread(folder_ratio),
                                 "speedup_png_folder_over_notebook": spread(
                                     [r["png_folder"]["images_per_second"] / r["notebook"]["images_per_second"]
                                      for r in rounds]),
                                 "wall_clock_ratio": nb["train_seconds"] / rn["train_seconds"],
                                 "goal": "runner/notebook >= 4.5 in every round; png folder/arrays >= 0.8",
                                 "met": min(speedup) >= 4.5 and min(folder_ratio) >= 0.8}}
        tta = {}
        for job_name, step, limit in (("penguins", 10, 200), ("digits-cnn", 2, 40)):
            q = seconds_to(0.97, job_name, tmp, step, limit)
            s = sklearn_to(0.97, *split_arrays(job_name))
            tta[job_name] = {"qtrain": q, "sklearn_mlp": s}
        results["seconds_to_0.97"] = tta
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    c = results["cnn_28x28"]
    print(f"(a) seed CNN on {args.images} 28x28 images, {torch.get_num_threads()} threads")
    sp, fr = c["speedup_images_per_second"], c["png_folder_over_arrays"]
    print(f"    notebook's cell (batch 8)     : {c['notebook_dataloader_batch8']['images_per_second']:8.0f} img/s"
          f"  test acc {c['notebook_dataloader_batch8']['test_accuracy']:.4f} after 2 epochs (median round)")
    print(f"    qtrain runner (batch 128)     : {c['qtrain_runner']['images_per_second']:8.0f} img/s"
          f"  test acc {c['qtrain_runner']['test_accuracy']:.4f} after 4 epochs")
    bl = c["speedup_over_bare_loop"]
    print(f"    speed-up: median {sp['median']:.2f}x [{sp['min']:.2f}..{sp['max']:.2f}] over {args.pairs} rounds "
          f"(over the bare loop: {bl['median']:.2f}x [{bl['min']:.2f}..{bl['max']:.2f}]); "
          f"PNG folder / arrays: {fr['median']:.3f}x [{fr['min']:.3f}..{fr['max']:.3f}]")
    print("(b) seconds to 0.97 test accuracy")
    for job_name, r in tta.items():
        q, s = r["qtrain"], r["sklearn_mlp"]
        fmt = lambda v: "never" if v is None else f"{v:.2f}s"  # noqa: E731
        print(f"    {job_name:11s} qtrain {fmt(q['seconds'])} ({q['epochs']} epochs, acc {q['test_accuracy']:.3f})"
              f"   sklearn MLPClassifier {fmt(s['seconds'])} (max_iter {s['max_iter']}, acc {s['test_accuracy']:.3f})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
