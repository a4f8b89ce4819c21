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
import math
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from netzoo.datasets import Dataset
from netzoo.recipe import Recipe
from netzoo.train import (EpochResult, init_weights, make_optimizer, make_schedule, merges_last_batch, split_batches,
                          sync, without_answers)


def batch_blocker(model: nn.Module, recipe: Recipe) -> str | None:
    """Why seeds of ``model`` cannot be trained as one vmapped model under ``recipe``, or None when they can."""
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        return (f"it has buffers ({', '.join(buffers[:3])}): BatchNorm running statistics cannot be "
                "updated per seed under vmap")
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "it has Dropout: batched seeds would draw different masks than separate training"
    if recipe.early_stopping_patience > 0:
        return "early stopping ends seeds at different epochs"
    return None


def train_seeds(network: nn.Module, data: Dataset, recipe: Recipe, seeds: list[int],
                device: str | torch.device = "cpu") -> Iterator[dict[int, EpochResult]]:
    """Train ``seeds`` of ``network`` as one vmapped model; yield, after each epoch, {seed: EpochResult}.

    Each seed starts from ``init_weights(copy, recipe.init, seed)`` and shuffles with its own
    ``torch.Generator(device).manual_seed(seed)``, as ``netzoo.train.train_network`` does, so the results
    match separate training within float tolerance. A seed whose loss turns NaN/inf is reported
    ``diverged`` (no log-probabilities, null accuracies, as ``train_network`` reports it) and left out of
    later epochs (its neighbours are unaffected: no weight is shared). With BatchNorm (without running
    statistics: buffers block batching) a final batch of one sample is merged into the one before.
    Raises ValueError when ``batch_blocker`` refuses the network: call it first and fall back.
    """
    reason = batch_blocker(network, recipe)
    if reason:
        raise ValueError(f"cannot batch {type(network).__name__}: {reason}; train its seeds one by one")
    if not seeds:
        raise ValueError("train_seeds needs at least one seed")
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = recipe.allow_tf32
        torch.backends.cudnn.allow_tf32 = recipe.allow_tf32
    models = []
    for seed in seeds:
        model = copy.deepcopy(network)
        init_weights(model, recipe.init, seed)
        models.append(model.to(device))
    params, _ = stack_module_state(models)  # name -> (S, *shape) leaf tensors requiring grad
    base = copy.deepcopy(network).to("meta")  # a stateless skeleton for functional_call

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (x,))

    train_forward = vmap(forward, in_dims=(0, 0))   # per-seed weights, per-seed batches
    test_forward = vmap(forward, in_dims=(0, None))  # per-seed weights, the same test batch
    optimizer = make_optimizer(list(params.values()), recipe)
    schedule = make_schedule(optimizer, recipe)
    generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
    x_train, y_train = data.x_train, data.y_train
    n_train, n_seeds = len(x_train), len(seeds)
    merge_last = merges_last_batch(network, n_train, recipe.batch_size)
    running = list(seeds)  # seeds not yet diverged
    train_time = 0.0

    for epoch in range(1, recipe.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        base.train()
        loss_sum = torch.zeros(n_seeds, device=device)
        correct = torch.zeros(n_seeds, device=device)
        sync(device)
        start = time.perf_counter()
        perms = torch.stack([torch.randperm(n_train, device=device, generator=g) for g in generators])  # (S, N)
        for idx in split_batches(perms, recipe.batch_size, merge_last):  # (S, B)
            out = train_forward(params, x_train[idx])  # (S, B, K) log-probabilities
            target = y_train[idx]  # (S, B)
            losses = F.nll_loss(out.flatten(0, 1), target.flatten(), reduction="none").view(n_seeds, -1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # seeds share no weights: each gets exactly its own gradient
            optimizer.step()
            loss_sum += losses.detach() * idx.shape[1]
            correct += (out.detach().argmax(-1) == target).sum(1)
        sync(device)
        epoch_time = time.perf_counter() - start
        train_time += epoch_time
        if schedule is not None:
            schedule.step()

        base.eval()
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            log_probs = torch.cat([test_forward(params, xb) for xb in data.x_test.split(recipe.eval_batch_size)], dim=1)
        log_probs = log_probs.float().cpu().numpy()  # (S, N_test, K): the epoch's one host sync
        train_losses, train_accs = (loss_sum / n_train).tolist(), (correct / n_train).tolist()
        eval_time = (time.perf_counter() - start) / n_seeds  # shared: each seed is charged its share
        results = {}
        for s, seed in enumerate(seeds):
            if seed not in running:
                continue
            metrics = _test_metrics(log_probs[s], data.y_test.cpu().numpy(), data.classes)
            status = "done" if math.isfinite(train_losses[s]) and math.isfinite(metrics["test_loss"]) else "diverged"
            # the batched steps are shared: each seed is charged its share of the epoch's time
            metrics.update(train_loss=train_losses[s], train_acc=train_accs[s], epoch_time_s=epoch_time / n_seeds,
                           train_time_s=train_time / n_seeds, eval_time_s=eval_time, lr=lr)
            answers = log_probs[s]
            if status == "diverged":
                metrics, answers = without_answers(metrics), None
            results[seed] = EpochResult(epoch=epoch, status=status, metrics=metrics, log_probs=answers,
                                        last_batch_merged=merge_last)
            if status != "done":
                running.remove(seed)
        yield results
        if not running:
            return


def _test_metrics(log_probs: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """Test loss, accuracy, balanced accuracy and per-class recall from (N, K) log-probabilities,
    as ``netzoo.train.evaluate`` computes them."""
    loss = float(-log_probs[np.arange(len(labels)), labels].astype(np.float64).mean())
    pred = log_probs.argmax(1)
    hits = np.bincount(labels[pred == labels], minlength=classes).astype(np.float64)
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    recall = np.divide(hits, counts, out=np.full(classes, np.nan), where=counts > 0)
    return {"test_loss": loss, "test_acc": float(hits.sum() / counts.sum()),
            "test_balanced_acc": float(np.nanmean(recall)),
            **{f"test_acc_class_{k}": float(r) for k, r in enumerate(recall)}}


# --- the runner's side: which tasks to batch ----------------------------------------------------------
# Device types where the runner batches seeds. On a GPU the zoo's small networks are launch-bound and
# batching pays; on 2 CPU cores it was measured mixed (1 epoch on digits, 4 seeds, 1 thread: Linear 1.7x
# and Conv1d 1.9x faster, Conv2d 0.54x: vmapped conv2d is slower on CPU), so CPU trains seeds one by one.
BATCH_DEVICE_TYPES = ("cuda",)


def claim_seed_group(job, task, tasks: list, claims, device: str) -> list:
    """The other seeds of ``task``'s network among ``tasks`` that this worker could claim (their claims are
    now held), when the job allows batching them with it on ``device``; else []."""
    from netzoo.results import key_complete
    from netzoo.runner import load_network

    if job.lenses or torch.device(device).type not in BATCH_DEVICE_TYPES:
        return []  # lenses attach hooks to one network: they need seeds trained one by one
    siblings = [t for t in tasks if t.network == task.network and t.key != task.key]
    if not siblings or batch_blocker(load_network(job.zoo, task.network), job.recipe) is not None:
        return []
    group = []
    for sibling in siblings:
        if claims.acquire(sibling.key):
            if key_complete(job.results, sibling.key):
                claims.release(sibling.key)
            else:
                group.append(sibling)
    return group


def train_group(job, tasks: list, device: str) -> list:
    """Train ``tasks`` (seeds of one network, claimed) as one vmapped model and write each one's parts with
    ``netzoo.runner.train_task``; return their Outcomes. Falls back to one by one if batching fails."""
    from netzoo.runner import _dataset, load_network, train_task

    data = _dataset(job.dataset, job.data_root, job.download, device)
    seeds = [t.seed for t in tasks]
    trained: dict[int, list[EpochResult]] = {seed: [] for seed in seeds}
    try:
        for per_seed in train_seeds(load_network(job.zoo, tasks[0].network), data, job.recipe, seeds, device):
            for seed, result in per_seed.items():
                trained[seed].append(result)
    except (RuntimeError, ValueError) as exc:  # e.g. an op vmap does not support: train them one by one
        import logging

        logging.getLogger(__name__).warning("%s: batched seeds failed (%s); training them one by one",
                                            tasks[0].network, exc)
        return [train_task(job, t, device) for t in tasks]
    return [train_task(job, t, device, trained=trained[t.seed]) for t in tasks]
