"""Image files as data: a folder with one subfolder per class (torchvision's ImageFolder layout),
or a CSV whose column names image files (`data.image_column`, relative to the CSV's folder).

Files are decoded with Pillow to uint8 (N, C, H, W): grayscale when every image is, RGB otherwise;
brought to `data.image_size` (resized on the shorter side, then centre-cropped), or kept at their
own size when they all share one.  A file that cannot be decoded is skipped with a warning naming
the first few, or refused with `data.strict: true`: never a crash in epoch 7.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jobs.errors import DataError
from jobs.files import listed_file
from jobs.suggest import suggestion
from runner import log

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
SHOWN = 3  # unreadable files named in a message


@dataclass
class ImageFiles:
    """Image files and their labels (None: files to predict on), before decoding."""

    files: list[Path]
    labels: list[str] | None
    where: str  # the field and path, for messages
    root: Path
    notes: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return [f.relative_to(self.root).as_posix() for f in self.files]


def is_image(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES and not path.name.startswith(".")


def _images_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def is_image_folder(path: Path) -> bool:
    """A folder with at least one subfolder that holds image files (the layout `auto` detects)."""
    return path.is_dir() and any(d.is_dir() and not d.name.startswith(".") and any(
        is_image(p) for p in d.rglob("*")) for d in path.iterdir())


def scan_folder(path: Path, where: str) -> ImageFiles:
    """One class per subfolder (its name), every image file below it."""
    files: list[Path] = []
    labels: list[str] = []
    for sub in sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")):
        found = _images_below(sub)
        files += found
        labels += [sub.name] * len(found)
    if not files:
        raise DataError(f"{where} {path}: no class subfolders holding images",
                        hint="put each class's images in a subfolder named after it (cats/1.png, dogs/2.jpg)")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{where} {path}: only one class ({classes[0]}) in the folder",
                        hint="classification needs at least two classes: one subfolder each")
    out = ImageFiles(files, labels, f"{where} {path}", path)
    loose = [p.name for p in path.iterdir() if p.is_file() and is_image(p)]
    if loose:
        out.notes.append(f"{where} {path}: {len(loose)} image(s) at the top of the folder belong to no "
                         f"class and were left out ({', '.join(sorted(loose)[:SHOWN])})")
    return out


def files_of_folder(path: Path) -> ImageFiles:
    """Every image file below `path`, to predict on (no labels)."""
    files = _images_below(path)
    if not files:
        raise DataError(f"{path}: no image files in the folder", hint=f"image files end in {', '.join(sorted(SUFFIXES))}")
    return ImageFiles(files, None, str(path), path)


def from_table(frame: Any, csv: Path, column: str, target: str | None, where: str) -> ImageFiles:
    """The files a CSV's `column` names, relative to the CSV's folder, and their labels."""
    if column not in frame.columns:
        raise DataError(f"data.image_column '{column}' is not a column of {csv}{suggestion(column, frame.columns)}",
                        hint=f"its columns: {', '.join(map(str, frame.columns[:12]))}")
    if target is None or target not in frame.columns:
        raise DataError(f"data.target {target!r}: not a column of {csv}"
                        f"{suggestion(target or '', frame.columns)}", hint="name the column holding each image's label")
    root = csv.parent.resolve()
    files, labels = [], []
    why: dict[str, list[str]] = {"empty": [], "absolute": [], "outside": [], "missing": []}
    for value, label in zip(frame[column].tolist(), frame[target].tolist()):
        path = listed_file(root, value)  # the rule packaging follows: what is valid here is sent
        if isinstance(path, str):
            why[path].append(str(value).strip())
            continue
        files.append(path)
        labels.append(str(label))
    absolute, outside, missing, empty = why["absolute"], why["outside"], why["missing"], len(why["empty"])
    total = len(frame)
    if absolute or outside:
        bad = absolute or outside
        why = "absolute paths" if absolute else "paths that lead out of the CSV's folder"
        raise DataError(f"data.image_column '{column}': {len(bad)} of {total} rows hold {why} (first: {bad[0]})",
                        hint=f"write each path relative to {root} and keep the images inside it: "
                             "only that folder is sent")
    if missing:
        raise DataError(f"data.image_column '{column}': {len(missing)} of {total} files do not exist "
                        f"(first: {missing[0]})", hint=f"paths are relative to the CSV's folder, {root}")
    if not files:
        raise DataError(f"data.image_column '{column}': no image files named in {csv}")
    out = ImageFiles(files, labels, where, root)
    if empty:
        out.notes.append(f"data.image_column '{column}': {empty} row(s) name no file and were left out")
    return out


@dataclass
class Decoded:
    x: np.ndarray  # uint8 (N, C, H, W)
    keep: np.ndarray  # indices into the ImageFiles that were decoded
    report: dict[str, Any]


def _size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return image_size, image_size
    return int(image_size[0]), int(image_size[1])


def decode(images: ImageFiles, image_size: int | Sequence[int] | None, strict: bool = False,
           shape: Sequence[int] | None = None) -> Decoded:
    """Decode every file.  `shape` (C, H, W): a trained model's, which predictions must match."""
    from PIL import Image, UnidentifiedImageError

    errors = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)
    names = images.names()
    bad: list[tuple[str, str]] = []
    heads: list[tuple[int, str, tuple[int, int]]] = []
    for i, path in enumerate(images.files):
        try:
            with Image.open(path) as img:
                heads.append((i, img.mode, img.size))
        except errors as exc:
            bad.append((names[i], _why(exc)))
    if shape is not None:
        channels, size = int(shape[0]), (int(shape[1]), int(shape[2]))
    else:
        channels = 1 if heads and all(mode in GRAY_MODES for _, mode, _ in heads) else 3
        size = _size(image_size)
        if size is None:
            sizes = Counter((h, w) for _, _, (w, h) in heads)
            if len(sizes) > 1:
                common = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common(SHOWN))
                raise DataError(f"{images.where}: the images come in {len(sizes)} sizes ({common} ...)",
                                hint="set data.image_size (one number for a square, or [height, width]): "
                                     "each image is resized on its shorter side, then centre-cropped")
            size = next(iter(sizes)) if sizes else (1, 1)
    x = np.empty((len(heads), channels, size[0], size[1]), dtype=np.uint8)
    keep: list[int] = []
    for i, _, _ in heads:
        try:
            with Image.open(images.files[i]) as img:
                x[len(keep)] = _fit(img, channels, size)
            keep.append(i)
        except errors as exc:
            bad.append((names[i], _why(exc)))
    if bad:
        first = "; ".join(f"{name} ({why})" for name, why in bad[:SHOWN])
        if strict or not keep:
            raise DataError(f"{images.where}: {len(bad)} file(s) cannot be read as images: {first}",
                            hint="remove or replace them" + (", or set data.strict: false to skip them"
                                                             if strict else ""))
        log.warn(f"{images.where}: skipped {len(bad)} unreadable file(s): {first}"
                 + (" ..." if len(bad) > SHOWN else ""))
    sizes_found = Counter(f"{h}x{w}" for _, _, (w, h) in heads)
    report = {"image_size": list(size), "channels": channels, "sizes_found": dict(sizes_found.most_common(5)),
              "distinct_sizes": len(sizes_found), "unreadable": len(bad),
              "unreadable_files": [name for name, _ in bad[:SHOWN]]}
    return Decoded(x[:len(keep)], np.array(keep, dtype=np.int64), report)


def _why(exc: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read"
    return f"{type(exc).__name__}: {str(exc)[:60]}"


def _fit(img: Any, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as (C, H, W) uint8: converted, resized on the shorter side, centre-cropped."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    height, width = size
    w, h = img.size
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        new = (max(width, round(w * scale)), max(height, round(h * scale)))
        img = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (new[0] - width) // 2, (new[1] - height) // 2
        img = img.crop((left, top, left + width, top + height))
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
