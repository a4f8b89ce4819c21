"""A group of runs of one network through the one trainer (netzoo.train.train_runs, fused by netzoo.fuse) gives
each run the numbers it gets trained alone, within float rounding; a run that stops leaves the others alone."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netzoo.datasets import Dataset
from netzoo.errors import RecipeError
from netzoo.recipe import Recipe
from netzoo.train import Run, train_network, train_runs

RECIPE = Recipe(epochs=2, batch_size=16, eval_batch_size=20)
SEEDS = [1, 2, 3]
COLUMNS = ("train_loss", "train_acc", "test_loss", "test_acc", "test_balanced_acc", "lr", "test_acc_class_3")


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
    """BatchNorm with running statistics: buffers kept per run in the fused module. The conv before it has no
    bias, as torchvision's: a bias that BatchNorm subtracts again gets a gradient of float noise only, which Adam
    scales up to lr-sized steps, so the running means (and the test outputs) would follow noise, grouped or not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return F.log_softmax(self.fc1(torch.flatten(x, 1)), dim=1)


class TinyNaN(TinyMLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


def _data() -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, 8, 8, generator=gen)
    y = torch.arange(200) % 10
    return Dataset(name="synthetic", x_train=x[:150], y_train=y[:150], x_test=x[150:], y_test=y[150:],
                   classes=10, input_shape=(1, 8, 8), mean=0.0, std=1.0, split="150/50", source="randn")


def _same(grouped, alone, lenses: bool = False) -> None:
    """A run's EpochResult in a group equals the one trained alone, within float rounding."""
    assert grouped.epoch == alone.epoch and grouped.status == alone.status
    assert grouped.last_batch_merged == alone.last_batch_merged
    if alone.log_probs is None:
        assert grouped.log_probs is None
    else:
        np.testing.assert_allclose(grouped.log_probs, alone.log_probs, rtol=1e-4, atol=1e-4)
    for column in COLUMNS:
        if alone.metrics[column] is None:
            assert grouped.metrics[column] is None, column
        else:
            assert grouped.metrics[column] == pytest.approx(alone.metrics[column], rel=1e-4, abs=1e-4, nan_ok=True), \
                column
    if lenses:
        assert [r["layer"] for r in grouped.layer_rows] == [r["layer"] for r in alone.layer_rows]
        for g, a in zip(grouped.layer_rows, alone.layer_rows):
            assert (g["kind"], g["width"]) == (a["kind"], a["width"])
            for column in ("grad_norm_mean", "grad_norm_max", "dead_grad_fraction", "var_mean", "dead_fraction",
                           "activation_rate"):
                if a[column] is None:
                    assert g[column] is None, (a["layer"], column)
                else:
                    assert g[column] == pytest.approx(a[column], rel=1e-3, abs=1e-5), (a["layer"], column)


@pytest.mark.parametrize("network", [TinyMLP, TinyConv, TinyBatchNorm])
def test_a_group_of_seeds_gives_each_seed_its_numbers_and_lens_rows_alone(network):
    data = _data()
    alone = {seed: list(train_network(network(), data, RECIPE, seed, lenses=True)) for seed in SEEDS}
    grouped = list(train_runs(network, [Run(seed, RECIPE) for seed in SEEDS], data, lenses=True))

    assert len(grouped) == RECIPE.epochs and all(sorted(epoch) == [0, 1, 2] for epoch in grouped)
    for e, per_run in enumerate(grouped):
        for i, result in per_run.items():
            _same(result, alone[SEEDS[i]][e], lenses=True)
    assert not np.allclose(grouped[-1][0].log_probs, grouped[-1][1].log_probs)  # the seeds really differ
    # a group's time is shared: each run is charged its share of the epoch
    assert grouped[0][0].metrics["epoch_time_s"] == grouped[0][1].metrics["epoch_time_s"] > 0


def test_a_batch_norm_group_merges_a_last_batch_of_one_as_each_run_alone():
    data = _data()  # 150 training samples: batches of 149 and 1
    recipe = RECIPE.replace(batch_size=149, epochs=1)
    (per_run,) = train_runs(TinyBatchNorm, [Run(seed, recipe) for seed in SEEDS], data)
    assert all(r.status == "done" and r.last_batch_merged for r in per_run.values())
    (alone,) = train_network(TinyBatchNorm(), data, recipe, SEEDS[0])
    _same(per_run[0], alone)


def test_a_run_that_diverges_leaves_the_group_and_the_others_go_on_as_alone():
    data = _data()
    calm, wild = Recipe(epochs=3, optimizer="sgd", lr=0.05, batch_size=16), \
        Recipe(epochs=3, optimizer="sgd", lr=1e6, batch_size=16)
    runs = [Run(1, calm), Run(1, wild), Run(2, calm)]
    grouped = list(train_runs(TinyConv, runs, data))
    alone = [list(train_network(TinyConv(), data, run.recipe, run.seed)) for run in runs]

    assert len(alone[1]) < 3 and alone[1][-1].status == "diverged"
    assert [sorted(epoch) for epoch in grouped] == [[i for i in range(3) if len(alone[i]) > e] for e in range(3)]
    for e, per_run in enumerate(grouped):
        for i, result in per_run.items():
            _same(result, alone[i][e])


def test_early_stopping_ends_each_run_at_its_own_epoch():
    data = _data().with_validation(0.2)
    held = RECIPE.replace(validation=0.2)
    eager = held.replace(epochs=4, early_stopping_patience=1, early_stopping_min_delta=100.0)
    runs = [Run(1, held.replace(epochs=4)), Run(2, eager), Run(3, held.replace(epochs=3))]
    grouped = list(train_runs(TinyConv, runs, data))
    alone = [list(train_network(TinyConv(), data, run.recipe, run.seed)) for run in runs]

    assert [r.status for r in alone[1]] == ["done", "stopped_early"]
    assert [sorted(epoch) for epoch in grouped] == [[0, 1, 2], [0, 1, 2], [0, 2], [0]]
    for e, per_run in enumerate(grouped):
        for i, result in per_run.items():
            _same(result, alone[i][e])


def test_runs_with_their_own_learning_rates_and_schedules_each_match_alone():
    data = _data()
    runs = [Run(1, RECIPE.replace(lr=0.001)), Run(1, RECIPE.replace(lr=0.01, schedule="cosine")),
            Run(2, RECIPE.replace(lr=0.004, schedule="step", gamma=0.5))]
    grouped = list(train_runs(TinyMLP, runs, data))
    for i, run in enumerate(runs):
        for e, alone in enumerate(train_network(TinyMLP(), data, run.recipe, run.seed)):
            _same(grouped[e][i], alone)


def test_each_run_of_a_group_gets_its_own_state_as_if_trained_alone():
    runs = [Run(seed, RECIPE) for seed in SEEDS]
    grouped = list(train_runs(TinyMLP, runs, _data(), states="last"))
    for i, run in enumerate(runs):
        alone = list(train_network(TinyMLP(), _data(), run.recipe, run.seed))
        model = TinyMLP()
        for _ in train_network(model, _data(), run.recipe, run.seed):
            pass
        state = grouped[-1][i].state
        assert state.keys() == model.state_dict().keys() and len(alone) == len(grouped)
        for name, tensor in model.state_dict().items():
            assert state[name].shape == tensor.shape
            assert torch.allclose(state[name], tensor, atol=1e-5), name


def test_runs_holding_out_different_validation_splits_never_share_a_group():
    with pytest.raises(RecipeError, match="must share validation"):
        list(train_runs(TinyMLP, [Run(1, RECIPE), Run(2, RECIPE.replace(validation=0.2))], _data()))


def test_a_diverging_network_gives_every_run_no_answers():
    (per_run,) = train_runs(TinyNaN, [Run(seed, RECIPE) for seed in SEEDS], _data())
    for r in per_run.values():
        assert r.status == "diverged" and r.log_probs is None
        assert r.metrics["test_acc"] is None and r.metrics["train_acc"] is None


class TinyDropout(TinyMLP):
    """nn.Dropout, as the generated networks hold it: the trainer makes each run draw from its own generator."""

    def __init__(self) -> None:
        super().__init__()
        self.drop1 = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc2(self.drop1(self.act1(self.fc1(torch.flatten(x, 1))))), dim=1)


def test_a_network_with_dropout_trains_as_a_group_with_each_runs_masks_alone():
    """Alone or in a group, a run's Dropout layers draw from netzoo.fuse.dropout_generator(seed): the same
    masks, so the same numbers (before, nn.Dropout drew from torch's global generator and could not be fused)."""
    data = _data()
    alone = {seed: list(train_network(TinyDropout(), data, RECIPE, seed, lenses=True)) for seed in SEEDS}
    grouped = list(train_runs(TinyDropout, [Run(seed, RECIPE) for seed in SEEDS], data, lenses=True))
    for e, per_run in enumerate(grouped):
        for i, result in per_run.items():
            _same(result, alone[SEEDS[i]][e], lenses=True)
    again = list(train_network(TinyDropout(), data, RECIPE, SEEDS[0]))
    assert again[-1].metrics["train_loss"] == alone[SEEDS[0]][-1].metrics["train_loss"]  # masks are seeded


def test_runs_of_one_network_in_two_dropout_variants_train_as_one_group():
    """A sweep's dropout probabilities are zoo variants of one network: one builder per run, one group."""
    def variant(p):
        def build():
            model = TinyDropout()
            model.drop1.p = p
            return model
        return build

    data = _data()
    builds, runs = [variant(0.1), variant(0.5)], [Run(1, RECIPE), Run(2, RECIPE)]
    grouped = list(train_runs(builds, runs, data))
    for i, (build, run) in enumerate(zip(builds, runs)):
        for e, alone in enumerate(train_network(build(), data, run.recipe, run.seed)):
            _same(grouped[e][i], alone)


def test_the_executor_trains_a_networks_seeds_as_one_group_with_the_rows_of_separate_training(tmp_path,
                                                                                              monkeypatch):
    """``--fuse auto`` (the default) on the CPU: the seeds of each network train as one group, with the same
    keys, epochs, predictions and lens rows as ``--fuse off`` (each seed alone), numbers within float rounding;
    the networks table says how many runs each group held."""
    import pandas as pd

    from netzoo.executors import tasks
    from netzoo.results import load
    from netzoo.runner import run_job
    from zoo_fixture import digits_job, make_zoo

    zoo = make_zoo(tmp_path / "zoo", names=("LinearReLU_1", "Conv2dReLU_1"))
    groups = []
    real = tasks.train_runs
    monkeypatch.setattr(tasks, "train_runs", lambda build, runs, *a, **k: (groups.append([r.seed for r in runs]),
                                                                            real(build, runs, *a, **k))[1])
    separate = run_job(digits_job(zoo, tmp_path / "separate", seeds=(1, 2, 3), lenses=True, fuse="off"))
    assert groups == [[1], [2], [3]] * 2
    groups.clear()
    grouped = run_job(digits_job(zoo, tmp_path / "grouped", seeds=(1, 2, 3), lenses=True))

    assert groups == [[1, 2, 3], [1, 2, 3]]  # one group per network, all three seeds
    assert grouped.count("done") == separate.count("done") == 6
    key = ["network", "seed", "epoch"]
    a, b = load(tmp_path / "separate"), load(tmp_path / "grouped")
    assert set(a.networks["fused_runs"]) == {1} and set(b.networks["fused_runs"]) == {3}
    ea, eb = (t.epochs.sort_values(key).reset_index(drop=True) for t in (a, b))
    pd.testing.assert_frame_equal(ea[key], eb[key])
    np.testing.assert_allclose(ea[["train_loss", "test_loss", "test_acc"]], eb[["train_loss", "test_loss", "test_acc"]],
                               rtol=1e-4, atol=1e-4)
    assert len(a.predictions) == len(b.predictions) and len(a.layers) == len(b.layers) > 0
    la, lb = (t.layers.sort_values(key + ["layer"]).reset_index(drop=True) for t in (a, b))
    assert list(la["layer"]) == list(lb["layer"])
    np.testing.assert_allclose(la["grad_norm_mean"].astype(float), lb["grad_norm_mean"].astype(float), rtol=1e-3)
