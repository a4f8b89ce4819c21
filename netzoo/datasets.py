"""The datasets netzoo trains on: digits (embedded, default), mnist, fashion-mnist, kmnist.

load_dataset() decodes a dataset once, normalises it, and returns tensors already on the training device.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from netzoo import files
from netzoo.errors import DatasetError
from netzoo.idx import IdxFile, corrupt, decompress, gz_problem, idx_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """What the generator and the trainer need to know of a dataset before loading it."""

    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    classes: int
    source: str                        # where it comes from
    train_size: int                    # training samples: the optimizer steps per epoch without loading anything
    test_size: int                     # test samples


DATASETS: dict[str, DatasetInfo] = {
    # digits: 1797 images split 80/20 stratified (DIGITS_TEST_FRACTION): 1437 train, 360 test
    "digits": DatasetInfo("digits", (1, 8, 8), 10, "scikit-learn's bundled load_digits (embedded, offline)", 1437, 360),
    # the three torchvision datasets: 60,000 train and 10,000 test images each (yann.lecun.com/exdb/mnist,
    # github.com/zalandoresearch/fashion-mnist, github.com/rois-codh/kmnist)
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, "torchvision.datasets.MNIST", 60000, 10000),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, "torchvision.datasets.FashionMNIST", 60000, 10000),
    "kmnist": DatasetInfo("kmnist", (1, 28, 28), 10, "torchvision.datasets.KMNIST", 60000, 10000),
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


VALIDATION_SEED = 0  # the split seed of every validation split: one held-out set for every network and seed


@dataclass(frozen=True, eq=False)
class ValidationSplit:
    """The samples of a training split a recipe holds out for validation (``Dataset.with_validation``)."""

    dataset: str
    fraction: float           # the recipe's ``validation``
    seed: int                 # the split seed (VALIDATION_SEED): never the training seed
    indices: "np.ndarray"     # (n_val,) int64 positions in the full training split, ascending
    train_size: int           # the full training split, before holding out
    class_counts: tuple[int, ...]  # held-out samples per class

    @property
    def name(self) -> str:
        """Its name in DIR/splits/ (``split_name``)."""
        return split_name(self.fraction, self.seed)

    @property
    def sha256(self) -> str:
        """``indices_sha256`` of its indices: what tells two splits apart."""
        return indices_sha256(self.indices)

    def record(self) -> dict:
        """What DIR/splits/<name>.json records (``netzoo.identity.record_split``)."""
        return {"dataset": self.dataset, "fraction": self.fraction, "seed": self.seed,
                "train_size": self.train_size, "validation_size": int(len(self.indices)),
                "train_size_after": self.train_size - int(len(self.indices)),
                "class_counts": list(self.class_counts), "stratified_by": "class",
                "drawn_with": f"sklearn.model_selection.train_test_split(stratify=labels, random_state={self.seed})",
                "indices": f"splits/{self.name}.npy", "indices_sha256": self.sha256}


def indices_sha256(indices) -> str:
    """sha256 (hex) of sample positions as little-endian int64."""
    import hashlib

    import numpy as np

    return hashlib.sha256(np.asarray(indices).astype("<i8").tobytes()).hexdigest()


def split_name(fraction: float, seed: int = VALIDATION_SEED) -> str:
    """'validation-0.08333333333333333-seed0': the exact fraction and the split seed, so two recipes share a
    split's name only when they hold out the same samples."""
    return f"validation-{float(fraction)!r}-seed{int(seed)}"


def validation_indices(labels: "np.ndarray", fraction: float, seed: int = VALIDATION_SEED) -> "np.ndarray":
    """Positions (ascending int64) of ``ceil(fraction * N)`` samples of a training split with ``labels`` (N,),
    stratified by class: each class keeps its share to within one sample (scikit-learn's ``train_test_split``
    with ``stratify``, its largest-remainder allocation). The same ``labels``, ``fraction`` and ``seed`` always
    give the same positions. Raises DatasetError when the split would hold fewer samples than classes."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    classes = len(np.unique(labels))
    try:
        _, held_out = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels,
                                       random_state=seed)
    except ValueError as exc:
        n = max(len(labels), 1)
        if fraction * n < classes:
            fix = f"hold out at least {classes} samples, e.g. validation = {min(0.5, 2 * classes / n):.3g}"
        else:  # too few left to train on
            fix = f"leave at least {classes} samples to train on, e.g. validation = {max(0.5, 1 - 2 * classes / n):.3g}"
        raise DatasetError(f"validation {fraction} of {len(labels)} training samples cannot be stratified over "
                           f"{classes} classes ({exc}): {fix}.") from None
    return np.sort(held_out).astype(np.int64)


@dataclass
class Dataset:
    """A dataset decoded once: normalised float32 (N, C, H, W) images and int64 labels, on one device.

    ``x_val``, ``y_val`` and ``validation`` are None unless a recipe held part of the training split out
    (``with_validation``): then ``x_train``, ``y_train`` hold the rest."""

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
    x_val: "torch.Tensor | None" = None
    y_val: "torch.Tensor | None" = None
    validation: ValidationSplit | None = None

    def with_validation(self, fraction: float, split_seed: int = VALIDATION_SEED, indices=None) -> "Dataset":
        """This dataset with ``fraction`` of its training split held out as ``x_val``, ``y_val`` (stratified by
        class, drawn with ``split_seed``: the same samples whatever network or training seed trains on it) and
        the rest, in its order, as ``x_train``, ``y_train``. The normalisation stays the full split's. ``fraction``
        0: this dataset as it is. ``indices``: the held-out positions as recorded (DIR/splits/), which spares a
        worker drawing them again (and importing scikit-learn). Raises DatasetError for a split that cannot be
        stratified or indices outside the training split, ValueError on a dataset already split."""
        import numpy as np
        import torch

        if fraction == 0:
            return self
        if self.validation is not None:
            raise ValueError(f"{self.name} already holds out {self.validation.name}: split the full dataset")
        labels = self.y_train.cpu().numpy()
        if indices is None:
            held_out = validation_indices(labels, fraction, split_seed)
        else:
            held_out = np.asarray(indices, dtype=np.int64)
            if held_out.ndim != 1 or len(np.unique(held_out)) != len(held_out) or \
                    (len(held_out) and not 0 <= held_out.min() <= held_out.max() < len(labels)):
                raise DatasetError(f"the recorded validation indices of {self.name} are not distinct positions in "
                                   f"its {len(labels)} training samples: delete DIR/splits/ and train again.")
            held_out = np.sort(held_out)
        keep = np.ones(len(labels), dtype=bool)
        keep[held_out] = False
        val_idx = torch.from_numpy(held_out).to(self.y_train.device)
        train_idx = torch.from_numpy(np.flatnonzero(keep)).to(self.y_train.device)
        split = ValidationSplit(self.name, float(fraction), int(split_seed), held_out, len(labels),
                                tuple(np.bincount(labels[held_out], minlength=self.classes).tolist()))
        return dataclasses.replace(self, x_train=self.x_train[train_idx], y_train=self.y_train[train_idx],
                                   x_val=self.x_train[val_idx], y_val=self.y_train[val_idx], validation=split)

    def describe(self) -> dict:
        """What DIR/dataset.json records: sizes, split, normalisation, per-class test counts (of the full
        dataset: a validation split is recorded per recipe, in DIR/splits/)."""
        import torch

        if self.validation is not None:
            raise ValueError("describe the full dataset: a validation split is recorded in DIR/splits/")
        return {
            "name": self.name, "source": self.source, "split": self.split,
            "input_shape": "x".join(map(str, self.input_shape)), "classes": self.classes,
            "train_size": int(self.x_train.shape[0]), "test_size": int(self.x_test.shape[0]),
            "mean": self.mean, "std": self.std,
            "test_class_counts": torch.bincount(self.y_test.cpu(), minlength=self.classes).tolist(),
        }

    def to(self, device) -> "Dataset":
        """The same dataset with its tensors on ``device``."""
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")
                if getattr(self, k) is not None}
        return dataclasses.replace(self, **move)


def load_dataset(name: str, root=None, download: bool = False, device="cpu") -> Dataset:
    """Decode ``name`` once, normalise it, and return its tensors on ``device``.

    digits comes with scikit-learn (no root needed); mnist, fashion-mnist and kmnist are read through
    torchvision from ``root/<Folder>/raw`` (default ~/.cache/netzoo/datasets, or $NETZOO_DATA_ROOT).
    """
    info = dataset_info(name)
    data = _load_digits() if name == "digits" else _load_torchvision(info, root, download)
    return data.to(device)


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, root=None, download: bool = False, device="cpu") -> Dataset:
    """``load_dataset``, decoded once per process for each (name, root, device): a worker trains many networks
    on the same tensors."""
    return load_dataset(name, root=root, download=download, device=device)


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
        files.atomic_write(path, lambda f: np.savez(f, **split))
    except OSError as exc:  # a read-only or full cache only costs the speed-up
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


def published_files(name: str) -> tuple[IdxFile, ...]:
    """The four raw files of a torchvision dataset as published: the shape each holds, and the md5 of each
    .gz read from torchvision's own list (``torchvision.datasets.MNIST.resources`` and its kin's)."""
    import torchvision.datasets as tvd

    md5 = {gz.removesuffix(".gz"): digest for gz, digest in getattr(tvd, _TORCHVISION[name]).resources}
    info = dataset_info(name)
    _, rows, cols = info.input_shape
    files = []
    for split, count in (("train", info.train_size), ("t10k", info.test_size)):  # "t10k": the test files' prefix
        files.append(IdxFile(f"{split}-images-idx3-ubyte", (count, rows, cols), md5[f"{split}-images-idx3-ubyte"]))
        files.append(IdxFile(f"{split}-labels-idx1-ubyte", (count,), md5[f"{split}-labels-idx1-ubyte"]))
    return tuple(files)


def _checked_raw_files(folder: str, root: Path, files: tuple[IdxFile, ...]) -> dict[str, Path]:
    """A whole, decompressed copy of each of ``files``, decided per file, or a DatasetError naming the file.

    ``root/folder/raw/<name>`` is used when its header and size are right (a damaged one beside a good .gz is
    logged and made again). Otherwise ``<name>.gz`` must match its published md5 and is decompressed next to
    itself or, when raw is read-only, into the cache, under the md5 of the bytes it came from: no other
    source is ever served from there. Every file is checked before any is decompressed.
    """
    raw = root / folder / "raw"
    missing = [f.name for f in files if not (raw / f.name).is_file() and not (raw / f"{f.name}.gz").is_file()]
    if missing:
        raise DatasetError(_missing_message(folder, raw, missing, everything=len(missing) == len(files)))
    paths, to_decompress = {}, []
    for f in files:
        plain, gz = raw / f.name, raw / f"{f.name}.gz"
        if plain.is_file():
            problem = idx_problem(plain, f)
            if problem is None:
                paths[f.name] = plain
                continue
            if not gz.is_file():
                raise corrupt(plain, problem)
            log.warning("%s is corrupt (%s): decompressing %s again", plain, problem, gz.name)
        problem = gz_problem(gz, f)
        if problem is not None:
            raise corrupt(gz, problem)
        to_decompress.append(f)
    cached = bool(to_decompress) and not _writable(raw)
    if cached:
        log.info("%s is read-only: using decompressed copies of its .gz files in %s", raw, CACHE_DIR / "idx")
    for f in to_decompress:
        # In the cache, under the md5 just checked: the same bytes, wherever they lie, give the same file.
        target = CACHE_DIR / "idx" / f.gz_md5 / f.name if cached else raw / f.name
        if not (cached and target.is_file() and idx_problem(target, f) is None):
            decompress(raw / f"{f.name}.gz", target, f)
        paths[f.name] = target
    return paths


def _missing_message(folder: str, raw: Path, missing: list[str], everything: bool) -> str:
    """'No MNIST under …' or '… is incomplete: no …', naming every missing file, then the fix."""
    names = ", ".join(f"{name} (nor {name}.gz)" for name in missing)
    head = f"No {folder} under {raw} (looked for {names})." if everything else f"{raw} is incomplete: no {names}."
    return (f"{head} Pass --download, or --data-root to a folder that holds {folder}/raw "
            f"(e.g. --data-root ../shared/datasets).")


def _download(info: DatasetInfo, root: Path, files: tuple[IdxFile, ...]) -> None:
    """Fetch the published .gz files through torchvision (its mirrors, its md5 check) into a temporary folder
    under ``root/<folder>/raw``, then move in each one that is missing there or fails its md5.

    Nothing half-downloaded is left behind: the temporary folder goes on success and on failure."""
    import torchvision.datasets as tvd

    folder = _TORCHVISION[info.name]
    raw = root / folder / "raw"
    existing = next(p for p in (raw, *raw.parents) if p.exists())
    if not existing.is_dir() or not _writable(existing):
        raise DatasetError(f"Cannot download {info.name} into {raw}: {existing} is read-only or not a folder. "
                           f"Pass --data-root to a writable folder, or copy {folder}/raw/*.gz there by hand.")
    raw.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-download-", dir=raw))
    try:
        try:
            getattr(tvd, folder)(str(staging), train=False, download=True)  # downloads all four files
        except Exception as exc:  # network errors come in many types
            reason = " ".join(str(exc).split()).rstrip(".")  # torchvision's message spans several lines
            raise DatasetError(f"Downloading {info.name} into {root} failed ({reason}). Copy {folder}/raw/*.gz "
                               f"there by hand, or pass --data-root to a folder that holds them.") from None
        for f in files:
            fetched, gz = staging / folder / "raw" / f"{f.name}.gz", raw / f"{f.name}.gz"
            if not gz.is_file() or gz_problem(gz, f) is not None:
                problem = gz_problem(fetched, f) if fetched.is_file() else "missing"
                if problem is not None:
                    raise DatasetError(f"Downloading {info.name} gave a corrupt {f.name}.gz ({problem}); nothing "
                                       f"was replaced. Try again later, or copy {folder}/raw/*.gz into {root} "
                                       f"by hand.")
                os.replace(fetched, gz)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_torchvision(info: DatasetInfo, root, download: bool) -> Dataset:
    """MNIST, Fashion-MNIST or KMNIST, each raw file checked, normalised (MNIST: the study's 0.1307/0.3081).

    The files are read with torchvision's IDX readers, never through its dataset classes, which would read
    a stale ``processed/`` folder left by torchvision < 0.8 instead of the checked raw files."""
    import torch
    from torchvision.datasets.mnist import read_image_file, read_label_file

    folder = _TORCHVISION[info.name]
    root = Path(root).expanduser() if root is not None else DEFAULT_ROOT
    files = published_files(info.name)
    try:
        try:
            paths = _checked_raw_files(folder, root, files)
        except DatasetError:
            if not download:
                raise
            _download(info, root, files)
            paths = _checked_raw_files(folder, root, files)
    except OSError as exc:  # an unreadable folder or file
        raise DatasetError(f"Cannot read {exc.filename or root}: {exc.strerror or exc}. Pass --data-root to a "
                           f"folder that holds {folder}/raw.") from None
    x_train = read_image_file(str(paths["train-images-idx3-ubyte"])).to(torch.float32).div_(255)[:, None]
    x_test = read_image_file(str(paths["t10k-images-idx3-ubyte"])).to(torch.float32).div_(255)[:, None]
    y_train = read_label_file(str(paths["train-labels-idx1-ubyte"]))  # int64
    y_test = read_label_file(str(paths["t10k-labels-idx1-ubyte"]))
    if info.name == "mnist":
        mean, std, how = MNIST_MEAN, MNIST_STD, "the study's"
    else:
        mean, std, how = float(x_train.mean()), float(x_train.std()), "train statistics"
    return Dataset(
        name=info.name, x_train=_normalised(x_train, mean, std), y_train=y_train,
        x_test=_normalised(x_test, mean, std), y_test=y_test,
        classes=info.classes, input_shape=info.input_shape, mean=mean, std=std,
        split=f"the official train/test split ({len(x_train)}/{len(x_test)}); normalisation: {how}",
        source=f"{info.source} from {root / folder / 'raw'}")
