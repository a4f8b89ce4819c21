"""A training step captured once as a CUDA graph and replayed: one launch for the whole step (CUDA only).

A zoo network's step on a GPU is a few hundred small kernels, each costing more to launch from Python than to
run; a fused group (netzoo.fuse) makes each kernel R times bigger, a CUDA graph removes the launches. PyTorch's
recipe for whole-network capture (https://docs.pytorch.org/docs/stable/notes/cuda.html#whole-network-capture):
a few eager warm-up steps on a side stream (optimizer state, cuBLAS/cuDNN handles), then one capture of
forward, backward and optimizer step on static tensors, then ``replay()`` per step with the next batch copied
into the static input. The step's inputs here are only the batch's row indices into data already on the device,
so a replay copies (R*B,) int64 and launches once.

What a captured step cannot do, ``graph_blockers`` names, and the trainer then steps eagerly (also for epochs
shorter than ``MIN_STEPS_PER_EPOCH`` full batches, where a capture costs more than it saves):
- draw dropout masks (each run's own torch.Generator: replays would not advance it as eager steps do);
- a BatchNorm with ``momentum=None`` (its factor is read back to the host every step);
- an update whose step count stays on the host (RMSprop's foreach update; fused SGD/Adam keep it on the device).
A graph holds one batch shape and the lrs it was captured with (they are constants in its kernels): the last,
smaller batch of an epoch steps eagerly, and a new lr (a schedule's step) or a new group (a run left) needs a new
capture. Warm-up and eager steps are real training steps: the numbers are those of eager training.

``GraphedStep(body, …)`` takes the step as a function of the row indices returning static outputs; ``capture``
is injectable so that the bookkeeping (warm-up, static buffers, recapture, the hooks' replayed statistics) is
tested on the CPU with a stand-in that runs ``body`` again at each "replay".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from netzoo.fuse import FusedBatchNorm, FusedDropout, SeededDropout

WARMUP_STEPS = 3  # eager steps before a group's first capture (PyTorch's example uses 3)
# A capture costs a device synchronisation and emptying the allocator's cache (torch.cuda.graph's __enter__):
# only epochs of at least this many full batches are captured (digits: 57 at batch 25, MNIST: 2400). A guess
# to be settled on a GPU: `make gpu-check` times the same runs with graphs on and off.
MIN_STEPS_PER_EPOCH = 200
RECAPTURE_WARMUP = 1  # before capturing again with new lrs: one eager step regroups a RunOptimizer outside the graph


# Recipes' optimizers whose update keeps its step count on the device (netzoo.train.make_optimizer's fused SGD and
# Adam kernels): a graph can capture them. RMSprop's foreach update counts on the host.
GRAPHED_OPTIMIZERS = ("sgd", "sgd-momentum", "nesterov", "adam", "adamw")


def graph_blockers(model: nn.Module, device="cuda", optimizers=(), stand_in: bool = False) -> str | None:
    """Why a training step of ``model`` on ``device`` under recipes with ``optimizers`` cannot be captured, or
    None when it can (see module doc); ``stand_in``: a capture that stands in for CUDA's (tests) runs anywhere."""
    if torch.device(device).type != "cuda" and not stand_in:
        return "CUDA graphs exist on CUDA devices only"
    if any(o not in GRAPHED_OPTIMIZERS for o in optimizers):
        return "an RMSprop update counts its steps on the host"
    for name, module in model.named_modules():
        if isinstance(module, FusedDropout):
            dropping = any(module.ps)
        else:
            dropping = isinstance(module, (nn.modules.dropout._DropoutNd, SeededDropout)) and module.p > 0
        if dropping:
            return f"{name} draws dropout masks (from each run's own generator)"
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, FusedBatchNorm)) and module.momentum is None:
            return f"{name} is a BatchNorm with momentum=None (its factor is read on the host every step)"
    return None


def cuda_capture(body: Callable[[torch.Tensor], tuple], rows: torch.Tensor, capturing=contextlib.nullcontext):
    """Capture ``body(rows)`` as a CUDA graph, inside ``capturing()``; return (replay, outputs): ``replay()`` runs
    the captured step on whatever ``rows`` holds then, writing into ``outputs`` (the static tensors ``body``
    returned). The capture itself runs no kernel: the step happens at the first replay."""
    graph = torch.cuda.CUDAGraph()
    with capturing(), torch.cuda.graph(graph):
        outputs = body(rows)
    return graph.replay, outputs


class GraphedStep:
    """A training step ``body(rows) -> tuple of tensors`` run eagerly ``warmup`` times, then captured once and
    replayed for every batch of the captured shape; any other shape runs eagerly.

    ``capturing()`` is a context manager entered around the capture (the lenses record their hooks' outputs as
    static tensors then) and ``replayed()`` is called after each replay (the lenses record those tensors, a
    RunOptimizer counts the step). The outputs returned by a replay are the graph's static tensors: read or add
    them before the next step.
    """

    def __init__(self, body: Callable[[torch.Tensor], tuple], capturing=contextlib.nullcontext,
                 replayed: Callable[[], None] = lambda: None, warmup: int = WARMUP_STEPS,
                 capture: Callable = cuda_capture) -> None:
        self.body, self.capturing, self.replayed = body, capturing, replayed
        self.warmup, self.capture = warmup, capture
        self.eager_steps = 0
        self.replays = 0
        self.shape: tuple | None = None  # the captured batch's shape
        self._rows: torch.Tensor | None = None
        self._replay = None
        self._outputs: tuple = ()
        self._side = None  # the warm-up steps' CUDA stream

    def __call__(self, rows: torch.Tensor) -> tuple:
        if self._replay is not None and tuple(rows.shape) != self.shape:
            return self.body(rows)  # another shape (the epoch's last batch): eager
        if self._replay is None:
            if self.eager_steps < self.warmup:
                self.eager_steps += 1
                return self._side_stream(rows)
            self.shape, self._rows = tuple(rows.shape), rows.clone()
            self._replay, self._outputs = self.capture(self.body, self._rows, self.capturing)
        else:
            self._rows.copy_(rows)
        self._replay()
        self.replays += 1
        self.replayed()
        return self._outputs

    def _side_stream(self, rows: torch.Tensor) -> tuple:
        """A warm-up step; on CUDA on a side stream, as capture requires of the steps before it."""
        if rows.device.type != "cuda":
            return self.body(rows)
        if self._side is None:
            self._side = torch.cuda.Stream(rows.device)
        side, main = self._side, torch.cuda.current_stream(rows.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            outputs = self.body(rows)
        main.wait_stream(side)
        return outputs
