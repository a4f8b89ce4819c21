"""One optimizer step for R fused runs (netzoo.fuse) at once, each run with its own hyperparameters.

A sweep's recipes that differ only in numbers an optimizer takes per run (lr, weight decay, momentum, betas,
eps) train as one fused module: each number becomes a per-run (R,) tensor broadcast over each stacked
parameter's leading run dimension, and a step is a few ``torch._foreach_*`` ops, with no per-run Python loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from netzoo.errors import FusionError


class _PerRun:
    """A per-run coefficient: an (R,) tensor in the parameters' dtype and its (R, 1, ...) view per parameter,
    so that one in-place update reaches every view."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        runs = params[0].shape[0]
        self.values = torch.zeros(runs, dtype=params[0].dtype, device=params[0].device)
        self.views = [self.values.view(runs, *[1] * (p.dim() - 1)) for p in params]

    def set(self, values: torch.Tensor) -> None:
        self.values.copy_(values)  # from float64: rounded once, as torch.optim rounds its Python scalars


class RunOptimizer:
    """One optimizer step for R fused runs at once, each run with its own hyperparameters.

    ``params``: the fused module's parameters, each (R, *shape). ``per_run``: R torch.optim optimizers, one per
    run (typically ``netzoo.train.make_optimizer`` over a placeholder parameter), all of one type and flags;
    each run's numbers are read from its ``param_groups[0]``: lr, weight_decay, momentum (SGD, RMSprop), betas
    and eps (Adam, AdamW), alpha and eps (RMSprop). A run's lr is read again before every step, so torch's lr
    schedulers stepping ``per_run[r]`` (cosine, step) drive run r's lr.

    Update formulas follow torch.optim's (maximize=False, dampening=0, centered=False), with each number a
    per-run (R,) tensor broadcast over each parameter's run dimension, in a few ``torch._foreach_*`` ops per
    step and no per-run Python loop:
      SGD      https://docs.pytorch.org/docs/stable/generated/torch.optim.SGD.html
               g += wd*p; b = g at step 1, else b = m*b + g; g = g + m*b (nesterov) or b; p -= lr*g
      Adam     https://docs.pytorch.org/docs/stable/generated/torch.optim.Adam.html
               g += wd*p; m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g^2; vmax = max(vmax, v) (amsgrad);
               p -= lr/(1-b1^t) * m / (sqrt(v or vmax)/sqrt(1-b2^t) + eps)
      AdamW    https://docs.pytorch.org/docs/stable/generated/torch.optim.AdamW.html
               p *= 1 - lr*wd, then Adam without the wd*p term
      RMSprop  https://docs.pytorch.org/docs/stable/generated/torch.optim.RMSprop.html
               g += wd*p; v = alpha*v + (1-alpha)*g^2; d = g/(sqrt(v) + eps);
               b = m*b + d, p -= lr*b (momentum > 0) or p -= lr*d
    A run with momentum 0 in a group that has momentum takes exactly the plain step (b = 0*b + d = d).
    A fused run matches the same run under torch.optim within float rounding (tests/test_fuse.py).

    When every run has the same numbers (seeds of one recipe), a plain torch.optim optimizer over the fused
    parameters gives the same steps (all of them act element by element).

    Raises FusionError for another optimizer type or for runs whose optimizers differ in type or flags.
    """

    KINDS = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adam",
             torch.optim.RMSprop: "rmsprop"}
    SHARED = ("nesterov", "amsgrad", "decoupled_weight_decay", "maximize", "dampening", "centered", "differentiable")

    def __init__(self, params: Iterable[torch.Tensor], per_run: Sequence[torch.optim.Optimizer]) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.per_run = list(per_run)
        runs = len(self.per_run)
        if not self.params or not runs:
            raise FusionError("RunOptimizer needs parameters and one torch.optim optimizer per run.")
        wrong = sorted({f"{tuple(p.shape)}" for p in self.params if p.dim() < 1 or p.shape[0] != runs})
        if wrong:
            raise FusionError(f"RunOptimizer got {runs} runs' optimizers but parameters of shape {', '.join(wrong)}; "
                              f"each parameter must be (R={runs}, *shape).")
        types = {type(o) for o in self.per_run}
        if len(types) > 1 or next(iter(types)) not in self.KINDS:
            raise FusionError(f"RunOptimizer fuses runs of one optimizer type among "
                              f"{', '.join(t.__name__ for t in self.KINDS)}; got {', '.join(sorted(t.__name__ for t in types))}.")
        self.kind = self.KINDS[next(iter(types))]
        groups = [o.param_groups[0] for o in self.per_run]
        if any(len(o.param_groups) != 1 for o in self.per_run):
            raise FusionError("RunOptimizer reads one param group per run's optimizer; got several.")
        flags = {key: {g.get(key) for g in groups} for key in self.SHARED}
        mixed = [key for key, values in flags.items() if len(values) > 1]
        if mixed:
            raise FusionError(f"the runs' optimizers differ in {', '.join(mixed)}: only numbers may differ per run.")
        flag = {key: next(iter(values)) for key, values in flags.items()}
        unsupported = [key for key, off in (("maximize", False), ("dampening", 0), ("centered", False),
                                            ("differentiable", False)) if flag[key] not in (None, off)]
        if unsupported:
            raise FusionError(f"RunOptimizer does not implement {', '.join(unsupported)}; train these runs one at a time.")
        self.nesterov, self.amsgrad = bool(flag["nesterov"]), bool(flag["amsgrad"])
        self.decoupled = bool(flag["decoupled_weight_decay"]) or isinstance(self.per_run[0], torch.optim.AdamW)

        def numbers(key, index=None) -> torch.Tensor:  # float64 (R,), as torch.optim's Python floats
            values = [float(g[key] if index is None else g[key][index]) for g in groups]
            return torch.tensor(values, dtype=torch.float64, device=self.params[0].device)

        self.weight_decay = numbers("weight_decay")
        self.momentum = numbers("momentum") if self.kind != "adam" else None
        self.betas = (numbers("betas", 0), numbers("betas", 1)) if self.kind == "adam" else None
        self.alpha = numbers("alpha") if self.kind == "rmsprop" else None
        self.eps = numbers("eps") if self.kind != "sgd" else None
        self.lr = numbers("lr")
        self._lrs = self.lr.tolist()
        self.step_count = 0
        self.state: dict[str, list[torch.Tensor]] = {}
        coefficient = lambda: _PerRun(self.params)  # noqa: E731
        self._wd, self._lr = coefficient(), coefficient()
        self._wd.set(self.weight_decay)
        self._lr.set(self.lr)
        self._has_wd = bool(self.weight_decay.any())
        if self.kind == "sgd":
            self._momentum = coefficient()
            self._momentum.set(self.momentum)
        elif self.kind == "rmsprop":
            self._momentum, self._alpha, self._one_minus_alpha, self._eps = (coefficient() for _ in range(4))
            self._momentum.set(self.momentum)
            self._alpha.set(self.alpha)
            self._one_minus_alpha.set(1 - self.alpha)
            self._eps.set(self.eps)
        else:
            self._one_minus_beta1, self._beta2, self._one_minus_beta2, self._eps = (coefficient() for _ in range(4))
            self._one_minus_beta1.set(1 - self.betas[0])
            self._beta2.set(self.betas[1])
            self._one_minus_beta2.set(1 - self.betas[1])
            self._eps.set(self.eps)
            self._decay, self._bias2_sqrt, self._step_size = coefficient(), coefficient(), coefficient()
            self._decay.set(1 - self.lr * self.weight_decay)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set_to_none, as torch.optim's default)."""
        for p in self.params:
            p.grad = None

    def _read_lrs(self) -> None:
        """Each run's lr from its optimizer (an lr scheduler may have changed it since the last step)."""
        lrs = [g["lr"] for o in self.per_run for g in o.param_groups]
        if lrs != self._lrs:
            self._lrs = lrs
            self.lr = torch.tensor([float(v) for v in lrs], dtype=torch.float64, device=self.lr.device)
            self._lr.set(self.lr)
            if self.kind == "adam":
                self._decay.set(1 - self.lr * self.weight_decay)

    @torch.no_grad()
    def step(self) -> None:
        """One step of every run. Parameters without a gradient are skipped, as torch.optim skips them."""
        self._read_lrs()
        index = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not index:
            return
        self.step_count += 1
        if not self.state:
            self.state = {name: [torch.zeros_like(p) for p in self.params] for name in self._state_names()}
            for optimizer in self.per_run:  # what torch's lr schedulers check, lest they warn of a missed step
                optimizer._opt_called = True
        pick = (lambda items: [items[i] for i in index]) if len(index) < len(self.params) else (lambda items: items)
        params, grads = pick(self.params), [self.params[i].grad for i in index]
        state = {name: pick(values) for name, values in self.state.items()}
        views = lambda coefficient: pick(coefficient.views)  # noqa: E731
        if self._has_wd and not (self.kind == "adam" and self.decoupled):
            grads = torch._foreach_add(grads, torch._foreach_mul(params, views(self._wd)))  # g + wd*p
        getattr(self, f"_step_{self.kind}")(params, grads, state, views)

    def _state_names(self) -> tuple[str, ...]:
        if self.kind == "sgd":
            return ("momentum_buffer",) if self.momentum.any() else ()
        if self.kind == "rmsprop":
            return ("square_avg",) + (("momentum_buffer",) if self.momentum.any() else ())
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _step_sgd(self, params, grads, state, views) -> None:
        if "momentum_buffer" in state:
            bufs = state["momentum_buffer"]
            if self.step_count == 1:
                torch._foreach_copy_(bufs, grads)  # torch.optim: buf = clone(g) on the first step
            else:
                torch._foreach_mul_(bufs, views(self._momentum))
                torch._foreach_add_(bufs, grads)
            if self.nesterov:
                grads = torch._foreach_add(grads, torch._foreach_mul(bufs, views(self._momentum)))
            else:
                grads = bufs
        torch._foreach_sub_(params, torch._foreach_mul(grads, views(self._lr)))

    def _step_rmsprop(self, params, grads, state, views) -> None:
        square_avgs = state["square_avg"]
        torch._foreach_mul_(square_avgs, views(self._alpha))
        squares = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(squares, views(self._one_minus_alpha))
        torch._foreach_add_(square_avgs, squares)
        avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, views(self._eps))
        if "momentum_buffer" in state:
            update = state["momentum_buffer"]
            torch._foreach_mul_(update, views(self._momentum))
            torch._foreach_addcdiv_(update, grads, avg)
        else:
            update = torch._foreach_div(grads, avg)
        torch._foreach_sub_(params, torch._foreach_mul(update, views(self._lr)))

    def _step_adam(self, params, grads, state, views) -> None:
        beta1, beta2 = self.betas
        self._step_size.set(self.lr / (1 - beta1 ** self.step_count))
        self._bias2_sqrt.set((1 - beta2 ** self.step_count).sqrt())
        if self.decoupled and self._has_wd:
            torch._foreach_mul_(params, views(self._decay))  # AdamW: p *= 1 - lr*wd
        exp_avgs, exp_avg_sqs = state["exp_avg"], state["exp_avg_sq"]
        torch._foreach_lerp_(exp_avgs, grads, views(self._one_minus_beta1))
        torch._foreach_mul_(exp_avg_sqs, views(self._beta2))
        squares = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(squares, views(self._one_minus_beta2))
        torch._foreach_add_(exp_avg_sqs, squares)
        if self.amsgrad:
            torch._foreach_maximum_(state["max_exp_avg_sq"], exp_avg_sqs)
            exp_avg_sqs = state["max_exp_avg_sq"]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, views(self._bias2_sqrt))
        torch._foreach_add_(denom, views(self._eps))
        torch._foreach_div_(denom, views(self._step_size))  # denom / step_size, as torch's capturable Adam
        torch._foreach_addcdiv_(params, exp_avgs, denom, -1.0)
