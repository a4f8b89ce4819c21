"""The hot loop: train one network under a Recipe and yield one EpochResult per epoch.

Data lives on the training device for the whole run (``netzoo.datasets.load_dataset``); a batch is an index
slice of a ``torch.randperm`` drawn on the device; the loss and accuracy accumulate on the device, and the
host reads them once per epoch (the one sync), as airbench does. Timing follows the study: an epoch's time
covers its training steps only (device synchronised before each clock read); evaluation is timed apart.

An epoch whose loss turns NaN/inf is ``diverged``: its outputs answer nothing (the argmax of NaN
log-probabilities is class 0 for every sample), so it carries no log-probabilities and null accuracies
(``without_answers``). A network with BatchNorm never trains on a final batch of one sample: training-mode
BatchNorm cannot normalise one value per channel, so ``split_batches`` merges it into the batch before
(every sample still trains once per epoch) and the EpochResult says so (``last_batch_merged``).

Out-of-memory retries, claims and writing wrap this loop in ``netzoo.runner``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adam import adam as functional_adam
from torch import nn

from netzoo.datasets import Dataset
from netzoo.devices import sync
from netzoo.errors import RecipeError
from netzoo.recipe import Recipe

WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class EpochResult:
    """One epoch of one network: the ``epochs`` columns (minus the key), test log-probabilities, lens rows."""

    epoch: int
    status: str                  # done, diverged (loss NaN/inf this epoch) or stopped_early
    metrics: dict                # train_loss, train_acc, test_loss, test_acc, test_balanced_acc, test_acc_class_k, times, lr
    log_probs: np.ndarray | None  # (N_test, K) float32 on the host; None for a diverged epoch (no answers)
    layer_rows: list[dict] = field(default_factory=list)
    last_batch_merged: bool = False  # a final batch of one sample was merged into the one before (BatchNorm)


@dataclass
class Evaluation:
    """The test split's metrics after an epoch."""

    loss: float
    acc: float
    balanced_acc: float
    class_recall: list[float]
    log_probs: np.ndarray        # (N, K) float32
    time_s: float


# Metrics that are answers: a diverged epoch has none of them (without_answers). Losses are kept as measured:
# their NaN/inf is the evidence of the divergence.
ANSWER_METRICS = ("train_acc", "test_acc", "test_balanced_acc")


def without_answers(metrics: dict) -> dict:
    """A diverged epoch's metrics: the accuracies (train, test, balanced, each class's recall) set to None.

    NaN outputs predict nothing; their argmax (class 0 everywhere) would score 1/K on a balanced test split.
    """
    return {k: None if k in ANSWER_METRICS or k.startswith("test_acc_class_") else v for k, v in metrics.items()}


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` holds a BatchNorm layer (which cannot train on a batch of one sample)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def merges_last_batch(model: nn.Module, n_train: int, batch_size: int) -> bool:
    """Whether an epoch of ``n_train`` samples in batches of ``batch_size`` ends with a batch of one sample
    that ``split_batches`` merges into the one before: only for networks with BatchNorm.

    Raises RecipeError for batch size 1 with BatchNorm: every batch would hold one sample.
    """
    if not has_batch_norm(model):
        return False
    if batch_size < 2:
        raise RecipeError(f"batch_size {batch_size} cannot train {type(model).__name__}: its BatchNorm needs more "
                          f"than one sample per batch in training mode. Use a recipe with a batch_size of 2 or more.")
    return n_train > batch_size and n_train % batch_size == 1


def split_batches(perm: torch.Tensor, batch_size: int, merge_last: bool = False) -> tuple[torch.Tensor, ...]:
    """Index batches of ``batch_size`` along the last dimension of ``perm`` ((N,) or (S, N) for batched seeds);
    with ``merge_last``, a final batch of one index joins the batch before (see merges_last_batch)."""
    batches = perm.split(batch_size, dim=-1)
    if merge_last and len(batches) > 1 and batches[-1].shape[-1] == 1:
        batches = batches[:-2] + (torch.cat(batches[-2:], dim=-1),)
    return batches


def seed_everything(seed: int) -> None:
    """Seed torch's global RNGs (weight init, dropout): the same seed gives the same numbers on CPU."""
    torch.manual_seed(seed)


def init_weights(model: nn.Module, init: str, seed: int) -> None:
    """Re-initialise every Linear/Conv under ``init`` from ``seed`` (default: PyTorch's own reset_parameters).

    Re-initialising here makes a training run depend only on (network, recipe, seed), not on what the
    process built before.
    """
    seed_everything(seed)
    for module in model.modules():
        if init == "default" or not isinstance(module, WEIGHT_MODULES):
            if hasattr(module, "reset_parameters") and not isinstance(module, nn.MultiheadAttention):
                module.reset_parameters()
            continue
        weight, bias = module.weight, module.bias
        if init == "xavier-normal":
            nn.init.xavier_normal_(weight)
        elif init == "xavier-uniform":
            nn.init.xavier_uniform_(weight)
        elif init == "kaiming-normal":
            nn.init.kaiming_normal_(weight, nonlinearity="relu")
        elif init == "kaiming-uniform":
            nn.init.kaiming_uniform_(weight, nonlinearity="relu")
        elif init == "randn":
            nn.init.normal_(weight, 0.0, 1.0)
        else:
            raise RecipeError(f"init {init!r} is unknown; see netzoo.recipe.INITS")
        if bias is not None:
            if init == "randn":
                nn.init.normal_(bias, 0.0, 1.0)
            else:
                nn.init.zeros_(bias)


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's torch.optim optimizer, with fused kernels where torch has them (SGD, Adam, AdamW, on CPU
    and CUDA) and multi-tensor ``foreach`` ones otherwise (RMSprop): fewer kernel launches per step.

    On this 2-core CPU, fused Adam (amsgrad) steps a 64-32-10 MLP in ~1.9 ms vs ~2.6 ms for foreach.
    """
    params = list(params)
    lr, wd = recipe.lr, recipe.weight_decay
    momentum = recipe.momentum or 0.9  # sgd-momentum and nesterov default to 0.9
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=wd, fused=True)
    if recipe.optimizer == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd, fused=True)
    if recipe.optimizer == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=wd, fused=True)
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=recipe.momentum, weight_decay=wd, foreach=True)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, amsgrad=recipe.amsgrad, weight_decay=wd, fused=True)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, amsgrad=recipe.amsgrad, weight_decay=wd, fused=True)
    raise RecipeError(f"optimizer {recipe.optimizer!r} is unknown; see netzoo.recipe.OPTIMIZERS")


def fast_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]):
    """A function doing ``optimizer.step()`` with the same arithmetic but less Python per call.

    For Adam and AdamW, after one ordinary step has created the state, it calls torch's functional
    ``torch.optim.adam.adam`` on state lists gathered once, skipping ``step``'s per-call wrappers (profiler
    hooks, graph-capture checks, state lookup): ~0.4 ms less per step on this CPU, where a small network's
    whole step takes ~1 ms. Any other optimizer, or a step where a parameter got no gradient, uses ``step``.
    """
    group = optimizer.param_groups[0]
    if not isinstance(optimizer, torch.optim.Adam) or len(optimizer.param_groups) != 1 or \
            group.get("capturable") or group.get("differentiable") or group.get("maximize"):
        return optimizer.step
    lists: dict = {}

    def step() -> None:
        if not lists or any(p.grad is None for p in params):
            optimizer.step()
            if not lists and all(p in optimizer.state for p in params):
                state = [optimizer.state[p] for p in params]
                lists.update(exp_avgs=[s["exp_avg"] for s in state], exp_avg_sqs=[s["exp_avg_sq"] for s in state],
                             max_exp_avg_sqs=[s["max_exp_avg_sq"] for s in state] if group["amsgrad"] else [],
                             state_steps=[s["step"] for s in state])
            return
        beta1, beta2 = group["betas"]
        functional_adam(
            params, [p.grad for p in params], lists["exp_avgs"], lists["exp_avg_sqs"], lists["max_exp_avg_sqs"],
            lists["state_steps"], foreach=group["foreach"], fused=group["fused"],
            decoupled_weight_decay=group["decoupled_weight_decay"], amsgrad=group["amsgrad"], beta1=beta1,
            beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)

    return step


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe):
    """The recipe's per-epoch lr schedule: None, cosine (to 0 over all epochs) or step."""
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    return None


def evaluate(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, classes: int,
             batch_size: int = 1000) -> Evaluation:
    """Test loss, accuracy, per-class recall and balanced accuracy (the study's 'accuracy'), without autograd."""
    device = x_test.device
    model.eval()
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        log_probs = torch.cat([model(x) for x in x_test.split(batch_size)]).float()  # (N, K)
        loss = F.nll_loss(log_probs, y_test, reduction="mean")
        pred = log_probs.argmax(1)
        hits = torch.bincount(y_test[pred == y_test], minlength=classes)
        counts = torch.bincount(y_test, minlength=classes)
        host = torch.cat([loss.reshape(1).double(), hits.double(), counts.double()]).cpu().numpy()
        log_probs = log_probs.cpu().numpy()
    sync(device)
    elapsed = time.perf_counter() - start
    hits, counts = host[1:1 + classes], host[1 + classes:]
    recall = np.divide(hits, counts, out=np.full(classes, np.nan), where=counts > 0)
    return Evaluation(loss=float(host[0]), acc=float(hits.sum() / counts.sum()),
                      balanced_acc=float(np.nanmean(recall)), class_recall=recall.tolist(),
                      log_probs=log_probs, time_s=elapsed)


def train_network(model: nn.Module, data: Dataset, recipe: Recipe, seed: int, device="cpu",
                  lenses=None, batch_size: int | None = None) -> Iterator[EpochResult]:
    """Train ``model`` from scratch under ``recipe`` with ``seed``; yield one EpochResult per epoch.

    Stops after an epoch whose training or test loss is NaN/inf (status ``diverged``: no log-probabilities,
    null accuracies) or when early stopping triggers (``stopped_early``). ``batch_size`` overrides the
    recipe's (the runner halves it after a CUDA out-of-memory). With BatchNorm a final batch of one sample is
    merged into the one before. ``lenses`` (netzoo.lenses.Lenses, already attached) fills ``layer_rows``.
    Raises RecipeError for batch size 1 with BatchNorm.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = recipe.allow_tf32
        torch.backends.cudnn.allow_tf32 = recipe.allow_tf32
    init_weights(model, recipe.init, seed)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, recipe)
    step = fast_step(optimizer, params)
    schedule = make_schedule(optimizer, recipe)
    gen = torch.Generator(device).manual_seed(seed)  # the shuffle order, as netzoo.batched draws it
    x_train, y_train = data.x_train, data.y_train
    n_train, batch_size = len(x_train), batch_size or recipe.batch_size
    merge_last = merges_last_batch(model, n_train, batch_size)
    train_time, best_loss, stale_epochs = 0.0, math.inf, 0

    for epoch in range(1, recipe.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        sync(device)
        start = time.perf_counter()
        for idx in split_batches(torch.randperm(n_train, device=device, generator=gen), batch_size, merge_last):
            out = model(x_train[idx])  # (B, K) log-probabilities
            loss = F.nll_loss(out, y_train[idx])
            for p in params:  # optimizer.zero_grad(set_to_none=True) without its profiler wrapper
                p.grad = None
            loss.backward()
            step()
            loss_sum += loss.detach() * len(idx)  # stays on the device: no sync per step
            correct += (out.detach().argmax(1) == y_train[idx]).sum()
        sync(device)
        epoch_time = time.perf_counter() - start
        train_time += epoch_time
        if schedule is not None:
            schedule.step()

        train_loss, train_correct = torch.stack([loss_sum, correct.double()]).tolist()  # the epoch's one sync
        train_loss /= n_train
        if lenses is not None:
            with lenses.evaluating():
                ev = evaluate(model, data.x_test, data.y_test, data.classes, recipe.eval_batch_size)
            layer_rows = lenses.epoch_rows()
        else:
            ev = evaluate(model, data.x_test, data.y_test, data.classes, recipe.eval_batch_size)
            layer_rows = []

        status = "done"
        if not math.isfinite(train_loss) or not math.isfinite(ev.loss):
            status = "diverged"
        elif recipe.early_stopping_patience:
            if ev.loss < best_loss - recipe.early_stopping_min_delta:
                best_loss, stale_epochs = ev.loss, 0
            else:
                stale_epochs += 1
                if stale_epochs >= recipe.early_stopping_patience and epoch < recipe.epochs:
                    status = "stopped_early"
        metrics = {
            "train_loss": train_loss, "train_acc": train_correct / n_train,
            "test_loss": ev.loss, "test_acc": ev.acc, "test_balanced_acc": ev.balanced_acc,
            "epoch_time_s": epoch_time, "train_time_s": train_time, "eval_time_s": ev.time_s, "lr": lr,
            **{f"test_acc_class_{k}": r for k, r in enumerate(ev.class_recall)},
        }
        log_probs = ev.log_probs
        if status == "diverged":
            metrics, log_probs = without_answers(metrics), None
        yield EpochResult(epoch=epoch, status=status, metrics=metrics, log_probs=log_probs,
                          layer_rows=layer_rows, last_batch_merged=merge_last)
        if status != "done":
            return
