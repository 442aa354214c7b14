"""One image file read as cameras and scanners save it (issue 36): the decoding that training,
`qtrain check` and `qtrain predict` share.

- 16-bit, 32-bit and float pixels (Pillow's modes I;16*, I, F: a scanner's grayscale, a TIFF) are
  scaled to 0..255 over their type's full range, never clipped, and never stretched to each
  image's own min..max: 16-bit divided by 257; I by 257 too when its values fit 16 bits (Pillow
  reads 16-bit data as I), else over 32 bits; F from 0..1 when its values lie there, else as I.
  (A 16-bit-per-channel RGB PNG Pillow already reads as 8-bit RGB.)
- EXIF orientation is applied (`ImageOps.exif_transpose`), so a portrait photo is portrait: in its
  pixels and in the size `upright_size` reports from the header.
- An image over `limit` pixels (`data.max_image_pixels`) is `TooLarge`, unless it is a JPEG that
  Pillow's `draft()` decodes reduced (by up to 8) to at least the target size and under the
  limit.  Pillow's own limit (`Image.MAX_IMAGE_PIXELS`, its DecompressionBombWarning) is lifted
  while a file is opened: this one takes its place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ORIENTATION = 0x0112  # the EXIF tag
SIDEWAYS = frozenset({5, 6, 7, 8})  # orientations that swap width and height
FORMATS = {".png": ["PNG"], ".jpg": ["JPEG"], ".jpeg": ["JPEG"]}


class TooLarge(ValueError):
    """An image over data.max_image_pixels."""

    def __init__(self, pixels: int, limit: int):
        self.pixels, self.limit = pixels, limit
        super().__init__(f"{pixels:,} pixels, over data.max_image_pixels ({limit:,})")


def open_image(path: Path) -> Any:
    """Pillow's image of `path`, tried first with the decoder its suffix names (asking each
    decoder in turn costs 20 us a file), then with all of them (a JPEG named .png); with Pillow's
    pixel limit lifted (`within` applies data.max_image_pixels)."""
    from PIL import Image, UnidentifiedImageError

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        formats = FORMATS.get(path.suffix.lower())
        if formats:
            try:
                return Image.open(path, formats=formats)
            except UnidentifiedImageError:
                pass
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def orientation(img: Any) -> int:
    """The EXIF orientation (1: as stored), read from the header only: a PNG's eXIf chunk after
    its pixels is not seen (nor is it by browsers), where looking for it would decode the file."""
    if "exif" not in img.info and img.format != "TIFF":
        return 1
    try:
        return int(img.getexif().get(ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a malformed EXIF block: the image as stored
        return 1


def upright_size(img: Any) -> tuple[int, int]:
    """(width, height) as the image is shown, its EXIF orientation applied."""
    w, h = img.size
    return (h, w) if orientation(img) in SIDEWAYS else (w, h)


def within(img: Any, size: tuple[int, int] | None, limit: int | None) -> None:
    """Raise TooLarge if `img` (opened, not decoded) is over `limit` pixels, unless it is a JPEG
    and `size` (height, width) lets `draft()` reduce it under the limit: it is then drafted."""
    w, h = img.size
    if limit is None or w * h <= limit:
        return
    if size is not None and img.format in ("JPEG", "MPO"):
        height, width = size
        img.draft(None, (height, width) if orientation(img) in SIDEWAYS else (width, height))
        if img.size[0] * img.size[1] <= limit:
            return
    raise TooLarge(w * h, limit)


def read(path: Path, channels: int, size: tuple[int, int], limit: int | None = None) -> np.ndarray:
    """The one decoding of an image file: (C, H, W) uint8, upright, at `size` (height, width)."""
    from PIL import ImageOps

    with open_image(path) as img:
        within(img, size, limit)
        upright = ImageOps.exif_transpose(img) if orientation(img) != 1 else img
        return fit(upright, channels, size)


def _full_range(img: Any) -> float | None:
    """The range a 16-bit, 32-bit or float image's values are scaled from (None: 8-bit)."""
    if img.mode.startswith("I;16"):
        return 65535.0
    if img.mode not in ("I", "F"):
        return None
    top = float(img.getextrema()[1])
    ranges = (1.0, 65535.0, 2.0 ** 32 - 1) if img.mode == "F" else (65535.0, 2.0 ** 32 - 1)
    return next((r for r in ranges if top <= r), ranges[-1])


def fit(img: Any, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as (C, H, W) uint8: converted, resized on the shorter side, centre-cropped; a
    16-bit, 32-bit or float one resized as it is (mode F), then scaled to 0..255."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    full = _full_range(img)
    if full is not None:
        img = img.convert("F") if img.mode != "F" else img
    elif img.mode != mode:
        img = img.convert(mode)
    height, width = size
    w, h = img.size
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        new = (max(width, round(w * scale)), max(height, round(h * scale)))
        img = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (new[0] - width) // 2, (new[1] - height) // 2
        img = img.crop((left, top, left + width, top + height))
    if full is not None:
        gray = np.clip(np.rint(np.asarray(img, dtype=np.float32) * np.float32(255.0 / full)), 0, 255)
        return np.repeat(gray.astype(np.uint8)[None], channels, axis=0)
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
