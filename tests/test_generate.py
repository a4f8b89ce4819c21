"""The generator: the study's population, every family x activation on every shape, determinism, the checks."""

import hashlib
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from netzoo import generate, schema
from netzoo.errors import GenerationError, SpecError
from netzoo.generate import arch_id, basic_plan, generate_zoo, plan_zoo
from netzoo.families import spec_families
from netzoo.spec import ACTIVATIONS, load_spec
from netzoo.zoo import load_network, read_manifest

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny.toml"
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
ACTIVATION_TYPES = (nn.ReLU, nn.SELU, nn.Sigmoid, nn.Tanh)
TINY_NAMES = [plan.name for plan in plan_zoo(load_spec(TINY), (1, 8, 8), 10, 0)]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def default_zoo(tmp_path_factory):
    """The default spec on digits, generated once (with validation and costs); its wall time is printed."""
    out = tmp_path_factory.mktemp("default")
    start = time.perf_counter()
    generate_zoo("default", dataset="digits", out=out, progress=False)
    print(f"default zoo on digits: {time.perf_counter() - start:.1f} s")
    return out


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    generate_zoo(TINY, out=out, progress=False)
    return out


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: "x".join(map(str, s)))
def every_cell_zoo(request, tmp_path_factory):
    """One network per family x activation cell (the default ranges) + Basic, for one input shape."""
    spec = tmp_path_factory.mktemp("spec") / "every-cell.toml"
    spec.write_text("".join(f"[families.{f}]\ncounts = {{ {', '.join(f'{a} = 1' for a in ACTIVATIONS)} }}\n"
                            for f in spec_families()))
    out = tmp_path_factory.mktemp("every-cell")
    manifest = generate_zoo(spec, input_shape=request.param, classes=7, out=out, progress=False)
    return out, request.param, manifest


def test_default_zoo_renders_1001_networks_with_the_studys_counts(default_zoo):
    manifest = read_manifest(default_zoo)
    assert len(manifest) == 1001 and manifest["network"].is_unique
    counts = manifest.groupby(["family", "activation"]).size()
    assert counts[("Basic", "None")] == 1
    assert counts[("Linear", "None")] == 55 and counts[("Conv2d", "None")] == 61
    assert counts[("ResNetStyle", "ReLU")] == 100 and ("ResNetStyle", "SELU") not in counts
    assert counts.drop(("Basic", "None")).sum() == 1000


def test_every_network_file_defines_its_class_and_the_manifest_matches_the_files(default_zoo):
    manifest = read_manifest(default_zoo)
    assert pq.read_schema(default_zoo / "manifest.parquet").names == schema.MANIFEST.names
    assert set(manifest["file"]) == {p.name for p in default_zoo.glob("*.py")}
    assert (manifest["file"] == manifest["network"] + ".py").all()
    assert set(manifest["input_shape"]) == {"1x8x8"} and set(manifest["classes"]) == {10}
    assert (manifest["depth"] == manifest["layer_types"].map(
        lambda types: sum(2 if t == "BasicBlock" else 1 for t in types))).all()
    for _, row in manifest.iloc[::40].iterrows():  # a sample: building all 1001 again takes long
        model = load_network(default_zoo, row["network"])
        assert type(model).__name__ == row["network"]
        assert sum(p.numel() for p in model.parameters()) == row["params"]
        assert f"class {row['network']}(nn.Module):" in (default_zoo / row["file"]).read_text()


def test_depth_stays_in_2_to_6_and_spreads_evenly_within_each_cell(default_zoo):
    manifest = read_manifest(default_zoo)
    sequential = manifest[~manifest["family"].isin(["Basic", "ResNetStyle"])]
    assert sequential["depth"].between(2, 6).all()
    for _, cell in sequential.groupby(["family", "activation"]):
        per_depth = cell["depth"].value_counts().reindex(range(2, 7), fill_value=0)
        assert per_depth.max() - per_depth.min() <= 1
    resnet = manifest[manifest["family"] == "ResNetStyle"]
    blocks = resnet["layer_types"].map(lambda types: list(types).count("BasicBlock"))
    assert set(blocks) == {1, 2, 3}


def test_cells_follow_the_activation_and_bias_rules(default_zoo):
    manifest = read_manifest(default_zoo)
    for _, row in manifest.iterrows():
        after = list(row["activations_after"])
        assert not after[-1]  # never after the last layer
        if row["activation"] == "None":
            assert not any(after)
        else:
            assert any(after)
    biases = [b for row in manifest["biases"] for b in row]
    assert 0.25 < sum(biases) / len(biases) < 0.35  # the study's bias probability 0.3


def test_generation_is_byte_identical_for_the_same_spec_seed_and_shape(tmp_path):
    first = generate_zoo(TINY, out=tmp_path / "a", progress=False)
    second = generate_zoo(TINY, out=tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(first, second)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate_zoo(TINY, seed=1, out=tmp_path / "c", progress=False)
    assert _digest(tmp_path / "c") != _digest(tmp_path / "a")


def test_default_zoo_renders_again_to_the_same_bytes(default_zoo):
    spec = load_spec("default")
    for plan in plan_zoo(spec, (1, 8, 8), 10, spec.seed):
        source = generate.render(plan, spec.name, spec.sha256, spec.seed, (1, 8, 8))
        assert source == (default_zoo / f"{plan.name}.py").read_text(), plan.name


def test_every_family_and_activation_builds_and_outputs_log_probabilities(every_cell_zoo):
    out, shape, manifest = every_cell_zoo
    assert set(zip(manifest["family"], manifest["activation"])) >= {(f, a) for f in spec_families() for a in ACTIVATIONS}
    x = torch.randn(3, *shape)
    for name in manifest["network"]:
        model = load_network(out, name).eval()
        with torch.no_grad():
            y = model(x)
        assert y.shape == (3, 7), name
        assert torch.allclose(y.exp().sum(1), torch.ones(3), atol=1e-4), name


def test_resnet_blocks_use_their_cells_activation(every_cell_zoo):
    out, _, manifest = every_cell_zoo
    for name in manifest.loc[manifest["family"] == "ResNetStyle", "network"]:
        activation = name.removeprefix("ResNetStyle").split("_")[0]
        blocks = [m for m in load_network(out, name).modules() if isinstance(m, BasicBlock)]
        assert blocks, name
        expected = nn.Identity if activation == "None" else getattr(nn, activation)
        assert all(type(block.relu) is expected for block in blocks), name


def test_none_cells_have_no_activation_module_and_activation_cells_have_theirs(every_cell_zoo):
    out, _, manifest = every_cell_zoo
    for _, row in manifest.iterrows():
        modules = list(load_network(out, row["network"]).modules())
        found = {type(m) for m in modules if isinstance(m, ACTIVATION_TYPES)}
        if row["activation"] == "None":
            assert not found, row["network"]
        else:
            assert found == {getattr(nn, row["activation"])}, row["network"]


@pytest.mark.parametrize("name", TINY_NAMES)
def test_tiny_network_trains_one_step(tiny_zoo, name):
    model = load_network(tiny_zoo, name)
    x, y = torch.randn(5, 1, 8, 8), torch.arange(5)
    out = model(x)
    assert out.shape == (5, 10) and torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-4)
    torch.nn.functional.nll_loss(out, y).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_generated_file_header_says_template_spec_seed_shape_and_samples(tiny_zoo):
    text = (tiny_zoo / "ResNetStyleReLU_1.py").read_text()
    lines = text.splitlines()
    assert lines[0] == "# ResNetStyleReLU_1: generated by netzoo from templates/resnet_style.py.j2. Do not edit."
    assert lines[1].startswith(f"# spec {TINY} sha256:") and "seed 0, input 1x8x8, 10 classes" in lines[1]
    assert lines[2].startswith("# sampled: layers=['Conv2d', 'BasicBlock'")
    assert lines[3].startswith("# input: ResNetStyle")
    assert "from torchvision.models.resnet import BasicBlock" in text
    assert "x = x.reshape(x.shape[0], 1, 8, 8)" in text


def test_a_network_that_fails_to_build_stops_generation_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(generate.ACTIVATION_MODULES, "ReLU", "NoSuchActivation")
    with pytest.raises(GenerationError, match="LinearReLU_1 .*AttributeError"):
        generate_zoo(TINY, out=tmp_path, progress=False)


def test_dropout_and_batch_norm_overrides_render_layers_and_fill_the_manifest(tmp_path):
    manifest = generate_zoo(TINY, out=tmp_path, progress=False, dropout=0.25, batch_norm=True)
    assert set(manifest["dropout"]) == {0.25} and set(manifest["batch_norm"]) == {True}
    assert "LinearReLU_1" in set(manifest["network"])  # names do not change
    text = (tmp_path / "LinearReLU_1.py").read_text()
    assert "nn.Dropout(p=0.25)" in text and "nn.BatchNorm1d(" in text
    modules = list(load_network(tmp_path, "Conv2dTanh_1").modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in modules) and any(isinstance(m, nn.Dropout) for m in modules)


def test_cli_dropout_and_batch_norm_flags_reach_the_files_and_bad_dropout_is_refused(tmp_path):
    from click.testing import CliRunner

    from netzoo.cli import cli

    result = CliRunner().invoke(cli, ["generate", "--spec", str(TINY), "--out", str(tmp_path / "bn"),
                                      "--dropout", "0.1", "--batch-norm", "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "bn")
    assert set(manifest["dropout"]) == {0.1} and set(manifest["batch_norm"]) == {True}
    assert "nn.Dropout(p=0.1)" in (tmp_path / "bn" / "LinearReLU_1.py").read_text()
    result = CliRunner().invoke(cli, ["generate", "--spec", str(TINY), "--out", str(tmp_path / "bad"),
                                      "--dropout", "1.5", "--quiet"])
    assert result.exit_code != 0 and "dropout=1.5 is not allowed; give a probability in [0, 1)" in str(result.exception)


def test_without_out_the_zoo_goes_to_zoo_dataset_or_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate_zoo(TINY, progress=False)
    generate_zoo(TINY, input_shape=(3, 32, 32), classes=4, progress=False)
    assert (tmp_path / "zoo/digits/manifest.parquet").is_file()
    assert set(read_manifest(tmp_path / "zoo/3x32x32")["classes"]) == {4}


def test_arch_id_is_stable_and_ignores_the_name():
    plan = basic_plan((1, 28, 28), 10)
    assert arch_id(plan) == "c820844620337423"
    plan.name = "Renamed"
    assert arch_id(plan) == arch_id(basic_plan((1, 28, 28), 10))
    assert arch_id(basic_plan((1, 8, 8), 10)) != arch_id(plan)


# --- bounds and a zoo never half written (issue 12, case 16) ---------------------------------------
@pytest.mark.parametrize("classes", [1, 0, -3, 100_001])
def test_class_counts_outside_2_to_the_limit_are_refused(tmp_path, classes):
    with pytest.raises(SpecError, match=rf"classes: {classes} is not allowed; give 2 <= classes <= 10000"):
        generate_zoo(TINY, input_shape=(1, 8, 8), classes=classes, out=tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize("args, expected", [
    (["--input-shape", "1x8x8", "--classes", "1"], "classes: 1 is not allowed"),
    (["--seed", "-1"], "seed: -1 is not allowed"),
    (["--seed", str(2**64)], f"seed: {2**64} is not allowed"),
    (["--input-shape", "1x100000x100000"], "input shape 1x100000x100000 has 10000000000 pixels"),
])
def test_cli_generate_refuses_out_of_range_values_in_one_line(tmp_path, capsys, monkeypatch, args, expected):
    from cli_run import netzoo, one_line_error

    ran = netzoo(["generate", "--spec", TINY, "--out", tmp_path / "z", "--quiet", *args], capsys, monkeypatch)
    assert expected in one_line_error(ran)
    assert not (tmp_path / "z").exists()


def test_an_empty_network_selection_is_refused(tmp_path):
    with pytest.raises(SpecError, match="no network selected"):
        generate_zoo(TINY, out=tmp_path / "z", progress=False, networks=[])


def _fail_on_third_network(monkeypatch):
    calls = []
    real = generate.check_network

    def check(model, name, *args):
        calls.append(name)
        if len(calls) == 3:
            raise GenerationError(f"{name}: planted failure")
        return real(model, name, *args)

    monkeypatch.setattr(generate, "check_network", check)


def test_generation_that_fails_midway_leaves_no_half_written_zoo(tmp_path, monkeypatch):
    _fail_on_third_network(monkeypatch)
    with pytest.raises(GenerationError, match="planted failure"):
        generate_zoo(TINY, out=tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_regeneration_keeps_the_previous_zoo_and_the_users_own_files(tmp_path, monkeypatch):
    out = tmp_path / "z"
    generate_zoo(TINY, out=out, progress=False)
    (out / "notes.txt").write_text("mine")
    (out / "helper.py").write_text("# my own helper\n")
    before = _digest(out)
    _fail_on_third_network(monkeypatch)
    with pytest.raises(GenerationError, match="planted failure"):
        generate_zoo(TINY, seed=1, out=out, progress=False)
    assert _digest(out) == before and [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    generate_zoo(TINY, seed=1, out=out, progress=False)  # a good run replaces the zoo, keeps the user's files
    assert (out / "notes.txt").read_text() == "mine" and (out / "helper.py").is_file()
    assert set(read_manifest(out)["seed"]) == {1}


def test_out_that_is_a_file_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    from cli_run import netzoo, one_line_error

    (tmp_path / "z").write_text("not a folder")
    line = one_line_error(netzoo(["generate", "--spec", TINY, "--out", tmp_path / "z", "--quiet"], capsys, monkeypatch))
    assert "is not a folder" in line and (tmp_path / "z").read_text() == "not a folder"


def test_disk_full_while_writing_a_zoo_is_one_line_and_leaves_the_folder_as_it_was(tmp_path, capsys, monkeypatch):
    import errno

    from cli_run import netzoo, one_line_error

    real = Path.write_bytes

    def full(self, data):
        if self.suffix == ".py" and "LinearReLU" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    line = one_line_error(netzoo(["generate", "--spec", TINY, "--out", tmp_path / "z", "--quiet"], capsys, monkeypatch))
    assert "No space left on device" in line and "--out" in line
    assert list(tmp_path.iterdir()) == []


def test_a_network_too_large_to_build_is_refused_before_anything_is_written(tmp_path):
    spec = tmp_path / "huge.toml"
    spec.write_text("basic = false\n[families.Linear]\ncounts = { ReLU = 1 }\n"
                    "grid = { hidden_layers = [63], width = [8192] }\n")
    with pytest.raises(SpecError, match=r"LinearReLU_1 would hold \d+ weights; allowed: at most 100000000.*width"):
        generate_zoo(spec, out=tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()


def test_a_network_whose_activations_do_not_fit_is_refused(tmp_path):
    spec = tmp_path / "wide.toml"
    spec.write_text("basic = false\n[families.Conv2d]\ncounts = { ReLU = 1 }\ndepth = 2\nchannels = [1024, 1024]\n"
                    "kernel = [1, 1]\n")
    with pytest.raises(SpecError, match=r"Conv2dReLU_1 would hold \d+ activation values per input; allowed: at most"):
        generate_zoo(spec, input_shape=(1, 2048, 2048), out=tmp_path / "z", progress=False)
    assert not (tmp_path / "z").exists()
