"""Splitting and preprocessing: dataset -> train/val/test float arrays, plus the fitted state.

Everything fitted (imputation values, scaling, one-hot categories, class names, target scale) is
learnt on the training split only and kept as plain JSON-able data in `Prepared.state`, so that
`model.pt` can rebuild the exact transform for `qtrain predict` without pickled objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from jobs.errors import DataError
from jobs.spec import Job
from runner import log
from runner.audit import numeric_view
from runner.data import BASELINE_COLUMN, Dataset, Images, Table
from runner.stream import ImageSet, ImageSplit


@dataclass
class Prepared:
    x: dict[str, Any]  # split -> float32 features (N, F) or images (N, C, H, W); image files: ImageSplit
    y: dict[str, np.ndarray]  # split -> int64 class index or float32 target (unscaled)
    rows: dict[str, np.ndarray]  # split -> original row identifiers (for predictions.csv)
    today: np.ndarray | None  # test split: today's target value (shifted-target baseline)
    classes: list[str] | None
    feature_names: list[str]
    state: dict[str, Any]  # fitted preprocessing, stored in model.pt

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x["train"].shape[1:])

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes is not None else 1

    @property
    def splits(self) -> list[str]:
        return [s for s in ("train", "val", "test") if len(self.y.get(s, ())) > 0]


# ------------------------------------------------------------------------------------- split
def split_indices(labels: np.ndarray | None, n: int, job: Job,
                  has_test: bool) -> dict[str, np.ndarray]:
    """train/val/test row positions.  Mirrors the lessons' two calls of train_test_split."""
    s = job.split
    idx = np.arange(n)
    stratify = labels if (job.task == "classification" and s.stratify and s.shuffle) else None
    if stratify is not None:
        _, counts = np.unique(stratify, return_counts=True)
        if counts.min() < 2:
            log.warn("split.stratify: a class has a single row, splitting without stratification")
            stratify = None
    holdout = s.val_size if has_test else s.test_size + s.val_size
    if holdout == 0:
        return {"train": idx, "val": idx[:0], "test": idx[:0]}
    if n * holdout < 1 or n * (1 - holdout) < 1:
        raise DataError(f"split: {n} rows are too few for test_size={s.test_size} "
                        f"val_size={s.val_size}")

    def cut(rows: np.ndarray, size: float, strat: np.ndarray | None):
        if not s.shuffle:
            k = int(round(len(rows) * (1 - size)))
            return rows[:k], rows[k:]
        try:
            return train_test_split(rows, test_size=size, random_state=s.random_state,
                                    stratify=strat)
        except ValueError:  # too few rows per class for a stratified cut
            return train_test_split(rows, test_size=size, random_state=s.random_state)

    train, rest = cut(idx, holdout, stratify)
    if has_test:
        return {"train": train, "val": rest, "test": idx[:0]}
    if s.val_size == 0:
        return {"train": train, "val": idx[:0], "test": rest}
    rest_strat = labels[rest] if stratify is not None else None
    val, test = cut(rest, s.test_size / holdout, rest_strat)
    return {"train": train, "val": val, "test": test}


# ------------------------------------------------------------------------------------ classes
def class_names(values: Any) -> list[str]:
    uniq = pd.unique(pd.Series(values).astype(str))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return sorted(uniq)


def encode_classes(values: Any, classes: list[str], where: str) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    strs = pd.Series(values).astype(str)
    unknown = sorted(set(strs) - set(lookup))
    if unknown:
        raise DataError(f"{where}: labels {unknown[:5]} are not among the training classes {classes}")
    return strs.map(lookup).to_numpy(dtype=np.int64)


# ------------------------------------------------------------------------------ table encoding
def fit_table(frame: pd.DataFrame, features: list[str], job: Job) -> dict[str, Any]:
    """The table's encoding, fitted on `frame` (the training split).  Imputing, a column with gaps
    in training also gets a `<column>=<missing>` flag feature: whether the value was missing."""
    p = job.preprocess
    flag_missing = p.missing == "impute"
    numeric, categorical = [], []
    for col in features:
        series = frame[col]
        view = numeric_view(series)  # a few stray strings in a numeric column: numbers, not text
        if view is not None:
            series = view[0]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            if p.categorical == "drop":
                continue
            text = series.dropna().astype(str)
            counts = text.value_counts()
            fill = str(counts.index[0]) if len(counts) else "missing"
            keep = sorted(str(c) for c, n in counts.items() if n >= p.min_frequency)
            other = len(keep) < len(counts)
            categorical.append({"name": col, "fill": fill, "categories": keep, "other": other,
                                "flag": flag_missing and bool(series.isna().any())})
        else:
            values = series.astype("float64")
            if p.impute == "median":
                fill = values.median()
            elif p.impute == "mean":
                fill = values.mean()
            else:
                fill = 0.0
            fill = 0.0 if pd.isna(fill) else float(fill)
            filled = values.fillna(fill)
            if p.scale == "standard":
                center, scale = float(filled.mean()), float(filled.std(ddof=0))
            elif p.scale == "minmax":
                center, scale = float(filled.min()), float(filled.max() - filled.min())
            else:
                center, scale = 0.0, 1.0
            numeric.append({"name": col, "fill": fill, "center": center,
                            "scale": scale if scale > 0 else 1.0,
                            "flag": flag_missing and bool(values.isna().any())})
    outputs = [n["name"] for n in numeric]
    for c in categorical:
        outputs += [f"{c['name']}={v}" for v in c["categories"]]
        if c["other"]:
            outputs.append(f"{c['name']}=<other>")
    outputs += [f"{f['name']}=<missing>" for f in numeric + categorical if f.get("flag")]
    if not outputs:
        raise DataError("preprocess: no feature columns left (every feature is text and "
                        "preprocess.categorical is drop)")
    return {"kind": "table", "inputs": list(features), "numeric": numeric,
            "categorical": categorical, "outputs": outputs}


def transform_table(frame: pd.DataFrame, state: dict[str, Any], where: str = "data") -> np.ndarray:
    missing = [c for c in state["inputs"] if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: columns {', '.join(missing)} are missing",
                        hint="the data needs the same feature columns as the training data")
    blocks, flags = [], []
    if state["numeric"]:
        cols = [n["name"] for n in state["numeric"]]
        values = frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        fill = np.array([n["fill"] for n in state["numeric"]])
        center = np.array([n["center"] for n in state["numeric"]])
        scale = np.array([n["scale"] for n in state["numeric"]])
        gaps = np.isnan(values)
        flags += [gaps[:, i] for i, n in enumerate(state["numeric"]) if n.get("flag")]
        values = np.where(gaps, fill, values)
        blocks.append((values - center) / scale)
    for c in state["categorical"]:
        raw = frame[c["name"]].astype("string")
        if c.get("flag"):
            flags.append(raw.isna().to_numpy())
        text = raw.fillna(c["fill"]).astype(str).to_numpy()
        cats = np.array(c["categories"], dtype=object)
        onehot = (text[:, None] == cats[None, :]).astype(np.float64)
        blocks.append(onehot)
        if c["other"]:
            blocks.append((onehot.sum(axis=1, keepdims=True) == 0).astype(np.float64))
    if flags:
        blocks.append(np.stack(flags, axis=1).astype(np.float64))
    return np.concatenate(blocks, axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- image encoding
def fit_images(x: np.ndarray, job: Job) -> dict[str, Any]:
    p = job.preprocess
    if p.pixel_scale == "auto":
        top = float(np.max(x)) if x.size else 1.0
        # 8-bit images -> 255; other ranges (digits' 0..16, floats in 0..1) -> their maximum
        scale = 255.0 if x.dtype == np.uint8 or 16 < top <= 255 else max(top, 1.0)
    else:
        scale = float(p.pixel_scale)
    state: dict[str, Any] = {"kind": "images", "shape": list(x.shape[1:]), "pixel_scale": scale}
    if p.standardize_images:
        scaled = x.astype(np.float32) / scale
        state["mean"] = scaled.mean(axis=(0, 2, 3)).tolist()
        state["std"] = [max(v, 1e-6) for v in scaled.std(axis=(0, 2, 3)).tolist()]
    return state


def fit_image_set(images: ImageSet, job: Job) -> dict[str, Any]:
    """`fit_images` for image files, from the pixel sums their survey kept (nothing decoded again)."""
    p = job.preprocess
    scale = 255.0 if p.pixel_scale == "auto" else float(p.pixel_scale)  # decoded files are 8-bit
    state: dict[str, Any] = {"kind": "images", "shape": list(images.shape[1:]), "pixel_scale": scale}
    if p.standardize_images:
        state["mean"], state["std"] = images.stats(scale)
    return state


def transform_images(x: np.ndarray, state: dict[str, Any], where: str = "data") -> np.ndarray:
    if list(x.shape[1:]) != list(state["shape"]):
        raise DataError(f"{where}: images are {tuple(x.shape[1:])} (C,H,W) but the model was "
                        f"trained on {tuple(state['shape'])}")
    out = x.astype(np.float32) / np.float32(state["pixel_scale"])
    if "mean" in state:
        mean = np.array(state["mean"], dtype=np.float32)[None, :, None, None]
        std = np.array(state["std"], dtype=np.float32)[None, :, None, None]
        out = (out - mean) / std
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------------- prepare
def prepare(data: Dataset, job: Job) -> Prepared:
    if isinstance(data, Table):
        return _prepare_table(data, job)
    return _prepare_images(data, job)


def _prepare_table(data: Table, job: Job) -> Prepared:
    frame = data.frame
    target = data.target
    classification = job.task == "classification"
    all_labels = frame[target] if data.test_frame is None else pd.concat(
        [frame[target], data.test_frame[target]])
    classes = class_names(all_labels) if classification else None
    if classification and len(classes) < 2:
        raise DataError(f"data.target '{target}': only one class ({classes[0]}) in the data",
                        hint="classification needs at least two classes")
    labels = frame[target].astype(str).to_numpy() if classification else None
    parts = split_indices(labels, len(frame), job, has_test=data.test_frame is not None)
    frames = {k: frame.iloc[v] for k, v in parts.items()}
    if data.test_frame is not None:
        frames["test"] = data.test_frame
    state = fit_table(frames["train"], data.features, job)
    if job.preprocess.missing == "impute":
        gaps = frame[data.features].isna()
        if data.test_frame is not None:
            gaps = pd.concat([gaps, data.test_frame[data.features].isna()])
        if int(gaps.to_numpy().sum()):
            cols = [c for c in data.features if gaps[c].any()]
            log.warn(f"imputed {int(gaps.to_numpy().sum())} missing value(s) in {int(gaps.any(axis=1).sum())} "
                     f"row(s), column(s) {', '.join(map(str, cols[:6]))}{' ...' if len(cols) > 6 else ''} "
                     f"({job.preprocess.impute} / most frequent, with a <column>=<missing> flag; "
                     "preprocess.missing: drop to drop those rows instead)")
    x, y, rows = {}, {}, {}
    for split, part in frames.items():
        x[split] = transform_table(part, state, where=f"{split} split")
        rows[split] = part.index.to_numpy()
        if classification:
            y[split] = encode_classes(part[target], classes, f"data.target '{target}'")
        else:
            y[split] = part[target].to_numpy(dtype=np.float32)
    if not classification and job.preprocess.scale_target:
        state["target"] = {"center": float(y["train"].mean()),
                           "scale": float(y["train"].std()) or 1.0}
    today = None
    if BASELINE_COLUMN in frame.columns:
        raw_today = frames["test"][BASELINE_COLUMN]
        if classification:  # -1 where today's label is not a class (missing, unseen)
            lookup = {c: i for i, c in enumerate(classes)}
            today = raw_today.astype(str).map(lookup).fillna(-1).to_numpy(dtype=np.int64)
        else:
            today = pd.to_numeric(raw_today, errors="coerce").to_numpy(dtype=np.float64)
    return Prepared(x, y, rows, today, classes, state["outputs"], state)


def _prepare_images(data: Images, job: Job) -> Prepared:
    all_labels = data.y if data.y_test is None else np.concatenate([data.y, data.y_test])
    classes = class_names(all_labels)
    labels = pd.Series(data.y).astype(str).to_numpy()
    parts = split_indices(labels, len(data.x), job, has_test=data.x_test is not None)
    files = isinstance(data.x, ImageSet)  # image files: decoded batch by batch as training reads them
    state = fit_image_set(data.x.take(parts["train"]), job) if files else fit_images(data.x[parts["train"]], job)
    x, y, rows = {}, {}, {}
    for split, idx in parts.items():
        x[split] = ImageSplit(data.x.take(idx), state) if files else transform_images(data.x[idx], state)
        y[split] = encode_classes(data.y[idx], classes, "labels")
        rows[split] = idx
    if data.x_test is not None:
        x["test"] = ImageSplit(data.x_test, state) if files else transform_images(data.x_test, state)
        y["test"] = encode_classes(data.y_test, classes, "test labels")
        rows["test"] = np.arange(len(data.x_test))
    state["classes"] = classes
    names = [f"pixel_{i}" for i in range(int(np.prod(state["shape"])))]
    return Prepared(x, y, rows, None, classes, names, state)
