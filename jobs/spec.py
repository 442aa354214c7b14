"""The job model: what to train.  The contract between the submitter and the runner.

A job file is YAML or JSON validated by these models; unknown keys are refused everywhere.  Only
`name`, `task` and `data` (with `path`, and `target` for tables) are required: every other field
has a default chosen to work for a small tabular dataset on a laptop.

Two ways to bring your own code: `model: {kind: module, source, class, args}` (your nn.Module,
qtrain's data, training and results), or `script: {path, args}` in place of `model` (your
training script, run in the task with qtrain's plumbing; `data` and `task` are then optional).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator,
                      model_validator)

from jobs import settings
from jobs.scriptspec import ScriptSpec, Spec

__all__ = ["ScriptSpec", "Spec"]  # and the sections below

Task = Literal["classification", "regression"]

# Data sources that ship with the packages (offline); anything else in data.path is a file.
BUILTIN_DATA = ("palmerpenguins", "sklearn:circles", "sklearn:digits", "sklearn:iris",
                "sklearn:wine", "sklearn:breast_cancer", "sklearn:diabetes")


def is_builtin_source(value: str) -> bool:
    """A built-in dataset or library backbone (`sklearn:...`, `torchvision:...`), not a path."""
    return value in BUILTIN_DATA or value.startswith(("sklearn:", "torchvision:"))


def max_trials() -> int:
    """QTRAIN_MAX_TRIALS: the most trials a sweep may make (default 1000)."""
    return settings.submission().max_trials


# --------------------------------------------------------------------------------------- data
class DataSpec(Spec):
    # Where the data is.  A file or folder path, relative to the job file, or a built-in that works
    # offline: `palmerpenguins`, `sklearn:circles`, `sklearn:digits`, `sklearn:iris`,
    # `sklearn:wine`, `sklearn:breast_cancer`, `sklearn:diabetes`.
    path: str = Field(min_length=1)
    # How to read `path`.  `auto` decides from the extension: .csv/.tsv/.txt, .parquet/.pq,
    # .npz, .npy, .pkl.gz (the `mnist.pkl.gz` layout), a folder of MNIST IDX files or of
    # `{train,test}_{images,labels}.npy`, or an `imagefolder`: one subfolder of image files
    # (PNG, JPEG, ...) per class, named after it.
    format: Literal["auto", "csv", "parquet", "npy", "npz", "idx", "mnist_pkl", "imagefolder"] = "auto"
    # A CSV that lists image files: the column naming each file, relative to the CSV's folder
    # (the label is `target`).
    image_column: str | None = None
    # Image files: the size each is brought to, one number (a square) or [height, width]: resized
    # on its shorter side, then centre-cropped.  Default: their own size, when they all share one.
    image_size: int | list[int] | None = None
    # Image files that cannot be decoded, or are over max_image_pixels: skipped with a warning
    # naming the first few (false), or refused (true).
    strict: bool = False
    # Image files over this many pixels: a JPEG is read reduced when image_size is smaller, the
    # others skipped or refused as `strict` says.
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    # The column to predict (tables).  Image arrays carry their labels and need none.
    target: str | None = None
    # Label taken from `target_shift` rows later (1 = "tomorrow's value" on daily rows).  The last
    # rows, which have no label, are dropped.  The naive baseline then predicts today's value.
    target_shift: int = Field(default=0, ge=0)
    # Columns to use as features; default: every column but the target and `drop`.
    features: list[str] | None = None
    # Columns never used as features (ids, dates, leaks).
    drop: list[str] = Field(default_factory=list)
    # Keep only the first N rows (after reading, before the shift): "the first 3 years".
    max_rows: int | None = Field(default=None, gt=0)
    # Labels file for a .npy images file (relative to the job file).
    labels: str | None = None
    # A separate test set (same format as `path`); when given, split.test_size is not used.
    test_path: str | None = None
    test_labels: str | None = None
    # Symbolic links inside a data folder: refused unless this is true (then what they point to
    # is sent, and a link leading out of the folder is named in a warning).  A link named by a
    # path field itself is followed: you named it.
    follow_symlinks: bool = False
    # Parameters for a built-in (e.g. sklearn:circles: n_samples, noise, factor, random_state).
    options: dict[str, Any] = Field(default_factory=dict)
    # CSV reading: the text encoding (utf-8, latin-1, cp1252, utf-16, ...), the separator
    # (auto-detected when None) and extra strings that mean "missing".
    encoding: str = "utf-8"
    sep: str | None = None
    na_values: list[str] = Field(default_factory=lambda: ["NA", "N/A", "na", "?", ""])

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> Any:
        ok = (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (
            isinstance(value, list) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
        if value is not None and not ok:
            raise ValueError(f"{value!r} is not a size: give one positive number (a square) or [height, width], "
                             "e.g. 64 or [48, 64]")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        import codecs

        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None


class PreprocessSpec(Spec):
    # Rows with a missing feature: `impute` them (numeric: `impute` below, text: the most frequent
    # value, plus a `<column>=<missing>` flag feature for every column that had gaps in training),
    # or `drop` them (the lessons' dropna; `predict` then leaves such rows without a prediction).
    missing: Literal["drop", "impute"] = "impute"
    # How numeric gaps are filled when imputing; categoricals always take their most frequent value.
    impute: Literal["median", "mean", "zero"] = "median"
    # Text/categorical feature columns: one-hot encode them or drop them.
    categorical: Literal["onehot", "drop"] = "onehot"
    # Categories seen fewer times than this in training are folded into one "other" column.
    min_frequency: int = Field(default=1, ge=1)
    # Numeric feature scaling, fitted on the training split only.
    scale: Literal["standard", "minmax", "none"] = "standard"
    # Regression: standardise the target while training (predictions are reported unscaled).
    scale_target: bool = True
    # Images: divide pixel values by this; `auto` = 255 for 8-bit data, the max for other ranges.
    pixel_scale: float | Literal["auto"] = "auto"
    # Images: subtract the training mean and divide by the training std (one value per channel).
    standardize_images: bool = False
    # Images, training batches only: random changes that the model learns to ignore.
    augment: "AugmentSpec" = Field(default_factory=lambda: AugmentSpec())


class AugmentSpec(Spec):
    # Mirror left-right, half of the time.
    flip: bool = False
    # Random resized crop: keep a random part of at least this fraction of the area (at an aspect
    # between 3/4 and 4/3), resized back to the image's size; 1 = off (e.g. 0.5).
    crop: float = Field(default=1.0, gt=0, le=1)
    # Colour jitter: brightness and contrast each scaled by a random factor in [1-j, 1+j]; 0 = off.
    jitter: float = Field(default=0.0, ge=0, lt=1)

    def active(self) -> bool:
        return self.flip or self.crop < 1 or self.jitter > 0


class SplitSpec(Spec):
    # Fraction of rows held out for the final test.
    test_size: float = Field(default=0.2, gt=0, lt=1)
    # Fraction of rows (of the whole) held out for validation: early stopping, the curves, and the
    # choice of a sweep's best trial.  0 trains on everything but the test split.
    val_size: float = Field(default=0.15, ge=0, lt=1)
    # Keep class proportions in every split (classification only).
    stratify: bool = True
    # Shuffle before splitting.  False keeps time order (last rows are the test set).
    shuffle: bool = True
    # The seeds' fixed split.
    random_state: int = 0

    @model_validator(mode="after")
    def _sizes(self) -> "SplitSpec":
        if self.test_size + self.val_size >= 1:
            raise ValueError("test_size + val_size must leave rows for training (sum below 1)")
        return self


# -------------------------------------------------------------------------------------- models
Activation = Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "silu"]


class MLPSpec(Spec):
    kind: Literal["mlp"] = "mlp"
    # Widths of the hidden layers; [] is a linear model.
    hidden: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [64, 64])
    activation: Activation = "relu"
    # Dropout after each hidden layer.
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # Batch normalisation after each hidden layer.
    batchnorm: bool = False
    # Batch normalisation of the inputs (the weather lesson's first layer).
    input_batchnorm: bool = False


class ConvBlock(Spec):
    filters: int = Field(gt=0)
    kernel: int = Field(default=3, gt=0)
    # Zero padding: an int, or `same` to keep the spatial size.
    padding: int | Literal["same"] = 0
    # Max-pool size after the block (0 or 1 = none).
    pool: int = Field(default=2, ge=0)
    # Dropout after the block; None takes the model's `dropout`.
    dropout: float | None = Field(default=None, ge=0, lt=1)
    batchnorm: bool = False


class CNNSpec(Spec):
    kind: Literal["cnn"] = "cnn"
    # Explicit conv blocks.  When omitted, `n_layers` blocks are made from filters/kernel/pool.
    blocks: list[ConvBlock] | None = None
    n_layers: int = Field(default=2, gt=0)
    filters: int = Field(default=32, gt=0)
    kernel: int = Field(default=3, gt=0)
    padding: int | Literal["same"] = "same"
    pool: int = Field(default=2, ge=0)
    batchnorm: bool = False
    # Dropout after each conv block that does not set its own (the lesson's regulariser).
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # Pooling of the last feature map before the dense layers: none (flatten), max or avg.
    global_pool: Literal["none", "max", "avg"] = "none"
    # Hidden dense layers after the conv blocks.
    dense: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [64])
    dense_dropout: float = Field(default=0.0, ge=0, lt=1)
    activation: Activation = "relu"

    def conv_blocks(self) -> list[ConvBlock]:
        if self.blocks is not None:
            return self.blocks
        return [
            ConvBlock(filters=self.filters, kernel=self.kernel, padding=self.padding,
                      pool=self.pool, batchnorm=self.batchnorm)
            for _ in range(self.n_layers)
        ]


class TransferSpec(Spec):
    kind: Literal["transfer"] = "transfer"
    # The pretrained feature extractor: the `model.pt` of an earlier qtrain run (its layers up to
    # the last hidden one), or `torchvision:densenet121` (needs torchvision and `weights`).
    backbone: str = Field(min_length=1)
    # torchvision weights file (.pth) for a torchvision backbone, relative to the job file.
    weights: str | None = None
    # Freeze the backbone and train only the head (the lesson's choice).
    freeze: bool = True
    # Images are resized to this square size before the backbone (the lesson upscales to 160).
    # Default: the backbone's own input size.
    resize: int | None = Field(default=None, gt=0)
    # The head: batchnorm, dense layers, dropout, then the output layer.
    head: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [50])
    head_batchnorm: bool = True
    dropout: float = Field(default=0.5, ge=0, lt=1)
    activation: Activation = "relu"


CLASS_REF = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?$"


class ModuleSpec(Spec):
    """Your own `torch.nn.Module`, trained by qtrain as a built-in model is (data, splits, early
    stopping, checkpoints, metrics, predict, sweeps over `model.args.*`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True,
                              serialize_by_alias=True)
    kind: Literal["module"] = "module"
    # The code: a .py file, or a folder of them (a package), relative to the job file.
    source: str = Field(min_length=1)
    # The class: `Net` in the file; in a folder `module:Net`, `package.module:Net` or
    # `package.module.Net`.
    class_: str = Field(alias="class", min_length=1)
    # Keyword arguments of its constructor.  Those it asks for by name and the job does not give
    # are filled in from the data: in_features (a table's width), input_shape (an image's
    # [channels, height, width]), in_channels, num_classes / n_classes (classification),
    # out_features / n_outputs (the outputs: classes, or 1 for regression).
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("class_")
    @classmethod
    def _class(cls, value: str) -> str:
        if not re.fullmatch(CLASS_REF, value):
            raise ValueError(f"{value!r} is not a class reference: give Net, module:Net or "
                             f"package.module:Net (Python names)")
        return value


def _model_kind(value: Any) -> str:
    """`kind` picks the model; a model section without one is an MLP."""
    kind = value.get("kind", "mlp") if isinstance(value, dict) else getattr(value, "kind", "mlp")
    return kind if kind in ("mlp", "cnn", "transfer", "module") else "unknown"


ModelSpec = Annotated[
    Union[Annotated[MLPSpec, Tag("mlp")], Annotated[CNNSpec, Tag("cnn")],
          Annotated[TransferSpec, Tag("transfer")], Annotated[ModuleSpec, Tag("module")]],
    Discriminator(_model_kind, custom_error_type="model_kind",
                  custom_error_message="model.kind must be mlp, cnn, transfer or module"),
]


# ------------------------------------------------------------------------------------ training
class EarlyStoppingSpec(Spec):
    # `val_loss`, or `val_<metric>` (val_accuracy, val_f1_macro, val_rmse, ...).
    monitor: str = "val_loss"
    patience: int = Field(default=10, gt=0)
    min_delta: float = Field(default=0.0, ge=0)
    # Put back the weights of the best epoch at the end.
    restore_best: bool = True


class TrainSpec(Spec):
    epochs: int = Field(default=50, gt=0)
    # Samples per step, `full` for full-batch gradient descent, or `auto`: 64, and for a table
    # with more training rows 128 (above 10,240) or 256 (above 20,480), about 160 steps an epoch:
    # the same or better test metrics on large tables, in a third to a quarter of the time
    # (bench/loop.py).  Images: 64.  metrics.json records the batch size used.
    batch_size: Annotated[int, Field(gt=0)] | Literal["full", "auto"] = "auto"
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    # Learning-rate schedule: constant, cosine decay to 0, or halve when the monitored value stalls.
    schedule: Literal["constant", "cosine", "plateau"] = "constant"
    # `auto`: cross_entropy for classification, mse for regression.
    loss: Literal["auto", "cross_entropy", "mse", "mae", "huber"] = "auto"
    # Class weights against imbalance: none, `balanced` (n / (k * count)), or {class: weight}.
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    # Left out: the defaults above (val_loss, patience 10, best weights restored) whenever the job
    # has a validation split; `null` trains every epoch.
    early_stopping: EarlyStoppingSpec | None = None
    # Choose on held-out rows, then train the final model on train + validation (runner/refit.py):
    # `auto`: a table of at most 2,000 train + validation rows whose job leaves early_stopping out
    # is cross-validated (5 folds) for its epochs, and, when the job also leaves `model` out, for
    # the MLP or the linear model, then refit on all of them; `true`: larger tables too (epochs
    # chosen by early stopping on the validation split, then refit); `false`: train once on the
    # training split, keeping the best validation epoch's weights.
    refit: bool | Literal["auto"] = "auto"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # Mixed precision (bf16/fp16 autocast): `auto` turns it on for CUDA only.
    mixed_precision: bool | Literal["auto"] = "auto"
    # Write checkpoint.pt every N epochs (0: only at the end).
    checkpoint_every: int = Field(default=0, ge=0)
    # Also write it when this many minutes have passed since the last one (0: off), but never so
    # often that saving costs more than 2% of the training time.  A cancelled, killed or preempted
    # task then still brings home recent weights (Qarnot uploads results on cancellation).
    checkpoint_minutes: float = Field(default=5.0, ge=0)
    # CPU threads for torch; None = all cores.
    threads: int | None = Field(default=None, gt=0)


class ResourcesSpec(Spec):
    # `cpu`, `gpu`, or a Qarnot profile name (see `qtrain profiles`).
    profile: str = "cpu"
    # The runner image, `[registry/]repo:tag` or `...@sha256:digest`, that Qarnot pulls
    # (DOCKER_REPO / DOCKER_TAG).
    image: str = "qtrain/runner:latest"
    # The packages your code needs beyond the runner's: a requirements file (relative to the job
    # file) or a list of requirement lines.  The docker executor and Qarnot run the runner image
    # plus them (`qtrain image build --requirements`); the process executor puts them on the path.
    requirements: str | list[Annotated[str, Field(min_length=1)]] | None = None
    # End a task still running after this many minutes, its results and last checkpoint uploaded (the
    # run fails, `qtrain resume` continues it): a script stuck in a loop cannot spend credits for ever.
    # The runner stops training before an epoch that would end past it, or sends a script SIGTERM
    # (SIGKILL STOP_GRACE_SECONDS later); the backend ends the task if it still runs a margin later.
    max_minutes: float | None = Field(default=None, gt=0)
    # One training over nodes (instances of a cluster profile) x procs_per_node (`auto`: one a GPU,
    # else one) under torchrun (runner.distributed); train.batch_size is per process.
    nodes: int = Field(default=1, ge=1)
    procs_per_node: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"

    def spread(self) -> bool:  # several processes asked for (`auto` counts the node's GPUs later)
        return self.nodes > 1 or self.procs_per_node not in ("auto", 1)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        from jobs.imageref import parse_image

        parse_image(value)  # ValueError: pydantic reports it against resources.image
        return value


class Job(Spec):
    # Short name used for the task and the results store.
    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    task: Task | None = None  # required but for a script job
    description: str = ""
    data: DataSpec | None = None  # required but for a script job (then: the files the script reads)
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    model: ModelSpec = Field(default_factory=MLPSpec)
    # Your own training script, in place of `model` (see ScriptSpec).
    script: ScriptSpec | None = None
    train: TrainSpec = Field(default_factory=TrainSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    # Grid of dotted overrides, e.g. {"model.n_layers": [1, 2], "model.dropout": [0.2, 0.5]}.
    # Every combination is one trial; on Qarnot one instance per trial ($INSTANCE_ID).
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    # the fields the job left out that validation filled in with a default that depends on others
    _filled: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def filled(self, dotted: str) -> bool:
        """Whether `dotted` (e.g. train.early_stopping) holds the default validation filled in, the
        job having left it out (a job that writes the default value out has chosen it)."""
        return dotted in self._filled

    @field_validator("sweep")
    @classmethod
    def _sweep_values(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"sweep '{key}' has no values")
            if key.split(".")[0] in ("name", "sweep", "resources"):
                raise ValueError(f"sweep '{key}': only data/preprocess/split/model/train/script can vary")
        trials, limit = math.prod(len(v) for v in value.values()), max_trials()
        if trials > limit:  # refused before a single combination is made
            sizes = " x ".join(str(len(v)) for v in value.values())
            raise ValueError(f"the sweep makes {trials:,} trials ({sizes}), more than the limit of {limit:,}: "
                             f"sweep fewer values, or raise QTRAIN_MAX_TRIALS")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Job":
        if self.script is not None:
            return self._script_job()
        if self.task is None:
            raise ValueError("task: required field is missing (classification or regression)")
        if self.data is None:
            raise ValueError("data: required field is missing (at least data.path)")
        if "early_stopping" not in self.train.model_fields_set and self.split.val_size > 0:
            self.train.early_stopping = EarlyStoppingSpec()  # the default: watch the held-out split
            self._filled = self._filled | {"train.early_stopping"}
        es = self.train.early_stopping
        if es is not None and es.monitor.startswith("val") and self.split.val_size == 0:
            raise ValueError(
                "train.early_stopping monitors the validation split: set split.val_size "
                "(e.g. 0.15) or remove early_stopping")
        if self.train.schedule == "plateau" and self.split.val_size == 0:
            raise ValueError("train.schedule plateau needs a validation split: set split.val_size")
        loss = self.train.loss
        if self.task == "regression" and loss == "cross_entropy":
            raise ValueError("train.loss cross_entropy is for classification; use mse, mae or huber")
        if self.task == "classification" and loss in ("mse", "mae", "huber"):
            raise ValueError(f"train.loss {loss} is for regression; use cross_entropy or auto")
        if self.task == "regression" and self.train.class_weights != "none":
            raise ValueError("train.class_weights only applies to classification")
        return self

    @model_validator(mode="after")
    def _distributed(self) -> "Job":
        if (r := self.resources).spread() and (self.sweep or self.train.refit is True):
            raise ValueError(f"sweep with resources.nodes {r.nodes} x procs_per_node {r.procs_per_node}: its trials "
                             f"run side by side, one instance each; sweep on one node" if self.sweep else
                             "train.refit: true trains twice in one process, which a distributed run does not; "
                             "remove it (auto leaves a distributed run as it is)")
        return self

    def _script_job(self) -> "Job":
        """A script trains with its own code: qtrain's model, preprocessing and splits do not apply,
        and of `train` only the seed, device and threads (which the script is told)."""
        given = [name for name in ("model", "preprocess", "split") if name in self.model_fields_set]
        given += [f"train.{name}" for name in self.train.model_fields_set if name not in SCRIPT_TRAIN]
        if given:
            raise ValueError(f"{', '.join(given)}: a script job trains with its own code, so qtrain's "
                             f"{'settings' if len(given) > 1 else 'setting'} would not apply; remove "
                             f"{'them' if len(given) > 1 else 'it'}, or give the script an argument (script.args)")
        if self.data is not None and self.data.target is not None:
            raise ValueError("data.target: a script reads its own data; remove it (the script's arguments can "
                             "name its target column)")
        return self


STOP_GRACE_SECONDS = 15.0  # resources.max_minutes: from SIGTERM to SIGKILL, for a script's last checkpoint
SCRIPT_TRAIN = ("seed", "device", "threads")  # what qtrain hands a script (the rest is the script's)
AUTO_BATCH = ((20_480, 256), (10_240, 128))  # training rows above which a table gets a batch


def procs_for(procs_per_node: int | str, gpus: int = 0) -> int:  # `auto`: one a GPU (`gpus`), else 1
    return procs_per_node if isinstance(procs_per_node, int) else max(1, gpus)


def resolve_batch_size(batch_size: int | str, n: int, images: bool = False) -> int:
    """The samples per step: `full` -> n; `auto` -> 64, or for a large table 128 / 256 (see
    TrainSpec.batch_size); a number -> itself (at most n)."""
    if batch_size == "full":
        return max(n, 1)
    if batch_size == "auto":
        batch_size = 64
        if not images:
            batch_size = next((bs for rows, bs in AUTO_BATCH if n > rows), 64)
    return max(1, min(int(batch_size), n))
