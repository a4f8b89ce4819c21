"""The datasets netzoo trains on: digits (embedded, default), mnist, fashion-mnist, kmnist.

load_dataset() decodes a dataset once, normalises it, and returns tensors already on the training device.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from netzoo.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """What the generator and the trainer need to know of a dataset before loading it."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    classes: int
    source: str                        # where it comes from


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", (1, 8, 8), 10, "scikit-learn's bundled load_digits (embedded, offline)"),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, "torchvision.datasets.MNIST"),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, "torchvision.datasets.FashionMNIST"),
    "kmnist": DatasetInfo("kmnist", (1, 28, 28), 10, "torchvision.datasets.KMNIST"),
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of a dataset, or a DatasetError naming the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"Unknown dataset {name!r}; known: {', '.join(DATASETS)}.") from None


# --- loading ---------------------------------------------------------------------------------------

DIGITS_SPLIT_SEED = 0         # random_state of the fixed stratified 80/20 digits split
DIGITS_TEST_FRACTION = 0.2
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the study's normalisation (torchvision's MNIST example)
DEFAULT_ROOT = Path(os.environ.get("NETZOO_DATA_ROOT", "~/.cache/netzoo/datasets")).expanduser()
CACHE_DIR = Path(os.environ.get("NETZOO_CACHE", "~/.cache/netzoo")).expanduser()

# torchvision class name (also its folder under the root) of each torchvision dataset.
_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")


@dataclass
class Dataset:
    """A dataset decoded once: normalised float32 (N, C, H, W) images and int64 labels, on one device."""

    name: str
    x_train: "torch.Tensor"
    y_train: "torch.Tensor"
    x_test: "torch.Tensor"
    y_test: "torch.Tensor"
    classes: int
    input_shape: tuple[int, int, int]
    mean: float
    std: float
    split: str     # how train and test were made, e.g. "stratified 80/20, seed 0"
    source: str    # where the bytes came from

    def describe(self) -> dict:
        """What DIR/dataset.json records: sizes, split, normalisation, per-class test counts."""
        import torch

        return {
            "name": self.name, "source": self.source, "split": self.split,
            "input_shape": "x".join(map(str, self.input_shape)), "classes": self.classes,
            "train_size": int(self.x_train.shape[0]), "test_size": int(self.x_test.shape[0]),
            "mean": self.mean, "std": self.std,
            "test_class_counts": torch.bincount(self.y_test.cpu(), minlength=self.classes).tolist(),
        }

    def to(self, device) -> "Dataset":
        """The same dataset with its tensors on ``device``."""
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return dataclasses.replace(self, **move)


def load_dataset(name: str, root=None, download: bool = False, device="cpu") -> Dataset:
    """Decode ``name`` once, normalise it, and return its tensors on ``device``.

    digits comes with scikit-learn (no root needed); mnist, fashion-mnist and kmnist are read through
    torchvision from ``root/<Folder>/raw`` (default ~/.cache/netzoo/datasets, or $NETZOO_DATA_ROOT).
    """
    info = dataset_info(name)
    data = _load_digits() if name == "digits" else _load_torchvision(info, root, download)
    return data.to(device)


def _normalised(x, mean: float, std: float):
    """(x - mean) / std as float32."""
    return ((x - mean) / std).float()


def _split_digits() -> dict:
    """scikit-learn's digits split 80/20 stratified with a fixed seed: x_train, x_test (float32, 0..16), y_train,
    y_test (int64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype("float32")[:, None]  # (1797, 1, 8, 8), values 0..16
    y = bunch.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


def _cached_digits_split() -> dict:
    """The digits split, from a .npz in the cache when there (importing scikit-learn costs ~1.5 s in every
    worker process); made with scikit-learn and cached otherwise. The file's name carries scikit-learn's
    version and the split's parameters, so a change of either makes a new one; an unreadable one is remade."""
    import zipfile
    from importlib.metadata import version

    import numpy as np

    path = CACHE_DIR / (f"digits-sklearn{version('scikit-learn')}-test{DIGITS_TEST_FRACTION}"
                        f"-seed{DIGITS_SPLIT_SEED}.npz")
    try:
        with np.load(path) as cached:
            return {k: cached[k] for k in ("x_train", "x_test", "y_train", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    split = _split_digits()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.stem}-{os.getpid()}.npz")
        np.savez(tmp, **split)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs the speed-up
        log.debug("cannot cache the digits split at %s: %s", path, exc)
    return split


def _load_digits() -> Dataset:
    """scikit-learn's 1797 8x8 digits, split 80/20 stratified with a fixed seed, normalised by train statistics."""
    import torch

    split = _cached_digits_split()
    x_train, x_test, y_train, y_test = split["x_train"], split["x_test"], split["y_train"], split["y_test"]
    mean, std = float(x_train.mean()), float(x_train.std())
    return Dataset(
        name="digits", x_train=_normalised(torch.from_numpy(x_train), mean, std), y_train=torch.from_numpy(y_train),
        x_test=_normalised(torch.from_numpy(x_test), mean, std), y_test=torch.from_numpy(y_test),
        classes=10, input_shape=(1, 8, 8), mean=mean, std=std,
        split=(f"stratified {100 - int(DIGITS_TEST_FRACTION * 100)}/{int(DIGITS_TEST_FRACTION * 100)} "
               f"(sklearn train_test_split, random_state={DIGITS_SPLIT_SEED})"),
        source=DATASETS["digits"].source)


def _writable(folder: Path) -> bool:
    """Whether files may be created in ``folder``: its mode grants writing (root ignores the mode, we do
    not: a folder marked read-only, like a shared dataset copy, stays untouched) and the OS allows it."""
    import stat

    return bool(folder.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK)


def _prepare_raw(folder: str, root: Path) -> Path:
    """A root whose ``folder/raw`` holds the uncompressed IDX files torchvision reads, or a DatasetError.

    torchvision decompresses next to the .gz files; when ``root`` is read-only (e.g. a shared copy) the .gz
    files are linked into ~/.cache/netzoo/<folder> and decompressed there.
    """
    raw = root / folder / "raw"
    if all((raw / f).is_file() for f in _IDX_FILES):
        return root
    if not all((raw / f"{f}.gz").is_file() for f in _IDX_FILES):
        missing = [f"{f}.gz" for f in _IDX_FILES if not (raw / f"{f}.gz").is_file() and not (raw / f).is_file()]
        raise DatasetError(
            f"No {folder} under {raw} (looked for {', '.join(missing)}). Pass --download, or --data-root to "
            f"a folder that holds {folder}/raw (e.g. --data-root ../shared/datasets).")
    target_root = root
    if not _writable(raw):
        target_root = CACHE_DIR / folder
        log.info("%s is read-only: using a decompressed copy of %s in %s", raw, folder, target_root / folder / "raw")
        cache_raw = target_root / folder / "raw"
        cache_raw.mkdir(parents=True, exist_ok=True)
        for f in _IDX_FILES:
            link = cache_raw / f"{f}.gz"
            if not link.exists():
                tmp = cache_raw / f".tmp-{f}.gz-{os.getpid()}"
                tmp.symlink_to((raw / f"{f}.gz").resolve())
                os.replace(tmp, link)
        raw = cache_raw
    for f in _IDX_FILES:
        if not (raw / f).is_file():
            tmp = raw / f".tmp-{f}-{os.getpid()}"
            with gzip.open(raw / f"{f}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, raw / f)  # atomic: a concurrent worker never reads half a file
    return target_root


def _load_torchvision(info: DatasetInfo, root, download: bool) -> Dataset:
    """MNIST, Fashion-MNIST or KMNIST through torchvision.datasets, normalised (MNIST: the study's 0.1307/0.3081)."""
    import torch
    import torchvision.datasets as tvd

    folder = _TORCHVISION[info.name]
    root = Path(root).expanduser() if root is not None else DEFAULT_ROOT
    cls = getattr(tvd, folder)
    if download and not all((root / folder / "raw" / f"{f}.gz").is_file() for f in _IDX_FILES) \
            and not all((root / folder / "raw" / f).is_file() for f in _IDX_FILES):
        root.mkdir(parents=True, exist_ok=True)
        try:
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
        except Exception as exc:  # network errors come in many types
            raise DatasetError(f"Downloading {info.name} into {root} failed: {exc}. Copy {folder}/raw/*.gz "
                               f"there by hand, or pass --data-root to a folder that holds them.") from None
    usable = _prepare_raw(folder, root)
    train, test = cls(str(usable), train=True), cls(str(usable), train=False)
    x_train = train.data.to(torch.float32).div_(255)[:, None]  # (60000, 1, 28, 28) in [0, 1]
    x_test = test.data.to(torch.float32).div_(255)[:, None]
    if info.name == "mnist":
        mean, std, how = MNIST_MEAN, MNIST_STD, "the study's"
    else:
        mean, std, how = float(x_train.mean()), float(x_train.std()), "train statistics"
    return Dataset(
        name=info.name, x_train=_normalised(x_train, mean, std), y_train=train.targets.to(torch.int64),
        x_test=_normalised(x_test, mean, std), y_test=test.targets.to(torch.int64),
        classes=info.classes, input_shape=info.input_shape, mean=mean, std=std,
        split=f"the official train/test split ({len(x_train)}/{len(x_test)}); normalisation: {how}",
        source=f"{info.source} from {usable / folder / 'raw'}")
