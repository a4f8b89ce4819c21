"""Seeds trained as one vmapped model match the same seeds trained one by one (netzoo/batched.py)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netzoo.batched import batch_blocker, make_optimizer, train_seeds
from netzoo.recipe import Recipe

RECIPE = Recipe(epochs=2, batch_size=16, eval_batch_size=50)
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


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (200,), generator=gen)
    return x[:150], y[:150], x[150:], y[150:]


def _separately(model, data, seed):
    """The plain hot loop, one seed at a time: the reference the batched run must reproduce."""
    x_train, y_train, x_test, y_test = data
    gen = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(list(model.parameters()), RECIPE)
    test_log_probs = []
    for _ in range(RECIPE.epochs):
        model.train()
        for idx in torch.randperm(len(x_train), generator=gen).split(RECIPE.batch_size):
            loss = F.nll_loss(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            test_log_probs.append(model(x_test))
    return test_log_probs


@pytest.mark.parametrize("network", [TinyMLP, TinyConv])
def test_batched_seeds_match_separately_trained_seeds(network):
    data = _data()
    initial = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        initial.append(network())
    separate = [_separately(copy.deepcopy(m), data, seed) for m, seed in zip(initial, SEEDS)]

    batched_models = [copy.deepcopy(m) for m in initial]
    epochs = list(train_seeds(batched_models, *data, recipe=RECIPE, seeds=SEEDS))

    assert len(epochs) == RECIPE.epochs and all(len(e) == len(SEEDS) for e in epochs)
    for e, per_seed in enumerate(epochs):
        for s, result in enumerate(per_seed):
            assert result.seed == SEEDS[s] and result.epoch == e + 1
            torch.testing.assert_close(result.test_log_probs, separate[s][e], rtol=1e-4, atol=1e-4)
    # the trained weights are handed back to the models
    torch.testing.assert_close(batched_models[1](data[2]), separate[1][-1], rtol=1e-4, atol=1e-4)
    # different seeds really trained differently
    assert not torch.allclose(epochs[-1][0].test_log_probs, epochs[-1][1].test_log_probs)


def test_batch_norm_and_dropout_fall_back_with_a_reason():
    assert batch_blocker(TinyMLP(), RECIPE) is None
    assert "BatchNorm" in batch_blocker(TinyBatchNorm(), RECIPE)
    assert "Dropout" in batch_blocker(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10)), RECIPE)
    assert "early stopping" in batch_blocker(TinyMLP(), RECIPE.replace(early_stopping_patience=2))
    with pytest.raises(ValueError, match="one by one"):
        next(train_seeds([TinyBatchNorm(), TinyBatchNorm()], *_data(), recipe=RECIPE, seeds=[1, 2]))
