"""Datasets: the fixed digits split, torchvision datasets from a read-only folder, clear messages."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from netzoo import datasets
from netzoo.datasets import load_dataset
from netzoo.errors import DatasetError
from netzoo.idx import IdxFile, decompress, gz_problem

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


# --- raw IDX files: checked against what was published (issue 12, cases 11-13) ----------------------------------

MNIST_RAW = SHARED / "MNIST" / "raw"
needs_mnist = pytest.mark.skipif(not MNIST_RAW.is_dir(), reason=f"no real MNIST under {SHARED}")
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def copy_mnist(root: Path, gz=IDX_NAMES, plain=()) -> Path:
    """Copy the named real MNIST files (``.gz`` for ``gz``, decompressed for ``plain``) into root/MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in gz:
        shutil.copyfile(MNIST_RAW / f"{name}.gz", raw / f"{name}.gz")
    for name in plain:
        shutil.copyfile(MNIST_RAW / name, raw / name)
    return raw


def leftovers(folder: Path) -> list[Path]:
    """Temporary files anywhere under ``folder``."""
    return sorted(folder.rglob(".tmp-*"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh netzoo cache folder for this test."""
    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


def read_only(raw: Path) -> None:
    """Mark a raw folder read-only, as the shared dataset copy is."""
    raw.chmod(0o555)


def write_idx(raw: Path, n_train: int = 30, n_test: int = 20, seed: int = 0, plain=()) -> tuple[IdxFile, ...]:
    """A tiny fake MNIST in the IDX format torchvision reads: gzipped, or decompressed for the names in
    ``plain``; labels count up from ``seed``. Returns its facts (shapes, md5 of each .gz) to stand in for
    datasets.published_files."""
    import hashlib

    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    facts = []
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = ((np.arange(n) + seed) % 10).astype(np.uint8)
        for name, data in ((f"{split}-images-idx3-ubyte", struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()),
                           (f"{split}-labels-idx1-ubyte", struct.pack(">II", 2049, n) + labels.tobytes())):
            if name in plain:
                (raw / name).write_bytes(data)
                md5 = "0" * 32  # no .gz: never checked
            else:
                packed = gzip.compress(data, mtime=0)
                (raw / f"{name}.gz").write_bytes(packed)
                md5 = hashlib.md5(packed).hexdigest()
            facts.append(IdxFile(name, (n, 28, 28) if "images" in name else (n,), md5))
    return tuple(facts)


def publish(monkeypatch, facts) -> None:
    """Make ``facts`` (from write_idx) what every torchvision dataset is published as, for this test."""
    monkeypatch.setattr(datasets, "published_files", lambda name: facts)


def expected_labels(n: int, seed: int = 0) -> torch.Tensor:
    """The labels write_idx wrote."""
    return (torch.arange(n) + seed) % 10


def test_read_only_root_is_decompressed_into_a_cache_and_left_untouched(tmp_path, cache, monkeypatch, caplog):
    root = tmp_path / "shared"
    publish(monkeypatch, write_idx(root / "KMNIST" / "raw"))
    read_only(root / "KMNIST" / "raw")
    before = sorted(p.name for p in (root / "KMNIST" / "raw").iterdir())
    with caplog.at_level("INFO"):
        data = load_dataset("kmnist", root=root)
    assert "read-only" in caplog.text
    assert sorted(p.name for p in (root / "KMNIST" / "raw").iterdir()) == before
    assert (len(data.x_train), len(data.x_test)) == (30, 20) and data.x_train.shape[1:] == (1, 28, 28)
    assert abs(data.x_train.mean().item()) < 1e-4  # kmnist: normalised by its own train statistics
    assert [p.name for p in cache.rglob("train-images-idx3-ubyte")] == ["train-images-idx3-ubyte"]


@pytest.mark.mnist
@needs_mnist
def test_real_mnist_loads_with_the_study_normalisation():
    def listing():
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in MNIST_RAW.iterdir())

    before = listing()
    data = load_dataset("mnist", root=SHARED)
    assert (len(data.x_train), len(data.x_test)) == (60000, 10000)
    assert torch.bincount(data.y_test).tolist() == MNIST_TEST_COUNTS
    assert (data.mean, data.std) == (0.1307, 0.3081)
    assert listing() == before  # the shared copy stays as it was


DAMAGES = {
    "truncated": lambda b: b[: len(b) // 3],
    "empty": lambda b: b"",
    "not gzip": lambda b: b"this is not a gzip file\n" * 10,
    "one byte changed": lambda b: b[:200] + bytes([b[200] ^ 0xFF]) + b[201:],
}


@pytest.mark.mnist
@needs_mnist
@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("writable", [True, False], ids=["writable", "read-only"])
def test_a_damaged_gz_is_reported_corrupt_by_its_md5_and_nothing_is_left_behind(tmp_path, cache, damage, writable):
    raw = copy_mnist(tmp_path / "root")
    labels = raw / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(DAMAGES[damage](labels.read_bytes()))
    if not writable:
        read_only(raw)
    before = sorted(p.name for p in raw.iterdir())
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path / "root")
    message = str(err.value)
    assert message.startswith(f"{labels} is corrupt (md5 ") and "\n" not in message
    assert "differs from the published d53e105ee54ea40749a09fcbcd1e9432" in message and "--download" in message
    assert sorted(p.name for p in raw.iterdir()) == before and leftovers(tmp_path) == []


def test_published_md5s_are_read_from_torchvisions_resource_lists():
    import torchvision.datasets as tvd

    for name, cls in (("mnist", tvd.MNIST), ("fashion-mnist", tvd.FashionMNIST), ("kmnist", tvd.KMNIST)):
        files = datasets.published_files(name)
        assert {f"{f.name}.gz": f.gz_md5 for f in files} == dict(cls.resources)
        shapes = {f.name: f.shape for f in files}
        assert shapes == {"train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
                          "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,)}
    assert {f.name: f.size for f in datasets.published_files("mnist")} == {
        "train-images-idx3-ubyte": 47040016, "train-labels-idx1-ubyte": 60008,  # the sizes of the real files
        "t10k-images-idx3-ubyte": 7840016, "t10k-labels-idx1-ubyte": 10008}


@pytest.mark.mnist
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_the_shared_gz_files_pass_the_published_md5(name, folder):
    if not (SHARED / folder / "raw").is_dir():
        pytest.skip(f"no real {folder} under {SHARED}")
    for f in datasets.published_files(name):
        assert gz_problem(SHARED / folder / "raw" / f"{f.name}.gz", f) is None


@pytest.mark.parametrize("damage, problem", [
    ("truncated", "4620 bytes, expected 4720 = 16-byte header + 6x28x28 bytes"),
    ("one byte too many", "4721 bytes, expected 4720 = 16-byte header"),
    ("shorter than its header", "shorter than its 16-byte header"),
    ("labels where images belong", "magic number 0x00000801, expected 0x00000803"),
    ("fewer images in the header", "header says 5x28x28, expected 6x28x28"),
])
def test_a_damaged_decompressed_file_is_reported_corrupt_naming_what_is_wrong(tmp_path, cache, monkeypatch, damage,
                                                                                  problem):
    facts = write_idx(tmp_path / "root" / "MNIST" / "raw", n_train=6, n_test=4, plain=IDX_NAMES)
    publish(monkeypatch, facts)
    images = tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    whole = images.read_bytes()
    broken = {
        "truncated": whole[:-100],
        "one byte too many": whole + b"\0",
        "shorter than its header": whole[:10],
        "labels where images belong": (tmp_path / "root" / "MNIST" / "raw" / "train-labels-idx1-ubyte").read_bytes(),
        "fewer images in the header": whole[:4] + struct.pack(">I", 5) + whole[8:],
    }[damage]
    images.write_bytes(broken)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path / "root")
    message = str(err.value)
    assert message.startswith(f"{images} is corrupt (") and problem in message, message
    assert "--download" in message and "\n" not in message


@pytest.mark.mnist
@needs_mnist
def test_a_truncated_decompressed_mnist_file_is_corrupt_not_a_reshape_traceback(tmp_path, cache):
    raw = copy_mnist(tmp_path / "root", gz=IDX_NAMES[:3], plain=IDX_NAMES[3:])
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:5000])
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte is corrupt \(5000 bytes, expected 10008 = 8-byte "
                                           r"header \+ 10000 bytes\): replace it with the original or its .gz"):
        load_dataset("mnist", root=tmp_path / "root")
    assert leftovers(tmp_path) == []


@pytest.mark.mnist
@needs_mnist
@pytest.mark.parametrize("writable", [True, False], ids=["writable", "read-only"])
def test_a_damaged_decompressed_file_beside_a_good_gz_is_decompressed_again(tmp_path, cache, caplog, writable):
    raw = copy_mnist(tmp_path / "root", plain=["t10k-labels-idx1-ubyte"])
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:5000])
    if not writable:
        read_only(raw)
    with caplog.at_level("WARNING"):
        data = load_dataset("mnist", root=tmp_path / "root")
    assert torch.bincount(data.y_test).tolist() == MNIST_TEST_COUNTS
    assert f"{labels} is corrupt (5000 bytes" in caplog.text
    assert labels.stat().st_size == (10008 if writable else 5000)  # redone where it lies; a read-only root untouched
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("writable", [True, False], ids=["writable", "read-only"])
def test_a_disk_full_while_decompressing_is_one_line_and_leaves_no_temporary_file(tmp_path, cache, monkeypatch,
                                                                                 writable):
    import errno
    import shutil as shutil_module

    publish(monkeypatch, write_idx(tmp_path / "root" / "MNIST" / "raw"))
    if not writable:
        read_only(tmp_path / "root" / "MNIST" / "raw")

    def disk_full(src, dst, *args):
        dst.write(src.read(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil_module, "copyfileobj", disk_full)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path / "root")
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncated", "one byte changed", "not gzip"])
def test_decompress_turns_every_gzip_fault_into_a_dataset_error_and_leaves_nothing(tmp_path, damage):
    (facts, *_) = write_idx(tmp_path / "raw")
    gz = tmp_path / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(DAMAGES[damage](gz.read_bytes()))
    (tmp_path / "out").mkdir()
    with pytest.raises(DatasetError, match=f"^{gz} is corrupt"):
        decompress(gz, tmp_path / "out" / "train-images-idx3-ubyte", facts)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.mnist
@needs_mnist
def test_train_on_a_truncated_gz_exits_2_with_one_line_naming_the_file(tmp_path):
    import subprocess
    import sys

    from zoo_fixture import make_zoo

    raw = copy_mnist(tmp_path / "root")
    labels = raw / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:10000])
    zoo = make_zoo(tmp_path / "zoo", names=("Basic",), input_shape=(1, 28, 28))
    env = {**os.environ, "NETZOO_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "netzoo.cli", "train", "--zoo", str(zoo), "--dataset", "mnist",
                           "--data-root", str(tmp_path / "root"), "--results", str(tmp_path / "results"),
                           "--epochs", "1", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {labels} is corrupt (md5 ") and len(proc.stderr.splitlines()) == 1
    assert leftovers(tmp_path) == []


# case 12: any mix of .gz and decompressed files loads, decided per file

MIXES = {
    "train decompressed, test gz": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test decompressed, train gz": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "labels decompressed, images gz": ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"),
    "one file decompressed": ("t10k-images-idx3-ubyte",),
}


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("writable", [True, False], ids=["writable", "read-only"])
def test_any_mix_of_gz_and_decompressed_files_loads(tmp_path, cache, monkeypatch, mix, writable):
    raw = tmp_path / "root" / "MNIST" / "raw"
    publish(monkeypatch, write_idx(raw, plain=MIXES[mix]))
    if not writable:
        read_only(raw)
    data = load_dataset("mnist", root=tmp_path / "root")
    assert (len(data.x_train), len(data.x_test)) == (30, 20)
    assert torch.equal(data.y_train, expected_labels(30)) and torch.equal(data.y_test, expected_labels(20))
    assert leftovers(tmp_path) == []


@pytest.mark.mnist
@needs_mnist
def test_real_mnist_with_train_decompressed_and_test_gz_in_a_read_only_root_loads(tmp_path, cache):
    raw = copy_mnist(tmp_path / "root", gz=IDX_NAMES[2:], plain=IDX_NAMES[:2])
    read_only(raw)
    data = load_dataset("mnist", root=tmp_path / "root")
    assert (len(data.x_train), len(data.x_test)) == (60000, 10000)
    assert torch.bincount(data.y_test).tolist() == MNIST_TEST_COUNTS


@pytest.mark.parametrize("absent", IDX_NAMES)
def test_a_missing_file_is_named_whatever_form_the_others_are_in(tmp_path, cache, monkeypatch, absent):
    raw = tmp_path / "root" / "MNIST" / "raw"
    publish(monkeypatch, write_idx(raw, plain=("train-images-idx3-ubyte", "train-labels-idx1-ubyte")))
    for path in raw.glob(f"{absent}*"):
        path.unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path / "root")
    message = str(err.value)
    assert f"{raw} is incomplete: no {absent} (nor {absent}.gz)" in message, message
    assert "--download" in message and "()" not in message and "for )" not in message
    assert all(name not in message for name in IDX_NAMES if name != absent)


def test_a_stale_torchvision_processed_folder_is_never_read_instead_of_the_raw_files(tmp_path, cache, monkeypatch):
    publish(monkeypatch, write_idx(tmp_path / "root" / "MNIST" / "raw"))
    processed = tmp_path / "root" / "MNIST" / "processed"
    processed.mkdir()
    other = (torch.zeros(5, 28, 28, dtype=torch.uint8), torch.full((5,), 7))
    for name in ("training.pt", "test.pt"):  # what torchvision < 0.8 left behind, and still reads first
        torch.save(other, processed / name)
    data = load_dataset("mnist", root=tmp_path / "root")
    assert len(data.x_train) == 30 and torch.equal(data.y_test, expected_labels(20))


# case 13: the cache of decompressed files depends on where they came from

def test_two_read_only_roots_are_never_served_each_others_data(tmp_path, cache, monkeypatch):
    roots = {seed: tmp_path / f"root{seed}" for seed in (0, 1)}
    facts = {seed: write_idx(root / "MNIST" / "raw", seed=seed) for seed, root in roots.items()}
    for root in roots.values():
        read_only(root / "MNIST" / "raw")
    for seed in (0, 1, 0):
        publish(monkeypatch, facts[seed])
        data = load_dataset("mnist", root=roots[seed])
        assert torch.equal(data.y_train, expected_labels(30, seed))
        assert torch.equal(data.y_test, expected_labels(20, seed))


@pytest.mark.mnist
@needs_mnist
@pytest.mark.parametrize("order", ["good root first", "damaged root first"])
def test_a_good_root_and_a_damaged_one_are_told_apart_whatever_the_order(tmp_path, cache, order):
    good, damaged = copy_mnist(tmp_path / "good"), copy_mnist(tmp_path / "damaged")
    labels = damaged / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:2000])
    read_only(good)
    read_only(damaged)
    for raw in ((good, damaged) if order == "good root first" else (damaged, good)):
        if raw == good:
            data = load_dataset("mnist", root=tmp_path / "good")
            assert torch.bincount(data.y_test).tolist() == MNIST_TEST_COUNTS
        else:
            with pytest.raises(DatasetError, match=f"^{labels} is corrupt"):
                load_dataset("mnist", root=tmp_path / "damaged")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage header", "emptied"])
def test_a_damaged_cached_decompression_is_detected_and_remade(tmp_path, cache, monkeypatch, damage):
    raw = tmp_path / "root" / "MNIST" / "raw"
    publish(monkeypatch, write_idx(raw))
    read_only(raw)
    first = load_dataset("mnist", root=tmp_path / "root")
    cached = [p for p in cache.rglob("*") if p.is_file()]
    assert sorted(p.name for p in cached) == sorted(IDX_NAMES)
    images = next(p for p in cached if p.name == "train-images-idx3-ubyte")
    whole = images.read_bytes()
    images.write_bytes({"truncated": whole[:-784], "garbage header": b"\xff" * 16 + whole[16:], "emptied": b""}[damage])
    again = load_dataset("mnist", root=tmp_path / "root")
    assert torch.equal(again.x_train, first.x_train) and images.read_bytes() == whole


# --download: torchvision downloads and checks the md5; a failure leaves nothing behind

def fake_download(shared_raw: Path | None, check_md5: bool = True):
    """A stand-in for torchvision's download_and_extract_archive (the network is closed here): copies the real
    file from ``shared_raw`` and decompresses it; or, with ``shared_raw`` None, writes half a file and raises
    as torchvision does when a download is cut short or its md5 differs (``check_md5`` False: returns as if
    all went well, as a download without a check would)."""
    def download(url, download_root, filename=None, md5=None, **kwargs):
        target = Path(download_root) / filename
        if shared_raw is None and check_md5:
            target.write_bytes(b"\x1f\x8b" + b"\0" * 100)
            raise RuntimeError("File not found or corrupted.")
        if shared_raw is None:
            target.write_bytes(gzip.compress(b"not the published file"))
            target.with_suffix("").write_bytes(b"not the published file")
            return
        shutil.copyfile(shared_raw / filename, target)
        with gzip.open(target) as src:
            target.with_suffix("").write_bytes(src.read())
    return download


def test_a_failed_download_leaves_no_partial_file_and_says_so_in_one_line(tmp_path, cache, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download(None))
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path / "root", download=True)
    message = str(err.value)
    assert message.startswith(f"Downloading mnist into {tmp_path / 'root'} failed") and "\n" not in message
    raw = tmp_path / "root" / "MNIST" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []
    with pytest.raises(DatasetError, match="^No MNIST under"):  # not "corrupt": nothing half-downloaded stayed
        load_dataset("mnist", root=tmp_path / "root")


@pytest.mark.mnist
@needs_mnist
def test_download_replaces_a_corrupt_gz(tmp_path, cache, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    raw = copy_mnist(tmp_path / "root")
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:1000])
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download(MNIST_RAW))
    data = load_dataset("mnist", root=tmp_path / "root", download=True)
    assert torch.bincount(data.y_test).tolist() == MNIST_TEST_COUNTS
    assert labels.read_bytes() == (MNIST_RAW / labels.name).read_bytes() and leftovers(tmp_path) == []


def test_a_download_that_delivers_a_corrupt_file_replaces_nothing(tmp_path, cache, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    publish(monkeypatch, write_idx(tmp_path / "root" / "MNIST" / "raw"))
    labels = tmp_path / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:10])
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download(None, check_md5=False))
    monkeypatch.setattr(tv_mnist.MNIST, "_load_data", lambda self: (None, None))  # it would fail on the file
    with pytest.raises(DatasetError, match="^Downloading mnist gave a corrupt t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", root=tmp_path / "root", download=True)
    assert len(labels.read_bytes()) == 10 and leftovers(tmp_path) == []


def test_download_into_a_read_only_root_is_refused_with_the_fix(tmp_path, cache):
    (tmp_path / "root").mkdir()
    read_only(tmp_path / "root")
    with pytest.raises(DatasetError, match="read-only.*--data-root"):
        load_dataset("mnist", root=tmp_path / "root", download=True)


def test_a_failed_digits_cache_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path)

    def disk_full(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")  # the cache is written into an open temporary file (netzoo.files)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    data = load_dataset("digits")  # the cache only costs speed: the split is still returned
    assert len(data.x_train) == 1437 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion-mnist"])
def test_the_registry_gives_each_dataset_its_split_sizes_without_loading_it(name):
    """Steps per epoch (sweep, report, bench) come from dataset_info, the one train-size helper: it must agree
    with the loaded tensors."""
    from netzoo.datasets import dataset_info

    folder = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}.get(name)
    if folder and not (SHARED / folder / "raw").is_dir():
        pytest.skip(f"no real {folder} under {SHARED}")
    data = load_dataset(name, root=SHARED if folder else None)
    info = dataset_info(name)
    assert (info.train_size, info.test_size) == (len(data.x_train), len(data.x_test))
