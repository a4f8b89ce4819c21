"""Datasets: the fixed digits split, torchvision datasets from a read-only folder, clear messages."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from netzoo import datasets
from netzoo.datasets import load_dataset
from netzoo.errors import DatasetError

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def test_digits_split_is_stratified_fixed_and_normalised_by_train_statistics():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert (len(a.x_train), len(a.x_test)) == (1437, 360) and a.x_train.shape[1:] == (1, 8, 8)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert abs(a.x_train.mean().item()) < 1e-4 and abs(a.x_train.std().item() - 1) < 1e-3
    counts = torch.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 20% of each class
    record = a.describe()
    assert record["split"].startswith("stratified 80/20") and record["test_class_counts"] == counts.tolist()


def test_digits_split_is_cached_exactly_and_a_corrupt_cache_is_remade(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path)
    fresh = datasets._split_digits()
    first = load_dataset("digits")  # makes the cache
    (cached,) = tmp_path.glob("digits-sklearn*.npz")
    again = load_dataset("digits")  # reads it
    for d in (first, again):
        assert torch.equal(d.y_train, torch.from_numpy(fresh["y_train"]))
        assert torch.equal(d.x_test, datasets._normalised(torch.from_numpy(fresh["x_test"]), d.mean, d.std))
    whole = cached.read_bytes()
    for broken in (b"not a zip file", whole[: len(whole) // 2]):  # garbage, and a copy cut short
        cached.write_bytes(broken)
        remade = load_dataset("digits")
        assert torch.equal(remade.x_train, first.x_train) and torch.equal(remade.y_test, first.y_test)
    assert np.load(cached)["x_train"].shape == (1437, 1, 8, 8)


def test_a_warm_digits_cache_spares_workers_the_scikit_learn_import(tmp_path):
    import subprocess
    import sys

    code = "import sys; from netzoo.datasets import load_dataset; load_dataset('digits'); print('sklearn' in sys.modules)"
    env = {**os.environ, "NETZOO_CACHE": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"]


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(DatasetError, match="digits, mnist, fashion-mnist, kmnist"):
        load_dataset("cifar10")


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "--download" in message and "--data-root" in message


def write_idx(raw: Path, n_train: int = 30, n_test: int = 20) -> None:
    """A tiny fake MNIST in the IDX format torchvision reads, gzipped."""
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(raw / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(raw / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels.tobytes())


def test_read_only_root_is_decompressed_into_a_cache_and_left_untouched(tmp_path, monkeypatch, caplog):
    root = tmp_path / "shared"
    write_idx(root / "KMNIST" / "raw")
    os.chmod(root / "KMNIST" / "raw", 0o555)
    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "cache")
    before = sorted(p.name for p in (root / "KMNIST" / "raw").iterdir())
    with caplog.at_level("INFO"):
        data = load_dataset("kmnist", root=root)
    assert "read-only" in caplog.text
    assert sorted(p.name for p in (root / "KMNIST" / "raw").iterdir()) == before
    assert (len(data.x_train), len(data.x_test)) == (30, 20) and data.x_train.shape[1:] == (1, 28, 28)
    assert abs(data.x_train.mean().item()) < 1e-4  # kmnist: normalised by its own train statistics
    assert (tmp_path / "cache" / "KMNIST" / "KMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    os.chmod(root / "KMNIST" / "raw", 0o755)


@pytest.mark.mnist
@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").is_dir(), reason=f"no real MNIST under {SHARED}")
def test_real_mnist_loads_with_the_study_normalisation():
    data = load_dataset("mnist", root=SHARED)
    assert (len(data.x_train), len(data.x_test)) == (60000, 10000)
    assert torch.bincount(data.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert (data.mean, data.std) == (0.1307, 0.3081)
    assert not (SHARED / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()  # the shared copy stays as it was
