"""One optimizer step for R fused runs (netzoo.fuse) at once, each run with its own hyperparameters.

A sweep's recipes that differ only in numbers an optimizer takes (lr, weight decay, momentum, betas, eps, and
flags such as nesterov or amsgrad) train as one fused module whose parameters are (R, *shape). Runs with the
same numbers, when adjacent, form a group: a slice [a:b] of every stacked parameter, its gradient and its
optimizer state; each group takes one call of torch.optim's own functional update (the fused or foreach
kernel that the run's optimizer would use alone), so a step is one call per group, not per run, and each run
gets exactly the arithmetic of its optimizer under torch.optim. Seeds of one recipe are one group: one call.

Why not one set of ``torch._foreach_*`` ops with per-run (R, 1, ...) coefficient tensors (the first design)?
Measured on this CPU (one thread, study's Adam): its dozen passes over parameters, gradients and state cost
9.2 ms a step for ResNetStyleReLU_1 at R=8 vs 1.2 ms for torch's one fused Adam kernel, and 0.47 vs 0.11 ms
for LinearReLU_1 at R=32; per-run broadcast coefficients also leave the formulas to be written a second time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.optim.adam import adam as adam_update
from torch.optim.rmsprop import rmsprop as rmsprop_update
from torch.optim.sgd import sgd as sgd_update

from netzoo.errors import FusionError

# torch.optim type -> its functional update below
KINDS = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adam", torch.optim.RMSprop: "rmsprop"}


def _settings(optimizer: torch.optim.Optimizer) -> tuple:
    """Everything but the parameters and the lr in the optimizer's one param group, hashable: runs with equal
    settings and lr step together."""
    group = optimizer.param_groups[0]
    return tuple((k, v) for k, v in sorted(group.items()) if k not in ("params", "lr", "initial_lr"))


class RunOptimizer:
    """Step R fused runs' stacked parameters, each run as its own torch.optim optimizer would.

    ``params``: the fused module's parameters, each (R, *shape). ``per_run``: R torch.optim optimizers, one per
    run (e.g. ``netzoo.train.make_optimizer`` over a placeholder parameter), all SGD, all RMSprop, or all
    Adam/AdamW, one param group each: run r takes ``per_run[r]``'s lr, weight decay, momentum, betas, eps,
    flags and fused/foreach choice. The lrs are read before every step, so torch's lr schedulers stepping
    ``per_run[r]`` (cosine, step) drive run r's lr.

    Runs with equal settings and lr that are adjacent share one call of torch's functional update
    (``torch.optim.sgd.sgd``, ``adam.adam``, ``rmsprop.rmsprop``) on slices [a:b] of the stacked tensors, so
    order the runs with equal recipes next to each other (seeds innermost). The update formulas are torch's:
      SGD      https://docs.pytorch.org/docs/stable/generated/torch.optim.SGD.html
      Adam     https://docs.pytorch.org/docs/stable/generated/torch.optim.Adam.html
      AdamW    https://docs.pytorch.org/docs/stable/generated/torch.optim.AdamW.html
      RMSprop  https://docs.pytorch.org/docs/stable/generated/torch.optim.RMSprop.html
    State (momentum buffers, moments) is kept as (R, *shape) tensors, so groups may split or merge when lrs
    change. A fused run matches the same run under torch.optim alone to float rounding of its gradients
    (tests/test_fuse.py). When every run has the same numbers, the trainer's torch.optim optimizer over the
    fused parameters takes the same steps too: element by element, one group.

    Raises FusionError for another optimizer type, a mix of types, or parameters without the run dimension.
    """

    def __init__(self, params: Iterable[torch.Tensor], per_run: Sequence[torch.optim.Optimizer]) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.per_run = list(per_run)
        runs = len(self.per_run)
        if not self.params or not runs:
            raise FusionError("RunOptimizer needs parameters and one torch.optim optimizer per run.")
        wrong = sorted({str(tuple(p.shape)) for p in self.params if p.dim() < 1 or p.shape[0] != runs})
        if wrong:
            raise FusionError(f"RunOptimizer got {runs} runs' optimizers but parameters of shape {', '.join(wrong)}; "
                              f"each parameter must be (R={runs}, *shape).")
        kinds = {KINDS.get(type(o)) for o in self.per_run}
        if len(kinds) > 1 or None in kinds:
            names = sorted({type(o).__name__ for o in self.per_run})
            raise FusionError(f"RunOptimizer steps runs of one optimizer type among SGD, RMSprop, Adam/AdamW; got "
                              f"{', '.join(names)}: train these runs apart.")
        if any(len(o.param_groups) != 1 for o in self.per_run):
            raise FusionError("RunOptimizer reads one param group per run's optimizer; one has several.")
        if any(o.param_groups[0].get("differentiable") for o in self.per_run):
            raise FusionError("RunOptimizer does not step differentiable optimizers; train these runs apart.")
        self.kind = kinds.pop()
        self._settings = [_settings(o) for o in self.per_run]
        self._lrs: list[float] = []
        self._groups: list[tuple[int, int, dict]] = []  # (first run, end run, settings with lr)
        self._steps: list[list[torch.Tensor]] = []       # per group, per parameter: the update's step count
        self.carried_steps: list[torch.Tensor] | None = None  # a previous RunOptimizer's counts (see carry)
        self.step_count = 0  # steps taken in Python (a replayed CUDA graph steps without it)
        self.state: dict[str, list[torch.Tensor]] = {}

    def carry(self, old: RunOptimizer, index: torch.Tensor) -> None:
        """Go on from ``old``'s state for the runs ``index`` of it (a group that some runs left): moments and
        buffers sliced along the run dimension, step counts as ``old``'s updates counted them."""
        self.state = {k: [t.index_select(0, index) for t in v] for k, v in old.state.items()}
        self.step_count = old.step_count
        self.carried_steps = old._steps[0] if old._steps else None

    @property
    def lr(self) -> torch.Tensor:
        """Each run's current lr, (R,) float64 on the CPU."""
        return torch.tensor([float(o.param_groups[0]["lr"]) for o in self.per_run], dtype=torch.float64)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set_to_none, as torch.optim's default)."""
        for p in self.params:
            p.grad = None

    def _regroup(self) -> None:
        """Runs [a:b) with equal settings and lr, read from the runs' optimizers (an lr scheduler may have moved
        one since the last step); rebuilt only when an lr changed."""
        lrs = [o.param_groups[0]["lr"] for o in self.per_run]
        if lrs == self._lrs:
            return
        self._lrs = lrs
        self._groups = []
        start = 0
        for r in range(1, len(lrs) + 1):
            if r == len(lrs) or (self._settings[r], lrs[r]) != (self._settings[start], lrs[start]):
                self._groups.append((start, r, dict(self.per_run[start].param_groups[0])))
                start = r
        tensors = {"params": self.params, **self.state}
        self._slices = [{name: [t[a:b] for t in values] for name, values in tensors.items()} for a, b, _ in self._groups]
        counted = self._steps[0] if self._steps else self.carried_steps
        self._steps = [self._step_tensors(group, counted) for _, _, group in self._groups]

    def _step_tensors(self, group: dict, counted: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Per parameter, the step count as torch.optim keeps it (on the device for fused/capturable updates):
        copied from the step tensors the updates have counted so far (``counted``), else from ``step_count``.
        The updates count on their own tensors (in place, also inside a replayed CUDA graph, where no Python runs
        to count), so those, not ``step_count``, carry the count across a regroup."""
        on_device = group.get("fused") or group.get("capturable")
        steps = []
        for i, p in enumerate(self.params):
            where = p.device if on_device else "cpu"
            steps.append(counted[i].detach().to(where, torch.float32, copy=True) if counted is not None else
                         torch.tensor(float(self.step_count), dtype=torch.float32, device=where))
        return steps

    def _init_state(self) -> None:
        """Zeros, as torch.optim starts them, for every state tensor some run needs."""
        groups = [o.param_groups[0] for o in self.per_run]
        if self.kind == "adam":
            names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if any(g["amsgrad"] for g in groups) else [])
        elif self.kind == "rmsprop":
            names = ["square_avg"] + (["momentum_buffer"] if any(g["momentum"] for g in groups) else []) + \
                    (["grad_avg"] if any(g["centered"] for g in groups) else [])
        else:
            names = ["momentum_buffer"] if any(g["momentum"] for g in groups) else []
        self.state = {name: [torch.zeros_like(p) for p in self.params] for name in names}
        self._lrs = []  # slices of the new state on the next regroup
        for optimizer in self.per_run:  # what torch's lr schedulers check, lest they warn of a missed step
            optimizer._opt_called = True

    @torch.no_grad()
    def step(self) -> None:
        """One step of every run. Raises FusionError when some parameters have a gradient and others not
        (torch.optim would skip them; here the groups' lists are built for all)."""
        present = [p.grad is not None for p in self.params]
        if not any(present):
            return
        if not all(present):
            raise FusionError("RunOptimizer.step: some fused parameters got no gradient; every run's loss must reach "
                              "every parameter.")
        if not self.state and self.step_count == 0:
            self._init_state()
        self._regroup()
        self.step_count += 1
        whole = len(self._groups) == 1
        for (a, b, group), sliced, steps in zip(self._groups, self._slices, self._steps):
            grads = [p.grad for p in self.params] if whole else [p.grad[a:b] for p in self.params]
            getattr(self, f"_step_{self.kind}")(sliced, grads, steps, group)

    def _step_sgd(self, sliced, grads, steps, group) -> None:
        momentum = group["momentum"]
        buffers = sliced.get("momentum_buffer") if momentum else None
        # torch starts a buffer as a copy of the first gradient (None -> clone); later steps use the kept one
        first = self.step_count == 1
        passed = list(buffers) if momentum and not first else [None] * len(grads)
        sgd_update(sliced["params"], grads, passed, foreach=group["foreach"], fused=group["fused"],
                   weight_decay=group["weight_decay"], momentum=momentum, lr=group["lr"],
                   dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"])
        if momentum and first:
            for kept, made in zip(buffers, passed):
                kept.copy_(made)

    def _step_adam(self, sliced, grads, steps, group) -> None:
        beta1, beta2 = group["betas"]
        adam_update(sliced["params"], grads, sliced["exp_avg"], sliced["exp_avg_sq"],
                    sliced["max_exp_avg_sq"] if group["amsgrad"] else [], steps, foreach=group["foreach"],
                    capturable=group["capturable"], fused=group["fused"],
                    decoupled_weight_decay=group.get("decoupled_weight_decay", False), amsgrad=group["amsgrad"],
                    beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                    maximize=group["maximize"])

    def _step_rmsprop(self, sliced, grads, steps, group) -> None:
        rmsprop_update(sliced["params"], grads, sliced["square_avg"], sliced["grad_avg"] if group["centered"] else [],
                       sliced["momentum_buffer"] if group["momentum"] else [], steps, foreach=group["foreach"],
                       maximize=group["maximize"], capturable=group["capturable"], lr=group["lr"],
                       alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
                       momentum=group["momentum"], centered=group["centered"])
