"""Seeds trained as one vmapped model match the same seeds trained one by one (netzoo/batched.py)."""

import numpy as np
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
