"""The hot loop: recipes honoured, same seed same numbers, NaN recorded as diverged, early stopping."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from netzoo.datasets import load_dataset
from netzoo.recipe import INITS, OPTIMIZERS, Recipe
from netzoo.train import evaluate, init_weights, train_network


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits):
    """The first 400 training images only: 16 steps per epoch keeps recipe tests fast."""
    return dataclasses.replace(digits, x_train=digits.x_train[:400], y_train=digits.y_train[:400])


class MLP(nn.Module):
    """64 -> 32 -> 10 with ReLU, log-probabilities out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1, self.fc2 = nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)

    def forward(self, x):
        return torch.log_softmax(self.fc2(self.act1(self.fc1(torch.flatten(x, 1)))), dim=1)


class NaNOut(MLP):
    def forward(self, x):
        return super().forward(x) * float("nan")


def test_same_seed_gives_the_same_numbers_on_cpu(small):
    first = [r.metrics for r in train_network(MLP(), small, Recipe(epochs=2), seed=7)]
    second = [r.metrics for r in train_network(MLP(), small, Recipe(epochs=2), seed=7)]
    other = [r.metrics for r in train_network(MLP(), small, Recipe(epochs=2), seed=8)]
    keys = ["train_loss", "train_acc", "test_loss", "test_acc", "test_balanced_acc"]
    assert [[m[k] for k in keys] for m in first] == [[m[k] for k in keys] for m in second]
    assert [m["test_loss"] for m in first] != [m["test_loss"] for m in other]


def test_study_recipe_learns_digits_and_records_every_metric(digits):
    results = list(train_network(MLP(), digits, Recipe(epochs=2), seed=42))
    assert [r.epoch for r in results] == [1, 2] and all(r.status == "done" for r in results)
    last = results[-1].metrics
    assert last["test_acc"] > 0.85 and last["train_acc"] > 0.5
    recalls = [last[f"test_acc_class_{k}"] for k in range(10)]
    assert last["test_balanced_acc"] == pytest.approx(sum(recalls) / 10)
    assert last["train_time_s"] == pytest.approx(results[0].metrics["epoch_time_s"] + last["epoch_time_s"])
    assert results[-1].log_probs.shape == (360, 10)
    assert last["lr"] == 0.002


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(small, optimizer):
    lr = {"sgd": 0.5, "sgd-momentum": 0.05, "nesterov": 0.05}.get(optimizer, 0.002)
    (result,) = train_network(MLP(), small, Recipe(optimizer=optimizer, lr=lr, epochs=1, weight_decay=1e-4), seed=0)
    assert result.status == "done" and result.metrics["test_acc"] > 0.3


@pytest.mark.parametrize("schedule, lrs", [("cosine", [0.002, 0.001]), ("step", [0.002, 0.0002])])
def test_lr_schedules_change_the_lr_per_epoch(small, schedule, lrs):
    recipe = Recipe(epochs=2, schedule=schedule, step_size=1, gamma=0.1)
    got = [r.metrics["lr"] for r in train_network(MLP(), small, recipe, seed=0)]
    assert got == pytest.approx(lrs)


@pytest.mark.parametrize("init", INITS)
def test_every_init_is_seeded(init):
    a, b = MLP(), MLP()
    init_weights(a, init, seed=3)
    init_weights(b, init, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    if init == "randn":
        assert a.fc1.weight.std() > 0.5  # N(0, 1), not PyTorch's small uniform


def test_nan_loss_is_recorded_as_diverged_at_that_epoch(small):
    results = list(train_network(NaNOut(), small, Recipe(epochs=3), seed=0))
    assert len(results) == 1 and results[0].status == "diverged"
    assert math.isnan(results[0].metrics["train_loss"])


def test_huge_lr_diverges_and_training_stops(small):
    results = list(train_network(MLP(), small, Recipe(epochs=4, optimizer="sgd", lr=1e6), seed=0))
    assert results[-1].status == "diverged" and len(results) < 4


def test_early_stopping_stops_when_test_loss_stalls(small):
    recipe = Recipe(epochs=4, early_stopping_patience=1, early_stopping_min_delta=100.0)
    results = list(train_network(MLP(), small, recipe, seed=0))
    assert [r.status for r in results] == ["done", "stopped_early"]


def test_evaluate_counts_per_class_recall(digits):
    model = MLP()
    (ev,) = evaluate(model, digits.x_test, digits.y_test, classes=10, batch_size=100)
    pred = torch.from_numpy(ev.log_probs).argmax(1)
    assert ev.acc == pytest.approx((pred == digits.y_test).double().mean().item())
    assert len(ev.class_recall) == 10 and ev.time_s >= 0


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_fast_step_matches_optimizer_step_exactly(small, optimizer, monkeypatch):
    from netzoo import train

    recipe = Recipe(optimizer=optimizer, epochs=2, weight_decay=0.01, schedule="cosine")
    fast = [r.metrics for r in train_network(MLP(), small, recipe, seed=1)]
    monkeypatch.setattr(train, "fast_step", lambda optimizer, params: lambda: optimizer.step())
    plain = [r.metrics for r in train_network(MLP(), small, recipe, seed=1)]
    keys = ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert [[m[k] for k in keys] for m in fast] == [[m[k] for k in keys] for m in plain]


# --- a diverged epoch has no answers (issue 12, case 9) ----------------------------------------------
ACCURACIES = ["train_acc", "test_acc", "test_balanced_acc"] + [f"test_acc_class_{k}" for k in range(10)]


def test_a_diverged_epoch_has_no_predictions_and_no_accuracies(small):
    results = list(train_network(MLP(), small, Recipe(epochs=4, optimizer="sgd", lr=1e6), seed=0))
    last = results[-1]
    assert last.status == "diverged"
    assert last.log_probs is None  # NaN outputs predict nothing: not class 0 for every sample
    assert all(last.metrics[c] is None for c in ACCURACIES), {c: last.metrics[c] for c in ACCURACIES}
    # the evidence of divergence stays: a loss as measured, NaN or inf
    assert not (math.isfinite(last.metrics["train_loss"]) and math.isfinite(last.metrics["test_loss"]))
    assert all(r.log_probs is not None and r.metrics["test_acc"] is not None for r in results[:-1])


# --- BatchNorm and a last batch of one sample (issue 12, case 17) ------------------------------------
class BatchNormMLP(MLP):
    """64 -> 32 -> BatchNorm1d -> ReLU -> 10: training-mode BatchNorm needs two samples per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm1d(32)

    def forward(self, x):
        return torch.log_softmax(self.fc2(self.act1(self.bn1(self.fc1(torch.flatten(x, 1))))), dim=1)


def _batch_sizes(model: nn.Module) -> list[int]:
    """The batch sizes ``model`` sees in training mode, recorded by a forward hook."""
    sizes: list[int] = []
    model.register_forward_hook(lambda module, args, out: sizes.append(len(args[0])) if module.training else None)
    return sizes


def test_a_batch_norm_network_trains_when_the_last_batch_holds_one_sample(digits):
    data = dataclasses.replace(digits, x_train=digits.x_train[:401], y_train=digits.y_train[:401])  # 100 x 4 + 1
    model = BatchNormMLP()
    sizes = _batch_sizes(model)
    results = list(train_network(model, data, Recipe(epochs=2, batch_size=4), seed=0))
    assert [r.status for r in results] == ["done", "done"]
    assert all(r.last_batch_merged for r in results)
    # merged, not dropped: every sample trains each epoch, in 100 batches (99 of 4, one of 5)
    assert sum(sizes) == 2 * 401 and len(sizes) == 200 and sorted(set(sizes)) == [4, 5]


def test_a_network_without_batch_norm_keeps_its_last_batch_of_one(digits):
    data = dataclasses.replace(digits, x_train=digits.x_train[:401], y_train=digits.y_train[:401])
    model = MLP()
    sizes = _batch_sizes(model)
    (result,) = train_network(model, data, Recipe(epochs=1, batch_size=4), seed=0)
    assert not result.last_batch_merged and len(sizes) == 101 and sizes[-1] == 1


def test_batch_size_one_with_batch_norm_is_refused_naming_the_fix(small):
    from netzoo.errors import RecipeError

    with pytest.raises(RecipeError, match="batch_size 1.*BatchNorm.*batch_size of 2 or more"):
        next(train_network(BatchNormMLP(), small, Recipe(epochs=1, batch_size=1), seed=0))
