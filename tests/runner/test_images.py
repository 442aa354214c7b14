"""Image files as data (issue 25, part 1): an ImageFolder (one subfolder per class) or a CSV that
lists image files, decoded with Pillow; mixed sizes brought to data.image_size, grayscale kept as
one channel, a corrupt file skipped with a warning (or refused with data.strict), predictions on a
folder, training-only augmentation, and each bad input one line with exit 2.  Files as cameras and
scanners save them (issue 36): 16-bit and float pixels scaled to 8 bits, EXIF orientation applied,
and a size limit (data.max_image_pixels)."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jobs.files import job_files
from jobs.load import load_job
from jobs.spec import AugmentSpec
from runner.augment import augment
from runner.data import load_dataset
from tests import datagen

JOB = {"name": "shapes", "task": "classification", "data": {"path": "shapes", "image_size": 32},
       "model": {"kind": "cnn"}, "train": {"epochs": 6, "seed": 3}}


def _job(root: Path, **data) -> Path:
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump({**JOB, "data": {**JOB["data"], **data}}))
    return path


def _listing(root: Path, rows: list[tuple[str, str]], name: str = "list.csv") -> Path:
    with open(root / name, "w", newline="") as fh:
        csv.writer(fh).writerows([("file", "label"), *rows])
    return root / name


def test_an_image_folder_trains_with_its_class_names_and_predicts_on_a_folder(tmp_path, qtrain):
    datagen.image_folder(tmp_path / "shapes")
    path = _job(tmp_path)
    checked = qtrain("check", path, "--json", "--recheck")
    assert checked.code == 0, checked.err
    data = json.loads(checked.out.strip().splitlines()[-1])["data"]
    assert data["shape"] == [3, 32, 32] and data["rows"] == 120  # mixed sizes, brought to 32x32, RGB
    assert data["files"]["unreadable"] == 1 and data["files"]["unreadable_files"] == ["bars/broken-0.png"]
    assert data["files"]["sizes_found"] == {"32x32": 42, "36x40": 39, "48x48": 39}
    assert "bars/broken-0.png" in checked.err  # the skipped file is named in a warning

    out = tmp_path / "out"
    trained = qtrain("train", path, "--out", out)
    assert trained.code == 0, trained.err
    matrix = (out / "confusion_matrix.csv").read_text().splitlines()
    assert matrix[0] == "true,bars,cross,rings"  # the folder's class names
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] >= 0.9

    (tmp_path / "new").mkdir()
    for name in ("rings/001.png", "cross/002.png", "bars/003.jpg"):
        (tmp_path / "new" / name.replace("/", "-")).write_bytes((tmp_path / "shapes" / name).read_bytes())
    predicted = qtrain("predict", out, tmp_path / "new")
    assert predicted.code == 0, predicted.err
    rows = list(csv.DictReader(predicted.out.splitlines()))
    assert {r["file"]: r["predicted"] for r in rows} == {"bars-003.jpg": "bars", "cross-002.png": "cross",
                                                         "rings-001.png": "rings"}


def test_grayscale_stays_one_channel_and_a_csv_lists_images_that_travel_with_it(tmp_path, qtrain):
    datagen.image_folder(tmp_path / "shapes", per_class=12, gray=True, corrupt=0)
    rows = [(f"shapes/{c}/{p.name}", c) for c in datagen.SHAPES for p in sorted((tmp_path / "shapes" / c).iterdir())]
    _listing(tmp_path, rows)
    path = _job(tmp_path, path="list.csv", image_column="file", target="label")
    checked = qtrain("check", path, "--json", "--recheck")
    assert checked.code == 0, checked.err
    assert json.loads(checked.out.strip().splitlines()[-1])["data"]["shape"] == [1, 32, 32]
    sent = {f.remote for f in job_files(load_job(str(path)).job, tmp_path)}
    assert "data/list.csv" in sent and "data/shapes/rings/000.png" in sent and len(sent) == 1 + len(rows)


def test_a_corrupt_file_is_refused_when_strict(tmp_path, qtrain):
    datagen.image_folder(tmp_path / "shapes", per_class=6)
    result = qtrain("check", _job(tmp_path, strict=True))
    assert result.code == 2 and "Traceback" not in result.err
    assert "1 file(s) cannot be read as images: bars/broken-0.png" in result.err and "data.strict" in result.err


def test_mixed_sizes_without_image_size_say_what_was_found(tmp_path, qtrain):
    datagen.image_folder(tmp_path / "shapes", per_class=6, corrupt=0)
    result = qtrain("check", _job(tmp_path, image_size=None))
    assert result.code == 2 and "3 sizes" in result.err and "data.image_size" in result.err


def _flat(root: Path) -> dict:
    datagen.image_folder(root / "src", per_class=3, corrupt=0)
    (root / "shapes").mkdir()
    for p in (root / "src" / "bars").iterdir():
        (root / "shapes" / p.name).write_bytes(p.read_bytes())
    return {}


def _one_class(root: Path) -> dict:
    datagen.image_folder(root / "src", per_class=3, corrupt=0)
    (root / "src" / "bars").rename(root / "shapes")
    (root / "shapes").rename(root / "tmp")
    (root / "shapes").mkdir()
    (root / "tmp").rename(root / "shapes" / "bars")
    return {}


def _missing(root: Path) -> dict:
    datagen.image_folder(root / "shapes", per_class=2, corrupt=0)
    _listing(root, [("shapes/bars/000.png", "bars"), ("shapes/gone/1.png", "cross"), ("gone/2.png", "rings")])
    return {"path": "list.csv", "image_column": "file", "target": "label"}


def _absolute(root: Path) -> dict:
    datagen.image_folder(root / "shapes", per_class=2, corrupt=0)
    _listing(root, [(str(root / "shapes/bars/000.png"), "bars"), ("shapes/cross/000.png", "cross")])
    return {"path": "list.csv", "image_column": "file", "target": "label"}


def _outside(root: Path) -> dict:
    datagen.image_folder(root / "shapes", per_class=2, corrupt=0)
    (root / "sub").mkdir()
    _listing(root / "sub", [("../shapes/bars/000.png", "bars"), ("../shapes/cross/000.png", "cross")])
    return {"path": "sub/list.csv", "image_column": "file", "target": "label"}


def _zero_size(root: Path) -> dict:
    datagen.image_folder(root / "shapes", per_class=2, corrupt=0)
    return {"image_size": 0}


BAD = {"no class subfolders": (_flat, "no class subfolders holding images"),
       "one class": (_one_class, "only one class (bars)"),
       "missing files": (_missing, "2 of 3 files do not exist (first: shapes/gone/1.png)"),
       "absolute paths": (_absolute, "1 of 2 rows hold absolute paths"),
       "outside paths": (_outside, "2 of 2 rows hold paths that lead out of the CSV's folder"),
       "image_size 0": (_zero_size, "data.image_size: 0 is not a size")}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_image_input_is_one_line(tmp_path, qtrain, case):
    make, expected = BAD[case]
    result = qtrain("check", _job(tmp_path, **make(tmp_path)))
    assert result.code == 2, result.err
    assert expected in result.err and "Traceback" not in result.err
    assert len([line for line in result.err.splitlines() if line.strip()]) == 1


def test_augmentation_is_seeded_batched_and_changes_only_training(tmp_path, qtrain):
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    flipped = augment(x, AugmentSpec(flip=True), torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    spec = AugmentSpec(flip=True, crop=0.5, jitter=0.4)
    one, two = (augment(x, spec, torch.Generator().manual_seed(7)) for _ in range(2))
    assert one.shape == x.shape and torch.equal(one, two) and not torch.equal(one, x)

    datagen.image_folder(tmp_path / "shapes", per_class=12, corrupt=0)
    path = _job(tmp_path)
    runs = {}
    for name, extra in (("plain", []), ("aug", ["--set", "preprocess.augment.flip=true",
                                                "--set", "preprocess.augment.crop=0.6"])):
        assert qtrain("train", path, "--out", tmp_path / name, *extra).code == 0
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert runs["aug"]["train_loss"] != runs["plain"]["train_loss"]  # the batches were changed
    assert runs["aug"]["test"]["n"] == runs["plain"]["test"]["n"]


# ------------------------------------------- files as cameras and scanners save them (issue 36)
def _png48(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow writes none): (h, w, 3) uint16, written by hand."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    h, w, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_32_bit_and_float_images_are_scaled_to_8_bits_not_clipped(tmp_path):
    from PIL import Image

    ramp = np.tile(np.linspace(0, 65535, 64).round(), (16, 1))  # dark to bright, left to right
    for c in ("a", "b"):
        (tmp_path / "scans" / c).mkdir(parents=True)
    Image.fromarray(ramp.astype(np.uint16)).save(tmp_path / "scans/a/scan16.png")  # mode I;16
    Image.fromarray(ramp.astype(np.int32), "I").save(tmp_path / "scans/a/scan32.tif")
    Image.fromarray((ramp / 65535).astype(np.float32), "F").save(tmp_path / "scans/b/float.tif")
    _png48(tmp_path / "scans/b/photo48.png", np.stack([np.full((16, 64), v) for v in (65535, 0, 30000)], -1))
    job = load_job(str(_job(tmp_path, path="scans", image_size=None)))
    data = load_dataset(job.job, job.base_dir)
    pixels = {p.name: px for p, px in zip(data.x.files, data.x[:])}
    assert set(pixels) == {"scan16.png", "scan32.tif", "float.tif", "photo48.png"} and data.x.shape[1:] == (3, 16, 64)
    for name in ("scan16.png", "scan32.tif", "float.tif"):
        gray = pixels[name][0].astype(int)
        assert (gray == 255).mean() < 0.05 and len(np.unique(gray)) == 64, name  # the gradient kept
        assert np.abs(gray - ramp / 257).max() <= 1, name  # 0..65535 to 0..255, not each image's min..max
    assert pixels["photo48.png"][:, 0, 0].tolist() == [255, 0, 117]  # each channel's 16 bits to 8


def _stripes(across: bool, h: int = 48, w: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.where(((y if across else x) // 6) % 2 == 0, 230, 20).astype(np.uint8)


def _rotated_jpeg(path: Path, upright: np.ndarray) -> None:
    """A camera's portrait photo: the pixels stored on their side, with EXIF Orientation 6."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(upright, "L").transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)


def test_exif_orientation_is_applied_in_check_training_and_predict(tmp_path, qtrain):
    from PIL import Image

    for c, across in (("across", True), ("down", False)):
        (tmp_path / "stripes" / c).mkdir(parents=True)
        for i in range(24):
            shifted = np.roll(_stripes(across), i, axis=0 if across else 1)
            if i % 4 == 0:
                _rotated_jpeg(tmp_path / "stripes" / c / f"{i:02d}.jpg", shifted)
            else:
                Image.fromarray(shifted, "L").save(tmp_path / "stripes" / c / f"{i:02d}.png")
    path = _job(tmp_path, path="stripes", image_size=[24, 16])
    checked = qtrain("check", path, "--json", "--recheck")
    assert checked.code == 0, checked.err
    assert json.loads(checked.out.strip().splitlines()[-1])["data"]["files"]["sizes_found"] == {"48x32": 48}

    job = load_job(str(path))
    data = load_dataset(job.job, job.base_dir)
    for file, px in zip(data.x.files, data.x[:]):  # what training reads: stripes as they are shown
        rows, cols = np.abs(np.diff(px[0].astype(int), axis=0)).mean(), np.abs(np.diff(px[0].astype(int), axis=1)).mean()
        assert (rows > 4 * cols) if file.parent.name == "across" else (cols > 4 * rows), file

    out = tmp_path / "out"
    assert qtrain("train", path, "--out", out, "--set", "train.refit=false").code == 0
    (tmp_path / "new").mkdir()
    _rotated_jpeg(tmp_path / "new" / "across.jpg", _stripes(True))
    _rotated_jpeg(tmp_path / "new" / "down.jpg", _stripes(False))
    predicted = qtrain("predict", out, tmp_path / "new")
    assert predicted.code == 0, predicted.err
    assert {r["file"]: r["predicted"] for r in csv.DictReader(predicted.out.splitlines())} == {
        "across.jpg": "across", "down.jpg": "down"}


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_an_image_over_max_image_pixels_is_refused_or_a_jpeg_decoded_reduced(tmp_path, qtrain):
    from PIL import Image

    datagen.image_folder(tmp_path / "shapes", per_class=4, sizes=((32, 32),), corrupt=0)
    Image.new("1", (12000, 12000), 1).save(tmp_path / "shapes/bars/scan.png")  # 144 megapixels, 41 kB
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(tmp_path / "shapes/rings/photo.jpg")  # 12 megapixels
    path = _job(tmp_path, image_size=32, max_image_pixels=2_000_000)

    def check(*extra: str) -> tuple[dict, str]:
        result = qtrain("check", path, "--json", "--recheck", *extra)
        assert result.code == 0 and "DecompressionBomb" not in result.err, result.err
        return json.loads(result.out.strip().splitlines()[-1])["data"], result.err

    data, err = check()  # the JPEG is read reduced (draft) to image_size; the PNG cannot be
    assert data["rows"] == 13 and data["files"]["unreadable_files"] == ["bars/scan.png"]
    assert "bars/scan.png (144,000,000 pixels" in err and "data.max_image_pixels (2,000,000)" in err
    job = load_job(str(path))
    x = load_dataset(job.job, job.base_dir).x
    photo = x[[i for i, f in enumerate(x.files) if f.name == "photo.jpg"]]
    assert len(photo) == 1 and np.abs(photo[0, :, 16, 16].astype(int) - [200, 30, 30]).max() <= 4

    data, _ = check("--set", "data.image_size=null")  # no size to reduce to: the JPEG is refused too
    assert sorted(data["files"]["unreadable_files"]) == ["bars/scan.png", "rings/photo.jpg"]
    data, _ = check("--set", "data.max_image_pixels=200000000")  # raised: read whole, no Pillow warning
    assert data["rows"] == 14 and data["files"]["unreadable"] == 0

    strict = qtrain("check", path, "--recheck", "--set", "data.strict=true")
    assert strict.code == 2 and "Traceback" not in strict.err and "DecompressionBomb" not in strict.err
    assert len([line for line in strict.err.splitlines() if line.strip()]) == 1
    assert all(s in strict.err for s in ("bars/scan.png", "144,000,000 pixels", "2,000,000", "data.max_image_pixels"))
