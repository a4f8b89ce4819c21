"""Lenses: per-layer activation and gradient statistics, attached to a network by hooks (table ``layers``).

What a row measures (one row per layer per epoch, columns of ``netzoo.schema.LAYERS``):

- **Weight layers** (Linear, Conv1d/2d/3d, BatchNorm1d/2d/3d): during the epoch's training steps, the L2 norm
  of the weight's gradient (mean and max over steps) and ``dead_grad_fraction``, the share of units (output
  features or channels: rows of the weight) whose weight gradients were exactly zero on every step. A
  ``register_post_accumulate_grad_hook`` on each weight records them on the weight's device: one kernel per
  step (the per-unit gradient norms), folded every 64 steps, no host sync per step. Activation columns are null.
- **Activation layers** (ReLU, SELU, Sigmoid, Tanh and the other elementwise ``torch.nn`` activations listed
  in ``ACTIVATIONS``): over the test pass wrapped in ``with lenses.evaluating():``, each neuron's mean and
  variance. A *neuron* is a feature of an (N, F) output and a channel of an (N, C, *positions) output; a
  channel's variance pools every sample and position. Variances are population variances (ddof=0), merged
  across batches exactly (Chan et al.'s parallel update in float64). A neuron is *dead* when its output is
  exactly constant over the whole test split (min == max; its variance is then exactly 0). An output is
  *active* when it exceeds f(0), the activation's value at 0, i.e. when its input was positive: non-zero
  for ReLU, above 0.5 for Sigmoid, above 0 for Tanh and SELU. Gradient columns are null.
- A module called several times per forward pass (torchvision's ``BasicBlock`` calls its one ``relu`` after
  ``bn1`` and again after the residual sum) gives one row per call: the first call is named by its module
  path (``blocks.0.relu``), later calls by the path and the call number (``blocks.0.relu#2``). The calls
  see different tensors, so pooling them would mix two distributions.

- **A group of runs** (``netzoo.fuse``: R runs of one network as one module, inputs (R*B, …)): ``Lenses(fused,
  runs=R, layout=network)`` names rows by the unfused ``network``'s module paths and classes, and keeps each
  run's statistics apart: a weight's gradient (R, units, …) gives each run its own row norms (one kernel for
  all runs), an activation's output (R*B, …) gives run r its rows r*B:(r+1)*B. ``epoch_rows_by_run()`` returns
  one list of rows per run, equal to the rows of the same run trained alone within float tolerance.

Usage (the trainer's side; the hot loop itself never calls the lenses)::

    lenses = Lenses(model)
    for epoch in ...:
        ...train steps...                 # grad hooks accumulate on the device
        with lenses.evaluating():
            evaluate(model, x_test, ...)  # forward hooks accumulate per-neuron statistics
        rows = lenses.epoch_rows()        # one dict per layer, accumulators reset (epoch_rows_by_run(): per run)
    lenses.close()
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats
from torch import nn

# Modules whose weight gradients are measured; a unit is one row of the weight (output feature or channel).
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

# Elementwise activations without parameters whose outputs are measured.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus)

QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)

# Key columns filled by the caller, not by the lenses.
_KEY_COLUMNS = ("network", "recipe", "recipe_hash", "seed", "epoch")


@dataclass
class _GradStats:
    """Running weight-gradient statistics of one weight layer, kept on the weight's device.

    A step costs one kernel: the per-unit (row) gradient norms, appended to ``pending``. Every ``FOLD``
    steps, and at the epoch's end, the pending rows are folded at once: a step's norm is the norm of its
    row norms, and a unit is dead while the sum of its row norms over steps is exactly 0.
    """

    FOLD = 64
    norm_sum: torch.Tensor | None = None   # sum over steps of the gradient's L2 norm, () float32
    norm_max: torch.Tensor | None = None   # max over steps, () float32
    unit_sum: torch.Tensor | None = None   # (units,) sum over steps of each unit's gradient norm
    pending: list[torch.Tensor] = field(default_factory=list)  # (units,) row norms of steps not yet folded
    steps: int = 0                         # host-side counter: no sync

    def add(self, rows: torch.Tensor) -> None:
        """Record one step's per-unit gradient norms (units,) without reading anything back to the host (the
        hook computes every run's at once)."""
        self.pending.append(rows if rows.dtype == torch.float32 else rows.float())
        self.steps += 1
        if len(self.pending) >= self.FOLD:
            self.fold()

    def fold(self) -> None:
        """Fold the pending steps into the running sums (a few kernels for up to FOLD steps)."""
        if not self.pending:
            return
        rows = torch.stack(self.pending)                 # (steps, units)
        self.pending.clear()
        norms = torch.linalg.vector_norm(rows, dim=1)    # (steps,) each step's whole-weight norm
        if self.norm_sum is None:
            self.norm_sum, self.norm_max, self.unit_sum = norms.sum(), norms.max(), rows.sum(dim=0)
        else:
            self.norm_sum += norms.sum()
            torch.maximum(self.norm_max, norms.max(), out=self.norm_max)
            self.unit_sum += rows.sum(dim=0)

    def clear(self) -> None:
        """Back to no steps seen (in place: the hook keeps pointing at this object)."""
        self.norm_sum = self.norm_max = self.unit_sum = None
        self.pending.clear()
        self.steps = 0


@dataclass
class _ActivationStats:
    """Running per-neuron statistics of one call site of one activation module, on the output's device."""

    count: int = 0                           # observations per neuron (samples x positions); host-side
    mean: torch.Tensor | None = None         # (neurons,) float64
    m2: torch.Tensor | None = None           # (neurons,) float64: sum of squared deviations from the mean
    low: torch.Tensor | None = None          # (neurons,) running minimum
    high: torch.Tensor | None = None         # (neurons,) running maximum
    active: torch.Tensor | None = None       # () int64: outputs above the threshold
    outputs: int = 0                         # outputs seen (count x neurons); host-side

    def update(self, out: torch.Tensor, threshold: float) -> None:
        """Fold in one batch of outputs (N, F) or (N, C, *positions): Chan et al.'s exact merge of (mean, M2)."""
        out = out.detach()
        dims = (0,) + tuple(range(2, out.dim()))  # neuron = dim 1; pool samples and positions
        n = out.numel() // out.shape[1]
        var, mean = torch.var_mean(out, dim=dims, correction=0)
        mean, m2 = mean.double(), var.double() * n
        low, high = torch.amin(out, dim=dims), torch.amax(out, dim=dims)
        active = (out > threshold).sum()
        if self.mean is None:
            self.mean, self.m2, self.low, self.high, self.active = mean, m2, low, high, active
        else:
            total = self.count + n
            delta = mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
            torch.minimum(self.low, low, out=self.low)
            torch.maximum(self.high, high, out=self.high)
            self.active += active
        self.count += n
        self.outputs += out.numel()

    def variances(self) -> np.ndarray:
        """Per-neuron population variances on the host; exactly 0 where the output never changed."""
        var = (self.m2 / self.count).clamp_min(0).cpu().numpy()
        var[(self.low == self.high).cpu().numpy()] = 0.0
        return var


def _threshold(module: nn.Module) -> float:
    """f(0) for an elementwise activation: an output above it means the input was positive."""
    with torch.no_grad():
        return float(module(torch.zeros(1))[0])


def _empty_row() -> dict:
    from netzoo.schema import LAYERS

    return {name: None for name in LAYERS.names if name not in _KEY_COLUMNS}


def _activation_columns(stats_: _ActivationStats) -> dict:
    """The activation columns of a row from one call site's accumulated statistics."""
    var = stats_.variances()
    row = {
        "width": int(var.size),
        "dead_fraction": float(np.mean(var == 0.0)),
        "activation_rate": int(stats_.active) / stats_.outputs,
        "var_mean": float(var.mean()),
        "var_sum": float(var.sum()),
        "variances": var.astype(np.float32).tolist(),
        "shapiro_w": None,
        "shapiro_p": None,
    }
    for q, value in zip(QUANTILES, np.quantile(var, QUANTILES)):
        row[f"var_q{round(q * 100):02d}"] = float(value)
    if var.size >= 3 and np.isfinite(var).all() and np.ptp(var) > 0:  # Shapiro-Wilk: 3 finite values, not all equal
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns that p is approximate above 5000 values
            result = stats.shapiro(var)
        row["shapiro_w"], row["shapiro_p"] = float(result.statistic), float(result.pvalue)
    return row


@dataclass
class _Site:
    """One activation module: its path, class, threshold and, per run, one statistics object per call in a forward."""

    path: str
    module: nn.Module
    threshold: float
    calls: list[list[_ActivationStats]] = field(default_factory=list)  # [run][call]
    seen: int = 0  # calls so far in the current forward pass

    def name(self, call: int) -> str:
        """Row name of the call-th call (0-based): the path, then path#2, path#3, …"""
        return self.path if call == 0 else f"{self.path}#{call + 1}"


class Lenses:
    """Per-layer activation and gradient statistics of one network, or of each of the ``runs`` runs a fused
    module holds, collected by hooks (see module doc).

    ``layout``: the unfused network whose module paths and classes name the rows (default: ``model`` itself);
    give it with a fused ``model`` (netzoo.fuse), whose every parameter and activation carries R runs.
    """

    def __init__(self, model: nn.Module, runs: int = 1, layout: nn.Module | None = None) -> None:
        self.model, self.runs = model, runs
        fused = layout is not None and layout is not model
        layout = model if layout is None else layout
        targets = dict(model.named_modules())
        self._weights: list[tuple[str, str, int, list[_GradStats]]] = []  # path, kind, units, per-run stats
        self._sites: list[_Site] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._eval_handles: list[torch.utils.hooks.RemovableHandle] = []
        self._fused = fused
        self._static: list | None = None   # while a CUDA graph captures a step: (stats, static rows) per hook call
        self._replayed: list = []          # what the last capture recorded
        seen_params: set[int] = set()
        for path, module in layout.named_modules():
            if isinstance(module, WEIGHT_LAYERS) and getattr(module, "weight", None) is not None:
                weight = targets[path].weight
                if not weight.requires_grad or id(weight) in seen_params:
                    continue
                seen_params.add(id(weight))
                units = int(module.weight.shape[0])
                stats = [_GradStats() for _ in range(runs)]
                self._weights.append((path, type(module).__name__, units, stats))
                self._handles.append(weight.register_post_accumulate_grad_hook(self._grad_hook(stats, units)))
            elif isinstance(module, ACTIVATIONS):
                self._sites.append(_Site(path=path, module=targets[path], threshold=_threshold(module),
                                         calls=[[] for _ in range(runs)]))

    def _grad_hook(self, stats: list[_GradStats], units: int):
        """A hook recording each run's row norms of a weight's gradient ((R, units, …) fused, (units, …) alone):
        one kernel for all runs."""
        def hook(param: torch.Tensor) -> None:
            if param.grad is None:
                return
            rows = torch.linalg.vector_norm(param.grad.detach().reshape(self.runs, units, -1), dim=2)  # (R, units)
            if self._static is not None:  # a CUDA graph captures this step: recorded after each replay
                self._static.append((stats, rows))
            else:
                self._add(stats, rows)
        return hook

    @staticmethod
    def _add(stats: list[_GradStats], rows: torch.Tensor) -> None:
        for run_stats, run_rows in zip(stats, rows):
            run_stats.add(run_rows)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[Lenses]:
        """Around the capture of a training step as a CUDA graph (netzoo.graphs): the gradient hooks keep their
        per-unit norms as the graph's static outputs, which ``replayed()`` records after each replay."""
        self._static = []
        try:
            yield self
        finally:
            self._replayed, self._static = self._static, None

    def replayed(self) -> None:
        """Record the gradient norms of the training step a CUDA graph just replayed (a copy: the next replay
        overwrites them)."""
        for stats, rows in self._replayed:
            self._add(stats, rows.clone())

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[Lenses]:
        """Inside this block, forward passes accumulate per-neuron activation statistics (hooks live only here)."""
        if self._eval_handles:
            raise RuntimeError("Lenses.evaluating() is already active; do not nest it")

        def start_forward(_module, _args):
            for site in self._sites:
                site.seen = 0

        def record(site: _Site):
            def hook(_module, _args, out):
                parts = out.unflatten(0, (self.runs, -1)) if self._fused else (out,)  # run r: rows r*B:(r+1)*B
                for calls, part in zip(site.calls, parts):
                    if site.seen == len(calls):
                        calls.append(_ActivationStats())
                    calls[site.seen].update(part, site.threshold)
                site.seen += 1
            return hook

        self._eval_handles.append(self.model.register_forward_pre_hook(start_forward))
        for site in self._sites:
            self._eval_handles.append(site.module.register_forward_hook(record(site)))
        try:
            yield self
        finally:
            for handle in self._eval_handles:
                handle.remove()
            self._eval_handles.clear()

    def epoch_rows(self) -> list[dict]:
        """One dict per layer with the ``layers`` columns (minus network, recipe, recipe_hash, seed, epoch) of the
        one network (``runs=1``); resets. See ``epoch_rows_by_run``."""
        if self.runs != 1:
            raise ValueError(f"these lenses watch {self.runs} runs: use epoch_rows_by_run()")
        return self.epoch_rows_by_run()[0]

    def epoch_rows_by_run(self) -> list[list[dict]]:
        """Per run, one dict per layer with the ``layers`` columns (minus the key and the epoch); resets.

        Weight layers come first in module order, then each activation call site that ran under
        ``evaluating()`` this epoch. Statistics that do not apply to a layer, or were not observed, are None.
        The only place the lenses read back to the host: a few small transfers per layer, once per epoch.
        """
        by_run = []
        for run in range(self.runs):
            rows = []
            for path, kind, units, stats in self._weights:
                row = _empty_row()
                row.update(layer=path, kind=kind, width=units)
                grad_stats = stats[run]
                grad_stats.fold()
                if grad_stats.steps:
                    row["grad_norm_mean"] = float(grad_stats.norm_sum) / grad_stats.steps
                    row["grad_norm_max"] = float(grad_stats.norm_max)
                    row["dead_grad_fraction"] = float((grad_stats.unit_sum == 0).float().mean())
                rows.append(row)
            for site in self._sites:
                for call, call_stats in enumerate(site.calls[run]):
                    row = _empty_row()
                    row.update(layer=site.name(call), kind=type(site.module).__name__)
                    row.update(_activation_columns(call_stats))
                    rows.append(row)
            by_run.append(rows)
        self.reset()
        return by_run

    def reset(self) -> None:
        """Forget everything accumulated so far (epoch_rows calls it)."""
        for _, _, _, stats in self._weights:
            for grad_stats in stats:
                grad_stats.clear()
        for site in self._sites:
            for calls in site.calls:
                calls.clear()
            site.seen = 0

    def close(self) -> None:
        """Remove every hook: the network runs exactly as without lenses."""
        for handle in self._handles + self._eval_handles:
            handle.remove()
        self._handles.clear()
        self._eval_handles.clear()
