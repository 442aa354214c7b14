"""Data sources: IDX, NPZ, NPY folders, Parquet, built-ins, and the shifted target."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from jobs import DataError, load_job
from runner.data import Images, load_dataset, read_idx, to_nchw, write_idx
from runner.prepare import prepare


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 255, size=(5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    assert (read_idx(tmp_path / name) == array).all()


def test_truncated_idx_is_a_clear_error(tmp_path):
    write_idx(tmp_path / "a-idx1-ubyte", np.arange(10, dtype=np.uint8))
    data = (tmp_path / "a-idx1-ubyte").read_bytes()[:-3]
    (tmp_path / "a-idx1-ubyte").write_bytes(data)
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "a-idx1-ubyte")


def test_image_layouts_become_nchw():
    assert to_nchw(np.zeros((4, 28, 28)), "x").shape == (4, 1, 28, 28)
    assert to_nchw(np.zeros((4, 64, 64, 3)), "x").shape == (4, 3, 64, 64)
    assert to_nchw(np.zeros((4, 3, 32, 32)), "x").shape == (4, 3, 32, 32)
    assert to_nchw(np.zeros((4, 784)), "x").shape == (4, 1, 28, 28)
    with pytest.raises(DataError, match="not square"):
        to_nchw(np.zeros((4, 10)), "x")


def test_npz_with_its_own_test_split(tmp_path, write_job):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
             y=rng.integers(0, 2, 40), x_test=rng.integers(0, 255, (10, 8, 8), dtype=np.uint8),
             y_test=rng.integers(0, 2, 10))
    job = load_job(write_job({"name": "n", "task": "classification", "data": {"path": "d.npz"}}))
    data = load_dataset(job.job, job.base_dir)
    assert isinstance(data, Images) and data.x.shape == (40, 1, 8, 8) and len(data.x_test) == 10
    prepared = prepare(data, job.job)
    assert len(prepared.y["test"]) == 10  # the file's own test split; validation from the rest
    assert len(prepared.y["train"]) + len(prepared.y["val"]) == 40 and len(prepared.y["val"]) == 6
    assert prepared.x["train"].max() <= 1.0  # uint8 scaled by 255


def test_parquet_source(tmp_path, write_job):
    pd.DataFrame({"a": np.arange(20.0), "y": ["u", "v"] * 10}).to_parquet(tmp_path / "d.parquet")
    job = load_job(write_job({"name": "p", "task": "classification",
                              "data": {"path": "d.parquet", "target": "y"}}))
    assert len(load_dataset(job.job, job.base_dir).frame) == 20


def test_target_shift_uses_next_row_and_today_as_baseline(tmp_path, write_job):
    pd.DataFrame({"t": np.arange(10.0), "f": np.arange(10.0) * 2}).to_csv(tmp_path / "d.csv", index=False)
    job = load_job(write_job({"name": "s", "task": "regression",
                              "data": {"path": "d.csv", "target": "t", "target_shift": 1},
                              "split": {"shuffle": False, "test_size": 0.3}}))
    data = load_dataset(job.job, job.base_dir)
    assert len(data.frame) == 9 and list(data.frame["t"]) == list(np.arange(1.0, 10.0))
    prepared = prepare(data, job.job)
    assert list(prepared.today) == [6.0, 7.0, 8.0]  # today's value for the 3 test rows
    assert list(prepared.y["test"]) == [7.0, 8.0, 9.0]


def test_builtin_options_are_checked(write_job):
    job = load_job(write_job({"name": "c", "task": "classification",
                              "data": {"path": "sklearn:circles", "target": "label",
                                       "options": {"n_sample": 10}}}))
    with pytest.raises(DataError, match="unknown n_sample"):
        load_dataset(job.job, job.base_dir)


def test_mnist_pkl_layout(tmp_path, write_job):
    import pickle

    rng = np.random.default_rng(0)
    part = lambda n: (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n))  # noqa: E731
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as fh:
        pickle.dump((part(30), part(10), part(20)), fh)
    job = load_job(write_job({"name": "m", "task": "classification", "data": {"path": "mnist.pkl.gz"}}))
    data = load_dataset(job.job, job.base_dir)
    assert data.x.shape == (40, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
