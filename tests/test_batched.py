"""Seeds trained as one vmapped model match the same seeds trained one by one (netzoo/batched.py)."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netzoo.batched import batch_blocker, train_seeds
from netzoo.datasets import Dataset
from netzoo.recipe import Recipe
from netzoo.train import train_network

RECIPE = Recipe(epochs=2, batch_size=16, eval_batch_size=20)
SEEDS = [1, 2, 3]


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.act1 = nn.Tanh()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc2(self.act1(self.fc1(torch.flatten(x, 1)))), dim=1)


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=3, stride=2, padding=1)
        self.act1 = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))  # (N, 6, 4, 4)
        return F.log_softmax(self.fc1(torch.flatten(x, 1)), dim=1)


class TinyBatchNorm(TinyConv):
    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(6)


def _data() -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 8, 8, generator=gen)
    y = torch.arange(200) % 10
    return Dataset(name="synthetic", x_train=x[:150], y_train=y[:150], x_test=x[150:], y_test=y[150:],
                   classes=10, input_shape=(1, 8, 8), mean=0.0, std=1.0, split="150/50", source="randn")


@pytest.mark.parametrize("network", [TinyMLP, TinyConv])
def test_batched_seeds_match_separately_trained_seeds(network):
    data = _data()
    separate = {seed: list(train_network(network(), data, RECIPE, seed)) for seed in SEEDS}
    batched = list(train_seeds(network(), data, RECIPE, SEEDS))

    assert len(batched) == RECIPE.epochs and all(sorted(e) == SEEDS for e in batched)
    for e, per_seed in enumerate(batched):
        for seed, result in per_seed.items():
            alone = separate[seed][e]
            assert result.epoch == alone.epoch == e + 1 and result.status == alone.status == "done"
            np.testing.assert_allclose(result.log_probs, alone.log_probs, rtol=1e-4, atol=1e-4)
            for column in ("train_loss", "train_acc", "test_loss", "test_acc", "test_balanced_acc", "lr",
                           "test_acc_class_3"):
                assert result.metrics[column] == pytest.approx(alone.metrics[column], rel=1e-4, abs=1e-4), column
    # different seeds really trained differently
    assert not np.allclose(batched[-1][SEEDS[0]].log_probs, batched[-1][SEEDS[1]].log_probs)


def test_batch_norm_and_dropout_fall_back_with_a_reason():
    assert batch_blocker(TinyMLP(), RECIPE) is None
    assert "BatchNorm" in batch_blocker(TinyBatchNorm(), RECIPE)
    assert "Dropout" in batch_blocker(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10)), RECIPE)
    assert "early stopping" in batch_blocker(TinyMLP(), RECIPE.replace(early_stopping_patience=2))
    with pytest.raises(ValueError, match="one by one"):
        next(train_seeds(TinyBatchNorm(), _data(), RECIPE, seeds=[1, 2]))


def test_runner_trains_seeds_of_one_network_batched_with_the_rows_of_separate_training(tmp_path, monkeypatch):
    import netzoo.batched
    from netzoo.results import load
    from netzoo.runner import run_job
    from zoo_fixture import digits_job, make_zoo

    zoo = make_zoo(tmp_path / "zoo", names=("LinearReLU_1", "Conv2dReLU_1"))
    separate = run_job(digits_job(zoo, tmp_path / "separate", seeds=(1, 2, 3)))
    calls = []
    real = netzoo.batched.train_seeds
    monkeypatch.setattr(netzoo.batched, "train_seeds", lambda *a, **k: (calls.append(a[3]), real(*a, **k))[1])
    monkeypatch.setattr(netzoo.batched, "BATCH_DEVICE_TYPES", ("cuda", "cpu"))  # the GPU path, on the CPU
    batched = run_job(digits_job(zoo, tmp_path / "batched", seeds=(1, 2, 3)))

    assert calls == [[1, 2, 3], [1, 2, 3]]  # one batched run per network, all three seeds
    assert batched.count("done") == separate.count("done") == 6
    key = ["network", "seed", "epoch"]
    a = load(tmp_path / "separate").epochs.sort_values(key).reset_index(drop=True)
    b = load(tmp_path / "batched").epochs.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    np.testing.assert_allclose(a[["train_loss", "test_loss", "test_acc"]], b[["train_loss", "test_loss", "test_acc"]],
                               rtol=1e-4, atol=1e-4)
    assert len(load(tmp_path / "batched").predictions) == len(load(tmp_path / "separate").predictions)


class TinyNaN(TinyMLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


def test_a_seed_that_diverges_in_a_batch_has_no_predictions_and_no_accuracies():
    (per_seed,) = train_seeds(TinyNaN(), _data(), RECIPE, SEEDS)
    assert sorted(per_seed) == SEEDS
    for r in per_seed.values():
        assert r.status == "diverged"
        assert r.log_probs is None
        assert r.metrics["test_acc"] is None and r.metrics["test_balanced_acc"] is None
        assert r.metrics["test_acc_class_0"] is None and r.metrics["train_acc"] is None


class StatelessBatchNorm(TinyMLP):
    """BatchNorm without running statistics: no buffers, so its seeds can be batched."""

    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm1d(32, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc2(self.act1(self.bn1(self.fc1(torch.flatten(x, 1))))), dim=1)


def test_batched_seeds_of_a_batch_norm_network_merge_a_last_batch_of_one():
    data = _data()  # 150 training samples: batches of 149 and 1
    recipe = RECIPE.replace(batch_size=149, epochs=1)
    assert batch_blocker(StatelessBatchNorm(), recipe) is None
    (per_seed,) = train_seeds(StatelessBatchNorm(), data, recipe, SEEDS)
    assert all(r.status == "done" and r.last_batch_merged for r in per_seed.values())
    alone = list(train_network(StatelessBatchNorm(), data, recipe, SEEDS[0]))[0]
    np.testing.assert_allclose(per_seed[SEEDS[0]].log_probs, alone.log_probs, rtol=1e-4, atol=1e-4)
