"""Several seeds of one network trained as one batched model with torch.func, when the architecture allows.

Seeds of one network differ only in their initial weights and their shuffle order. Stacking the seeds'
parameters along a new leading dimension (``torch.func.stack_module_state``) and vmapping one functional
forward over it (``functional_call`` + ``vmap``) trains S networks with kernels S times larger instead of S
times as many small launches: on a GPU the zoo's small networks are launch-bound, so that is where the time
goes. Adam, AMSGrad, SGD, RMSProp and weight decay act element by element, so one optimizer over the stacked
parameters takes exactly the steps S separate optimizers would; each seed keeps its own shuffle order
(its own ``randperm`` generator) and its own loss. ``tests/test_batched.py`` checks that batched seeds
match separately trained seeds within float tolerance.

Not every network can be batched: BatchNorm's running statistics are buffers updated in place (vmap cannot
write them per seed), Dropout draws masks from one global generator (batched seeds would not reproduce
separate training), and early stopping ends seeds at different epochs. ``batch_blocker`` names the reason
and callers fall back to training the seeds one by one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from netzoo.recipe import Recipe


@dataclass
class SeedEpoch:
    """One seed's figures for one epoch of batched training (the trainer turns it into its EpochResult)."""

    seed: int
    epoch: int
    train_loss: float          # mean NLL over the epoch's training samples
    train_acc: float           # accuracy on the training batches during the epoch
    test_log_probs: torch.Tensor  # (N_test, K) log-probabilities on the host
    epoch_time_s: float        # seconds of the epoch's training steps, shared by all seeds (synchronised)
    eval_time_s: float         # seconds of the test pass, shared by all seeds
    lr: float                  # learning rate at the end of the epoch


def batch_blocker(model: nn.Module, recipe: Recipe) -> str | None:
    """Why seeds of ``model`` cannot be trained as one vmapped model under ``recipe``, or None when they can."""
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        return f"it has buffers ({', '.join(buffers[:3])}…): BatchNorm running statistics cannot be updated per seed under vmap"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "it has Dropout: batched seeds would draw different masks than separate training"
    if recipe.early_stopping_patience > 0:
        return "early stopping ends seeds at different epochs"
    return None


def make_optimizer(params: list[torch.Tensor], recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` (torch.optim's own; foreach kernels, element-wise updates)."""
    name, lr, wd = recipe.optimizer, recipe.lr, recipe.weight_decay
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, amsgrad=recipe.amsgrad, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, amsgrad=recipe.amsgrad, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=recipe.momentum, weight_decay=wd)
    momentum = recipe.momentum or (0.9 if name in ("sgd-momentum", "nesterov") else 0.0)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov", weight_decay=wd)


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The recipe's per-epoch learning-rate schedule, or None."""
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    return None


def train_seeds(
    models: list[nn.Module],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    recipe: Recipe,
    seeds: list[int],
    device: str | torch.device = "cpu",
    make_generator: Callable[[int, torch.device], torch.Generator] | None = None,
) -> Iterator[list[SeedEpoch]]:
    """Train ``models`` (one per seed, already initialised as separate training would) as one vmapped model.

    Yields, after each epoch, one SeedEpoch per seed. ``make_generator(seed, device)`` gives each seed's
    shuffle generator (default: ``torch.Generator(device).manual_seed(seed)``), so the order of batches is
    the one separate training draws. The models are left holding their trained weights.
    Raises ValueError when ``batch_blocker`` refuses the architecture: call it first and fall back.
    """
    if len(models) != len(seeds) or not models:
        raise ValueError(f"train_seeds needs one model per seed, got {len(models)} models for seeds {seeds}")
    reason = batch_blocker(models[0], recipe)
    if reason:
        raise ValueError(f"cannot batch {type(models[0]).__name__}: {reason}; train its seeds one by one")
    device = torch.device(device)
    make_generator = make_generator or (lambda seed, dev: torch.Generator(dev).manual_seed(seed))
    models = [m.to(device) for m in models]
    params, _ = stack_module_state(models)  # name -> (S, *shape) leaf tensors requiring grad
    base = copy.deepcopy(models[0]).to("meta")  # a stateless skeleton for functional_call

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (x,))

    train_forward = vmap(forward, in_dims=(0, 0))   # per-seed weights, per-seed batches
    test_forward = vmap(forward, in_dims=(0, None))  # per-seed weights, the same test batch
    optimizer = make_optimizer(list(params.values()), recipe)
    schedule = make_schedule(optimizer, recipe)
    generators = [make_generator(seed, device) for seed in seeds]
    n_train, n_seeds = len(x_train), len(seeds)

    for epoch in range(1, recipe.epochs + 1):
        base.train()
        loss_sum = torch.zeros(n_seeds, device=device)
        correct = torch.zeros(n_seeds, device=device)
        _sync(device)
        start = time.perf_counter()
        perms = torch.stack([torch.randperm(n_train, device=device, generator=g) for g in generators])  # (S, N)
        for idx in perms.split(recipe.batch_size, dim=1):  # (S, B)
            out = train_forward(params, x_train[idx])  # (S, B, K) log-probabilities
            target = y_train[idx]  # (S, B)
            losses = F.nll_loss(out.flatten(0, 1), target.flatten(), reduction="none").view(n_seeds, -1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # seeds share no weights: each gets its own gradient
            optimizer.step()
            loss_sum += losses.detach() * idx.shape[1]
            correct += (out.detach().argmax(-1) == target).sum(1)
        if schedule is not None:
            schedule.step()
        _sync(device)
        epoch_time = time.perf_counter() - start

        start = time.perf_counter()
        base.eval()
        with torch.no_grad():
            log_probs = torch.cat([test_forward(params, xb) for xb in x_test.split(recipe.eval_batch_size)], dim=1)
        log_probs = log_probs.float().cpu()  # (S, N_test, K): the one host sync per epoch
        eval_time = time.perf_counter() - start
        losses, accs = (loss_sum / n_train).tolist(), (correct / n_train).tolist()
        lr = optimizer.param_groups[0]["lr"]
        yield [SeedEpoch(seed, epoch, losses[s], accs[s], log_probs[s], epoch_time, eval_time, lr)
               for s, seed in enumerate(seeds)]

    with torch.no_grad():  # hand the trained weights back to the caller's models
        for s, model in enumerate(models):
            for name, tensor in model.named_parameters():
                tensor.copy_(params[name][s])


def _sync(device: torch.device) -> None:
    """Wait for the device, so the clock reads the work done (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
