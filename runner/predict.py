"""Predicting with a trained run: `load_model("runs/x/model.pt").predict(frame_or_images)`.

model.pt holds plain data only (tensors, lists, dicts, strings), so it loads with
`torch.load(weights_only=True)`: no pickled code is ever executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from jobs.errors import DataError, QtrainError
from jobs.results import MODEL, RunResults
from runner.data import to_nchw
from runner.models import MODEL_FORMAT, Net, build_from_arch
from runner.prepare import transform_images, transform_table
from runner.train import predict_raw


@dataclass
class Predictor:
    model: Net
    preprocess: dict[str, Any]
    classes: list[str] | None
    task: str
    target: str | None
    job: dict[str, Any]

    def predict(self, data: pd.DataFrame | np.ndarray, where: str = "input") -> pd.DataFrame:
        """`predicted` (+ `prob_<class>` columns) for a frame of feature columns or an image array."""
        if self.preprocess["kind"] == "table":
            if not isinstance(data, pd.DataFrame):
                raise DataError(f"{where}: this model takes a table (CSV/Parquet) of features")
            x = transform_table(data, self.preprocess, where)
        else:
            if isinstance(data, pd.DataFrame):
                raise DataError(f"{where}: this model takes images (.npy/.npz), not a table")
            x = transform_images(to_nchw(np.asarray(data), where), self.preprocess, where)
        out = predict_raw(self.model, torch.from_numpy(x))
        if self.classes is not None:
            proba = torch.softmax(out, dim=1).numpy()
            frame = pd.DataFrame({"predicted": np.array(self.classes, dtype=object)[proba.argmax(1)]})
            for i, c in enumerate(self.classes):
                frame[f"prob_{c}"] = proba[:, i]
            return frame
        pred = out[:, 0].numpy().astype(np.float64)
        scale = self.preprocess.get("target")
        if scale:
            pred = pred * scale["scale"] + scale["center"]
        return pd.DataFrame({"predicted": pred})


def load_model(path: str | Path) -> Predictor:
    """Load a run's model.pt, or the one of a results folder (a sweep's: its best trial's,
    chosen on validation by `jobs.results.select_best`)."""
    p = Path(path)
    if p.is_dir():
        results = RunResults(p)
        trial = results.best_trial()
        if trial is None and results.is_sweep:
            raise QtrainError(f"{p}: a sweep with no finished trial", hint="no model to predict with")
        p = results.folder(trial) / MODEL
    if not p.is_file():
        raise QtrainError(f"{p}: no {MODEL} here", hint=f"give a run directory or its {MODEL}")
    try:
        saved = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise QtrainError(f"{p}: cannot be read as a qtrain model ({exc})") from exc
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise QtrainError(f"{p}: not a qtrain {MODEL}")
    model = build_from_arch(saved["arch"])
    model.load_state_dict(saved["model_state"])
    model.eval()
    return Predictor(model, saved["preprocess"], saved["classes"], saved["task"], saved["target"],
                     json.loads(saved["job"]))


def read_input(path: Path) -> pd.DataFrame | np.ndarray:
    """A file to predict on: CSV/TSV/Parquet table, or .npy/.npz images."""
    if not path.is_file():
        raise QtrainError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            for key in ("x", "images", "x_test", "test_images"):
                if key in z.files:
                    return z[key]
            raise QtrainError(f"{path}: expected an array named x or images in the .npz")
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise QtrainError(f"{path}: cannot read it as CSV ({exc})") from exc
