"""The datasets netzoo trains on: digits (embedded, default), mnist, fashion-mnist, kmnist.

load_dataset() decodes a dataset once, normalises it, and returns tensors already on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass

from netzoo.errors import DatasetError


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
