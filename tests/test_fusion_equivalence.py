"""Every network of the bench sample, and its BatchNorm + Dropout variant, trained by the one trainer as a fused
group of seeds gives each seed the numbers it gets trained alone: the same initial weights and shuffle order (the
first step's loss to 1e-5), the same lens rows, and the last epoch's accuracy within one point (issue 15).

Networks with BatchNorm (ResNetStyle's blocks, the variants) train chaotically at float precision under Adam (see
tests/test_fuse.py): a weight fed by a constant input (digits' blank borders) before a BatchNorm has a gradient of
0 in theory and float noise in practice, which Adam turns into steps of +-lr, and a run's last-bit differences
grow to whole points of accuracy whatever causes them. Measured for ResNetStyleReLU_89, 4 epochs, seeds 7-10:
trained alone, once as is and once in channels_last memory format (nothing else changed), the last-epoch test
accuracies differ by 3.1, 1.4, 0.6 and 0.3 points; fused against alone by 1.4, 3.3, 1.7 and 1.9 points, and the
four seeds' means by 0.6 points. For those, each run's first-epoch accuracy is held to one point, the four runs'
mean last-epoch accuracy to one point, and each run's last-epoch accuracy to CHAOS points; their lens rows are
compared three steps in under SGD, which does not blow float noise up into steps of +-lr as Adam does (under Adam,
three steps already move a few activations across the threshold: activation rates 2% apart)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import netzoo.train
from netzoo.datasets import load_dataset
from netzoo.recipe import STUDY
from netzoo.train import Run, train_runs
from netzoo.zoo import load_network
from one_thread import one_thread  # noqa: F401 (module-wide fixture)
from zoo_fixture import plain_and_regularised

# netzoo.benchmarks.study.bench_sample of the default digits zoo: one network per family at its median training
# FLOPs, plus Basic (docs/benchmarks.md)
SAMPLE = ["Basic", "Conv1dNone_18", "Conv1dThenLinearReLU_14", "Conv2dSELU_1", "Conv2dThenLinearReLU_2",
          "Conv3dTanh_2", "Conv3dThenLinearSigmoid_3", "LinearTanh_20", "ResNetStyleReLU_89"]
REGULARISED = ["LinearTanh_20", "Conv1dThenLinearReLU_14", "Conv2dSELU_1", "Conv3dTanh_2", "ResNetStyleReLU_89"]
CASES = [("plain", n) for n in SAMPLE] + [("regularised", n) for n in REGULARISED]
SEEDS = [7, 8, 9, 10]
CHAOS = 0.05  # the last epoch's accuracy of a run of a BatchNorm network, fused against alone: see the module doc
LENS_COLUMNS = ("grad_norm_mean", "grad_norm_max", "dead_grad_fraction", "var_mean", "dead_fraction", "activation_rate")


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    return plain_and_regularised(tmp_path_factory.mktemp("zoos"), SAMPLE, REGULARISED)




class FirstLosses:
    """The per-run losses of the first training step after each ``arm()``, as train_runs computes them."""

    def __init__(self, monkeypatch) -> None:
        self.armed, self.seen = False, []
        real = netzoo.train._run_losses

        def spy(out, target, runs):
            losses = real(out, target, runs)
            if self.armed:
                self.armed = False
                self.seen.append(losses.detach().clone())
            return losses
        monkeypatch.setattr(netzoo.train, "_run_losses", spy)

    def first(self, epochs) -> torch.Tensor:
        """Arm, train (``epochs``: an iterator of train_runs), return (first losses, every epoch)."""
        self.armed = True
        trained = list(epochs)
        return self.seen.pop(), trained


@pytest.mark.slow
@pytest.mark.parametrize("zoo,name", CASES)
def test_a_fused_group_of_seeds_gives_each_seed_its_numbers_alone(zoos, zoo, name, monkeypatch):
    data = load_dataset("digits")
    recipe = STUDY.replace(epochs=4 if zoo == "plain" else 2)
    build = lambda: load_network(zoos / zoo, name)  # noqa: E731
    losses = FirstLosses(monkeypatch)
    first_grouped, grouped = losses.first(train_runs(build, [Run(s, recipe) for s in SEEDS], data, lenses=True))
    alone = []
    for i, seed in enumerate(SEEDS):  # the same initial weights and first batch: the same first loss
        first_alone, epochs = losses.first(train_runs(build, [Run(seed, recipe)], data, lenses=True))
        torch.testing.assert_close(first_grouped[i], first_alone[0], rtol=0, atol=1e-5)
        alone.append([epoch[0] for epoch in epochs])
    assert not torch.equal(first_grouped[0], first_grouped[1])  # the seeds really differ

    assert [sorted(epoch) for epoch in grouped] == [list(range(len(SEEDS)))] * recipe.epochs
    chaotic = _has_batch_norm(build())
    for i, runs_alone in enumerate(alone):
        for epoch, bound in ((0, 0.01), (-1, CHAOS if chaotic else 0.01)):
            fused_acc, alone_acc = grouped[epoch][i].metrics["test_acc"], runs_alone[epoch].metrics["test_acc"]
            assert abs(fused_acc - alone_acc) <= bound, (i, epoch, fused_acc, alone_acc)
    mean = lambda accs: sum(accs) / len(accs)  # noqa: E731
    fused_mean = mean([grouped[-1][i].metrics["test_acc"] for i in range(len(SEEDS))])
    assert abs(fused_mean - mean([runs[-1].metrics["test_acc"] for runs in alone])) <= 0.01


def _has_batch_norm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("zoo,name", CASES)
def test_each_runs_lens_rows_in_a_fused_group_are_its_rows_alone(zoos, zoo, name):
    """Three steps (75 training images), so that float noise has not grown yet: every lens column of every layer
    of each run, fused and alone, equal to float tolerance."""
    data = load_dataset("digits")
    short = dataclasses.replace(data, x_train=data.x_train[:75], y_train=data.y_train[:75])
    build = lambda: load_network(zoos / zoo, name)  # noqa: E731
    recipe = STUDY.replace(epochs=1)
    if _has_batch_norm(build()):  # see the module doc
        recipe = recipe.replace(optimizer="sgd-momentum", lr=0.05)
    (grouped,) = train_runs(build, [Run(s, recipe) for s in SEEDS], short, lenses=True)
    for i, seed in enumerate(SEEDS):
        ((alone,),) = [epoch.values() for epoch in train_runs(build, [Run(seed, recipe)], short, lenses=True)]
        rows_grouped, rows_alone = grouped[i].layer_rows, alone.layer_rows
        assert [r["layer"] for r in rows_grouped] == [r["layer"] for r in rows_alone] and rows_alone
        for g, a in zip(rows_grouped, rows_alone):
            for column in LENS_COLUMNS:
                if a[column] is None:
                    assert g[column] is None, (a["layer"], column)
                else:
                    assert g[column] == pytest.approx(a[column], rel=1e-3, abs=1e-5), (a["layer"], column)
