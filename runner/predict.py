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
from jobs.spec import DataSpec
from jobs.suggest import suggestion
from runner.data import to_nchw
from runner.images import ImageFiles, decode, files_of_folder
from runner.stream import ImageSplit
from runner.models import MODEL_FORMAT, Net, build_from_arch
from runner.prepare import transform_images, transform_table
from runner.batches import predict_raw


@dataclass
class Predictor:
    model: Net
    preprocess: dict[str, Any]
    classes: list[str] | None
    task: str
    target: str | None
    job: dict[str, Any]

    def predict(self, data: pd.DataFrame | np.ndarray, where: str = "input",
                id_column: str | None = None) -> pd.DataFrame:
        """`row` (the input's row number), `id_column` if asked, `predicted` (+ `prob_<class>`)."""
        return self.report(data, where, id_column).frame

    def report(self, data: pd.DataFrame | np.ndarray, where: str = "input",
               id_column: str | None = None) -> "Prediction":
        """Predictions, treated as training treated its data: the feature columns the model was
        trained on (a missing one is an error, extra ones are ignored and said so), missing values
        imputed or, where training dropped such rows, left without a prediction (and counted),
        unseen categories named; and, when the target column is there, the metrics."""
        notes: list[str] = []
        if isinstance(data, ImageFiles):  # a folder of image files: decoded to the model's (C, H, W)
            if self.preprocess["kind"] != "images":
                raise DataError(f"{where}: this model takes a table (CSV/Parquet) of features, not images")
            limit = (self.job.get("data") or {}).get("max_image_pixels") or DataSpec.model_fields[
                "max_image_pixels"].default  # the training job's, or the default for an older model
            decoded = decode(data, None, shape=self.preprocess["shape"], max_pixels=limit)  # warns of unreadable files
            x = ImageSplit(decoded.x, self.preprocess)  # decoded batch by batch, in workers
            frame = pd.DataFrame({"file": np.array(data.names(), dtype=object)[decoded.keep]})
            return Prediction(self._outputs(frame, x, np.ones(len(x), dtype=bool)), notes, None)
        if self.preprocess["kind"] != "table":
            if isinstance(data, pd.DataFrame):
                raise DataError(f"{where}: this model takes images (.npy/.npz), not a table")
            x = transform_images(to_nchw(np.asarray(data), where), self.preprocess, where)
            frame = pd.DataFrame({"row": np.arange(len(x))})
            return Prediction(self._outputs(frame, x, np.ones(len(x), dtype=bool)), notes, None)
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"{where}: this model takes a table (CSV/Parquet) of features")
        inputs = list(self.preprocess["inputs"])
        missing = [c for c in inputs if c not in data.columns]
        if missing:
            raise DataError(f"{where}: the model needs column(s) {', '.join(missing)}, which the "
                            f"file does not have{suggestion(missing[0], data.columns, close=False)}",
                            hint=f"it was trained on: {', '.join(inputs)}")
        if id_column is not None and id_column not in data.columns:
            raise DataError(f"{where}: --id column '{id_column}' is not in the file"
                            f"{suggestion(id_column, data.columns)}")
        extra = [str(c) for c in data.columns if c not in inputs and c not in (self.target, id_column)]
        if extra:
            notes.append(f"{where}: ignored {len(extra)} column(s) the model was not trained on: "
                         + ", ".join(extra[:8]) + (" ..." if len(extra) > 8 else ""))
        usable = self._missing_rule(data, inputs, where, notes)
        for c in self.preprocess["categorical"]:
            seen = set(c["categories"])
            text = data[c["name"]].dropna().astype(str)
            unseen = text[~text.isin(seen)]
            if len(unseen):
                shown = ", ".join(repr(v) for v in pd.unique(unseen)[:3])
                notes.append(f"{where}: column '{c['name']}': {len(unseen)} row(s) hold categories "
                             f"never seen in training ({shown}); the model treats them as none of "
                             f"the known ones")
        x = transform_table(data, self.preprocess, where)
        frame = pd.DataFrame({"row": data.index.to_numpy()})
        if id_column is not None:
            frame.insert(1, id_column, data[id_column].to_numpy())
        frame = self._outputs(frame, x, usable)
        metrics = self._metrics(data, frame, usable, where, notes)
        return Prediction(frame, notes, metrics)

    def _missing_rule(self, data: pd.DataFrame, inputs: list[str], where: str, notes: list[str]) -> np.ndarray:
        """Which rows get a prediction: all (missing values imputed, as in training), or, for a
        model trained with `preprocess.missing: drop`, those with every feature present."""
        numeric = [n["name"] for n in self.preprocess["numeric"]]
        gaps = data[inputs].isna()
        if numeric:  # text where a number belongs is missing too, as in training: said, by value
            coerced = data[numeric].apply(pd.to_numeric, errors="coerce")
            for name in numeric:
                text = data[name].notna() & coerced[name].isna()
                if text.any():
                    shown = ", ".join(repr(v) for v in pd.unique(data.loc[text, name].astype(str))[:3])
                    notes.append(f"{where}: column '{name}': {int(text.sum())} value(s) are not numbers "
                                 f"({shown}); read as missing")
            gaps[numeric] = gaps[numeric] | coerced.isna()
        incomplete = gaps.any(axis=1).to_numpy()
        count = int(incomplete.sum())
        rule = ((self.job.get("preprocess") or {}).get("missing")) or "impute"
        if count and rule == "drop":
            notes.append(f"{where}: {count} of {len(data)} row(s) have missing features and get no "
                         "prediction (the model was trained with preprocess.missing: drop)")
            return ~incomplete
        if count:
            notes.append(f"{where}: {int(gaps.to_numpy().sum())} missing value(s) in {count} row(s) "
                         "imputed as in training")
        return np.ones(len(data), dtype=bool)

    def _outputs(self, frame: pd.DataFrame, x: np.ndarray | ImageSplit, usable: np.ndarray) -> pd.DataFrame:
        if isinstance(x, ImageSplit):  # every file decoded could be read: all usable
            out = predict_raw(self.model, x) if len(x) else None
        else:
            out = predict_raw(self.model, torch.from_numpy(x[usable])) if usable.any() else None
        if self.classes is not None:
            proba = np.full((len(frame), len(self.classes)), np.nan)
            if out is not None:
                proba[usable] = torch.softmax(out, dim=1).numpy()
            names = np.array(self.classes, dtype=object)
            frame["predicted"] = np.where(usable, names[np.nan_to_num(proba).argmax(1)], None)
            for i, c in enumerate(self.classes):
                frame[f"prob_{c}"] = proba[:, i]
            return frame
        pred = np.full(len(frame), np.nan)
        if out is not None:
            pred[usable] = out[:, 0].numpy().astype(np.float64)
        scale = self.preprocess.get("target")
        if scale:
            pred = pred * scale["scale"] + scale["center"]
        frame["predicted"] = pred
        return frame

    def _metrics(self, data: pd.DataFrame, frame: pd.DataFrame, usable: np.ndarray, where: str,
                 notes: list[str]) -> dict[str, Any] | None:
        """The file's own metrics when it holds the target column (rows with a prediction and a
        known target), as a run reports them."""
        if not self.target or self.target not in data.columns:
            return None
        from runner.evaluate import classification_metrics, regression_metrics

        truth = data[self.target].to_numpy()
        known = usable & pd.notna(truth)
        if not known.any():
            return None
        if self.classes is not None:
            lookup = {c: i for i, c in enumerate(self.classes)}
            y = pd.Series(truth[known]).astype(str).map(lookup)
            if y.isna().any():
                notes.append(f"{where}: {int(y.isna().sum())} row(s) have a {self.target} never seen "
                             "in training; they are left out of the metrics")
            keep = y.notna().to_numpy()
            pred = frame["predicted"].to_numpy()[known][keep].astype(str)
            proba = frame[[f"prob_{c}" for c in self.classes]].to_numpy()[known][keep]
            return classification_metrics(y[keep].to_numpy(dtype=np.int64),
                                          pd.Series(pred).map(lookup).to_numpy(dtype=np.int64),
                                          self.classes, proba)
        y = pd.to_numeric(pd.Series(truth[known]), errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(y)
        return regression_metrics(y[ok], frame["predicted"].to_numpy()[known][ok])


@dataclass
class Prediction:
    frame: pd.DataFrame  # row, [id], predicted, prob_<class>...
    notes: list[str]  # what the user should know: ignored columns, rows left out, unseen categories
    metrics: dict[str, Any] | None  # when the file holds the target column


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
        raise QtrainError(f"{p}: not a qtrain {MODEL}", hint="qtrain writes it for model jobs (kind mlp, cnn, "
                          "transfer or module); a script job's model.pt is the script's own")
    model = build_from_arch(saved["arch"], base=p.parent)  # a module model: its code/ beside it
    model.load_state_dict(saved["model_state"])
    model.eval()
    return Predictor(model, saved["preprocess"], saved["classes"], saved["task"], saved["target"],
                     json.loads(saved["job"]))


def read_input(path: Path, na_values: list[str] | None = None) -> pd.DataFrame | np.ndarray | ImageFiles:
    """A file to predict on: CSV/TSV/Parquet table (`na_values`: the training job's missing-value
    markers), .npy/.npz images, or a folder of image files (every one below it)."""
    if path.is_dir():
        return files_of_folder(path)
    if not path.is_file():
        raise QtrainError(f"{path}: file not found")
    name = path.name.lower()
    if not name.endswith((".npy", ".npz", ".parquet", ".pq")):
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        if b"\0" in head:
            raise QtrainError(f"{path}: not a table: it holds binary data (NUL bytes)",
                              hint="give a CSV/TSV or Parquet table, or .npy/.npz images")
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
        return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", na_values=na_values,
                           low_memory=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise QtrainError(f"{path}: cannot read it as CSV ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise QtrainError(f"{path}: not utf-8 text ({exc.reason} at byte {exc.start})",
                          hint="save it as utf-8, or give a Parquet file") from None
