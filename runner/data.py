"""Reading datasets: tables (CSV, Parquet, built-ins) and image arrays (NPY/NPZ, MNIST IDX, pkl.gz).

`load_dataset` returns a `Table` or `Images` whose rows are ready to split: the label exists for every
row, the shifted target is applied, and every mistake that can be seen in the data raises a
`DataError` that names the file, the field and what to do.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.errors import DataError
from jobs.files import resolve
from jobs.spec import BUILTIN_DATA, DataSpec, Job, is_builtin_source
from jobs.suggest import suggestion
from runner import images as images_mod
from runner import log

BASELINE_COLUMN = "__qtrain_today__"


@dataclass
class Table:
    frame: pd.DataFrame  # feature columns + target (+ BASELINE_COLUMN when the target is shifted)
    target: str
    features: list[str]
    test_frame: pd.DataFrame | None = None  # a separate test set, when the job names one


@dataclass
class Images:
    x: np.ndarray  # (N, C, H, W), raw pixel values
    y: np.ndarray  # (N,) labels
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    files: dict[str, Any] | None = None  # image files: what decoding found (sizes, unreadable files)


Dataset = Table | Images


def load_dataset(job: Job, base_dir: Path) -> Dataset:
    spec = job.data
    if spec.image_column and not is_builtin_source(spec.path) and resolve(spec.path, base_dir).is_dir():
        raise DataError(f"data.image_column '{spec.image_column}': it names image files in a CSV, and data.path "
                        f"{spec.path} is a folder", hint="remove data.image_column, or point data.path at the CSV")
    if is_builtin_source(spec.path):
        data = _load_builtin(spec)
    else:
        data = _load_files(spec, base_dir)
    if spec.image_column and not isinstance(data, pd.DataFrame):  # (said before decoding a folder: below)
        raise DataError(f"data.image_column '{spec.image_column}': it names image files in a CSV, and data.path "
                        f"{spec.path} is not a table", hint="remove data.image_column, or point data.path at the CSV")
    if isinstance(data, pd.DataFrame) and spec.image_column:  # a CSV that lists image files
        data = _listed_images(data, resolve(spec.path, base_dir), spec, "data.path")
        if spec.test_path:
            test_path = resolve(spec.test_path, base_dir)
            listed = _listed_images(_read_table(test_path, spec, "data.test_path"), test_path, spec, "data.test_path",
                                    shape=data.x.shape[1:])
            data.x_test, data.y_test = listed.x, listed.y
    if isinstance(data, pd.DataFrame):
        test = None
        if spec.test_path:
            test = _read_table(resolve(spec.test_path, base_dir), spec, "data.test_path")
        return prepare_table(data, job, f"data.path {spec.path}", test)
    _check_images(data, job)
    return data


# --------------------------------------------------------------------------------------- tables
def prepare_table(df: pd.DataFrame, job: Job, where: str,
                  test_df: pd.DataFrame | None = None) -> Table:
    spec = job.data
    if spec.target is None:
        raise DataError(f"{where}: data.target is not set",
                        hint=f"name the column to predict, one of: {_columns(df)}")
    main = _prepare_frame(df, job, where)
    test = _prepare_frame(test_df, job, "data.test_path") if test_df is not None else None
    features = [c for c in main.columns if c not in (spec.target, BASELINE_COLUMN)]
    return Table(frame=main, target=spec.target, features=features, test_frame=test)


SNIFF_BYTES = 1 << 16


def _refuse_binary(path: Path, spec: DataSpec, name: str) -> None:
    """A file read as CSV text whose first bytes hold NULs is binary (or UTF-16 text): said at
    once, before pandas spends minutes and gigabytes on it."""
    if spec.encoding.startswith(("utf-16", "utf-32")):
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"{name} {path}: cannot read it ({exc.strerror})") from exc
    if b"\0" in head:
        at = head.index(b"\0")
        raise DataError(f"{name} {path}: it holds NUL bytes (the first at offset {at}): binary data, not "
                        f"CSV text", hint="point it at the CSV file, set data.format for arrays or parquet, or "
                                          "data.encoding: utf-16 for UTF-16 text")


def _prepare_frame(df: pd.DataFrame, job: Job, where: str) -> pd.DataFrame:
    spec = job.data
    if len(df.columns) == 0 or len(df) == 0:
        raise DataError(f"{where}: the dataset has no rows", hint="check the file is the right one")
    if spec.max_rows is not None:
        df = df.iloc[: spec.max_rows]
    target = spec.target
    if target not in df.columns:
        raise DataError(f"{where}: data.target column '{target}' is not in the data"
                        f"{suggestion(str(target), df.columns)}", hint=f"columns are: {_columns(df)}")
    for name, cols in (("data.drop", spec.drop), ("data.features", spec.features or [])):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"{where}: {name} names columns that are not in the data: "
                            f"{', '.join(missing)}{suggestion(str(missing[0]), df.columns)}",
                            hint=f"columns are: {_columns(df)}")
    if spec.features is not None:
        features = [c for c in spec.features if c != target and c not in spec.drop]
    else:
        features = [c for c in df.columns if c != target and c not in spec.drop]
    if not features:
        raise DataError(f"{where}: no feature columns left after data.drop/data.features")
    frame = df[features].copy()
    y = df[target]
    if spec.target_shift:
        frame[BASELINE_COLUMN] = y.to_numpy()  # today's value, the naive forecast for tomorrow
        y = y.shift(-spec.target_shift)
        frame, y = frame.iloc[: -spec.target_shift], y.iloc[: -spec.target_shift]
    frame[target] = y.to_numpy()
    if y.notna().sum() == 0:
        raise DataError(f"{where}: data.target column '{target}' has no values (every row is "
                        f"missing it)", hint="check the target column and the file")
    missing_target = int(frame[target].isna().sum())
    if missing_target:
        log.warn(f"{where}: dropped {missing_target} of {len(frame)} rows whose target "
                 f"'{target}' is missing")
        frame = frame[frame[target].notna()]
    if job.task == "regression":
        values = pd.to_numeric(frame[target], errors="coerce")
        bad = frame[target][values.isna()]
        if len(bad):
            raise DataError(f"{where}: task is regression but target '{target}' holds text such "
                            f"as {str(bad.iloc[0])!r}",
                            hint="use task: classification, or pick a numeric target column")
        frame[target] = values.astype("float64")
    _refuse_infinities(frame, where)
    if job.preprocess.missing == "drop":
        incomplete = frame[features].isna().any(axis=1)
        n = int(incomplete.sum())
        if n:
            log.warn(f"{where}: dropped {n} of {len(frame)} rows with missing features "
                     f"(preprocess.missing: drop; use impute to keep them)")
            frame = frame[~incomplete]
    if len(frame) == 0:
        raise DataError(f"{where}: no usable rows left after dropping missing values",
                        hint="set preprocess.missing: impute, or drop the emptiest columns")
    return frame


def _refuse_infinities(frame: pd.DataFrame, where: str) -> None:
    """inf / -inf in a column (written `inf` in a CSV): no scaler or loss survives them, and the
    run would only say "loss nan".  The column is named, with the first data row holding one."""
    for column in frame.columns:
        if column == BASELINE_COLUMN or not pd.api.types.is_float_dtype(frame[column]):
            continue
        infinite = np.isinf(frame[column].to_numpy())
        if infinite.any():
            first = int(np.argmax(infinite))
            raise DataError(f"{where}: column '{column}' holds infinite values ({int(infinite.sum())} row(s), "
                            f"the first is data row {first + 1})",
                            hint="fix those values, or add inf and -inf to data.na_values to read them as missing")


def _columns(df: pd.DataFrame, limit: int = 12) -> str:
    cols = [str(c) for c in df.columns]
    return ", ".join(cols[:limit]) + (f", ... ({len(cols)} in all)" if len(cols) > limit else "")


def _read_table(path: Path, spec: DataSpec, name: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{name} {path}: file not found", hint="check the path (relative paths "
                        "start from the job file's folder)")
    fmt = spec.format
    suffixes = "".join(path.suffixes).lower()
    if fmt == "auto":
        fmt = "parquet" if suffixes.endswith((".parquet", ".pq")) else "csv"
    if fmt != "parquet":
        _refuse_binary(path, spec, name)
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        sep = spec.sep or ("\t" if ".tsv" in suffixes else ",")
        return pd.read_csv(path, sep=sep, na_values=spec.na_values, keep_default_na=True,
                           low_memory=False, encoding=spec.encoding)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{name} {path}: the file is empty", hint="check the file") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} {path}: it is not {spec.encoding} text (it holds the byte "
                        f"{exc.object[exc.start:exc.start + 1]!r}, which {spec.encoding} cannot decode)",
                        hint="set data.encoding to the file's (e.g. latin-1, cp1252), or save it as UTF-8") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{name} {path}: cannot read it as {fmt}: {first}",
                        hint="set data.format (csv, parquet, npy, npz, idx, mnist_pkl)") from exc
    except ImportError as exc:
        raise DataError(f"{name} {path}: reading parquet needs pyarrow",
                        hint="pip install pyarrow") from exc


# ------------------------------------------------------------------------------------ built-ins
def _load_builtin(spec: DataSpec) -> pd.DataFrame | Images:
    name, opts = spec.path, dict(spec.options)
    if name == "palmerpenguins":
        try:
            from palmerpenguins import load_penguins
        except ImportError as exc:
            raise DataError("data.path palmerpenguins needs the palmerpenguins package",
                            hint="pip install palmerpenguins") from exc
        return load_penguins()
    try:
        import sklearn.datasets as skd
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError(f"data.path {name} needs scikit-learn", hint="pip install scikit-learn") from exc
    if name == "sklearn:circles":
        allowed = {"n_samples": 500, "noise": 0.1, "factor": 0.8, "random_state": 0}
        unknown = set(opts) - set(allowed)
        if unknown:
            raise DataError(f"data.options for sklearn:circles: unknown {', '.join(sorted(unknown))}",
                            hint=f"allowed: {', '.join(allowed)}")
        params = {**allowed, **opts}
        x, y = skd.make_circles(**params)
        return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": y})
    if name == "sklearn:digits":
        if opts:
            raise DataError("data.options: sklearn:digits takes no options")
        bunch = skd.load_digits()
        return Images(x=bunch.images[:, None, :, :].astype(np.float32), y=bunch.target)
    loaders = {"sklearn:iris": skd.load_iris, "sklearn:wine": skd.load_wine,
               "sklearn:breast_cancer": skd.load_breast_cancer, "sklearn:diabetes": skd.load_diabetes}
    if name not in loaders:
        raise DataError(f"data.path {name}: unknown built-in dataset",
                        hint=f"built-ins are: {', '.join(BUILTIN_DATA)}")
    bunch = loaders[name](as_frame=True)
    frame = bunch.frame.copy()
    if "target_names" in bunch:
        frame["target"] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    return frame


# --------------------------------------------------------------------------------------- images
def _load_files(spec: DataSpec, base_dir: Path) -> pd.DataFrame | Images:
    path = resolve(spec.path, base_dir)
    if not path.exists():
        raise DataError(f"data.path {path}: file not found",
                        hint="relative paths start from the job file's folder; "
                             "give your copy with --set data.path=PATH")
    fmt = spec.format
    name = path.name.lower()
    if fmt == "auto":
        if path.is_dir():
            images_here = images_mod.is_image_folder(path) or any(images_mod.is_image(p) for p in path.iterdir())
            fmt = "idx" if _idx_files(path) else "imagefolder" if images_here else "npy"
        elif name.endswith(".npz"):
            fmt = "npz"
        elif name.endswith(".npy"):
            fmt = "npy"
        elif name.endswith((".pkl.gz", ".pkl")):
            fmt = "mnist_pkl"
        elif "idx" in name:
            fmt = "idx"
        else:
            fmt = "table"
    if fmt in ("table", "csv", "parquet"):
        return _read_table(path, spec, "data.path")
    if fmt == "imagefolder":
        return _folder_images(path, spec, base_dir)
    try:
        if fmt == "npz":
            images = _read_npz(path)
        elif fmt == "npy":
            images = _read_npy(path, spec, base_dir)
        elif fmt == "idx":
            images = _read_idx(path)
        else:
            images = _read_mnist_pkl(path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, KeyError, struct.error) as exc:
        raise DataError(f"data.path {path}: cannot read it as {fmt}: {exc}",
                        hint="check the file, or set data.format") from exc
    if spec.test_path and images.x_test is None:
        test = _load_files(spec.model_copy(update={"path": spec.test_path, "labels": spec.test_labels,
                                                   "test_path": None}), base_dir)
        if not isinstance(test, Images):
            raise DataError(f"data.test_path {spec.test_path}: expected image arrays like data.path")
        images.x_test, images.y_test = test.x, test.y
    return images


def _read_npz(path: Path) -> Images:
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        for xk, yk in (("x", "y"), ("images", "labels"), ("x_train", "y_train"),
                       ("train_images", "train_labels")):
            if {xk, yk} <= keys:
                images = Images(x=to_nchw(z[xk], str(path)), y=z[yk])
                break
        else:
            raise DataError(f"data.path {path}: the .npz holds {sorted(keys)}; expected arrays "
                            "x and y (or images/labels, x_train/y_train)")
        for xk, yk in (("x_test", "y_test"), ("test_images", "test_labels")):
            if {xk, yk} <= keys:
                images.x_test, images.y_test = to_nchw(z[xk], str(path)), z[yk]
    return images


def _read_npy(path: Path, spec: DataSpec, base_dir: Path) -> Images:
    if path.is_dir():
        need = ["train_images.npy", "train_labels.npy"]
        if not all((path / n).exists() for n in need):
            raise DataError(f"data.path {path}: folder has no train_images.npy/train_labels.npy "
                            "nor MNIST IDX files", hint="point data.path at the data file")
        images = Images(x=to_nchw(np.load(path / need[0]), str(path)), y=np.load(path / need[1]))
        if (path / "test_images.npy").exists() and (path / "test_labels.npy").exists():
            images.x_test = to_nchw(np.load(path / "test_images.npy"), str(path))
            images.y_test = np.load(path / "test_labels.npy")
        return images
    if not spec.labels:
        raise DataError(f"data.path {path}: a .npy of images needs data.labels (the labels .npy)")
    labels = resolve(spec.labels, base_dir)
    if not labels.is_file():
        raise DataError(f"data.labels {labels}: {'it is a folder' if labels.is_dir() else 'file not found'}",
                        hint="name the .npy file of labels, one per image in data.path")
    try:
        y = np.load(labels, allow_pickle=False).reshape(-1)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"data.labels {labels}: cannot read it as .npy: {str(exc).splitlines()[0][:160]}",
                        hint="save the labels with numpy.save") from exc
    return Images(x=to_nchw(np.load(path), str(path)), y=y)


def _idx_files(folder: Path) -> dict[str, Path]:
    found = {}
    for p in folder.iterdir():
        n = p.name.lower()
        if "idx" not in n:
            continue
        split = "test" if n.startswith(("t10k", "test")) else "train"
        kind = "images" if "idx3" in n else "labels" if "idx1" in n else None
        if kind:
            found[f"{split}_{kind}"] = p
    return found


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[data[2]]
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path}: IDX file is truncated ({arr.size} values, header says {shape})")
    return arr.reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (for tests and examples); gzip when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + array.tobytes())


def _read_idx(path: Path) -> Images:
    if not path.is_dir():
        raise DataError(f"data.path {path}: for IDX data give the folder holding "
                        "train-images-idx3-ubyte and train-labels-idx1-ubyte")
    files = _idx_files(path)
    if "train_images" not in files or "train_labels" not in files:
        raise DataError(f"data.path {path}: missing train-images-idx3-ubyte / "
                        "train-labels-idx1-ubyte (optionally .gz)")
    images = Images(x=to_nchw(read_idx(files["train_images"]), str(path)),
                    y=read_idx(files["train_labels"]))
    if "test_images" in files and "test_labels" in files:
        images.x_test = to_nchw(read_idx(files["test_images"]), str(path))
        images.y_test = read_idx(files["test_labels"])
    return images


def _read_mnist_pkl(path: Path) -> Images:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        parts = pickle.load(fh, encoding="latin1")
    if not (isinstance(parts, (tuple, list)) and len(parts) in (2, 3)):
        raise DataError(f"data.path {path}: expected (train, valid, test) pairs as in mnist.pkl.gz")
    train = parts[0]
    x = np.asarray(train[0])
    y = np.asarray(train[1])
    if len(parts) == 3:  # fold the official validation set into training; val_size re-splits it
        x = np.concatenate([x, np.asarray(parts[1][0])])
        y = np.concatenate([y, np.asarray(parts[1][1])])
    test = parts[-1]
    return Images(x=to_nchw(x, str(path)), y=y,
                  x_test=to_nchw(np.asarray(test[0]), str(path)), y_test=np.asarray(test[1]))


def to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """(N,H,W), (N,H,W,C), (N,C,H,W) or flat square (N,H*W) -> (N,C,H,W)."""
    x = np.asarray(x)
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise DataError(f"{where}: flat images of {x.shape[1]} values are not square")
        return x.reshape(len(x), 1, side, side)
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x
    raise DataError(f"{where}: image arrays must have 2 to 4 dimensions, got shape {x.shape}")


def _check_images(images: Images, job: Job) -> None:
    if job.task == "regression":
        raise DataError("task: regression on image data is not supported; use classification")
    if len(images.x) == 0:
        raise DataError(f"data.path {job.data.path}: the dataset has no images")
    if len(images.x) != len(images.y):
        raise DataError(f"data.path {job.data.path}: {len(images.x)} images but "
                        f"{len(images.y)} labels")
    if images.x_test is not None and len(images.x_test) != len(images.y_test):
        raise DataError(f"data.test_path: {len(images.x_test)} images but "
                        f"{len(images.y_test)} labels")
    if images.x_test is not None and images.x_test.shape[1:] != images.x.shape[1:]:
        raise DataError(f"data.test_path: test images are {images.x_test.shape[1:]} but training "
                        f"images are {images.x.shape[1:]}")


def describe(data: Dataset) -> dict[str, Any]:
    if isinstance(data, Table):
        return {"kind": "table", "rows": len(data.frame), "columns": len(data.features),
                "test_rows": None if data.test_frame is None else len(data.test_frame)}
    out = {"kind": "images", "rows": len(data.x), "shape": list(data.x.shape[1:]),
           "test_rows": None if data.x_test is None else len(data.x_test)}
    if data.files is not None:
        out["files"] = data.files
    return out


# ---------------------------------------------------------------------------------- image files
def _decoded(found: images_mod.ImageFiles, spec: DataSpec, shape: Any = None) -> Images:
    for note in found.notes:
        log.warn(note)
    decoded = images_mod.decode(found, spec.image_size, spec.strict, shape=shape, max_pixels=spec.max_image_pixels)
    labels = np.array(found.labels, dtype=object)[decoded.keep]
    return Images(x=decoded.x, y=labels.astype(str), files=decoded.report)


def _folder_images(path: Path, spec: DataSpec, base_dir: Path) -> Images:
    """An image folder (one subfolder per class); data.test_path, if given, is another."""
    if not path.is_dir():
        raise DataError(f"data.path {path}: format imagefolder needs a folder",
                        hint="one subfolder of images per class, named after the class")
    images = _decoded(images_mod.scan_folder(path, "data.path"), spec)
    if spec.test_path:
        test_path = resolve(spec.test_path, base_dir)
        if not test_path.is_dir():
            raise DataError(f"data.test_path {test_path}: expected an image folder like data.path")
        test = _decoded(images_mod.scan_folder(test_path, "data.test_path"), spec, shape=images.x.shape[1:])
        images.x_test, images.y_test = test.x, test.y
    return images


def _listed_images(frame: pd.DataFrame, csv: Path, spec: DataSpec, name: str, shape: Any = None) -> Images:
    found = images_mod.from_table(frame, csv, spec.image_column, spec.target, f"{name} {csv}")
    return _decoded(found, spec, shape=shape)
