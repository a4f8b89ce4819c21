"""R runs of one network fused into one module (netzoo/fuse.py) behave as the R runs trained alone.

Parametrised over generated networks, one per family and a few activations, plus a BatchNorm + Dropout zoo,
as timm's tests run over its registry: the same forward, the same training steps under SGD and Adam, per-run
hyperparameters and lr schedules, per-run BatchNorm statistics and Dropout masks, and refusals.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from netzoo.datasets import load_dataset
from netzoo.errors import FusionError, NetzooError, ShapeMismatchError
from netzoo.fuse import (SeededDropout, dropout_generator, fuse, fused_parameter_views, seeded_dropout, split_runs,
                         unfuse)
from netzoo.fuse_optim import RunOptimizer
from netzoo.recipe import Recipe
from netzoo.train import init_weights, make_optimizer, make_schedule
from netzoo.zoo import load_network
from one_thread import one_thread  # noqa: F401 (module-wide fixture)
from zoo_fixture import plain_and_regularised

# one network per family, the activations spread over them (names of the default digits zoo)
NETWORKS = ["Basic", "LinearReLU_2", "LinearSigmoid_1", "Conv1dNone_2", "Conv1dTanh_1", "Conv1dThenLinearReLU_2",
            "Conv2dSELU_2", "Conv2dThenLinearTanh_2", "Conv3dSigmoid_1", "Conv3dThenLinearReLU_2", "ResNetStyleReLU_2"]
# the same zoo generated with BatchNorm after each hidden layer and Dropout(0.2) after each activation
REGULARISED = ["LinearTanh_2", "Conv1dThenLinearReLU_2", "Conv2dReLU_2", "Conv3dThenLinearSELU_2", "ResNetStyleReLU_2"]
CASES = [("plain", n) for n in NETWORKS] + [("regularised", n) for n in REGULARISED]
SEEDS = [3, 1, 4]  # R = 3 runs
BATCH = 6




@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    return plain_and_regularised(tmp_path_factory.mktemp("zoos"), NETWORKS, REGULARISED)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def runs_of(zoo, name: str, seeds=SEEDS) -> list[nn.Module]:
    """One copy of the network per seed, initialised from it, with dropout drawn from the run's own generator."""
    models = []
    for seed in seeds:
        model = load_network(zoo, name)
        init_weights(model, "default", seed)
        models.append(seeded_dropout(model, dropout_generator(seed)))
    return models


def batches(data, seeds, steps: int, batch: int = BATCH) -> list[torch.Tensor]:
    """Per step, an (R, B) index tensor: run r's batch from its own shuffle order (a generator seeded with its seed)."""
    orders = [torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return [torch.stack([order[i * batch:(i + 1) * batch] for order in orders]) for i in range(steps)]


def train_alone(model, optimizer, data, idx_per_step, run: int) -> list[float]:
    """Train one run alone on its rows of each step's batch; return its losses."""
    losses = []
    for idx in idx_per_step:
        loss = F.nll_loss(model(data.x_train[idx[run]]), data.y_train[idx[run]])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_fused(fused, optimizer, data, idx_per_step, runs: int) -> list[list[float]]:
    """Train the fused runs on the stacked batches; return each step's per-run losses."""
    losses = []
    for idx in idx_per_step:
        out = fused(data.x_train[idx.flatten()])  # (R*B, K)
        per_run = F.nll_loss(out, data.y_train[idx.flatten()], reduction="none").view(runs, -1).mean(1)
        optimizer.zero_grad()
        per_run.sum().backward()  # runs share no weight: each gets exactly its own gradient
        optimizer.step()
        losses.append(per_run.tolist())
    return losses


def assert_runs_match(fused, solos, rtol=1e-5, atol=1e-6):
    """Each run's state in the fused module equals its solo copy's, element by element."""
    for r, solo in enumerate(solos):
        mine = unfuse(fused, r)
        theirs = solo.state_dict()
        assert mine.keys() == theirs.keys()
        for name, value in theirs.items():
            torch.testing.assert_close(mine[name], value, rtol=rtol, atol=atol, msg=f"run {r} {name}")


def assert_runs_trained_alike(fused, solos, initial):
    """After training, each run's fused state is within float noise of its solo copy's: 1e-5 plus 1% of how far
    training moved that tensor. Adam divides by the root of tiny second moments, so the last-bit differences
    of a grouped convolution's gradient can move a weight whose gradient is near 0 by a sizeable part of lr;
    a wrong batch, run or hyperparameter moves them by as much as training itself (100%)."""
    for r, (solo, start) in enumerate(zip(solos, initial)):
        mine = unfuse(fused, r)
        for name, value in solo.state_dict().items():
            moved = (value.double() - start[name].double()).abs().max().item()
            diff = (mine[name].double() - value.double()).abs().max().item()
            assert diff <= 1e-5 + 0.01 * moved, f"run {r} {name}: off by {diff:.2e}, training moved it {moved:.2e}"


def states(models) -> list[dict[str, torch.Tensor]]:
    return [copy.deepcopy(m.state_dict()) for m in models]


def seeded(network: type[nn.Module]) -> list[nn.Module]:
    """One instance of a hand-written network per seed, built after torch.manual_seed(seed)."""
    models = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        models.append(network())
    return models


def each_alone(solos, x: torch.Tensor) -> torch.Tensor:
    """The solo runs' outputs, run r on rows r*B:(r+1)*B of the batch-merged x, stacked as the fused output."""
    return torch.cat([model(rows) for model, rows in zip(solos, split_runs(x, len(solos)))])


# --- (a) forward -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("zoo,name", CASES)
def test_fused_forward_equals_each_run_alone(zoos, digits, zoo, name, mode):
    solos, fused = runs_of(zoos / zoo, name), fuse(runs_of(zoos / zoo, name))
    for model in (*solos, fused):
        model.train(mode == "train")
    x = digits.x_train[:len(SEEDS) * BATCH]  # run r's batch: rows r*B:(r+1)*B
    for _ in range(2):  # twice: dropout generators and BatchNorm statistics move on
        out = fused(x)
        assert out.shape == (len(SEEDS) * BATCH, digits.classes)
        alone = each_alone(solos, x)
        torch.testing.assert_close(out, alone, rtol=0, atol=1e-5)
    assert not torch.allclose(split_runs(out, 3)[0], split_runs(out, 3)[1])  # the runs really differ


def test_fused_module_keeps_the_original_names_with_a_run_dimension(zoos):
    solos = runs_of(zoos / "regularised", "ResNetStyleReLU_2")
    fused = fuse(solos)
    assert [n for n, _ in fused.named_modules()] == [n for n, _ in solos[0].named_modules()]
    for name, value in solos[0].state_dict().items():
        assert fused.state_dict()[name].shape == (3, *value.shape), name
    fresh = load_network(zoos / "regularised", "ResNetStyleReLU_2")
    fresh.load_state_dict(unfuse(fused, 2))  # strict: the original names and shapes
    torch.testing.assert_close(fresh.state_dict(), solos[2].state_dict(), rtol=0, atol=0)


# --- (b) training steps ------------------------------------------------------------------------------------
# SGD on every case; Adam on the networks without BatchNorm (ResNetStyle's blocks hold some). With it, Adam's
# trajectory is chaotic at float precision whatever fusion does: after a BatchNorm the gradient of a weight fed
# by a pixel constant over the batch (digits' blank borders), or by a unit that ReLU kills for the whole batch,
# is 0 in theory and float noise in practice, which Adam's g/(sqrt(v) + eps) turns into steps of up to +-lr.
# Measured: one ResNetStyleReLU_2 run (BatchNorm + Dropout zoo) trained alone, once as is and once in
# channels_last memory format, ends 5 Adam steps with losses 0.03 apart. Their gradients, which fusion must get
# right, are checked on every case (test_fused_gradients_are_each_runs_own).
TRAINING_CASES = [(z, n, "sgd-momentum") for z, n in CASES] + \
                 [(z, n, "adam") for z, n in CASES if z == "plain" and not n.startswith("ResNetStyle")]


@pytest.mark.parametrize("zoo,name,optimizer", TRAINING_CASES)
def test_fused_training_matches_runs_trained_alone(zoos, digits, zoo, name, optimizer):
    recipe = Recipe(optimizer=optimizer, lr=0.01 if optimizer == "adam" else 0.05)
    steps = batches(digits, SEEDS, steps=5)
    solos = runs_of(zoos / zoo, name)
    initial = states(solos)
    alone = [train_alone(m, make_optimizer(m.parameters(), recipe), digits, steps, r) for r, m in enumerate(solos)]
    fused = fuse(runs_of(zoos / zoo, name))
    per_run = [make_optimizer([torch.zeros(1, requires_grad=True)], recipe) for _ in SEEDS]
    together = train_fused(fused, RunOptimizer(fused.parameters(), per_run), digits, steps, len(SEEDS))

    torch.testing.assert_close(torch.tensor(together[0]), torch.tensor([a[0] for a in alone]), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(together), torch.tensor(alone).T, rtol=1e-4, atol=1e-5)
    assert_runs_trained_alike(fused, solos, initial)  # BatchNorm's running statistics included


def test_plain_torch_optimizer_over_fused_parameters_steps_each_run_as_alone(zoos, digits):
    recipe = Recipe()  # the study's: Adam, amsgrad, the same numbers for every run (seeds of one recipe)
    steps = batches(digits, SEEDS, steps=5)
    solos = runs_of(zoos / "plain", "Conv2dThenLinearTanh_2")
    initial = states(solos)
    for r, model in enumerate(solos):
        train_alone(model, make_optimizer(model.parameters(), recipe), digits, steps, r)
    fused = fuse(runs_of(zoos / "plain", "Conv2dThenLinearTanh_2"))
    train_fused(fused, make_optimizer(fused.parameters(), recipe), digits, steps, len(SEEDS))
    assert_runs_trained_alike(fused, solos, initial)


@pytest.mark.parametrize("zoo,name", CASES)
def test_fused_gradients_are_each_runs_own(zoos, digits, zoo, name):
    solos = runs_of(zoos / zoo, name)
    fused = fuse(runs_of(zoos / zoo, name))
    idx = batches(digits, SEEDS, steps=1)[0]
    out = fused(digits.x_train[idx.flatten()])
    F.nll_loss(out, digits.y_train[idx.flatten()], reduction="none").view(3, -1).mean(1).sum().backward()
    views = fused_parameter_views(fused)
    assert views.keys() == dict(solos[0].named_parameters()).keys()
    for r, model in enumerate(solos):
        F.nll_loss(model(digits.x_train[idx[r]]), digits.y_train[idx[r]]).backward()
        for name, p in model.named_parameters():
            values, grads = views[name]
            torch.testing.assert_close(values[r], p.detach(), rtol=0, atol=0)
            torch.testing.assert_close(grads[r], p.grad, rtol=1e-4, atol=1e-5)
        assert grads[r].flatten().norm() > 0


# --- (c) per-run hyperparameters ---------------------------------------------------------------------------
SGD, ADAM, ADAMW, RMSPROP = torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop
PER_RUN = {  # three runs of one optimizer family that differ in numbers and flags: (type, settings) per run
    "sgd": [(SGD, dict(lr=0.1)), (SGD, dict(lr=0.03, weight_decay=0.01)), (SGD, dict(lr=0.2, weight_decay=0.1))],
    "sgd-momentum": [(SGD, dict(lr=0.05, momentum=0.9)), (SGD, dict(lr=0.02, momentum=0.5, weight_decay=0.01)),
                     (SGD, dict(lr=0.1, momentum=0.0))],
    "sgd-nesterov-dampening": [(SGD, dict(lr=0.05, momentum=0.9, nesterov=True, fused=True)),
                               (SGD, dict(lr=0.02, momentum=0.8, dampening=0.5, weight_decay=0.05)),
                               (SGD, dict(lr=0.1, momentum=0.7, nesterov=True))],
    "rmsprop": [(RMSPROP, dict(lr=0.01)), (RMSPROP, dict(lr=0.003, momentum=0.9, alpha=0.9, foreach=True)),
                (RMSPROP, dict(lr=0.001, weight_decay=0.01, eps=1e-6, centered=True))],
    "adam": [(ADAM, dict(lr=0.01)), (ADAM, dict(lr=0.002, betas=(0.8, 0.99), weight_decay=0.01)),
             (ADAM, dict(lr=0.005, betas=(0.95, 0.9), eps=1e-6, amsgrad=True))],
    "adam-fused": [(ADAM, dict(lr=0.01, amsgrad=True, fused=True)),
                   (ADAM, dict(lr=0.002, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True, fused=True)),
                   (ADAM, dict(lr=0.005, betas=(0.95, 0.9), eps=1e-6, fused=True))],
    "adam-and-adamw": [(ADAMW, dict(lr=0.01, amsgrad=True)), (ADAM, dict(lr=0.002, weight_decay=0.1, amsgrad=True)),
                       (ADAMW, dict(lr=0.005, weight_decay=0.5, amsgrad=True, fused=True))],
}


@pytest.mark.parametrize("name", ["LinearReLU_2", "Conv2dSELU_2"])
@pytest.mark.parametrize("kind", sorted(PER_RUN))
def test_runs_with_their_own_hyperparameters_each_match_torch_optim_alone(zoos, digits, kind, name):
    settings = PER_RUN[kind]
    steps = batches(digits, SEEDS, steps=5)
    solos = runs_of(zoos / "plain", name)
    initial = states(solos)
    alone = [train_alone(m, optimizer_type(m.parameters(), **s), digits, steps, r)
             for r, (m, (optimizer_type, s)) in enumerate(zip(solos, settings))]
    fused = fuse(runs_of(zoos / "plain", name))
    per_run = [optimizer_type([torch.zeros(1, requires_grad=True)], **s) for optimizer_type, s in settings]
    together = train_fused(fused, RunOptimizer(fused.parameters(), per_run), digits, steps, len(SEEDS))
    torch.testing.assert_close(torch.tensor(together), torch.tensor(alone).T, rtol=1e-4, atol=1e-5)
    assert_runs_trained_alike(fused, solos, initial)


def train_with_schedules(zoo, digits, name: str, recipes: list[Recipe], observe) -> list:
    """Train run r under recipes[r] (lr schedule included) for 3 epochs of 2 steps, alone and fused; check that
    they trained alike and return observe(RunOptimizer) after each fused epoch."""
    steps = batches(digits, SEEDS, steps=6)
    epochs = [steps[0:2], steps[2:4], steps[4:6]]
    solos = runs_of(zoo, name)
    initial = states(solos)
    for r, (model, recipe) in enumerate(zip(solos, recipes)):
        optimizer = make_optimizer(model.parameters(), recipe)
        schedule = make_schedule(optimizer, recipe)
        for epoch in epochs:
            train_alone(model, optimizer, digits, epoch, r)
            if schedule is not None:
                schedule.step()
    per_run = [make_optimizer([torch.zeros(1, requires_grad=True)], recipe) for recipe in recipes]
    schedules = [make_schedule(o, recipe) for o, recipe in zip(per_run, recipes)]
    fused = fuse(runs_of(zoo, name))
    optimizer = RunOptimizer(fused.parameters(), per_run)
    seen = []
    for epoch in epochs:
        train_fused(fused, optimizer, digits, epoch, len(SEEDS))
        seen.append(observe(optimizer))
        for schedule in schedules:
            if schedule is not None:
                schedule.step()
    assert_runs_trained_alike(fused, solos, initial)
    return seen


@pytest.mark.parametrize("schedules", [("cosine", "step", "none"), ("step", "step", "cosine")])
def test_per_run_lr_schedules_drive_each_runs_lr(zoos, digits, schedules):
    recipes = [Recipe(optimizer=o, lr=lr, schedule=s, epochs=3, step_size=1, gamma=g)
               for o, lr, s, g in zip(("sgd-momentum", "sgd", "sgd-momentum"), (0.05, 0.1, 0.02), schedules, (0.5, 0.3, 0.1))]
    lrs = train_with_schedules(zoos / "plain", digits, "Conv1dTanh_1", recipes, lambda o: tuple(o.lr.tolist()))
    assert len(set(lrs)) == 3  # the lrs moved every epoch


def test_per_run_lr_schedules_split_a_group_of_equal_runs(zoos, digits):
    """Three runs with the same optimizer numbers step as one group until their schedules part their lrs."""
    recipes = [Recipe(optimizer="adam", lr=0.01, schedule=s, epochs=3, gamma=0.5) for s in ("none", "cosine", "step")]
    groups = train_with_schedules(zoos / "plain", digits, "LinearSigmoid_1", recipes, lambda o: len(o._groups))
    assert groups == [1, 3, 3]


def test_adjacent_runs_with_equal_numbers_take_one_update_call(monkeypatch):
    import netzoo.fuse_optim

    calls = []
    real = netzoo.fuse_optim.adam_update
    monkeypatch.setattr(netzoo.fuse_optim, "adam_update", lambda params, *a, **k: (calls.append(len(params)),
                                                                                     real(params, *a, **k)))
    one = lambda lr: torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=lr)  # noqa: E731
    for lrs, expected in (([0.1, 0.1, 0.1, 0.1], 1), ([0.1, 0.1, 0.2, 0.2], 2), ([0.1, 0.2, 0.1, 0.2], 4)):
        params = [nn.Parameter(torch.randn(4, 3, 2)), nn.Parameter(torch.randn(4, 3))]
        optimizer = RunOptimizer(params, [one(lr) for lr in lrs])
        calls.clear()
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        assert len(calls) == expected, lrs


def test_runs_whose_optimizers_differ_in_type_are_refused():
    params = [nn.Parameter(torch.zeros(2, 3))]
    one = lambda cls, **kw: cls([torch.zeros(1, requires_grad=True)], **kw)  # noqa: E731
    with pytest.raises(FusionError, match="one optimizer type"):
        RunOptimizer(params, [one(torch.optim.SGD, lr=0.1), one(torch.optim.Adam)])
    with pytest.raises(FusionError, match="one optimizer type"):
        RunOptimizer(params, [one(torch.optim.Adagrad)] * 2)
    with pytest.raises(FusionError, match="differentiable"):
        RunOptimizer(params, [one(torch.optim.Adam, differentiable=True)] * 2)
    with pytest.raises(FusionError, match=r"\(R=3, \*shape\)"):
        RunOptimizer(params, [one(torch.optim.SGD, lr=0.1)] * 3)


# --- (d) BatchNorm ----------------------------------------------------------------------------------------
class Norms(nn.Module):
    """Every BatchNorm setting: momentum None (cumulative average), no affine, no running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 12)
        self.bn1 = nn.BatchNorm1d(12, momentum=None)
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(4, affine=False, eps=1e-3)
        self.conv3d = nn.Conv3d(1, 2, kernel_size=2)
        self.bn3 = nn.BatchNorm3d(2, track_running_stats=False)
        self.head = nn.Linear(12 + 4 * 64 + 2 * 27, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.bn1(self.fc(torch.flatten(x, 1)))
        b = self.bn2(self.conv(x))
        c = self.bn3(self.conv3d(x.reshape(x.shape[0], 1, 4, 4, 4)))
        return F.log_softmax(self.head(torch.cat([a, torch.flatten(b, 1), torch.flatten(c, 1)], 1)), dim=1)


def test_batch_norm_running_statistics_are_kept_per_run(digits):
    solos = seeded(Norms)
    fused = fuse(solos)
    x = digits.x_train[:60]
    for step in range(3):
        rows = x[step * 18:(step + 1) * 18]
        torch.testing.assert_close(fused(rows), each_alone(solos, rows), rtol=0, atol=1e-5)
    assert_runs_match(fused, solos)
    assert unfuse(fused, 1)["bn1.num_batches_tracked"].item() == 3
    assert not torch.allclose(unfuse(fused, 0)["bn1.running_mean"], unfuse(fused, 1)["bn1.running_mean"])
    fused.eval()
    for model in solos:
        model.eval()
    torch.testing.assert_close(fused(x[:18]), each_alone(solos, x[:18]), rtol=0, atol=1e-5)


# --- (e) Dropout ------------------------------------------------------------------------------------------
def test_dropout_masks_match_runs_alone_with_the_same_generator_seeds():
    def net(seed):
        torch.manual_seed(0)  # the same weights: only the masks differ between runs
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 50), nn.Dropout(0.5), nn.Linear(50, 40), nn.Dropout(0.3))
        return seeded_dropout(model, dropout_generator(seed))

    solos, fused = [net(s) for s in SEEDS], fuse([net(s) for s in SEEDS])
    x = torch.randn(3 * 7, 1, 8, 8)
    outs = []
    for _ in range(3):  # the generators move on alike
        out = fused(x)
        torch.testing.assert_close(out, each_alone(solos, x), rtol=0, atol=1e-6)
        outs.append(out)
    assert not torch.equal(outs[0], outs[1])  # a new mask every forward
    runs = split_runs(outs[0], 3)
    assert not torch.equal(runs[0] == 0, runs[1] == 0)  # each run its own masks, though the same input and weights
    fused.eval()
    torch.testing.assert_close(fused(x), each_alone([m.eval() for m in solos], x))


def test_dropout_generator_is_seeded_apart_from_the_shuffle_generator():
    a, b = dropout_generator(7), dropout_generator(7)
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
    assert not torch.equal(torch.rand(5, generator=dropout_generator(7)), torch.rand(5, generator=dropout_generator(8)))
    assert not torch.equal(torch.rand(5, generator=dropout_generator(7)),
                           torch.rand(5, generator=torch.Generator().manual_seed(7)))


def test_runs_may_have_their_own_dropout_probability():
    def net(p, seed):
        torch.manual_seed(0)
        return seeded_dropout(nn.Sequential(nn.Linear(8, 30), nn.Dropout(p)), dropout_generator(seed))

    settings = [(0.0, 1), (0.5, 2), (0.2, 3)]
    solos, fused = [net(*s) for s in settings], fuse([net(*s) for s in settings])
    x = torch.randn(3 * 5, 8)
    torch.testing.assert_close(fused(x), each_alone(solos, x), rtol=0, atol=1e-6)


# --- layers beyond the generated ones: strides, padding modes, groups, downsample --------------------------
class Layers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(4, 6, kernel_size=3, stride=2, padding=1, dilation=2, groups=2)
        self.conv2d = nn.Conv2d(1, 6, kernel_size=3, padding=1, padding_mode="reflect", bias=False)
        self.block = BasicBlock(6, 8, stride=2, downsample=nn.Sequential(conv1x1(6, 8, stride=2), nn.BatchNorm2d(8)))
        self.conv3d = nn.Conv3d(1, 3, kernel_size=(2, 3, 1), padding="same", padding_mode="circular")
        self.head = nn.Linear(6 * 7 + 8 * 16 + 3 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1d(x.reshape(x.shape[0], 4, 16))
        b = self.block(self.conv2d(x))
        c = self.conv3d(x.reshape(x.shape[0], 1, 4, 4, 4))
        return self.head(torch.cat([torch.flatten(a, 1), torch.flatten(b, 1), torch.flatten(c, 1)], 1))


def test_conv_settings_and_basic_block_downsample_fuse(digits):
    solos = seeded(Layers)
    fused = fuse(solos)
    x = digits.x_train[:3 * 5]
    torch.testing.assert_close(fused(x), each_alone(solos, x),
                               rtol=0, atol=1e-5)
    assert_runs_match(fused, solos)


# --- (f) what cannot be fused ------------------------------------------------------------------------------
class OwnParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@pytest.mark.parametrize("layer,named", [
    (nn.LayerNorm(8), "LayerNorm"), (nn.PReLU(), "PReLU"), (OwnParameter(), "OwnParameter"),
    (nn.Dropout2d(0.5), "Dropout2d"), (nn.Dropout(0.5), "seeded_dropout"), (nn.Embedding(8, 8), "Embedding"),
])
def test_a_module_that_cannot_be_fused_raises_fusion_error_naming_it(layer, named):
    models = [nn.Sequential(nn.Linear(8, 8), copy.deepcopy(layer)) for _ in range(2)]
    with pytest.raises(FusionError, match=named) as info:
        fuse(models)
    assert isinstance(info.value, NetzooError)


def test_a_dropout_that_drops_nothing_needs_no_generator():
    x = torch.randn(2 * 3, 8)
    models = [nn.Sequential(nn.Linear(8, 4), nn.Dropout(0.0)) for _ in range(2)]
    torch.testing.assert_close(fuse(models)(x), each_alone(models, x))


def test_runs_of_different_architectures_are_refused():
    with pytest.raises(FusionError, match="different classes"):
        fuse([nn.Sequential(nn.Linear(8, 8)), nn.Linear(8, 8)])
    with pytest.raises(FusionError, match="differs in architecture"):
        fuse([nn.Sequential(nn.Linear(8, 8)), nn.Sequential(nn.Linear(8, 9))])
    with pytest.raises(FusionError, match="differs in its layers"):  # a Dropout in one zoo variant only
        fuse([nn.Sequential(nn.Linear(8, 8)), nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.2))])
    with pytest.raises(FusionError, match="differ in their settings"):
        fuse([nn.Sequential(nn.Conv2d(1, 2, 3, stride=1)), nn.Sequential(nn.Conv2d(1, 2, 3, stride=2))])


def test_a_batch_that_is_not_a_multiple_of_the_runs_is_refused():
    fused = fuse([nn.Linear(8, 4) for _ in range(3)])
    with pytest.raises(ShapeMismatchError, match="multiple of 3"):
        fused(torch.randn(7, 8))
    with pytest.raises(IndexError):
        unfuse(fused, 3)


def test_seeded_dropout_leaves_other_layers_and_draws_from_its_generator():
    model = seeded_dropout(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.1))),
                           dropout_generator(0))
    assert [type(m) for m in model.modules()].count(SeededDropout) == 2
    assert isinstance(model[0], nn.Linear)
    x = torch.ones(100)
    mask = SeededDropout(0.5, torch.Generator().manual_seed(0))(x)
    assert set(mask.tolist()) == {0.0, 2.0}
    assert torch.equal(mask, SeededDropout(0.5, torch.Generator().manual_seed(0))(x))


class Shortcuts(nn.Module):
    """Convolutions that FusedConv computes as matrix multiplies: kernels of one (one input channel, several) and
    kernels that cover the whole input (the zoo's classifier convs), in 1, 2 and 3 dimensions."""

    def __init__(self) -> None:
        super().__init__()
        self.point1 = nn.Conv2d(1, 6, kernel_size=1)
        self.point6 = nn.Conv2d(6, 5, kernel_size=1, bias=False)
        self.whole2d = nn.Conv2d(5, 10, kernel_size=(8, 8))
        self.whole1d = nn.Conv1d(4, 10, kernel_size=16, bias=False)
        self.whole3d = nn.Conv3d(1, 10, kernel_size=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.whole2d(torch.tanh(self.point6(torch.relu(self.point1(x)))))  # (N, 10, 1, 1)
        b = self.whole1d(x.reshape(x.shape[0], 4, 16))                          # (N, 10, 1)
        c = self.whole3d(x.reshape(x.shape[0], 1, 4, 4, 4))                     # (N, 10, 1, 1, 1)
        return F.log_softmax(torch.flatten(a, 1) + torch.flatten(b, 1) + torch.flatten(c, 1), dim=1)


def test_pointwise_and_whole_input_convolutions_are_matrix_multiplies_with_each_runs_numbers(digits, monkeypatch):
    from netzoo.fuse import FusedConv

    taken = []
    for shortcut in ("_pointwise", "_full_kernel"):
        real = getattr(FusedConv, shortcut)
        monkeypatch.setattr(FusedConv, shortcut, lambda self, *a, real=real, name=shortcut: (
            taken.append(name) if real(self, *a) else None) or real(self, *a))
    solos = seeded(Shortcuts)
    fused = fuse(solos)
    idx = batches(digits, SEEDS, steps=1)[0]
    out = fused(digits.x_train[idx.flatten()])
    assert taken.count("_pointwise") == 2 and taken.count("_full_kernel") == 3
    torch.testing.assert_close(out, each_alone(solos, digits.x_train[idx.flatten()]), rtol=0, atol=1e-5)
    F.nll_loss(out, digits.y_train[idx.flatten()], reduction="none").view(3, -1).mean(1).sum().backward()
    views = fused_parameter_views(fused)
    for r, model in enumerate(solos):
        F.nll_loss(model(digits.x_train[idx[r]]), digits.y_train[idx[r]]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(views[name][1][r], p.grad, rtol=1e-4, atol=1e-5)
