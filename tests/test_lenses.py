"""Lenses: the per-layer statistics are exactly those computed by hand on planted networks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from torchvision.models.resnet import BasicBlock

from netzoo.lenses import Lenses
from netzoo.schema import LAYERS, conform

ROW_COLUMNS = [n for n in LAYERS.names if n not in ("network", "recipe", "recipe_hash", "seed", "epoch")]


class Planted(nn.Module):
    """2 -> 4 (ReLU, unit 1 planted dead) -> 3 (ReLU, planted constant: zero weights, bias 1, 2, 3) -> 2."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 4)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(4, 3)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0.5], [0.0, 0.0], [-1.0, 2.0], [0.3, -0.7]]))
            self.fc1.bias.copy_(torch.tensor([0.1, -1.0, 0.0, 0.2]))  # unit 1: ReLU(-1) = 0 for every input
            self.fc2.weight.zero_()
            self.fc2.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))        # every output constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.act1(self.fc1(x))  # (N, 4)
        h2 = self.act2(self.fc2(h1))  # (N, 3)
        return F.log_softmax(self.fc3(h2), dim=1)


def _inputs(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def _evaluate(model: nn.Module, lenses: Lenses, x: torch.Tensor, batch: int) -> None:
    model.eval()
    with torch.no_grad(), lenses.evaluating():
        for chunk in x.split(batch):
            model(chunk)


def _rows(lenses: Lenses) -> dict[str, dict]:
    return {row["layer"]: row for row in lenses.epoch_rows()}


def test_planted_dead_neuron_and_constant_layer_statistics_are_exact():
    model, x = Planted(), _inputs()
    lenses = Lenses(model)
    _evaluate(model, lenses, x, batch=64)
    rows = _rows(lenses)

    h1 = torch.relu(model.fc1(x)).detach().double().numpy()
    expected = h1.var(axis=0)  # population variance per neuron
    act1 = rows["act1"]
    assert act1["kind"] == "ReLU" and act1["width"] == 4
    np.testing.assert_allclose(act1["variances"], expected.astype(np.float32), rtol=1e-6)
    assert act1["variances"][1] == 0.0
    assert act1["dead_fraction"] == 0.25
    assert act1["activation_rate"] == (h1 > 0).sum() / h1.size
    assert act1["var_mean"] == pytest.approx(expected.mean(), rel=1e-6)
    assert act1["var_sum"] == pytest.approx(expected.sum(), rel=1e-6)
    for q in (5, 25, 50, 75, 95):
        assert act1[f"var_q{q:02d}"] == pytest.approx(np.quantile(expected, q / 100), rel=1e-6, abs=1e-12)
    w, p = stats.shapiro(np.asarray(act1["variances"], dtype=np.float64))
    assert act1["shapiro_w"] == pytest.approx(w, rel=1e-5) and act1["shapiro_p"] == pytest.approx(p, rel=1e-4)

    act2 = rows["act2"]  # outputs 1, 2, 3 on every input: all dead, all active, no normality test
    assert act2["variances"] == [0.0, 0.0, 0.0]
    assert act2["dead_fraction"] == 1.0
    assert act2["activation_rate"] == 1.0
    assert act2["var_sum"] == 0.0 and act2["var_q95"] == 0.0
    assert act2["shapiro_w"] is None and act2["shapiro_p"] is None


def test_activation_statistics_do_not_depend_on_the_evaluation_batch_size():
    model, x = Planted(), _inputs(n=100, seed=3)
    one, many = Lenses(model), Lenses(model)
    _evaluate(model, one, x, batch=100)
    one_rows = _rows(one)
    one.close()
    _evaluate(model, many, x, batch=7)
    many_rows = _rows(many)
    for key in ("variances", "dead_fraction", "activation_rate"):
        np.testing.assert_allclose(many_rows["act1"][key], one_rows["act1"][key], rtol=1e-6)
    assert many_rows["act2"]["dead_fraction"] == 1.0


def test_conv_neuron_is_a_channel_pooled_over_positions():
    conv, act = nn.Conv2d(1, 3, 3, padding=1), nn.Tanh()
    model = nn.Sequential(conv, act)
    x = torch.randn(10, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    lenses = Lenses(model)
    _evaluate(model, lenses, x, batch=4)
    row = _rows(lenses)["1"]
    out = torch.tanh(conv(x)).detach().double()
    expected = out.permute(1, 0, 2, 3).reshape(3, -1).var(dim=1, correction=0).numpy()
    assert row["width"] == 3
    np.testing.assert_allclose(row["variances"], expected.astype(np.float32), rtol=1e-5)
    assert row["activation_rate"] == pytest.approx(float((out > 0).double().mean()))  # Tanh: active above 0


def test_sigmoid_counts_outputs_above_one_half_as_active():
    model = nn.Sequential(nn.Identity(), nn.Sigmoid())
    x = torch.tensor([[-2.0, 0.0, 1.0], [3.0, -1.0, 0.5]])
    lenses = Lenses(model)
    _evaluate(model, lenses, x, batch=2)
    assert _rows(lenses)["1"]["activation_rate"] == 3 / 6  # sigmoid(0) = 0.5 is not above 0.5


def test_repeated_relu_of_a_basic_block_gives_one_row_per_call():
    model = nn.Sequential(BasicBlock(2, 2))
    model[0].relu = nn.SELU()
    lenses = Lenses(model)
    _evaluate(model, lenses, torch.randn(4, 2, 3, 3), batch=2)
    rows = _rows(lenses)
    assert {"0.relu", "0.relu#2"} <= set(rows)
    assert rows["0.relu"]["kind"] == "SELU" and rows["0.relu#2"]["width"] == 2


def test_gradient_norms_match_torch_nn_utils_on_one_step():
    model, x = Planted(), _inputs()
    y = torch.tensor([0, 1]).repeat(32)
    lenses = Lenses(model)
    F.nll_loss(model(x), y).backward()
    rows = _rows(lenses)
    for name in ("fc1", "fc2", "fc3"):
        weight = getattr(model, name).weight
        expected = float(torch.nn.utils.get_total_norm([weight.grad]))
        assert rows[name]["grad_norm_mean"] == pytest.approx(expected, rel=1e-6)
        assert rows[name]["grad_norm_max"] == pytest.approx(expected, rel=1e-6)
    clipped_total = float(torch.nn.utils.clip_grad_norm_([model.fc3.weight], max_norm=1e9))
    assert rows["fc3"]["grad_norm_mean"] == pytest.approx(clipped_total, rel=1e-6)


@pytest.mark.parametrize("fold", [64, 3])
def test_gradient_mean_and_max_run_over_the_epochs_steps(fold, monkeypatch):
    monkeypatch.setattr("netzoo.lenses._GradStats.FOLD", fold)  # 3: the 4 steps are folded in two parts
    model, x = Planted(), _inputs()
    y = torch.tensor([0, 1]).repeat(32)
    lenses = Lenses(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    norms = []
    for chunk, labels in zip(x.split(16), y.split(16)):
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(model(chunk), labels).backward()
        norms.append(float(model.fc3.weight.grad.norm()))
        optimizer.step()
    row = _rows(lenses)["fc3"]
    assert row["grad_norm_mean"] == pytest.approx(np.mean(norms), rel=1e-6)
    assert row["grad_norm_max"] == pytest.approx(max(norms), rel=1e-6)


def test_dead_grad_fraction_counts_units_with_zero_gradient_on_every_step():
    model, x = Planted(), _inputs()
    y = torch.tensor([0, 1]).repeat(32)
    with torch.no_grad():
        model.fc2.weight.fill_(0.5)  # positive weights and biases: act2 always active, gradients reach fc1
    lenses = Lenses(model)
    for chunk, labels in zip(x.split(16), y.split(16)):
        model.zero_grad(set_to_none=True)
        F.nll_loss(model(chunk), labels).backward()
    rows = _rows(lenses)
    # fc1: unit 1 feeds a ReLU that is never active, so its weight row never gets a gradient.
    assert rows["fc1"]["dead_grad_fraction"] == 0.25
    # fc2: its ReLU is always active, so every unit's weight row gets a gradient.
    assert rows["fc2"]["dead_grad_fraction"] == 0.0
    assert rows["fc3"]["dead_grad_fraction"] == 0.0


def test_training_outside_evaluating_records_no_activations_and_rows_reset():
    model, x = Planted(), _inputs()
    lenses = Lenses(model)
    F.nll_loss(model(x), torch.zeros(len(x), dtype=torch.long)).backward()  # training forward: not measured
    rows = lenses.epoch_rows()
    assert [r["layer"] for r in rows] == ["fc1", "fc2", "fc3"]
    assert all(r["dead_fraction"] is None and r["grad_norm_mean"] is not None for r in rows)
    again = lenses.epoch_rows()  # reset: nothing accumulated since
    assert all(r["grad_norm_mean"] is None and r["width"] is not None for r in again)


def test_a_diverged_network_gives_rows_without_a_normality_test():
    model, x = Planted(), _inputs()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    lenses = Lenses(model)
    _evaluate(model, lenses, x, batch=32)
    act1 = _rows(lenses)["act1"]
    assert act1["shapiro_w"] is None and act1["width"] == 4
    assert act1["variances"][1] == 0.0  # the planted dead neuron is still dead


def test_close_removes_every_hook():
    model, x = Planted(), _inputs()
    lenses = Lenses(model)
    lenses.close()
    F.nll_loss(model(x), torch.zeros(len(x), dtype=torch.long)).backward()
    assert all(r["grad_norm_mean"] is None for r in lenses.epoch_rows())
    assert not model.fc1.weight._post_accumulate_grad_hooks
    assert not model.act1._forward_hooks and not model._forward_pre_hooks


def test_rows_have_exactly_the_layers_columns_and_conform_to_the_schema():
    model, x = Planted(), _inputs()
    lenses = Lenses(model)
    F.nll_loss(model(x), torch.zeros(len(x), dtype=torch.long)).backward()
    _evaluate(model, lenses, x, batch=32)
    rows = lenses.epoch_rows()
    assert all(list(row) == ROW_COLUMNS for row in rows)
    frame = pd.DataFrame(rows).assign(network="Planted", recipe="study", recipe_hash="0" * 16, seed=0, epoch=1)
    table = conform(frame, LAYERS)
    assert table.num_rows == 5
    for column in ("dead_fraction", "activation_rate", "dead_grad_fraction"):
        values = table.column(column).drop_null().to_pylist()
        assert all(0.0 <= v <= 1.0 for v in values)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to check for host syncs")
def test_gradient_hooks_do_not_sync_with_the_host_on_cuda():
    model = Planted().cuda()
    x, y = _inputs().cuda(), torch.tensor([0, 1]).repeat(32).cuda()
    lenses = Lenses(model)
    loss = F.nll_loss(model(x), y)
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss.backward()  # raises if a hook synchronises
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert _rows(lenses)["fc1"]["dead_grad_fraction"] == 0.25


def test_trainer_records_one_row_per_layer_per_epoch_matching_the_test_split():
    from netzoo.datasets import load_dataset
    from netzoo.recipe import Recipe
    from netzoo.train import train_network

    data = load_dataset("digits")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10), nn.LogSoftmax(dim=1))
    results = list(train_network(model, data, Recipe(epochs=2), seed=0, device="cpu", lenses=True))
    assert [[r["layer"] for r in result.layer_rows] for result in results] == [["1", "3", "2"]] * 2
    last = {r["layer"]: r for r in results[-1].layer_rows}
    with torch.no_grad():
        hidden = model[2](model[1](model[0](data.x_test))).double().numpy()
    np.testing.assert_allclose(last["2"]["variances"], hidden.var(axis=0).astype(np.float32), rtol=1e-5, atol=1e-7)
    assert last["2"]["dead_fraction"] == float(np.mean(hidden.min(axis=0) == hidden.max(axis=0)))
    assert last["1"]["grad_norm_mean"] > 0 and last["1"]["grad_norm_max"] >= last["1"]["grad_norm_mean"]
