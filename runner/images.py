"""Image files as data: a folder with one subfolder per class (torchvision's ImageFolder layout),
or a CSV whose column names image files (`data.image_column`, relative to the CSV's folder).

Files are decoded with Pillow to uint8 (C, H, W), a batch at a time as training needs them
(`runner.stream`): grayscale when every image is, RGB otherwise; brought to `data.image_size`
(resized on the shorter side, then centre-cropped), or kept at their own size when they all share
one; 16-bit pixels scaled to 8 bits and EXIF orientation applied (`runner.imagefile`).  A file
that cannot be decoded, or is over `data.max_image_pixels`, is skipped with a warning naming the
first few, or refused with `data.strict: true`: never a crash in epoch 7.
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
from runner.imagefile import TooLarge, open_image, upright_size, within
from runner.stream import ImageSet, survey, why

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
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
    x: ImageSet  # the readable files, decoded as they are needed (runner.stream)
    keep: np.ndarray  # indices into the ImageFiles that can be read
    report: dict[str, Any]


def _size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return image_size, image_size
    return int(image_size[0]), int(image_size[1])


def decode(images: ImageFiles, image_size: int | Sequence[int] | None, strict: bool = False,
           shape: Sequence[int] | None = None, max_pixels: int | None = None) -> Decoded:
    """Every file's header here, then every file decoded once in workers (`runner.stream.survey`),
    keeping only its pixel sums: what can be read, at which size and channels, and what cannot.
    `shape` (C, H, W): a trained model's, which predictions must match.  `max_pixels`: the most
    pixels a file may have (`data.max_image_pixels`; a larger JPEG is read reduced to the size)."""
    from PIL import Image, UnidentifiedImageError

    errors = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)
    names = images.names()
    bad: list[tuple[str, str]] = []
    big: list[tuple[str, TooLarge]] = []
    heads: list[tuple[int, str, tuple[int, int]]] = []
    target = (int(shape[1]), int(shape[2])) if shape is not None else _size(image_size)
    for i, path in enumerate(images.files):
        try:
            with open_image(path) as img:
                head = (i, img.mode, upright_size(img))
                within(img, target, max_pixels)
                heads.append(head)
        except TooLarge as exc:
            big.append((names[i], exc))
        except errors as exc:
            bad.append((names[i], why(exc)))
    _too_large(images.where, big, strict, target is not None)
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
    readable = [i for i, _, _ in heads]
    sums, unreadable, cache = survey([images.files[i] for i in readable], channels, size, max_pixels)
    lost = {j for j, _ in unreadable}
    bad += [(names[readable[j]], reason) for j, reason in unreadable]
    keep = [i for j, i in enumerate(readable) if j not in lost]
    everything = [(name, str(exc)) for name, exc in big] + bad
    if (bad and strict) or not keep:
        shown = everything if not keep else bad
        first = "; ".join(f"{name} ({reason})" for name, reason in shown[:SHOWN])
        raise DataError(f"{images.where}: {len(shown)} file(s) cannot be read as images: {first}",
                        hint="remove or replace them" + (", or set data.strict: false to skip them" if strict
                                                         else ", or raise data.max_image_pixels" if big else ""))
    if bad:
        first = "; ".join(f"{name} ({reason})" for name, reason in bad[:SHOWN])
        log.warn(f"{images.where}: skipped {len(bad)} unreadable file(s): {first}"
                 + (" ..." if len(bad) > SHOWN else ""))
    bad = everything
    sizes_found = Counter(f"{h}x{w}" for _, _, (w, h) in heads)
    report = {"image_size": list(size), "channels": channels, "sizes_found": dict(sizes_found.most_common(5)),
              "distinct_sizes": len(sizes_found), "unreadable": len(bad),
              "unreadable_files": [name for name, _ in bad[:SHOWN]]}
    kept = np.array([j for j in range(len(readable)) if j not in lost], dtype=np.int64)
    return Decoded(ImageSet([images.files[i] for i in keep], channels, size, sums[kept], cache,
                            kept if cache is not None else None, max_pixels), np.array(keep, dtype=np.int64), report)


def _too_large(where: str, big: list[tuple[str, TooLarge]], strict: bool, sized: bool) -> None:
    """Files over data.max_image_pixels: refused when strict, else skipped with a warning."""
    if not big:
        return
    name, exc = big[0]
    more = f" (and {len(big) - 1} more)" if len(big) > 1 else ""
    if strict:
        raise DataError(f"{where}: {name} has {exc.pixels:,} pixels, over data.max_image_pixels "
                        f"({exc.limit:,}){more}", hint="raise data.max_image_pixels to read it whole"
                        + ("" if sized else ", or set data.image_size (a JPEG is then read reduced)")
                        + ", or set data.strict: false to skip it")
    shown = ", ".join(f"{n} ({e.pixels:,} pixels)" for n, e in big[:SHOWN])
    log.warn(f"{where}: skipped {len(big)} image(s) over data.max_image_pixels ({exc.limit:,}): {shown}"
             + (" ..." if len(big) > SHOWN else "") + "; raise it to read them")
