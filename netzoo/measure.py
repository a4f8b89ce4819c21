"""Static costs of a network, computed once at generation on ONE input: the study's params, memory and ops,
plus MACs (thop) and FLOPs (torch's FlopCounterMode).

Conventions (also in docs/results.md, "Static costs"):
- params: trainable parameters (requires_grad).
- memory: elements of every distinct tensor object seen at a module boundary (any module, the network
  itself included) in one forward pass of one input, in eval mode: the input, each view fed into a module,
  each module output. Parameters are not counted, and an in-place result (the same tensor object as the
  module's input, e.g. torchvision's ReLU(inplace=True)) is counted once.
- ops: distinct autograd nodes reachable from the output's grad_fn in that pass with the input requiring
  grad, AccumulateGrad excluded (a Linear with bias is 2: AddmmBackward and TBackward).
- macs: thop.profile of a deep copy (thop leaves total_ops/total_params buffers on what it profiles).
- flops_forward / flops_train_step: FlopCounterMode totals of the forward pass, and of forward + backward of
  the NLL loss, batch of one, in eval mode.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Trainable parameter count, the study's 'params' column (Basic on 1x28x28: 7850)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def memory_and_ops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """The study's (memory, ops) of one forward pass of one input (Basic on 1x28x28: 1588, 4)."""
    seen: dict[int, torch.Tensor] = {}  # id -> tensor; holding the tensor keeps its id from being reused

    def note(value) -> None:
        if isinstance(value, torch.Tensor):
            seen.setdefault(id(value), value)
        elif isinstance(value, (tuple, list)):
            for v in value:
                note(v)

    def hook(module, inputs, output) -> None:
        note(inputs)
        note(output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        x = torch.zeros((1, *input_shape), requires_grad=True)
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    memory = sum(t.numel() for t in seen.values())
    return memory, count_autograd_nodes(out)


def count_autograd_nodes(output: torch.Tensor) -> int:
    """Distinct autograd nodes reachable from ``output.grad_fn``, AccumulateGrad excluded."""
    nodes, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in nodes:
            continue
        nodes.add(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return sum(1 for n in nodes if type(n).__name__ != "AccumulateGrad")


def count_macs(model: nn.Module, input_shape: tuple[int, ...], copy_first: bool = True) -> int:
    """Multiply-accumulates of one input, from thop, profiled on a deep copy.

    thop leaves total_ops/total_params buffers on what it profiles; ``copy_first=False`` profiles the network
    itself and is only for a network about to be thrown away (the generator's last measure).
    """
    probe = (copy.deepcopy(model) if copy_first else model).eval()
    logging.getLogger("thop").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # thop uses distutils' LooseVersion (deprecated)
        import thop

        macs, _ = thop.profile(probe, inputs=(torch.zeros((1, *input_shape)),), verbose=False)
    return int(macs)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(forward FLOPs, forward + backward FLOPs) of one input, from FlopCounterMode, in eval mode.

    One pass: the total is read after the forward, then again after the backward of the NLL loss.
    """
    was_training = model.training
    model.eval()
    x = torch.zeros((1, *input_shape))
    try:
        with FlopCounterMode(display=False) as counter, torch.enable_grad():
            out = model(x)
            forward = counter.get_total_flops()
            F.nll_loss(out, torch.zeros(1, dtype=torch.long)).backward()
            train_step = counter.get_total_flops()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return int(forward), int(train_step)


def static_costs(model: nn.Module, input_shape: tuple[int, ...], copy_first: bool = True) -> dict[str, int]:
    """Every manifest cost column of one network: params, memory, ops, macs, flops_forward, flops_train_step.

    ``copy_first=False`` lets thop profile the network itself (it leaves buffers on it): for throwaway networks.
    """
    memory, ops = memory_and_ops(model, input_shape)
    forward, train_step = count_flops(model, input_shape)
    params = count_params(model)
    macs = count_macs(model, input_shape, copy_first=copy_first)  # last: it may leave thop's buffers
    return {"params": params, "memory": memory, "ops": ops, "macs": macs,
            "flops_forward": forward, "flops_train_step": train_step}
