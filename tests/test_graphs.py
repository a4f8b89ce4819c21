"""The CUDA-graph path of the trainer (netzoo.graphs), with its capture stood in for on the CPU.

No GPU is needed: ``stand_in_capture`` does what a CUDA graph does with the bookkeeping around it (the capture
runs ``body``'s Python once, with the lenses' hooks keeping their outputs as static tensors; each replay fills
the same static outputs), so that warm-up, static buffers, recapture after a new lr or a smaller group, the
lenses' replayed statistics and the step counts are checked against eager training. Only CUDA's own capture and
replay are left to `make gpu-check` on a GPU.
"""

import pytest
import torch
from torch import nn

from netzoo.fuse import fuse
from netzoo.graphs import GraphedStep, graph_blockers
from netzoo.recipe import Recipe
from netzoo.train import Run, train_runs
from test_train_group import RECIPE, SEEDS, TinyBatchNorm, TinyConv, TinyDropout, TinyMLP, _data, _same


class StandIn:
    """A CUDA graph's capture and replay on the CPU; counts captures and replays."""

    def __init__(self) -> None:
        self.captures = self.replays = 0

    def __call__(self, body, rows, capturing):
        self.captures += 1
        with capturing():  # the capture's Python runs; here its step runs too (a real capture runs no kernel)
            static = tuple(t.clone() for t in body(rows))
        first = [True]

        def replay() -> None:
            self.replays += 1
            if first[0]:  # the first replay is the captured step, which already ran
                first[0] = False
                return
            with capturing():
                for kept, fresh in zip(static, body(rows)):
                    kept.copy_(fresh)
        return replay, static


@pytest.mark.parametrize("network", [TinyMLP, TinyConv, TinyBatchNorm])
@pytest.mark.parametrize("seeds", [SEEDS[:1], SEEDS])
def test_replayed_steps_give_the_numbers_and_lens_rows_of_eager_steps(network, seeds):
    data = _data()  # 150 samples in batches of 16: 9 full batches and one of 6 per epoch
    stand_in = StandIn()
    graphed = list(train_runs(network, [Run(s, RECIPE) for s in seeds], data, lenses=True, capture=stand_in))
    eager = list(train_runs(network, [Run(s, RECIPE) for s in seeds], data, lenses=True, graphs=False))
    assert stand_in.captures == 1  # one capture, replayed every full batch after the 3 warm-up steps
    assert stand_in.replays == 2 * 9 - 3
    for g, e in zip(graphed, eager):
        for i in e:
            _same(g[i], e[i], lenses=True)


def test_a_new_lr_or_a_smaller_group_is_captured_again():
    data = _data()
    stand_in = StandIn()
    runs = [Run(1, RECIPE.replace(epochs=3, schedule="step", gamma=0.5)), Run(2, RECIPE.replace(epochs=2)),
            Run(3, RECIPE.replace(epochs=3, lr=0.01, schedule="cosine"))]
    graphed = list(train_runs(TinyMLP, runs, data, lenses=True, capture=stand_in))
    eager = list(train_runs(TinyMLP, runs, data, lenses=True, graphs=False))
    # epoch 1: the first capture; epoch 2: new lrs; epoch 3: run 2 left (a new module)
    assert stand_in.captures == 3
    for g, e in zip(graphed, eager):
        assert sorted(g) == sorted(e)
        for i in e:
            _same(g[i], e[i], lenses=True)


def test_dropout_and_rmsprop_steps_are_not_captured():
    data = _data()
    stand_in = StandIn()
    list(train_runs(TinyDropout, [Run(s, RECIPE) for s in SEEDS], data, capture=stand_in))
    list(train_runs(TinyMLP, [Run(s, RECIPE.replace(optimizer="rmsprop")) for s in SEEDS], data, capture=stand_in))
    assert stand_in.captures == 0
    assert "dropout" in graph_blockers(TinyDropout())
    assert graph_blockers(TinyMLP()) is None
    momentum_none = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None))
    assert "momentum=None" in graph_blockers(fuse([momentum_none, momentum_none]))


def test_graphs_stay_off_on_the_cpu_and_for_short_epochs_on_cuda(monkeypatch):
    """Without a stand-in, the CPU never captures; on CUDA an epoch shorter than MIN_STEPS_PER_EPOCH full
    batches is not captured either (its capture would cost more than it saves)."""
    import netzoo.graphs

    calls = []
    monkeypatch.setattr(netzoo.graphs, "cuda_capture", lambda *a: calls.append(a))
    list(train_runs(TinyMLP, [Run(1, Recipe(epochs=1, batch_size=16))], _data()))
    assert calls == []


def test_a_batch_of_another_shape_steps_eagerly_and_keeps_the_graph():
    stand_in = StandIn()
    seen = []

    def body(rows):
        seen.append(rows.shape[0])
        return (rows.float().sum().reshape(1),)

    step = GraphedStep(body, warmup=1, capture=stand_in)
    full, last = torch.arange(4), torch.arange(3)
    assert step(full)[0].item() == 6  # warm-up
    assert step(full + 1)[0].item() == 10  # captured (with the batch it was given) and replayed
    assert step(last)[0].item() == 3  # eager
    assert step(full + 2)[0].item() == 14  # replayed with the new rows copied in
    assert stand_in.captures == 1 and stand_in.replays == 2 and seen == [4, 4, 3, 4]


def test_run_optimizer_counts_steps_on_its_tensors_across_a_regroup_and_a_smaller_group():
    """A replayed graph steps without Python: RunOptimizer's Python count falls behind, and a regroup (a new lr)
    or a smaller group must take Adam's step counts from the tensors the updates counted on."""
    from netzoo.fuse_optim import RunOptimizer

    one = lambda lr: torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=lr, fused=True)  # noqa: E731
    per_run = [one(0.1), one(0.1), one(0.2)]
    params = [nn.Parameter(torch.randn(3, 2))]
    optimizer = RunOptimizer(params, per_run)
    for _ in range(5):
        params[0].grad = torch.ones_like(params[0])
        optimizer.step()
    optimizer.step_count = 2  # as after replays that ran no Python
    per_run[0].param_groups[0]["lr"] = 0.05  # a schedule's step: three groups now
    params[0].grad = torch.ones_like(params[0])
    optimizer.step()
    assert [steps[0].item() for steps in optimizer._steps] == [6.0, 6.0, 6.0]
    smaller = RunOptimizer([nn.Parameter(params[0].detach()[1:].clone())], per_run[1:])
    smaller.carry(optimizer, torch.tensor([1, 2]))
    smaller.params[0].grad = torch.ones_like(smaller.params[0])
    smaller.step()
    assert [steps[0].item() for steps in smaller._steps] == [7.0, 7.0]
