"""Small generated files with the seeds' schemas, for the datasets that cannot be shipped.

Each generator writes a file (or folder) in the exact layout the real dataset has, with data that
carries real, learnable structure, so a catalog job runs end to end and its metrics mean something:
- `mnist_idx` / `mnist_pkl`: sklearn's bundled digits upscaled to 28x28, shifted a little (real
  handwriting, MNIST layout: IDX files, or mnist.pkl.gz's (train, valid, test)).
- `weather_light`: weather_prediction_dataset_light.csv columns, seasonal weather with persistence.
- `weather_aus`: Kaggle weatherAUS.csv columns, with gaps and a 22% rainy minority.
- `dollar_street`: {train,test}_{images,labels}.npy, 64x64x3 uint8, 10 classes.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from runner.data import write_idx


def _digits28(seed: int = 0, n_train: int = 3000, n_test: int = 400):
    import torch
    from sklearn.datasets import load_digits
    from torch.nn import functional as F

    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.images))
    test_idx, train_idx = order[:n_test], order[n_test:]
    big = F.interpolate(torch.from_numpy(d.images[:, None].astype(np.float32)), size=(20, 20),
                        mode="bilinear", align_corners=False)[:, 0].numpy() / 16.0

    def place(idx: np.ndarray, jitter: bool) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(idx), 28, 28), dtype=np.float32)
        for k, i in enumerate(idx):
            dy, dx = (rng.integers(0, 9, size=2) if jitter else (4, 4))
            out[k, dy: dy + 20, dx: dx + 20] = big[i]
        return (np.clip(out, 0, 1) * 255).astype(np.uint8), d.target[idx].astype(np.uint8)

    reps = int(np.ceil(n_train / len(train_idx)))
    train = np.tile(train_idx, reps)[:n_train]
    x_train, y_train = place(train, jitter=True)
    x_test, y_test = place(test_idx, jitter=False)
    return x_train, y_train, x_test, y_test


def small_table(path: Path, rows: int = 400, seed: int = 0) -> Path:
    """A separable classification table (a, b, c -> label yes/no): the tests' smallest real job."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["label"] = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    frame.to_csv(path, index=False)
    return path


# the job that trains on `small_table`
SMALL_JOB = {"name": "table", "task": "classification", "data": {"path": "table.csv", "target": "label"},
             "model": {"hidden": [16]}, "train": {"epochs": 3}}


def mnist_idx(folder: Path, n_train: int = 3000, n_test: int = 400, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, y, xt, yt = _digits28(n_train=n_train, n_test=n_test)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", x)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", y)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", xt)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", yt)
    return folder


def mnist_pkl(path: Path, n_train: int = 3000, n_test: int = 400) -> Path:
    x, y, xt, yt = _digits28(n_train=n_train, n_test=n_test)
    flat = x.reshape(len(x), -1).astype(np.float32) / 255
    k = len(flat) * 5 // 6
    parts = ((flat[:k], y[:k].astype(np.int64)), (flat[k:], y[k:].astype(np.int64)),
             (xt.reshape(len(xt), -1).astype(np.float32) / 255, yt.astype(np.int64)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        pickle.dump(parts, fh)
    return path


WEATHER_PLACES = ["BASEL", "DE_BILT", "DUSSELDORF", "HEATHROW", "MAASTRICHT"]


def weather_light(path: Path, days: int = 3654, seed: int = 0) -> Path:
    """Daily weather for 5 places; tomorrow's BASEL_sunshine follows today's weather."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    season = np.sin(2 * np.pi * (t - 80) / 365.25)
    front = np.zeros(days)  # a slowly moving weather system shared by all places
    for i in range(1, days):
        front[i] = 0.75 * front[i - 1] + rng.normal(0, 1)
    dates = pd.date_range("2000-01-01", periods=days, freq="D")
    cols: dict[str, np.ndarray] = {"DATE": dates.strftime("%Y%m%d").astype(int).to_numpy(),
                                   "MONTH": dates.month.to_numpy()}
    for k, place in enumerate(WEATHER_PLACES):
        lag = np.roll(front, k)  # systems reach places one day apart (west -> east)
        cloud = np.clip(4 + 1.6 * lag - season + rng.normal(0, 0.8, days), 0, 8).round()
        sunshine = np.clip(5 + 3.5 * season - 1.1 * lag + rng.normal(0, 1.2, days), 0, 15).round(1)
        cols.update({
            f"{place}_cloud_cover": cloud,
            f"{place}_humidity": np.clip(0.75 + 0.05 * lag + rng.normal(0, 0.04, days), 0.3, 1).round(2),
            f"{place}_pressure": (1.015 - 0.006 * lag + rng.normal(0, 0.002, days)).round(4),
            f"{place}_global_radiation": np.clip(1.3 + season + 0.1 * sunshine
                                                 + rng.normal(0, 0.1, days), 0, 4).round(2),
            f"{place}_precipitation": np.clip(0.6 * lag + rng.normal(0, 0.8, days), 0, None).round(1),
            f"{place}_sunshine": sunshine,
            f"{place}_temp_mean": (10 + 9 * season + rng.normal(0, 2, days)).round(1),
        })
    # tomorrow's Basel weather is today's front one step on: persistence helps, the west helps more
    cols["BASEL_sunshine"][1:] = np.clip(
        5 + 3.5 * season[1:] - 1.1 * (0.75 * front[:-1]) + rng.normal(0, 1.2, days - 1), 0, 15).round(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(cols).to_csv(path, index=False)
    return path


AUS_DIRS = ["N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW",
            "NW", "NNW"]


def weather_aus(path: Path, rows: int = 4000, seed: int = 0) -> Path:
    """weatherAUS.csv's 23 columns; RainTomorrow ~22% Yes, driven by humidity, pressure, cloud."""
    rng = np.random.default_rng(seed)
    locations = ["Albury", "Sydney", "Melbourne", "Brisbane", "Perth", "Darwin", "Hobart", "Cairns"]
    wet = rng.normal(0, 1, rows)
    loc = rng.choice(locations, rows)
    loc_bias = {l: b for l, b in zip(locations, rng.normal(0, 0.5, len(locations)))}
    humidity3 = np.clip(50 + 15 * wet + rng.normal(0, 8, rows), 0, 100).round()
    pressure3 = (1015 - 4 * wet + rng.normal(0, 3, rows)).round(1)
    cloud3 = np.clip(4 + 2 * wet + rng.normal(0, 1.5, rows), 0, 8).round()
    rainfall = np.clip(np.exp(wet + rng.normal(0, 1, rows)) - 1.5, 0, None).round(1)
    score = 1.1 * wet + np.vectorize(loc_bias.get)(loc) + rng.normal(0, 0.7, rows)
    rain_tomorrow = np.where(score > np.quantile(score, 0.78), "Yes", "No").astype(object)
    frame = pd.DataFrame({
        "Date": pd.date_range("2008-12-01", periods=rows, freq="D").strftime("%Y-%m-%d"),
        "Location": loc,
        "MinTemp": (12 + rng.normal(0, 6, rows)).round(1),
        "MaxTemp": (23 - 2 * wet + rng.normal(0, 6, rows)).round(1),
        "Rainfall": rainfall,
        "Evaporation": np.clip(5 - wet + rng.normal(0, 2, rows), 0, None).round(1),
        "Sunshine": np.clip(7.5 - 2.5 * wet + rng.normal(0, 2, rows), 0, 14).round(1),
        "WindGustDir": rng.choice(AUS_DIRS, rows),
        "WindGustSpeed": np.clip(40 + 6 * wet + rng.normal(0, 12, rows), 6, None).round(),
        "WindDir9am": rng.choice(AUS_DIRS, rows),
        "WindDir3pm": rng.choice(AUS_DIRS, rows),
        "WindSpeed9am": np.clip(14 + rng.normal(0, 8, rows), 0, None).round(),
        "WindSpeed3pm": np.clip(18 + rng.normal(0, 8, rows), 0, None).round(),
        "Humidity9am": np.clip(69 + 10 * wet + rng.normal(0, 12, rows), 0, 100).round(),
        "Humidity3pm": humidity3,
        "Pressure9am": (pressure3 + 2.5 + rng.normal(0, 1, rows)).round(1),
        "Pressure3pm": pressure3,
        "Cloud9am": np.clip(4.4 + 1.5 * wet + rng.normal(0, 2, rows), 0, 8).round(),
        "Cloud3pm": cloud3,
        "Temp9am": (17 + rng.normal(0, 6, rows)).round(1),
        "Temp3pm": (21.7 - 2 * wet + rng.normal(0, 6, rows)).round(1),
        "RainToday": np.where(rainfall > 1, "Yes", "No").astype(object),
        "RainTomorrow": rain_tomorrow,
    })
    for col, frac in (("Evaporation", 0.43), ("Sunshine", 0.48), ("Cloud9am", 0.38),
                      ("Cloud3pm", 0.4), ("Pressure9am", 0.1), ("WindGustDir", 0.07),
                      ("Humidity3pm", 0.03), ("RainToday", 0.02), ("RainTomorrow", 0.02)):
        frame.loc[rng.random(rows) < frac, col] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, na_rep="NA")
    return path


def dollar_street(folder: Path, n_train: int = 400, n_test: int = 150, seed: int = 0) -> Path:
    """64x64 RGB images of 10 classes: each class a colour and a shape at a random place."""
    rng = np.random.default_rng(seed)
    palette = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230], [250, 190, 190], [0, 0, 128]])
    yy, xx = np.mgrid[0:64, 0:64]

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n)
        images = rng.normal(120, 30, size=(n, 64, 64, 3))
        for i, c in enumerate(labels):
            cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(12, 19)
            if c % 2:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
            else:
                mask = (abs(yy - cy) < r) & (abs(xx - cx) < r // (1 + c // 4))
            images[i][mask] = palette[c] + rng.normal(0, 20, size=(mask.sum(), 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = make(n)
        np.save(folder / f"{split}_images.npy", x)
        np.save(folder / f"{split}_labels.npy", y)
    return folder


SHAPES = ("bars", "rings", "cross")


def image_folder(folder: Path, per_class: int = 40, seed: int = 0, sizes=((32, 32), (40, 36), (48, 48)),
                 gray: bool = False, corrupt: int = 1) -> Path:
    """An ImageFolder: one subfolder per class (bars, rings, cross: shapes a small CNN tells apart),
    PNG and JPEG files of mixed sizes, and `corrupt` files that are not images at all."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(SHAPES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            grid = np.mgrid[0:h, 0:w]
            yy, xx = grid[0] / h, grid[1] / w
            if c == 0:
                base = (np.sin(yy * 6 * np.pi) > 0).astype(float)
            elif c == 1:
                base = (np.sin(np.hypot(yy - 0.5, xx - 0.5) * 8 * np.pi) > 0).astype(float)
            else:
                base = ((np.abs(yy - 0.5) < 0.12) | (np.abs(xx - 0.5) < 0.12)).astype(float)
            pixels = np.clip(base * 200 + rng.normal(30, 25, (h, w)), 0, 255).astype(np.uint8)
            if gray:
                img = Image.fromarray(pixels, "L")
            else:
                tint = rng.uniform(0.6, 1.0, 3)
                img = Image.fromarray((pixels[..., None] * tint).astype(np.uint8), "RGB")
            img.save(folder / name / f"{i:03d}.{'jpg' if i % 4 == 3 else 'png'}")
    for i in range(corrupt):
        (folder / SHAPES[i % 3] / f"broken-{i}.png").write_bytes(b"not an image at all")
    return folder
