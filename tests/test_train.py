"""The hot loop: recipes honoured, same seed same numbers, NaN recorded as diverged, early stopping."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from netzoo.datasets import load_dataset
from netzoo.errors import RecipeError
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


def test_early_stopping_stops_when_the_validation_loss_stalls(small):
    recipe = Recipe(epochs=4, early_stopping_patience=1, early_stopping_min_delta=100.0, validation=0.25)
    results = list(train_network(MLP(), small.with_validation(0.25), recipe, seed=0))
    assert [r.status for r in results] == ["done", "stopped_early"]


def test_early_stopping_watches_the_validation_loss_never_the_test_loss():
    from netzoo.train import Stopping

    recipe = Recipe(epochs=6, early_stopping_patience=2, validation=0.1)
    # the test loss keeps rising, the validation loss keeps falling: training goes on
    falling = Stopping(recipe)
    assert [falling.status(e, 1.0, 0.5 + e, 1.0 / e) for e in range(1, 6)] == ["done"] * 5
    # the test loss keeps falling, the validation loss stalls: training stops after the patience
    stalling = Stopping(recipe)
    assert [stalling.status(e, 1.0, 1.0 / e, 0.5) for e in range(1, 4)] == ["done", "done", "stopped_early"]
    with pytest.raises(RecipeError, match="needs a validation split"):
        Stopping(recipe).status(1, 1.0, 1.0, None)  # no validation loss: never the test loss instead


def test_a_nan_validation_loss_is_a_divergence():
    from netzoo.train import Stopping

    assert Stopping(Recipe(validation=0.1)).status(1, 1.0, 1.0, float("nan")) == "diverged"


def test_each_epoch_is_evaluated_on_the_validation_split_held_out_of_training(small):
    data = small.with_validation(0.25)
    recipe = Recipe(epochs=2, validation=0.25)
    results = list(train_network(MLP(), data, recipe, seed=0))
    for r in results:
        assert 0 <= r.metrics["val_acc"] <= 1 and r.metrics["val_loss"] > 0
    model = MLP()
    for _ in train_network(model, data, recipe, seed=0):
        pass
    (ev,) = evaluate(model, data.x_val, data.y_val, classes=10)
    assert results[-1].metrics["val_loss"] == pytest.approx(ev.loss) and results[-1].metrics["val_acc"] == ev.acc
    plain = list(train_network(MLP(), small, Recipe(epochs=1), seed=0))[0].metrics
    assert plain["val_loss"] is None and plain["val_balanced_acc"] is None  # no split: null, never the test's


def test_the_state_of_a_run_comes_back_after_its_last_epoch_or_every_epoch(small):
    from netzoo.train import Run, train_runs

    recipe = Recipe(epochs=2)
    last = [r[0] for r in train_runs(MLP, [Run(0, recipe)], small, states="last")]
    every = [r[0] for r in train_runs(MLP, [Run(0, recipe)], small, states="every")]
    none = [r[0] for r in train_runs(MLP, [Run(0, recipe)], small)]
    assert [r.state is None for r in last] == [True, False] and all(r.state is not None for r in every)
    assert all(r.state is None for r in none)
    assert all(torch.equal(last[1].state[k], every[1].state[k]) for k in last[1].state)
    assert not torch.equal(every[0].state["fc1.weight"], every[1].state["fc1.weight"])
    assert every[1].state["fc1.weight"].device.type == "cpu"


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
