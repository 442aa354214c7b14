"""Image files decoded in DataLoader workers and read back a few batches at a time: memory that
does not grow with the number of images (issue 25, part 2).

- `ImageSet`: the readable files of a dataset at one size and channel count, with each image's
  pixel sums (what standardisation needs), found by `survey`: one pass that decodes every file
  once in the workers and names the files that cannot be read.  The decoded pixels go to a
  `PixelCache`, a temporary file on disk (when it takes at most a quarter of the free space), from
  which each epoch reads them back (a read costs a few microseconds an image, Pillow's decoding
  about a hundred); without room on disk, each epoch decodes the files again.
- `ImageSplit`: a split of an ImageSet with its fitted preprocessing, as the trainer sees it: a
  shape, a length, `split[i:j]` (a batch decoded here), and `batches(order, size)`, the batches of
  an epoch read ahead from the cache by a thread or, without a cache, decoded ahead in
  `workers()` processes, pinned and kept alive between epochs on a GPU.

Each file is decoded by `runner.imagefile.read` (16-bit pixels scaled, EXIF orientation applied,
data.max_image_pixels kept).  The pixels are only ever held in memory a few batches at a time; the in-memory arrays of `.npy`, `.npz` and
IDX data stay on the device as before (`runner.train.Tensors`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from runner.imagefile import TooLarge, read

CHUNK = 256  # files a worker decodes per request when surveying
PREFETCH = 4  # batches each worker decodes ahead


def decode_files(files: Sequence[Path], channels: int, size: tuple[int, int],
                 max_pixels: int | None = None) -> np.ndarray:
    """uint8 (N, C, H, W) of `files`; a file that cannot be read now (it could when surveyed: it
    changed since) is a DataError naming it."""
    from jobs.errors import DataError

    out = np.empty((len(files), channels, size[0], size[1]), dtype=np.uint8)
    for k, path in enumerate(files):
        try:
            out[k] = read(path, channels, size, max_pixels)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: could be read when the data was loaded, and cannot now ({exc})",
                            hint="leave the data folder alone while a run reads it") from exc
    return out


def workers(n_images: int, batch: int, cuda: bool = False) -> int:
    """Decoding processes for `n_images`: none for a few batches (forking costs more); on a GPU
    all cores but one, up to 8; on a CPU, which trains on the same cores, one per four cores."""
    if n_images <= 2 * batch:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1)) if cuda else max(1, cores // 4)


# ------------------------------------------------------------------------------- pixel cache
class PixelCache:
    """Decoded images, `row_bytes` each, in a temporary file read with pread (the page cache holds
    it, never this process's memory); opened by path in each worker; removed when dropped."""

    def __init__(self, rows: int, row_shape: tuple[int, int, int]):
        import tempfile
        import weakref

        self.row_shape = row_shape
        self.row_bytes = int(np.prod(row_shape))
        fd, name = tempfile.mkstemp(prefix="qtrain-pixels-", suffix=".u8")
        os.ftruncate(fd, rows * self.row_bytes)
        os.close(fd)
        self.path = name
        self._fd: int | None = None
        self._pid = 0
        self._remove = weakref.finalize(self, _remove, name, os.getpid())

    @staticmethod
    def fits(rows: int, row_shape: tuple[int, int, int]) -> bool:
        import shutil
        import tempfile

        try:
            free = shutil.disk_usage(tempfile.gettempdir()).free
        except OSError:
            return False
        return rows * int(np.prod(row_shape)) <= free // 4

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDWR), os.getpid()
        return self._fd

    def write(self, first: int, pixels: np.ndarray) -> None:
        os.pwrite(self._handle(), np.ascontiguousarray(pixels).tobytes(), first * self.row_bytes)

    def read(self, rows: Sequence[int]) -> np.ndarray:
        fd, size = self._handle(), self.row_bytes
        out = np.empty((len(rows), *self.row_shape), dtype=np.uint8)
        flat = out.reshape(len(rows), size)
        for k, row in enumerate(rows):
            flat[k] = np.frombuffer(os.pread(fd, size, int(row) * size), dtype=np.uint8)
        return out

    def __getstate__(self) -> dict[str, Any]:  # to a worker: the path, not this process's handle
        return {"row_shape": self.row_shape, "row_bytes": self.row_bytes, "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _fd=None, _pid=0)


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:  # not from a forked worker that drops its copy
        try:
            os.unlink(path)
        except OSError:
            pass


# ------------------------------------------------------------------------------------ survey
class _Chunks(torch.utils.data.Dataset):
    def __init__(self, files: Sequence[Path], channels: int, size: tuple[int, int], max_pixels: int | None):
        self.files, self.channels, self.size, self.max_pixels = list(files), channels, size, max_pixels

    def __len__(self) -> int:
        return (len(self.files) + CHUNK - 1) // CHUNK

    def __getitem__(self, k: int) -> tuple[int, np.ndarray, list[tuple[int, str]], np.ndarray]:
        """(first index, per image (C, 2) sums of pixels and of their squares, unreadable (index,
        why), the pixels: uint8 (n, C, H, W), zero for an unreadable file)."""
        from PIL import Image

        start = k * CHUNK
        part = self.files[start:start + CHUNK]
        sums = np.zeros((len(part), self.channels, 2), dtype=np.float64)
        pixels = np.zeros((len(part), self.channels, *self.size), dtype=np.uint8)
        bad: list[tuple[int, str]] = []
        for j, path in enumerate(part):
            try:
                pixels[j] = read(path, self.channels, self.size, self.max_pixels)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                bad.append((start + j, why(exc)))
                continue
            flat = pixels[j].reshape(self.channels, -1).astype(np.float64)
            sums[j, :, 0] = flat.sum(axis=1)
            sums[j, :, 1] = np.square(flat).sum(axis=1)
        return start, sums, bad, pixels


def why(exc: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(exc, TooLarge):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:60]}"


def survey(files: Sequence[Path], channels: int, size: tuple[int, int], max_pixels: int | None = None
           ) -> tuple[np.ndarray, list[tuple[int, str]], PixelCache | None]:
    """Decode every file once, in workers: (per image (C, 2) pixel sums, zero for an unreadable
    one; the unreadable ones as (index, why); the pixels in a PixelCache, row i file i, or None
    when the disk has no room for them)."""
    chunks = _Chunks(files, channels, size, max_pixels)
    loader = torch.utils.data.DataLoader(chunks, batch_size=None, num_workers=workers(len(files), CHUNK),
                                         collate_fn=_same)
    cache = PixelCache(len(files), (channels, *size)) if PixelCache.fits(len(files), (channels, *size)) else None
    sums = np.zeros((len(files), channels, 2), dtype=np.float64)
    bad: list[tuple[int, str]] = []
    for start, part, unreadable, pixels in loader:
        sums[start:start + len(part)] = part
        bad += unreadable
        if cache is not None:
            cache.write(start, pixels)
    return sums, bad, cache


def _same(item: Any) -> Any:
    return item


@dataclass
class ImageSet:
    """Image files to be decoded at (channels, *size), with each one's pixel sums."""

    files: list[Path]
    channels: int
    size: tuple[int, int]
    sums: np.ndarray  # (N, C, 2) float64: sum of pixel values, and of their squares
    cache: PixelCache | None = None  # the decoded pixels, if the disk had room
    rows: np.ndarray | None = None  # each file's row in the cache
    max_pixels: int | None = None  # data.max_image_pixels

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.channels, *self.size)

    def __len__(self) -> int:
        return len(self.files)

    def take(self, idx: Any) -> "ImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet([self.files[i] for i in idx], self.channels, self.size, self.sums[idx], self.cache,
                        None if self.rows is None else self.rows[idx], self.max_pixels)

    def __getitem__(self, idx: Any) -> np.ndarray:
        """uint8 (n, C, H, W), read or decoded here (a few images; `ImageSplit.batches` for an epoch)."""
        picked = np.arange(len(self.files))[idx] if isinstance(idx, slice) else np.asarray(idx).reshape(-1)
        return self.pixels(picked.tolist())

    def pixels(self, idx: list[int]) -> np.ndarray:
        if self.cache is not None and self.rows is not None:
            return self.cache.read(self.rows[idx])
        return decode_files([self.files[i] for i in idx], self.channels, self.size, self.max_pixels)

    def stats(self, scale: float) -> tuple[list[float], list[float]]:
        """Per channel mean and standard deviation of the pixels divided by `scale`."""
        count = max(1, len(self.files)) * self.size[0] * self.size[1]
        mean = self.sums[:, :, 0].sum(axis=0) / count / scale
        var = self.sums[:, :, 1].sum(axis=0) / count / scale ** 2 - mean ** 2
        return mean.tolist(), [max(float(v), 1e-6) for v in np.sqrt(np.maximum(var, 0.0))]


# ---------------------------------------------------------------------------------- training
class _Batches(torch.utils.data.Dataset):
    def __init__(self, images: ImageSet):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: list[int]) -> torch.Tensor:
        return torch.from_numpy(self.images.pixels(idx))


class _Order(torch.utils.data.Sampler):
    """The batches of the epoch to come (set before each; the sampler runs in this process)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageSplit:
    """A split's images, decoded as batches are needed, standardised as `state` says, on `device`."""

    def __init__(self, images: ImageSet, state: dict[str, Any]):
        self.images = images
        self.scale = float(state["pixel_scale"])
        self.mean = torch.tensor(state["mean"], dtype=torch.float32)[None, :, None, None] if "mean" in state else None
        self.std = torch.tensor(state["std"], dtype=torch.float32)[None, :, None, None] if "std" in state else None
        self.device = torch.device("cpu")
        self._loader: torch.utils.data.DataLoader | None = None
        self._order = _Order()

    shape = property(lambda self: self.images.shape)

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device) -> "ImageSplit":
        self.device = device
        return self

    def prepare(self, raw: torch.Tensor) -> torch.Tensor:
        """uint8 (n, C, H, W) -> float32 on the device, standardised, channels-last."""
        x = raw.to(self.device, non_blocking=True).float().div_(self.scale)
        if self.mean is not None:
            x = x.sub_(self.mean.to(self.device)).div_(self.std.to(self.device))
        return x.contiguous(memory_format=torch.channels_last)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        return self.prepare(torch.from_numpy(self.images[idx]))

    def batches(self, order: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(indices, inputs on the device) for each batch of `order`: read ahead from the pixel
        cache by a thread, or decoded ahead in worker processes when there is no cache."""
        order = order.cpu()
        cuts = [order[i:i + size] for i in range(0, len(order), size)]
        if self.images.cache is not None:
            yield from self._read_ahead(cuts)
            return
        self._order.batches = [c.tolist() for c in cuts]
        loader = self._loader or self._make_loader(size)
        for k, raw in enumerate(loader):  # to its end: a worker never outlives its epoch
            yield cuts[k], self.prepare(raw)

    def _read_ahead(self, cuts: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Cached pixels, PREFETCH batches ahead, read by a thread (a read releases the GIL, and a
        thread shares this process's memory, where a forked worker would slowly copy it)."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="pixels") as pool:
            ahead = deque(pool.submit(self.images.pixels, c.tolist()) for c in cuts[:PREFETCH])
            for k, idx in enumerate(cuts):
                raw = ahead.popleft().result()
                if k + PREFETCH < len(cuts):
                    ahead.append(pool.submit(self.images.pixels, cuts[k + PREFETCH].tolist()))
                yield idx, self.prepare(torch.from_numpy(raw))

    def _make_loader(self, size: int) -> torch.utils.data.DataLoader:
        cuda = self.device.type == "cuda"
        n = workers(len(self.images), size, cuda)
        loader = torch.utils.data.DataLoader(_Batches(self.images), batch_size=None, sampler=self._order,
                                             num_workers=n, pin_memory=cuda, persistent_workers=cuda and n > 0,
                                             prefetch_factor=PREFETCH if n else None)
        if cuda and n:  # kept: its workers live from epoch to epoch, and end with it
            self._loader = loader
        return loader
