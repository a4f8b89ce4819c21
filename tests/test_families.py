"""The family registry: every registered family x activation builds, runs forward and backward, and round-trips
(manifest row -> plan -> the same file, arch_id and row), as timm's tests run over its registry."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from netzoo import families, render as render_module
from netzoo.families import REGISTRY, Family, register, spec_families
from netzoo.generate import arch_id, generate_zoo, manifest_row, plan_from_row, render
from netzoo.measure import static_costs
from netzoo.spec import ACTIVATIONS, load_spec
from netzoo.zoo import load_network, read_manifest

SHAPE, CLASSES = (1, 8, 8), 7
CELLS = [(name, activation) for name, family in REGISTRY.items()
         for activation in (ACTIVATIONS if family.in_spec else ("None",))]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """One network per registered family x activation (Basic included), on 1x8x8 with 7 classes."""
    spec = tmp_path_factory.mktemp("spec") / "registry.toml"
    spec.write_text("".join(f"[families.{f}]\ncounts = {{ {', '.join(f'{a} = 1' for a in ACTIVATIONS)} }}\n"
                            for f in spec_families()))
    out = tmp_path_factory.mktemp("zoo")
    generate_zoo(spec, input_shape=SHAPE, classes=CLASSES, out=out, progress=False, dropout=0.1, batch_norm=True)
    return out


def _row(zoo, family: str, activation: str):
    manifest = read_manifest(zoo)
    rows = manifest[(manifest["family"] == family) & (manifest["activation"] == activation)]
    assert len(rows) == 1, (family, activation)
    return rows.iloc[0]


@pytest.mark.parametrize("family, activation", CELLS)
def test_every_registered_cell_builds_runs_forward_and_backward(zoo, family, activation):
    row = _row(zoo, family, activation)
    model = load_network(zoo, row["network"])
    x, y = torch.randn(4, *SHAPE), torch.arange(4)
    out = model(x)
    assert out.shape == (4, CLASSES) and torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-4)
    torch.nn.functional.nll_loss(out, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("family, activation", CELLS)
def test_every_registered_cell_round_trips_from_its_manifest_row(zoo, family, activation):
    row = _row(zoo, family, activation)
    plan = plan_from_row(row)
    assert arch_id(plan) == row["arch_id"]
    spec = load_spec(row["spec"])
    source = render(plan, spec.name, spec.sha256, int(row["seed"]), SHAPE).encode()
    assert source == (zoo / row["file"]).read_bytes()
    assert hashlib.sha256(source).hexdigest() == row["file_sha256"]
    model = load_network(zoo, row["network"])
    again = manifest_row(plan, static_costs(model, SHAPE), spec, int(row["seed"]), SHAPE, row["file_sha256"])
    assert {k: (list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v) for k, v in row.items()} == again


@pytest.mark.parametrize("family, activation", CELLS)
def test_a_wrong_input_shape_raises_instead_of_changing_the_batch(zoo, family, activation):
    model = load_network(zoo, _row(zoo, family, activation)["network"]).eval()
    with pytest.raises(RuntimeError):
        model(torch.randn(16, 1, 4, 4))  # 16 x 16 pixels: view(-1, 64) would have made a batch of 4
    with pytest.raises(RuntimeError):
        model(torch.randn(16, 1, 8, 9))


def test_forward_keeps_the_batch_dimension_in_its_input_line(zoo):
    for row in read_manifest(zoo).itertuples():
        text = (zoo / row.file).read_text()
        assert "x.view(-1" not in text and re.search(r"x = x\.reshape\(x\.shape\[0\], [\d, ]+\)", text), row.network


def test_relu_blocks_keep_their_own_relu_with_no_line_that_replaces_it(zoo):
    row = _row(zoo, "ResNetStyle", "ReLU")
    text = (zoo / row["file"]).read_text()
    assert ".relu = " not in text
    blocks = [m for m in load_network(zoo, row["network"]).modules() if isinstance(m, BasicBlock)]
    assert blocks and all(isinstance(b.relu, nn.ReLU) for b in blocks)
    selu = (zoo / _row(zoo, "ResNetStyle", "SELU")["file"]).read_text()
    assert ".relu = nn.SELU()  # the cell's activation, not the block's ReLU" in selu


def test_registering_a_family_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register(REGISTRY["Linear"])


def test_a_new_family_is_one_entry_and_one_template(tmp_path, monkeypatch):
    """A Conv2d family with its own template renders, builds and runs: nothing else is edited."""
    templates = tmp_path / "templates"
    templates.mkdir()
    for path in render_module.templates_dir().glob("_*.j2"):
        (templates / path.name).write_text(path.read_text())
    (templates / "wide.py.j2").write_text('{% extends "_network.py.j2" %}\n'
                                          '{% block input_rule %}Wide takes the image as it is.{% endblock %}\n')
    monkeypatch.setattr(render_module, "templates_dir", lambda: templates)
    monkeypatch.setitem(REGISTRY, "Wide", Family("Wide", "wide.py.j2", families.image, families.convs("Conv2d"),
                                                 families.fits_convs, ranges=dict(REGISTRY["Conv2d"].ranges)))
    spec = tmp_path / "wide.toml"
    spec.write_text("basic = false\n[families.Wide]\ncounts = { Tanh = 2 }\ndepth = [2, 3]\nchannels = [4, 8]\n")
    manifest = generate_zoo(spec, input_shape=SHAPE, classes=CLASSES, out=tmp_path / "zoo", progress=False)
    assert list(manifest["network"]) == ["WideTanh_1", "WideTanh_2"]
    out = load_network(tmp_path / "zoo", "WideTanh_2")(torch.randn(2, *SHAPE))
    assert out.shape == (2, CLASSES)
