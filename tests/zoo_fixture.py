"""A tiny hand-written zoo for the trainer's tests: a few network files and a manifest in schema.MANIFEST.

Like NATS-Bench's fake_torch_dir: real networks, small enough to train in a second on digits. Besides the
healthy ones, ``NaNNet_1`` returns NaN log-probabilities (it must be recorded as diverged) and
``BrokenNet_1`` raises in forward (recorded as failed). ``BATCH_NORM`` holds a network with a BatchNorm layer,
for zoos made with ``batch_norm=True`` (kept apart: a zoo of ``SOURCES`` has none).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from netzoo.schema import MANIFEST, conform

HEADER = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n\n"

SOURCES = {
    "LinearReLU_1": ("Linear", "ReLU", 2, '''
class LinearReLU_1(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({features}, 32)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(32, {classes})

    def forward(self, x):
        return F.log_softmax(self.fc2(self.act1(self.fc1(torch.flatten(x, 1)))), dim=1)
'''),
    "LinearTanh_1": ("Linear", "Tanh", 2, '''
class LinearTanh_1(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({features}, 16)
        self.act1 = nn.Tanh()
        self.fc2 = nn.Linear(16, {classes})

    def forward(self, x):
        return F.log_softmax(self.fc2(self.act1(self.fc1(torch.flatten(x, 1)))), dim=1)
'''),
    "Conv2dReLU_1": ("Conv2d", "ReLU", 2, '''
class Conv2dReLU_1(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d({channels}, 4, kernel_size=3, stride=2, padding=1)
        self.act1 = nn.ReLU()
        self.fc1 = nn.Linear(4 * (({side} + 1) // 2) ** 2, {classes})

    def forward(self, x):
        return F.log_softmax(self.fc1(torch.flatten(self.act1(self.conv1(x)), 1)), dim=1)
'''),
    "Basic": ("Basic", "None", 1, '''
class Basic(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({features}, {classes})

    def forward(self, x):
        return F.log_softmax(self.fc1(torch.flatten(x, 1)), dim=1)
'''),
    "NaNNet_1": ("Linear", "None", 1, '''
class NaNNet_1(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({features}, {classes})

    def forward(self, x):
        return F.log_softmax(self.fc1(torch.flatten(x, 1)), dim=1) * float("nan")
'''),
    "BrokenNet_1": ("Linear", "None", 1, '''
class BrokenNet_1(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({features}, {classes})

    def forward(self, x):
        raise RuntimeError("planted failure in BrokenNet_1.forward")
'''),
}

BATCH_NORM = {
    "LinearReLU_2": ("Linear", "ReLU", 2, '''
class LinearReLU_2(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({features}, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(16, {classes})

    def forward(self, x):
        return F.log_softmax(self.fc2(self.act1(self.bn1(self.fc1(torch.flatten(x, 1))))), dim=1)
'''),
}

HEALTHY = ("Basic", "Conv2dReLU_1", "LinearReLU_1", "LinearTanh_1")


def make_zoo(out: Path, names=HEALTHY, input_shape=(1, 8, 8), classes: int = 10, dropout: float = 0.0,
             batch_norm: bool = False) -> Path:
    """Write the named networks and a manifest.parquet into ``out``; return ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    channels, side, _ = input_shape
    rows = []
    for name in names:
        family, activation, depth, source = {**SOURCES, **BATCH_NORM}[name]
        code = source.format(features=channels * side * side, classes=classes, channels=channels, side=side)
        source = (f"# {name}: hand-written test fixture\n" + HEADER + code.lstrip()).encode()
        (out / f"{name}.py").write_bytes(source)
        rows.append({
            "network": name, "family": family, "activation": activation, "depth": depth, "arch_id": name.lower(),
            "file": f"{name}.py", "file_sha256": hashlib.sha256(source).hexdigest(), "template": "fixture", "input_shape": "x".join(map(str, input_shape)),
            "classes": classes, "params": 0, "memory": 0, "ops": 0, "macs": 0, "flops_forward": 0,
            "flops_train_step": 0, "layer_types": ["Linear"] * depth, "widths": [classes] * depth,
            "kernel_sizes": [0] * depth, "biases": [True] * depth, "activations_after": [False] * depth,
            "dropout": dropout, "batch_norm": batch_norm, "hparams": json.dumps({}), "spec": "fixture",
            "spec_hash": "0" * 64, "seed": 0,
        })
    import pyarrow.parquet as pq

    pq.write_table(conform(pd.DataFrame(rows), MANIFEST), out / "manifest.parquet")
    return out


def digits_job(zoo: Path, results: Path, epochs: int = 2, **changes):
    """A TrainJob on digits for ``zoo``: 2 epochs, CPU, one in-process worker, no lenses, quiet."""
    from netzoo.jobs import TrainJob
    from netzoo.recipe import STUDY

    options = {"recipe": STUDY.replace(epochs=epochs), "workers": 1, "devices": ("cpu",), "lenses": False,
               "quiet": True, **changes}
    return TrainJob(zoo=zoo, dataset="digits", results=results, **options)


def plain_and_regularised(root: Path, plain, regularised) -> Path:
    """Two digits zoos of the default spec under ``root``: ``plain/`` holding the networks ``plain``, and
    ``regularised/`` holding ``regularised`` generated with BatchNorm after each hidden layer and Dropout(0.2)
    after each activation (the fusion tests' cases)."""
    from netzoo.generate import generate_zoo

    generate_zoo("default", dataset="digits", out=root / "plain", networks=list(plain), progress=False)
    generate_zoo("default", dataset="digits", out=root / "regularised", networks=list(regularised), progress=False,
                 batch_norm=True, dropout=0.2)
    return root
