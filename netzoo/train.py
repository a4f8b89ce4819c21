"""The trainer: one network, or a group of runs of one network, through one loop and one ``evaluate``.

A *run* is a network trained under a recipe from a seed (``Run``). ``train_runs`` trains R >= 1 runs of the
network a builder makes and yields, after each epoch, one ``EpochResult`` per run still training;
``train_network`` is the one-run case. Every run has its own seed-initialised weights, its own shuffle order (a
``torch.Generator`` seeded with its seed), its own optimizer state, loss, divergence and early stopping. One run
trains its network itself; R > 1 runs train as one fused module (``netzoo.fuse``: inputs (R*B, …), outputs
(R*B, K)), so R small networks cost about as many kernel launches as one. A run whose epoch says stop (diverged,
stopped early, its last epoch) leaves the group: the others are fused again without it, weights and optimizer
state carried over, and go on undisturbed. A run's Dropout layers draw from its own generator
(``netzoo.fuse.seeded_dropout``), alone as in a group, so it draws the same masks either way. On CUDA, each step of
the full batch size can replay a captured CUDA graph (``netzoo.graphs``): the same numbers, one launch a step.

Data lives on the training device for the whole run (``netzoo.datasets.load_dataset``); a batch is an index
slice of a ``torch.randperm`` drawn on the device; the loss and accuracy accumulate on the device, and the host
reads them once per epoch (the one sync), as airbench does. Timing follows the study: an epoch's time covers its
training steps only (device synchronised before each clock read); evaluation is timed apart. A group's times
are shared: each run is charged the group's time divided by the runs in it.

The rules that end a run live here, in ``Stopping``: an epoch whose training, validation or test loss is NaN/inf
is ``diverged`` (its outputs answer nothing: the argmax of NaN log-probabilities is class 0 for every sample, so
it carries no log-probabilities and null accuracies, ``without_answers``); with early stopping, a run whose
*validation* loss has not improved for ``early_stopping_patience`` epochs is ``stopped_early`` (the test split
never decides anything: a recipe with early stopping must hold a validation split out, ``Recipe.validation``).
With a validation split (``Dataset.with_validation``), every epoch is evaluated on it too (``val_*`` metrics).
A network with BatchNorm never trains on a final batch of one sample: training-mode BatchNorm cannot normalise one value per channel, so
``split_batches`` merges it into the batch before (every sample still trains once per epoch) and the EpochResult
says so (``last_batch_merged``).

Out-of-memory retries, claims and writing wrap this trainer in ``netzoo.executors.task``, never inside it; the
trainer imports nothing above it (datasets, devices, fuse, lenses, recipe).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.adam import adam as functional_adam

from netzoo.datasets import Dataset
from netzoo.devices import sync
from netzoo.errors import RecipeError
from netzoo.fuse import dropout_generator, seeded_dropout
from netzoo.recipe import Recipe
from netzoo.weights import SAVE_WEIGHTS

WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Run:
    """One training run: the network (given apart, as a builder) under ``recipe`` from ``seed``."""

    seed: int
    recipe: Recipe


@dataclass
class EpochResult:
    """One epoch of one run: the ``epochs`` columns (minus the key), test log-probabilities, lens rows."""

    epoch: int
    status: str                  # done, diverged (loss NaN/inf this epoch) or stopped_early
    metrics: dict                # train_loss, train_acc, test_loss, test_acc, test_balanced_acc, test_acc_class_k, times, lr
    log_probs: np.ndarray | None  # (N_test, K) float32 on the host; None for a diverged epoch (no answers)
    layer_rows: list[dict] = field(default_factory=list)
    last_batch_merged: bool = False  # a final batch of one sample was merged into the one before (BatchNorm)
    state: dict | None = None    # the run's state dict after this epoch, on the host, when asked (train_runs' states)


@dataclass
class Evaluation:
    """One run's test-split metrics after an epoch."""

    loss: float
    acc: float
    balanced_acc: float
    class_recall: list[float]
    log_probs: np.ndarray        # (N, K) float32
    time_s: float                # the run's share of the evaluation's time


# Metrics that are answers: a diverged epoch has none of them (without_answers). Losses are kept as measured:
# their NaN/inf is the evidence of the divergence.
ANSWER_METRICS = ("train_acc", "test_acc", "test_balanced_acc", "val_acc", "val_balanced_acc")


def without_answers(metrics: dict) -> dict:
    """A diverged epoch's metrics: the accuracies (train, test, balanced, each class's recall) set to None.

    NaN outputs predict nothing; their argmax (class 0 everywhere) would score 1/K on a balanced test split.
    """
    return {k: None if k in ANSWER_METRICS or k.startswith("test_acc_class_") else v for k, v in metrics.items()}


@dataclass
class Stopping:
    """The one rule that ends a run after an epoch: diverged, stopped early, or done (and go on)."""

    recipe: Recipe
    best_loss: float = math.inf
    stale_epochs: int = 0

    def status(self, epoch: int, train_loss: float, test_loss: float, val_loss: float | None = None) -> str:
        """'diverged' when a loss is NaN/inf; 'stopped_early' when the validation loss has not improved by
        ``early_stopping_min_delta`` for ``early_stopping_patience`` epochs before the last; else 'done'.
        Raises RecipeError for early stopping without a validation loss (the test loss never decides)."""
        if not all(math.isfinite(x) for x in (train_loss, test_loss) + ((val_loss,) if val_loss is not None else ())):
            return "diverged"
        patience = self.recipe.early_stopping_patience
        if patience:
            if val_loss is None:
                raise RecipeError(f"recipe {self.recipe.name!r}: early stopping needs a validation split (the test "
                                  f"loss never decides); train on data held out by the recipe's validation.")
            if val_loss < self.best_loss - self.recipe.early_stopping_min_delta:
                self.best_loss, self.stale_epochs = val_loss, 0
            else:
                self.stale_epochs += 1
                if self.stale_epochs >= patience and epoch < self.recipe.epochs:
                    return "stopped_early"
        return "done"


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
    """Index batches of ``batch_size`` along the last dimension of ``perm`` ((N,), or (R, N) for a group's R
    shuffle orders); with ``merge_last``, a final batch of one index joins the batch before (merges_last_batch)."""
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
    hooks, graph-capture checks, state lookup). Measured for issue 13 (docs/benchmarks.md, "fast_step"),
    interleaved in one process, one thread: a whole training step of a 64-32-10 MLP takes 0.192 ms with it
    against 0.236 ms with ``optimizer.step()`` (1.23x), of a 4-channel conv 0.520 vs 0.654 ms (1.26x).
    Any other optimizer, or a step where a parameter got no gradient, uses ``step``.
    ``tests/test_train.py`` checks it against ``optimizer.step()``, number for number.
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
             batch_size: int = 1000, runs: int = 1) -> list[Evaluation]:
    """Each run's test loss, accuracy, per-class recall and balanced accuracy (the study's 'accuracy'), without
    autograd: one Evaluation per run. ``model`` is one network (``runs=1``) or a fused group of ``runs`` runs,
    which sees every test batch once per run, (R*n, …) -> (R*n, K)."""
    device = x_test.device
    model.eval()
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = []
        for x in x_test.split(batch_size):
            out = model(x if runs == 1 else x.repeat(runs, *[1] * (x.dim() - 1)))  # (R*n, K)
            outputs.append(out.view(runs, -1, out.shape[-1]))
        log_probs = torch.cat(outputs, dim=1).float()  # (R, N, K)
        counts = torch.bincount(y_test, minlength=classes)
        host = []
        for run_log_probs in log_probs:  # each run's metrics, as one network's
            loss = F.nll_loss(run_log_probs, y_test, reduction="mean")
            pred = run_log_probs.argmax(1)
            hits = torch.bincount(y_test[pred == y_test], minlength=classes)
            host.append(torch.cat([loss.reshape(1).double(), hits.double(), counts.double()]))
        host = torch.stack(host).cpu().numpy()  # (R, 1 + 2K)
        log_probs = log_probs.cpu().numpy()
    sync(device)
    elapsed = (time.perf_counter() - start) / runs  # shared: each run is charged its share
    out = []
    for run_host, run_log_probs in zip(host, log_probs):
        hits, counts = run_host[1:1 + classes], run_host[1 + classes:]
        recall = np.divide(hits, counts, out=np.full(classes, np.nan), where=counts > 0)
        out.append(Evaluation(loss=float(run_host[0]), acc=float(hits.sum() / counts.sum()),
                              balanced_acc=float(np.nanmean(recall)), class_recall=recall.tolist(),
                              log_probs=run_log_probs, time_s=elapsed))
    return out


# --- a group of runs ------------------------------------------------------------------------------------
# Recipe fields a group's runs must share: the loop's batches, the device's matmul precision and the data split
# (validation). The others (optimizer numbers, schedule, init, epochs, early stopping) may differ from run to run.
SHARED_FIELDS = ("batch_size", "eval_batch_size", "allow_tf32", "validation")
# Fields of the update: runs equal in all of these step with one torch.optim optimizer over the group
# (netzoo.fuse: the same arithmetic as each run's own, element by element); otherwise with RunOptimizer.
UPDATE_FIELDS = ("optimizer", "lr", "amsgrad", "momentum", "weight_decay", "schedule", "step_size", "gamma")


def _run_losses(out: torch.Tensor, target: torch.Tensor, runs: int) -> torch.Tensor:
    """Each run's mean NLL over its rows of a (R*B, K) batch: (R,). One run: nll_loss's own mean, bit for bit
    the study's; a group: the per-row losses averaged per run (another summation order, within float rounding)."""
    if runs == 1:
        return F.nll_loss(out, target).reshape(1)
    return F.nll_loss(out, target, reduction="none").view(runs, -1).mean(1)


def _train_step(module: nn.Module, params: list[torch.Tensor], step, x: torch.Tensor, target: torch.Tensor,
                runs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step of one network or a fused group on a (R*B, …) batch: each run's mean loss (R,) and
    count of right answers (R,), detached, on the device (no sync)."""
    out = module(x)  # (R*B, K) log-probabilities
    losses = _run_losses(out, target, runs)
    for p in params:  # optimizer.zero_grad(set_to_none=True) without its profiler wrapper
        p.grad = None
    losses.sum().backward()  # runs share no weight: each gets exactly its own gradient
    step()
    return losses.detach(), (out.detach().argmax(1) == target).view(runs, -1).sum(1)


class _Group:
    """The module that trains the runs still in a group, and how it steps: one network with its recipe's
    optimizer (one run), or a fused module (netzoo.fuse) with one torch.optim optimizer over its stacked
    parameters (runs equal in every UPDATE_FIELDS) or a RunOptimizer (per-run numbers); on CUDA, each step of
    the full batch size as a replayed CUDA graph (netzoo.graphs) where ``graphs`` allows and nothing blocks it."""

    def __init__(self, models: list[nn.Module], runs: list[Run], fused: bool, lenses: bool, device,
                 graphs: bool = False, capture=None) -> None:
        self.models, self.runs, self.fused = models, runs, fused
        self.per_run = len({tuple(getattr(r.recipe, f) for f in UPDATE_FIELDS) for r in runs}) > 1 or \
            any(r.recipe.schedule == "cosine" for r in runs) and len({r.recipe.epochs for r in runs}) > 1
        self.lenses_on = lenses
        self.device, self.graphs, self.capture = torch.device(device), graphs, capture
        self.module = self._build(list(range(len(runs))))
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        if self.per_run:
            from netzoo.fuse_optim import RunOptimizer

            self.run_optimizers = [make_optimizer([torch.zeros(1, requires_grad=True)], r.recipe) for r in runs]
            self.schedules = [make_schedule(o, r.recipe) for o, r in zip(self.run_optimizers, runs)]
            self.optimizer = RunOptimizer(self.params, self.run_optimizers)
            self.step = self.optimizer.step
        else:
            self.optimizer = make_optimizer(self.params, runs[0].recipe)
            self.schedules = [make_schedule(self.optimizer, runs[0].recipe)]
            self.step = fast_step(self.optimizer, self.params)
        self.lenses = self._lenses()
        self.graphed = None  # (the lrs it was captured with, GraphedStep)
        self.blocked = self.graph_blockers()

    def _build(self, keep: list[int]) -> nn.Module:
        if not self.fused:
            return self.models[keep[0]]
        from netzoo.fuse import fuse

        return fuse([self.models[i] for i in keep])

    def _lenses(self):
        if not self.lenses_on:
            return None
        from netzoo.lenses import Lenses

        return Lenses(self.module, runs=len(self.runs), layout=self.models[0] if self.fused else None)

    def graph_blockers(self) -> str | None:
        """Why this group's steps run eagerly rather than as a CUDA graph, or None (netzoo.graphs)."""
        if not self.graphs:
            return "CUDA graphs are off"
        from netzoo.graphs import graph_blockers

        return graph_blockers(self.module, self.device, [r.recipe.optimizer for r in self.runs],
                              stand_in=self.capture is not None)

    def train_step(self, x_train: torch.Tensor, y_train: torch.Tensor, rows: torch.Tensor):
        """One step on rows ``rows`` (R*B,) of the training split: (losses (R,), right answers (R,)); replayed
        from a CUDA graph when one may hold it (read the outputs before the next step)."""
        runs = len(self.runs)
        if self.blocked is not None:
            return _train_step(self.module, self.params, self.step, x_train[rows], y_train[rows], runs)
        if self.graphed is None or self.graphed[0] != self.lrs():  # the first, or a new lr: a new capture
            from netzoo.graphs import RECAPTURE_WARMUP, WARMUP_STEPS, GraphedStep, cuda_capture

            def body(static_rows: torch.Tensor):
                return _train_step(self.module, self.params, self.step, x_train[static_rows], y_train[static_rows],
                                   runs)

            lenses = self.lenses
            self.graphed = (self.lrs(), GraphedStep(
                body, capturing=lenses.capturing if lenses is not None else contextlib.nullcontext,
                replayed=lenses.replayed if lenses is not None else lambda: None,
                capture=self.capture or cuda_capture,
                warmup=WARMUP_STEPS if self.graphed is None else RECAPTURE_WARMUP))
        return self.graphed[1](rows)

    def lrs(self) -> list[float]:
        """Each run's current learning rate."""
        if self.per_run:
            return [o.param_groups[0]["lr"] for o in self.run_optimizers]
        return [self.optimizer.param_groups[0]["lr"]] * len(self.runs)

    def schedule_step(self) -> None:
        """Each lr schedule's per-epoch step."""
        for schedule in self.schedules:
            if schedule is not None:
                schedule.step()

    def keep(self, keep: list[int]) -> None:
        """Go on with the runs at positions ``keep`` only: fuse them again (weights, BatchNorm statistics and
        optimizer state carried over, sliced along the run dimension); the others leave the group."""
        from netzoo.fuse import unfuse

        for i in keep:
            self.models[i].load_state_dict(unfuse(self.module, i))
        old_params = dict(self.module.named_parameters())
        if self.lenses is not None:
            self.lenses.close()
        self.graphed = None  # another module: another graph (after warm-up steps again)
        self.module = self._build(keep)
        self.models = [self.models[i] for i in keep]
        self.runs = [self.runs[i] for i in keep]
        index = torch.tensor(keep, device=self.params[0].device)
        new_params = dict(self.module.named_parameters())
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        if self.per_run:
            from netzoo.fuse_optim import RunOptimizer

            old = self.optimizer
            self.run_optimizers = [self.run_optimizers[i] for i in keep]
            self.schedules = [self.schedules[i] for i in keep]
            self.optimizer = RunOptimizer(self.params, self.run_optimizers)
            self.optimizer.carry(old, index)
            self.step = self.optimizer.step
        else:
            state = self.optimizer.state
            moved = {new_params[name]: {k: v.index_select(0, index) if torch.is_tensor(v) and v.dim() else v
                                        for k, v in state[param].items()}
                     for name, param in old_params.items() if param in state}
            self.optimizer.state.clear()
            self.optimizer.state.update(moved)
            self.optimizer.param_groups[0]["params"] = self.params
            self.step = fast_step(self.optimizer, self.params)
        self.lenses = self._lenses()
        self.blocked = self.graph_blockers()

    def close(self) -> None:
        if self.lenses is not None:
            self.lenses.close()


def train_runs(build: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]], runs: Sequence[Run],
               data: Dataset, device="cpu", lenses: bool = False, batch_size: int | None = None,
               states: str = "none", graphs: bool = True, capture=None) -> Iterator[dict[int, EpochResult]]:
    """Train ``runs`` of the network ``build()`` makes (or run i of ``build[i]()``: one network in several
    zoo variants, e.g. a sweep's dropout probabilities); after each epoch, yield {position in ``runs``:
    EpochResult} for every run that trained that epoch.

    Each run is built after ``seed_everything(run.seed)`` and initialised by ``init_weights(model,
    run.recipe.init, run.seed)``; its Dropout layers draw from ``netzoo.fuse.dropout_generator(run.seed)``
    (``seeded_dropout``), so that it draws the same masks alone and in a group; it shuffles with
    ``torch.Generator(device).manual_seed(run.seed)``. A run ends after an epoch that ``Stopping`` says is
    diverged or stopped early, or after its recipe's last epoch; the others go on (see the module doc).
    ``lenses`` records each run's ``layers`` rows (netzoo.lenses) in ``layer_rows``. ``batch_size`` overrides
    the recipes' (halved after a CUDA out-of-memory). ``states``: "last" puts each run's state dict after its
    last epoch in that EpochResult's ``state`` (on the host; a fused group's through ``netzoo.fuse.unfuse``),
    "every" after every epoch, "none" never. With a validation split in ``data`` (``x_val``), each epoch is
    evaluated on it too, outside the lenses (they describe the test pass). ``graphs``: on CUDA, replay each
    full-size step from a CUDA graph where nothing blocks it and epochs are long enough (netzoo.graphs);
    ``capture`` stands in for CUDA's capture (tests: on any device, whatever the epoch's length).

    Raises RecipeError when the runs differ in a SHARED_FIELDS field or for batch size 1 with BatchNorm, and
    FusionError (netzoo.fuse) when several runs of this network cannot train as one module (train them one at
    a time); both before the first epoch.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("train_runs needs at least one run")
    if states not in SAVE_WEIGHTS:
        raise ValueError(f"states {states!r}; allowed: {', '.join(SAVE_WEIGHTS)}")
    builds = list(build) if isinstance(build, Sequence) else [build] * len(runs)
    if len(builds) != len(runs):
        raise ValueError(f"train_runs got {len(builds)} builders for {len(runs)} runs; give one, or one per run")
    differ = [f for f in SHARED_FIELDS if len({getattr(r.recipe, f) for r in runs}) > 1]
    if differ:
        raise RecipeError(f"the runs of one group must share {', '.join(differ)}; train them in separate groups.")
    device = torch.device(device)
    first = runs[0].recipe
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = first.allow_tf32
        torch.backends.cudnn.allow_tf32 = first.allow_tf32
    models = []
    for run, make in zip(runs, builds):
        seed_everything(run.seed)
        model = make()
        init_weights(model, run.recipe.init, run.seed)
        models.append(seeded_dropout(model, dropout_generator(run.seed, device)).to(device))
    x_train, y_train = data.x_train, data.y_train
    n_train, batch_size = len(x_train), batch_size or first.batch_size
    merge_last = merges_last_batch(models[0], n_train, batch_size)
    if graphs and device.type == "cuda":
        from netzoo.graphs import MIN_STEPS_PER_EPOCH

        graphs = n_train // batch_size >= MIN_STEPS_PER_EPOCH
    group = _Group(models, runs, fused=len(runs) > 1, lenses=lenses, device=device, graphs=graphs,
                   capture=capture)
    live = list(range(len(runs)))  # positions in ``runs`` of the runs in the group, in its order
    generators = [torch.Generator(device).manual_seed(run.seed) for run in runs]
    stopping = [Stopping(run.recipe) for run in runs]
    train_time = [0.0] * len(runs)
    try:
        for epoch in range(1, max(run.recipe.epochs for run in runs) + 1):
            r = len(live)
            lrs = group.lrs()
            group.module.train()
            loss_sum = torch.zeros(r, device=device)
            correct = torch.zeros(r, device=device, dtype=torch.int64)
            sync(device)
            start = time.perf_counter()
            perms = torch.stack([torch.randperm(n_train, device=device, generator=generators[i]) for i in live])
            for idx in split_batches(perms, batch_size, merge_last):  # (R, B): run r's batch in row r
                losses, hits = group.train_step(x_train, y_train, idx.reshape(-1))
                loss_sum += losses * idx.shape[-1]  # stays on the device: no sync per step
                correct += hits
            sync(device)
            epoch_time = (time.perf_counter() - start) / r  # shared: each run is charged its share
            group.schedule_step()

            host = torch.cat([loss_sum.double(), correct.double()]).tolist()  # the epoch's one sync
            if group.lenses is not None:
                with group.lenses.evaluating():
                    evaluations = evaluate(group.module, data.x_test, data.y_test, data.classes,
                                           first.eval_batch_size, runs=r if group.fused else 1)
                layer_rows = group.lenses.epoch_rows_by_run()
            else:
                evaluations = evaluate(group.module, data.x_test, data.y_test, data.classes, first.eval_batch_size,
                                       runs=r if group.fused else 1)
                layer_rows = [[] for _ in live]

            validations = [None] * r
            if data.x_val is not None:  # outside the lenses: they describe the test pass
                validations = evaluate(group.module, data.x_val, data.y_val, data.classes, first.eval_batch_size,
                                       runs=r if group.fused else 1)

            results, keep = {}, []
            for k, i in enumerate(live):
                ev, val, train_loss = evaluations[k], validations[k], host[k] / n_train
                train_time[i] += epoch_time
                status = stopping[i].status(epoch, train_loss, ev.loss, None if val is None else val.loss)
                metrics = {
                    "train_loss": train_loss, "train_acc": host[r + k] / n_train,
                    "test_loss": ev.loss, "test_acc": ev.acc, "test_balanced_acc": ev.balanced_acc,
                    "val_loss": None if val is None else val.loss, "val_acc": None if val is None else val.acc,
                    "val_balanced_acc": None if val is None else val.balanced_acc,
                    "epoch_time_s": epoch_time, "train_time_s": train_time[i],
                    "eval_time_s": ev.time_s + (0.0 if val is None else val.time_s),
                    "lr": lrs[k], **{f"test_acc_class_{c}": v for c, v in enumerate(ev.class_recall)},
                }
                log_probs = ev.log_probs
                if status == "diverged":
                    metrics, log_probs = without_answers(metrics), None
                goes_on = status == "done" and epoch < runs[i].recipe.epochs
                state = None
                if states == "every" or (states == "last" and not goes_on):
                    state = _state_on_host(group, k)
                results[i] = EpochResult(epoch=epoch, status=status, metrics=metrics, log_probs=log_probs,
                                         layer_rows=layer_rows[k], last_batch_merged=merge_last, state=state)
                if goes_on:
                    keep.append(k)
            yield results
            if not keep:
                return
            if len(keep) < r:
                group.keep(keep)
                live = [live[k] for k in keep]
    finally:
        group.close()


def _state_on_host(group: _Group, k: int) -> dict[str, torch.Tensor]:
    """The state dict of the group's ``k``-th run, copied to the host: one network's own, or its slice of the
    fused module (``netzoo.fuse.unfuse``), in the original network's names and shapes."""
    if group.fused:
        from netzoo.fuse import unfuse

        state = unfuse(group.module, k)
    else:
        state = group.module.state_dict()
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def train_network(model: nn.Module, data: Dataset, recipe: Recipe, seed: int, device="cpu",
                  lenses: bool = False, batch_size: int | None = None) -> Iterator[EpochResult]:
    """Train ``model`` from scratch under ``recipe`` with ``seed``; yield one EpochResult per epoch: the
    one-run case of ``train_runs`` (see there). Raises RecipeError for batch size 1 with BatchNorm."""
    for results in train_runs(lambda: model, [Run(seed, recipe)], data, device, lenses=lenses,
                              batch_size=batch_size):
        yield results[0]
