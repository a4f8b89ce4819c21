"""Static costs: the study's two figures, reproduced exactly from rendered templates, and the other counters."""

import hashlib

import torch
from torch import nn

from netzoo.families import REGISTRY
from netzoo.generate import Plan, basic_plan, render
from netzoo.measure import count_autograd_nodes, count_flops, count_macs, memory_and_ops, static_costs
from netzoo.zoo import import_network

MNIST = (1, 28, 28)


def _build(plan: Plan, tmp_path) -> nn.Module:
    path = tmp_path / f"{plan.name}.py"
    source = render(plan, "test", "0" * 64, 0, MNIST).encode()
    path.write_bytes(source)
    return import_network(path, plan.name, sha256=hashlib.sha256(source).hexdigest())()


def study_resnet_plan() -> Plan:
    """The study's ResNetStyle example: Conv2d(1->35, k6, bias) -> 3 BasicBlock(35) -> Conv2d(35->59, k14)
    -> flatten -> Linear(5900->10) -> LogSoftmax, no activation outside the blocks."""
    layers = [{"type": "Conv2d", "out": 35, "kernel": 6, "bias": True, "act": False}]
    layers += [{"type": "BasicBlock", "out": 35, "kernel": 3, "bias": False, "act": False}] * 3
    layers += [{"type": "Conv2d", "out": 59, "kernel": 14, "bias": False, "act": False},
               {"type": "Linear", "out": 10, "kernel": 0, "bias": False, "act": False}]
    return Plan(name="ResNetStyleReLU_1", family="ResNetStyle", activation="ReLU",
                view=REGISTRY["ResNetStyle"].view(MNIST), layers=layers)


def test_basic_on_mnist_matches_the_studys_params_memory_and_ops(tmp_path):
    model = _build(basic_plan(MNIST, 10), tmp_path)
    costs = static_costs(model, MNIST)
    assert (costs["params"], costs["memory"], costs["ops"]) == (7850, 1588, 4)  # memory: 784 + 784 + 10 + 10


def test_study_resnet_example_matches_params_memory_and_ops(tmp_path):
    model = _build(study_resnet_plan(), tmp_path)
    costs = static_costs(model, MNIST)
    assert (costs["params"], costs["memory"], costs["ops"]) == (531605, 254083, 28)


def test_linear_with_bias_is_two_autograd_nodes():
    x = torch.zeros(1, 4, requires_grad=True)
    assert count_autograd_nodes(nn.Linear(4, 3)(x)) == 2   # AddmmBackward + TBackward
    assert count_autograd_nodes(nn.Linear(4, 3, bias=False)(x)) == 2  # MmBackward + TBackward


def test_in_place_results_are_counted_once_in_memory():
    inplace = nn.Sequential(nn.Linear(4, 3), nn.ReLU(inplace=True))
    fresh = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    # input 4 + linear out 3 (+ 3 more for a new ReLU output)
    assert memory_and_ops(inplace, (4,))[0] == 7
    assert memory_and_ops(fresh, (4,))[0] == 10


def test_macs_and_flops_of_a_linear_layer_and_thop_leaves_the_network_untouched():
    model = nn.Sequential(nn.Linear(784, 10, bias=False), nn.LogSoftmax(dim=1))
    before = set(dict(model.named_buffers()))
    assert count_macs(model, (784,)) == 7840
    assert set(dict(model.named_buffers())) == before  # thop profiled a copy
    forward, train_step = count_flops(model, (784,))
    assert forward == 2 * 7840
    assert train_step == 2 * forward  # backward: the weight's gradient only (the input needs none)
