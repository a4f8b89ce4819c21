"""Horizontal fusion: R runs of one generated network trained as ONE module (HFTA, Wang et al., MLSys 2021).

R copies of a network (same class, same architecture, each initialised from its own seed by the caller)
become one module by swapping only the leaf modules that hold per-run state; the generated ``forward`` and
torchvision's ``BasicBlock.forward`` run unchanged. The fused module takes the R runs' batches stacked along
the batch dimension, **batch-merged**: input (R*B, *sample_shape), run r's batch in rows r*B:(r+1)*B, output
(R*B, K), because every generated forward only reshapes with the batch dimension kept (``view(-1, …)``,
``torch.flatten(x, 1)``), applies elementwise activations, ``out += identity`` and ``LogSoftmax(dim=1)``.

    nn.Linear            -> FusedLinear:    weight (R, out, in), bias (R, out); (R, B, in) @ (R, in, out) as one
                                            batched matrix multiply (torch.baddbmm)
    nn.Conv1d/2d/3d      -> FusedConv:      weight (R, C', C/g, *k), bias (R, C'); one convolution with R*g
                                            groups over (B, R*C, *S) in channels_last memory format (Conv1d as a
                                            Conv2d of unit height, so that channels_last applies)
    nn.BatchNorm1d/2d/3d -> FusedBatchNorm: one batch norm over R*C channels (each run's statistics from its
                                            own batch); running_mean/var (R, C), num_batches_tracked (R,)
    SeededDropout        -> FusedDropout:   each run's mask drawn from that run's own torch.Generator
    modules without parameters or buffers (activations, LogSoftmax, Flatten, Identity, containers): unchanged

Every fused leaf keeps the original parameter and buffer names, with a leading run dimension: the fused
module's ``state_dict()`` has the original keys, each value (R, *original shape), so ``unfuse(fused, r)`` is
run r's state dict of the original network, and ``fused_parameter_views`` gives each parameter's per-run
values and gradients as (R, *shape) without a copy.

Dropout: nn.Dropout draws from torch's global generator, which no fused module can reproduce per run. A
run's dropout masks come instead from the run's own generator (``dropout_generator(seed)``), in solo
training as in fused training: ``seeded_dropout(model, generator)`` swaps nn.Dropout for SeededDropout. A
fused run then draws exactly the masks that the same run draws alone.

``netzoo.fuse_optim.RunOptimizer`` steps all runs' stacked parameters at once with per-run hyperparameters
(each run's lr, weight decay, momentum, betas, eps), following torch.optim's update formulas.

Raises FusionError for what cannot be fused (another module with parameters or buffers, runs that differ in
architecture, a nn.Dropout not made seeded), so that the caller trains those runs one at a time.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from netzoo.errors import FusionError, ShapeMismatchError

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# --- the batch-merged layout ----------------------------------------------------------------------------
def split_runs(tensor: torch.Tensor, runs: int) -> torch.Tensor:
    """A fused tensor (R*B, ...) viewed as (R, B, ...): run r's rows are [r]. A view, no copy.

    Raises ShapeMismatchError when the first dimension is not a multiple of ``runs``.
    """
    rows = tensor.shape[0] if tensor.dim() else 0
    if runs < 1 or rows % runs:
        raise ShapeMismatchError(f"a fused tensor of shape {tuple(tensor.shape)} does not hold {runs} runs: its "
                                 f"first dimension must be a multiple of {runs} (R*B, run r in rows r*B:(r+1)*B).")
    return tensor.unflatten(0, (runs, rows // runs))


def _runs_to_channels(x: torch.Tensor, runs: int) -> torch.Tensor:
    """(R*B, C, *S) -> (B, R*C, *S) in channels_last order (memory (B, *S, R, C)): channel r*C + c is run
    r's channel c. One copy."""
    rb, c, *space = x.shape
    k = len(space)
    y = split_runs(x, runs).permute(1, *range(3, 3 + k), 0, 2).contiguous()  # (B, *S, R, C)
    return y.view(rb // runs, *space, runs * c).permute(0, k + 1, *range(1, k + 1))


def _runs_to_channels_contiguous(x: torch.Tensor, runs: int) -> torch.Tensor:
    """(R*B, C, *S) -> (B, R*C, *S) in the contiguous format: one copy of whole (C, *S) blocks, cheaper than
    the channels_last transposition, and what batch norm prefers (measured, one thread: forward+backward of
    a fused BatchNorm2d(45) on 5x5 at R=32, 13.5 ms vs 18.8 ms through channels_last)."""
    rb, c, *space = x.shape
    return split_runs(x, runs).transpose(0, 1).reshape(rb // runs, runs * c, *space)


def _channels_to_runs(y: torch.Tensor, runs: int) -> torch.Tensor:
    """(B, R*C, *S) -> (R*B, C, *S) in the contiguous format, the inverse of ``_runs_to_channels``. One copy.

    Contiguous, not channels_last: what follows (activations, flatten, the next layer's backward) then sees
    the layout it sees in solo training. A channels_last output met a contiguous gradient from flatten's
    backward, and elementwise backward over mixed layouts ran ~10x slower per element (measured: SELU's
    backward in Conv2dThenLinearSELU_1, R=8, 7.2 ms vs 0.9 ms).
    """
    b, rc, *space = y.shape
    return y.reshape(b, runs, rc // runs, *space).transpose(0, 1).contiguous().view(runs * b, rc // runs, *space)


def _stack(tensors: list[torch.Tensor], like: nn.Parameter | None = None) -> torch.Tensor:
    """The runs' tensors stacked on a new leading run dimension: a Parameter when ``like`` is one."""
    stacked = torch.stack([t.detach() for t in tensors])
    return nn.Parameter(stacked, requires_grad=like.requires_grad) if isinstance(like, nn.Parameter) else stacked


# --- fused leaves ---------------------------------------------------------------------------------------
class _RunLinear(torch.autograd.Function):
    """out[r] = x[r] @ weight[r].T + bias[r] for x (R, B, in), weight (R, out, in), bias (R, out) or None.

    Autograd's own bmm backward computes the weight's gradient as x^T @ grad, (R, in, out), then transposes
    it: on this CPU that is 2-6x slower than grad^T @ x, (R, out, in), in the weight's own layout (measured,
    one thread, R=8, B=25: fc 3648->10 forward+backward 4.7 ms vs 2.6 ms). Gradients only where needed.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):  # grad (R, B, out)
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = torch.bmm(grad, weight) if need_x else None  # (R, B, in)
        grad_weight = torch.bmm(grad.transpose(1, 2), x) if need_weight else None  # (R, out, in)
        grad_bias = grad.sum(1) if ctx.has_bias and need_bias else None  # (R, out)
        return grad_x, grad_weight, grad_bias


class FusedLinear(nn.Module):
    """R runs of one nn.Linear: (R*B, *, in) -> (R*B, *, out) as one batched matrix multiply.

    weight (R, out, in) and bias (R, out): the original shapes with a leading run dimension.
    """

    def __init__(self, linears: list[nn.Linear]) -> None:
        super().__init__()
        first = linears[0]
        self.runs, self.in_features, self.out_features = len(linears), first.in_features, first.out_features
        self.weight = _stack([m.weight for m in linears], first.weight)
        self.bias = _stack([m.bias for m in linears], first.bias) if first.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = split_runs(x, self.runs).reshape(self.runs, -1, self.in_features)  # (R, B*, in)
        out = _RunLinear.apply(rows, self.weight, self.bias)  # (R, B*, out)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"runs={self.runs}, in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class FusedConv(nn.Module):
    """R runs of one nn.Conv1d/2d/3d as one convolution with R x groups groups over (B, R*C, *S).

    weight (R, C', C/groups, *kernel), bias (R, C'). The runs' channels are laid side by side in channels_last
    order, where oneDNN's grouped convolution is fastest on this CPU: a fused forward+backward step at R=32,
    one thread, batch 25 on digits took 6.4 ms in channels_last vs 11.5 ms in the contiguous format for
    Conv2dReLU_1, 64 vs 105 ms for Conv3dReLU_1. A Conv1d runs as a Conv2d of unit height, so that
    channels_last applies to it too: 9.6 vs 15.4 ms (Conv1dNone_18) and 3.7 vs 6.5 ms (Conv1dThenLinearTanh_1)
    against a grouped Conv1d in the contiguous format (at R=8 it is a draw: 3.8 vs 5.1, 1.9 vs 1.4 ms).
    Grouped Conv3d is no faster than R separate ones here (oneDNN's backward for it is slow, and the layout
    copies of large activations cost as much again): fusion barely pays for Conv3d on this CPU.
    """

    def __init__(self, convs: list[nn.Conv1d | nn.Conv2d | nn.Conv3d]) -> None:
        super().__init__()
        first = convs[0]
        self.runs, self.dims = len(convs), len(first.kernel_size)
        self.in_channels, self.out_channels, self.groups = first.in_channels, first.out_channels, first.groups
        self.padding_mode = first.padding_mode
        self.weight = _stack([m.weight for m in convs], first.weight)
        self.bias = _stack([m.bias for m in convs], first.bias) if first.bias is not None else None
        if self.dims == 1:  # as a Conv2d of unit height
            self.stride, self.dilation = (1, *first.stride), (1, *first.dilation)
            self.padding = first.padding if isinstance(first.padding, str) else (0, *first.padding)
        else:
            self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self._pad = first._reversed_padding_repeated_twice if first.padding_mode != "zeros" else None
        self._conv = F.conv3d if self.dims == 3 else F.conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._full_kernel(x):  # one output position: a matrix multiply per run, no layout copies
            rows = split_runs(x, self.runs).flatten(2)  # (R, B, C*prod(S)), a view
            out = _RunLinear.apply(rows, self.weight.flatten(2), self.bias)  # (R, B, C')
            return out.view(x.shape[0], self.out_channels, *[1] * self.dims)
        if self._pointwise():  # a kernel of one: each position a matrix multiply per run, no layout copies
            rows = split_runs(x, self.runs).flatten(3)  # (R, B, C, prod(S)), a view
            weight = self.weight.flatten(2).unsqueeze(1)  # (R, 1, C', C)
            out = rows * weight if self.in_channels == 1 else torch.matmul(weight, rows)  # (R, B, C', prod(S))
            if self.bias is not None:
                out = out + self.bias.view(self.runs, 1, -1, 1)
            return out.view(x.shape[0], self.out_channels, *x.shape[2:])
        if self.dims == 1:
            x = x.unsqueeze(2)  # (R*B, C, 1, L)
        merged = _runs_to_channels(x, self.runs)  # (B, R*C, *S)
        if self._pad is not None:  # reflect/replicate/circular padding, as nn.Conv's _conv_forward
            merged = F.pad(merged, self._pad, mode=self.padding_mode)
        weight = self.weight.flatten(0, 1)  # (R*C', C/groups, *kernel)
        if self.dims == 1:
            weight = weight.unsqueeze(2)
        bias = self.bias.flatten() if self.bias is not None else None
        padding = 0 if self._pad is not None else self.padding
        out = self._conv(merged, weight, bias, self.stride, padding, self.dilation, self.runs * self.groups)
        out = _channels_to_runs(out, self.runs)  # (R*B, C', *S')
        return out.squeeze(2) if self.dims == 1 else out

    def _pointwise(self) -> bool:
        """Whether every kernel side is 1, with stride 1, no padding, one group: out[r, b, :, s] = W_r x[r, b, :, s]."""
        return self.groups == 1 and self._pad is None and not isinstance(self.padding, str) and \
            all(k == 1 for k in self.weight.shape[3:]) and all(v == 1 for v in self.stride) and \
            all(p == 0 for p in self.padding)

    def _full_kernel(self, x: torch.Tensor) -> bool:
        """Whether the kernel covers the whole input (no padding, one group): the zoo's classifier convs, e.g.
        Conv2d(48, 10, kernel_size=(8, 8)) on 8x8, the last layer of most Conv1d/2d/3d networks. Such a
        convolution is a batched matrix multiply, done as one on a view of the batch-merged input, with no
        layout copy.

        Measured (one thread, R=8, batch 25, load average 2): a training step of Conv2dSELU_1 (a 1x1 conv, then
        an 8x8 one) takes 6.9 ms through grouped convolutions and 3.3 ms with both as matrix multiplies,
        against 6.8 ms for its 8 runs one at a time; 40% of the grouped step was layout copies."""
        return self.groups == 1 and self._pad is None and tuple(x.shape[2:]) == tuple(self.weight.shape[3:]) and \
            all(p == 0 for p in self.padding[-self.dims:]) and all(d == 1 for d in self.dilation[-self.dims:]) \
            if not isinstance(self.padding, str) else False

    def extra_repr(self) -> str:
        return f"runs={self.runs}, Conv{self.dims}d({self.in_channels}, {self.out_channels}, " \
               f"kernel_size={tuple(self.weight.shape[3:])}, stride={self.stride}, groups={self.groups})"


class FusedBatchNorm(nn.Module):
    """R runs of one nn.BatchNorm1d/2d/3d as one batch norm over R*C channels: run r's channel c is normalised
    with the statistics of run r's batch only, and updates run r's running statistics only.

    weight, bias, running_mean, running_var (R, C); num_batches_tracked (R,). Train/eval, momentum (None:
    cumulative average), eps, affine and track_running_stats act as in torch's _BatchNorm.forward.
    """

    def __init__(self, norms: list[nn.modules.batchnorm._BatchNorm]) -> None:
        super().__init__()
        first = norms[0]
        self.runs, self.num_features = len(norms), first.num_features
        self.eps, self.momentum = first.eps, first.momentum
        self.affine, self.track_running_stats = first.affine, first.track_running_stats
        self.weight = _stack([m.weight for m in norms], first.weight) if first.affine else None
        self.bias = _stack([m.bias for m in norms], first.bias) if first.affine else None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buffers = [getattr(m, name) for m in norms]
            self.register_buffer(name, _stack(buffers) if buffers[0] is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average; every run has taken as many steps
                factor = 1.0 / float(self.num_batches_tracked[0])
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        merged = _runs_to_channels_contiguous(x, self.runs)  # (B, R*C, *S)
        out = F.batch_norm(
            merged,
            self.running_mean.view(-1) if use_running and self.running_mean is not None else None,
            self.running_var.view(-1) if use_running and self.running_var is not None else None,
            self.weight.view(-1) if self.weight is not None else None,
            self.bias.view(-1) if self.bias is not None else None,
            batch_stats, factor, self.eps)
        return _channels_to_runs(out, self.runs)

    def extra_repr(self) -> str:
        return f"runs={self.runs}, {self.num_features}, eps={self.eps}, momentum={self.momentum}, " \
               f"affine={self.affine}, track_running_stats={self.track_running_stats}"


# --- dropout from each run's own generator --------------------------------------------------------------
def dropout_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The torch.Generator that draws run ``seed``'s dropout masks, the same in solo and fused training.

    Its seed is the first 63 bits of sha256(b"netzoo-dropout:<seed>"), so that the masks are independent of the
    run's shuffle order, which a generator seeded with ``seed`` itself draws (netzoo.train).
    """
    digest = hashlib.sha256(f"netzoo-dropout:{int(seed)}".encode()).digest()
    return torch.Generator(device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class SeededDropout(nn.Module):
    """nn.Dropout whose masks come from ``generator`` instead of torch's global one; identity in eval mode.

    Zeroes each element with probability p and scales the others by 1/(1-p), as nn.Dropout does; the mask is
    drawn with ``bernoulli_`` into a fresh contiguous tensor of the input's shape, whatever its memory format.
    """

    def __init__(self, p: float, generator: torch.Generator, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.generator, self.inplace = p, generator, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p, generator=self.generator)
        keep.div_(1.0 - self.p)
        return x.mul_(keep) if self.inplace else x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class FusedDropout(nn.Module):
    """R runs' SeededDropout: run r's rows get the mask that run r's generator draws for them alone
    (the same shape, the same generator state, so the same numbers); each run may have its own p."""

    def __init__(self, dropouts: list[SeededDropout]) -> None:
        super().__init__()
        self.runs = len(dropouts)
        self.ps = [m.p for m in dropouts]
        self.generators = [m.generator for m in dropouts]
        self.inplace = dropouts[0].inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not any(self.ps):
            return x
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for run_keep, p, generator in zip(split_runs(keep, self.runs), self.ps, self.generators):
            if p == 0.0:
                run_keep.fill_(1.0)
            else:
                run_keep.bernoulli_(1.0 - p, generator=generator).div_(1.0 - p)
        return x.mul_(keep) if self.inplace else x * keep

    def extra_repr(self) -> str:
        return f"runs={self.runs}, p={self.ps}"


def seeded_dropout(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """``model`` with every nn.Dropout swapped for a SeededDropout drawing from ``generator`` (in place; returned).

    Use it for a run trained alone as for each run before ``fuse``, with ``dropout_generator(seed)``, so that
    both draw the same masks. Layers draw from the one generator in forward order.
    """
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                parent._modules[name] = SeededDropout(child.p, generator, child.inplace)
    return model


# --- fuse and unfuse ------------------------------------------------------------------------------------
FUSERS: dict[type, type] = {nn.Linear: FusedLinear, **{t: FusedConv for t in CONV_TYPES},
                            **{t: FusedBatchNorm for t in BATCH_NORM_TYPES}, SeededDropout: FusedDropout}


def _refusal(name: str, module: nn.Module) -> str | None:
    """Why a module outside FUSERS cannot run unchanged on the batch-merged layout, or None when it can."""
    if isinstance(module, nn.modules.dropout._DropoutNd):
        if type(module) is nn.Dropout and module.p == 0:
            return None  # the identity
        if type(module) is nn.Dropout:
            return (f"{name or 'the network'} is a nn.Dropout, whose masks come from torch's global generator; "
                    f"pass each run through netzoo.fuse.seeded_dropout(model, dropout_generator(seed)) first")
        return f"{name} is a {type(module).__name__}, whose masks cannot be drawn per run"
    own = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
    if own:
        return (f"{name or 'the network'} is a {type(module).__name__} holding {', '.join(own)}: only Linear, "
                f"Conv1d/2d/3d, BatchNorm1d/2d/3d and seeded Dropout hold per-run state that fuse() can stack")
    return None


def fuse(models: Sequence[nn.Module]) -> nn.Module:
    """One module that trains ``models`` (R runs of one network) at once, in the batch-merged layout.

    The result is a copy of ``models[0]`` with every Linear, Conv, BatchNorm and SeededDropout leaf swapped for
    its fused counterpart holding all R runs' values; its input is (R*B, *sample_shape) with run r's batch in
    rows r*B:(r+1)*B, its output (R*B, K). The models are not changed; each fused parameter is a new tensor.

    Raises FusionError when the models differ in class, parameter shapes or layer settings, or when a module
    cannot be fused (its type named): train those runs one at a time.
    """
    models = list(models)
    if not models:
        raise FusionError("fuse() needs at least one model.")
    first = models[0]
    kinds = {type(m).__name__ for m in models}
    if len(kinds) > 1:
        raise FusionError(f"cannot fuse networks of different classes: {', '.join(sorted(kinds))}.")
    layouts = [[(name, type(m).__name__) for name, m in model.named_modules()] for model in models]
    for r, layout in enumerate(layouts[1:], start=1):  # e.g. a Dropout layer in one zoo variant only
        if layout != layouts[0]:
            diff = sorted(set(layout) ^ set(layouts[0]))[:3]
            raise FusionError(f"run {r} of {type(first).__name__} differs in its layers from run 0: {diff}.")
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in models]
    for r, shape in enumerate(shapes[1:], start=1):
        if shape != shapes[0]:
            diff = sorted(set(shape.items()) ^ set(shapes[0].items()))[:3]
            raise FusionError(f"run {r} of {type(first).__name__} differs in architecture from run 0: {diff}.")
    if type(first) in FUSERS:  # a bare layer
        return FUSERS[type(first)](models)
    generators = {id(m.generator): m.generator for m in first.modules() if isinstance(m, SeededDropout)}
    fused = copy.deepcopy(first, memo=dict(generators))  # generators are shared, never copied
    per_run = [dict(m.named_modules()) for m in models]
    for parent_name, parent in list(fused.named_modules()):
        for name, child in list(parent.named_children()):
            path = f"{parent_name}.{name}" if parent_name else name
            if type(child) not in FUSERS:
                continue
            leaves = [modules[path] for modules in per_run]
            if type(child) is not SeededDropout and len({leaf.extra_repr() for leaf in leaves}) > 1:
                raise FusionError(f"{path}: the runs' {type(child).__name__} layers differ in their settings: "
                                  f"{sorted({leaf.extra_repr() for leaf in leaves})}.")
            swapped = FUSERS[type(child)](leaves)
            swapped.train(child.training)
            parent._modules[name] = swapped
    for name, module in fused.named_modules():
        if type(module) not in FUSERS.values() and (reason := _refusal(name, module)):
            raise FusionError(f"cannot fuse {type(first).__name__}: {reason}.")
    return fused


def unfuse(fused: nn.Module, run: int) -> dict[str, torch.Tensor]:
    """Run ``run``'s state dict in the original network's names and shapes (copies, detached): what
    ``load_state_dict`` of one unfused copy of the network takes.

    Raises IndexError when ``run`` is not one of the fused runs.
    """
    state = fused.state_dict()
    runs = {v.shape[0] for v in state.values()}
    if not state or not 0 <= run < min(runs):
        raise IndexError(f"run {run} is not among the fused module's {min(runs, default=0)} runs.")
    return {name: value[run].clone() for name, value in state.items()}


def fused_parameter_views(fused: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Per original parameter name: (values, gradients), each (R, *original shape), run r's at [r]; views, no
    copy (gradients None before the first backward). Per-run norms: ``grad.flatten(1).norm(dim=1)``."""
    return {name: (p.detach(), p.grad) for name, p in fused.named_parameters()}
