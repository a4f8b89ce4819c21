"""Training-step throughput of R runs of one network: one at a time vs fused (netzoo.fuse) vs torch.func.vmap.

Issue 15 names two ways to train many runs of one network at once; this measures both against the trainer's
one-run-at-a-time step, side by side in one process. Each side takes a full training step of every run
(forward, NLL loss, backward, optimizer step) on digits with the study's recipe (Adam, amsgrad, lr 0.002),
each run on its own batch:

    solo          R networks stepped one after another, as netzoo.train does (make_optimizer + fast_step)
    fused         one fused module (netzoo.fuse.fuse) + RunOptimizer, every run the same numbers (seeds)
    fused_sweep   the same with 8 lrs (the recipe's x 2**-4 .. 2**3) x R/8 seeds: 8 update calls per step
    fused_torch   the same fused module + the trainer's torch.optim optimizer over its stacked parameters
                  (the same steps when every run has the same numbers, e.g. seeds of one recipe)
    vmap          torch.func.stack_module_state + vmap(functional_call) over the runs + the trainer's optimizer
                  (a side that cannot run, e.g. vmap over Dropout's generator draws, is NaN, with the reason)

The machine is shared: the sides are interleaved round by round (each round starting at the next side), the
median round is kept, and the figures that matter are the ratios, quoted with the 1-minute load average.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from netzoo.datasets import load_dataset
from netzoo.fuse import dropout_generator, fuse, seeded_dropout
from netzoo.fuse_optim import RunOptimizer
from netzoo.recipe import STUDY, Recipe
from netzoo.train import fast_step, init_weights, make_optimizer
from netzoo.zoo import load_network, read_manifest

SIDES = ("solo", "fused", "fused_sweep", "fused_torch", "vmap")


def _solo(models: list[nn.Module], recipe: Recipe, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step of each model on its own rows of (R, B, ...) x, one after another."""
    steps = []
    for model in models:
        params = [p for p in model.parameters() if p.requires_grad]
        steps.append((model, params, fast_step(make_optimizer(params, recipe), params)))

    def step() -> None:
        for r, (model, params, optimizer_step) in enumerate(steps):
            loss = F.nll_loss(model(x[r]), y[r])
            for p in params:
                p.grad = None
            loss.backward()
            optimizer_step()
    return step


def _fused(models: list[nn.Module], recipe: Recipe, x: torch.Tensor, y: torch.Tensor, per_run: bool,
           lr_groups: int = 1) -> Callable[[], None]:
    """One training step of the fused runs on the batch-merged (R*B, ...) input; ``lr_groups`` lrs, each for
    R/lr_groups adjacent runs, when ``per_run``."""
    fused = fuse(models)
    params = [p for p in fused.parameters() if p.requires_grad]
    runs = len(models)
    if per_run:
        lrs = [recipe.lr * 2.0 ** (r * lr_groups // runs - lr_groups // 2) for r in range(runs)]
        optimizer = RunOptimizer(params, [make_optimizer([torch.zeros(1, requires_grad=True)], recipe.replace(lr=lr))
                                          for lr in lrs])
        optimizer_step = optimizer.step
    else:
        optimizer_step = fast_step(make_optimizer(params, recipe), params)
    rows, targets = x.flatten(0, 1), y.flatten()

    def step() -> None:
        losses = F.nll_loss(fused(rows), targets, reduction="none").view(runs, -1).mean(1)
        for p in params:
            p.grad = None
        losses.sum().backward()
        optimizer_step()
    return step


def _vmapped(models: list[nn.Module], recipe: Recipe, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step of the runs as one vmapped functional call over their stacked parameters."""
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    forward = vmap(lambda p, b, rows: functional_call(base, (p, b), (rows,)))
    optimizer = make_optimizer(list(params.values()), recipe)
    runs = len(models)

    def step() -> None:
        out = forward(params, buffers, x)  # (R, B, K)
        losses = F.nll_loss(out.flatten(0, 1), y.flatten(), reduction="none").view(runs, -1).mean(1)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
    return step


def fusion_step_ratios(zoo_dir: str | Path, names: Sequence[str], runs: Sequence[int] = (8, 32), threads: int = 1,
                       batch_size: int = 25, rounds: int = 7, steps: int = 10, recipe: Recipe = STUDY,
                       dataset: str = "digits") -> pd.DataFrame:
    """Per network and run count R: the time of one training step of all R runs on each side, and each fused
    side's speed-up over one run at a time (solo_ms / side_ms: >1 is faster).

    Columns: network, family, runs, threads, batch_size, load_1min (before the network's rounds), solo_ms,
    fused_ms, fused_sweep_ms, fused_torch_ms, vmap_ms (median over ``rounds`` interleaved rounds of ``steps`` steps each, in
    milliseconds per step of all R runs), fused_speedup, fused_sweep_speedup, fused_torch_speedup, vmap_speedup, vmap_error (why
    vmap did not run, else ""). Networks from ``zoo_dir`` (generated for ``dataset``).
    """
    manifest = read_manifest(zoo_dir).set_index("network")
    data = load_dataset(dataset)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for name in names:
            for r in runs:
                network, models = load_network(zoo_dir, name), []
                for seed in range(r):
                    model = copy.deepcopy(network)  # one class: stack_module_state insists
                    init_weights(model, recipe.init, seed)
                    models.append(seeded_dropout(model, dropout_generator(seed)))
                idx = torch.randint(len(data.x_train), (r, batch_size), generator=torch.Generator().manual_seed(0))
                x, y = data.x_train[idx], data.y_train[idx]  # (R, B, C, H, W), (R, B)
                sides = {"solo": _solo(copy.deepcopy(models), recipe, x, y),
                         "fused": _fused(copy.deepcopy(models), recipe, x, y, per_run=True),
                         "fused_sweep": _fused(copy.deepcopy(models), recipe, x, y, per_run=True, lr_groups=8),
                         "fused_torch": _fused(copy.deepcopy(models), recipe, x, y, per_run=False)}
                vmap_error = ""
                try:
                    sides["vmap"] = _vmapped(copy.deepcopy(models), recipe, x, y)
                    sides["vmap"]()
                except Exception as exc:  # noqa: BLE001 - a side that cannot run is reported, not fatal
                    vmap_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                    sides.pop("vmap", None)
                load = os.getloadavg()[0]
                times: dict[str, list[float]] = {side: [] for side in sides}
                for side_step in sides.values():  # warm up a full round: optimizer state, oneDNN primitives,
                    for _ in range(steps):        # the allocator (the first network's first round ran slow)
                        side_step()
                order = list(sides)
                for i in range(rounds):  # each round starts at another side: the one after solo pays for its mess
                    for side in order[i % len(order):] + order[:i % len(order)]:
                        side_step = sides[side]
                        start = time.perf_counter()
                        for _ in range(steps):
                            side_step()
                        times[side].append((time.perf_counter() - start) / steps * 1e3)
                ms = {side: statistics.median(times[side]) if side in times else math.nan for side in SIDES}
                rows.append({"network": name, "family": manifest.at[name, "family"], "runs": r, "threads": threads,
                             "batch_size": batch_size, "load_1min": load, **{f"{s}_ms": ms[s] for s in SIDES},
                             **{f"{s}_speedup": ms["solo"] / ms[s] for s in SIDES[1:]}, "vmap_error": vmap_error})
    finally:
        torch.set_num_threads(previous)
    return pd.DataFrame(rows)
