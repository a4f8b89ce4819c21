"""Which runs train together as one fused group, and when fusing them pays: the one rule (issue 15).

A *group* is a set of runs of one network trained as one fused module (``netzoo.train.train_runs``, built by
``netzoo.fuse``): each run keeps its own initial weights, shuffle order, dropout masks, optimizer state and
stopping, so a group changes how fast runs train, not their numbers. The executor
(``netzoo.executors.tasks``) groups the tasks whose ``group_key`` is equal, when ``fusion_pays``:

- **one network**: the same name, spec, generation seed, input shape, classes, batch norm and presence of Dropout
  layers, i.e. the same architecture but for its Dropout probability (a sweep's dropout recipes train zoo
  variants whose files differ only in ``Dropout(p)``, and each run may draw with its own p);
  ``netzoo.fuse.fuse`` checks every layer again and refuses what differs (the runs then train one at a time);
- **one loop**: the same ``batch_size``, ``eval_batch_size``, ``allow_tf32`` and ``validation`` fraction (the
  same training samples; ``netzoo.train.SHARED_FIELDS``), the same ``epochs`` and lr ``schedule`` type (the runs
  step in lockstep and the group stays whole);
- **one optimizer family** that ``netzoo.fuse_optim.RunOptimizer`` steps with per-run numbers: SGD (sgd,
  sgd-momentum, nesterov), Adam (adam, adamw) or RMSprop.

Within a group, runs may differ in everything else a run takes: seed, lr, weight decay, momentum, amsgrad,
init, dropout probability, early stopping, a step schedule's step size and gamma.

When it pays (``fuse="auto"``): on CUDA whenever a network has more than one run to do (a zoo network's step is
launch-bound there); on the CPU for networks below ``CPU_FUSE_BELOW_FLOPS`` training FLOPs per sample, from the
measured step speed-ups (docs/benchmarks.md, "Fused training on the CPU"). ``fuse="off"`` trains every run alone, as before issue 15.
"""

from __future__ import annotations

import functools

import torch

from netzoo.recipe import Recipe

FUSE_MODES = ("auto", "off")
MAX_GROUP_RUNS = 32  # runs per group: the largest count measured (docs/benchmarks.md); more form another group

# On the CPU, a network fuses when its training FLOPs per sample (manifest ``flops_train_step``) are below its
# family's limit here (the default otherwise). Measured for issue 15 (docs/benchmarks.md, "Fused training on the
# CPU"): a training step of 8 runs fused against the 8 one at a time, one thread, batch 25, digits, 24 networks
# at the 1/6, 1/2 and 5/6 quantiles of their family's FLOPs: every family 1.2-6.3x faster up to ~1.8 MFLOP; above,
# ResNetStyleReLU_89 (6.2 MFLOP) 1.3-1.4x, ResNetStyleReLU_65 (22 MFLOP) 0.86-1.04x, Conv3dTanh_8 (1.6 MFLOP;
# grouped Conv3d's backward is slow in oneDNN) 0.79-1.04x, against Conv3dTanh_2 (0.38 MFLOP) 1.2-1.5x.
CPU_FUSE_BELOW_FLOPS = {"Conv3d": 1_000_000}
CPU_FUSE_BELOW_FLOPS_DEFAULT = 10_000_000

# The architecture of a network but for its dropout probability, from its manifest row.
_NETWORK_COLUMNS = ("network", "spec_hash", "seed", "input_shape", "classes", "batch_norm")


@functools.lru_cache(maxsize=256)
def optimizer_family(recipe: Recipe) -> str:
    """'sgd', 'adam' or 'rmsprop': the torch.optim update the recipe's optimizer runs, which RunOptimizer mixes
    only within a family (netzoo.fuse_optim.KINDS, through netzoo.train.make_optimizer)."""
    from netzoo.fuse_optim import KINDS
    from netzoo.train import make_optimizer

    return KINDS[type(make_optimizer([torch.zeros(1, requires_grad=True)], recipe))]


def group_key(row: dict, recipe: Recipe) -> tuple:
    """Runs of equal keys may train as one group: the network's manifest ``row`` (of its zoo) and the run's
    ``recipe`` (see the module doc)."""
    from netzoo.train import SHARED_FIELDS

    has_dropout = bool(row.get("dropout"))  # Dropout layers or none: their p may differ, not their presence
    return (tuple(row.get(c) for c in _NETWORK_COLUMNS), has_dropout, tuple(getattr(recipe, f) for f in SHARED_FIELDS),
            recipe.epochs, recipe.schedule, optimizer_family(recipe))


def fusion_pays(row: dict, device, runs: int, mode: str = "auto") -> bool:
    """Whether ``runs`` (> 1) runs of the network of manifest ``row`` train faster as one group on ``device``:
    never with ``mode`` 'off'; always on CUDA; on the CPU when its ``flops_train_step`` is below its family's
    CPU_FUSE_BELOW_FLOPS (unknown FLOPs: yes)."""
    if mode not in FUSE_MODES:
        raise ValueError(f"fuse mode must be one of {', '.join(FUSE_MODES)}, got {mode!r}")
    if mode == "off" or runs < 2:
        return False
    if torch.device(device).type == "cuda":
        return True
    limit = CPU_FUSE_BELOW_FLOPS.get(row.get("family"), CPU_FUSE_BELOW_FLOPS_DEFAULT)
    return not row.get("flops_train_step") or row["flops_train_step"] < limit
