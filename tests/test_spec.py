"""Zoo specs: the shipped specs parse to the study's counts; every bad spec stops with one clear message."""

from pathlib import Path

import pytest

from netzoo.errors import SpecError
from netzoo.generate import check_feasible, plan_zoo
from netzoo.families import spec_families
from netzoo.spec import ACTIVATIONS, load_spec, shipped_specs

DATA = Path(__file__).parent / "data"

# The study's counts per (family, activation) cell: 1000 networks + Basic.
DEFAULT_COUNTS = {
    "Linear": [55, 23, 24, 25, 23],
    "Conv1d": [59, 23, 24, 21, 23],
    "Conv2d": [61, 23, 23, 20, 23],
    "Conv3d": [57, 23, 23, 22, 25],
    "Conv1dThenLinear": [34, 17, 17, 17, 15],
    "Conv2dThenLinear": [38, 14, 16, 16, 16],
    "Conv3dThenLinear": [33, 18, 16, 18, 15],
    "ResNetStyle": [0, 100, 0, 0, 0],
}


def _cell_counts(plans):
    counts = {}
    for plan in plans:
        counts[(plan.family, plan.activation)] = counts.get((plan.family, plan.activation), 0) + 1
    return counts


def test_shipped_specs_include_default_square_and_the_study_specs():
    assert {"default", "square", "variance", "depth-width", "deep-mlp"} <= set(shipped_specs())


def test_default_spec_has_the_studys_counts_per_cell():
    spec = load_spec("default")
    assert spec.count() == 1001
    plans = plan_zoo(spec, (1, 8, 8), 10, spec.seed)
    counts = _cell_counts(plans)
    assert counts.pop(("Basic", "None")) == 1
    expected = {(f, a): n for f, row in DEFAULT_COUNTS.items() for a, n in zip(ACTIVATIONS, row) if n}
    assert counts == expected


def test_square_spec_fills_every_family_activation_cell():
    spec = load_spec("square")
    plans = plan_zoo(spec, (1, 8, 8), 10, spec.seed)
    counts = _cell_counts(plans)
    assert counts.pop(("Basic", "None")) == 1
    assert set(counts) == {(f, a) for f in spec_families() for a in ACTIVATIONS}
    assert set(counts.values()) == {25} and len(plans) == 1001


def test_variance_spec_is_one_hidden_layer_relu_mlps_on_a_log_width_grid():
    plans = plan_zoo(load_spec("variance"), (1, 8, 8), 10, 0)
    widths = [plan.layers[0]["out"] for plan in plans]
    assert widths == sorted(set(widths)) and widths[0] == 1 and widths[-1] == 2048 and len(widths) >= 28
    for plan in plans:
        assert [layer["type"] for layer in plan.layers] == ["Linear", "Linear"]
        assert plan.activation == "ReLU" and plan.layers[0]["act"] and not plan.layers[1]["act"]


def test_depth_width_spec_crosses_hidden_layers_and_widths_with_batch_norm():
    plans = plan_zoo(load_spec("depth-width"), (1, 8, 8), 10, 0)
    grid = {(len(plan.layers) - 1, plan.layers[0]["out"]) for plan in plans}
    assert grid == {(d, w) for d in (1, 2, 6, 10) for w in (8, 16, 32, 64)}
    assert all(plan.batch_norm for plan in plans)
    assert all({layer["out"] for layer in plan.layers[:-1]} == {plan.layers[0]["out"]} for plan in plans)


def test_deep_mlp_spec_is_60_layers_with_relu_and_sigmoid():
    plans = plan_zoo(load_spec("deep-mlp"), (1, 8, 8), 10, 0)
    assert {plan.activation for plan in plans} == {"ReLU", "Sigmoid"}
    assert all(len(plan.layers) == 60 and all(layer["act"] for layer in plan.layers[:-1]) for plan in plans)


@pytest.mark.parametrize("file, expected", [
    ("bad_unknown_family.toml", ["families.Conv5d", "unknown family 'Conv5d'", "allowed: Linear, Conv1d"]),
    ("bad_unknown_activation.toml", ["families.Conv2d.counts", "unknown activation 'ReLU6'",
                                     "allowed: None, ReLU, SELU, Sigmoid, Tanh"]),
    ("bad_negative_count.toml", ["families.Linear.counts.ReLU", "-2", "count >= 0"]),
    ("bad_empty_range.toml", ["families.Linear.width", "[128, 10]", "empty range", "low <= high"]),
    ("bad_syntax.toml", ["TOML syntax error", "line 1"]),
    ("bad_unknown_key.toml", ["families.Linear.widths", "unknown key", "allowed here: counts, depth, width"]),
])
def test_bad_spec_names_the_file_the_key_and_what_is_allowed(file, expected):
    with pytest.raises(SpecError) as info:
        load_spec(DATA / file)
    message = str(info.value)
    assert message.startswith(str(DATA / file))
    for part in expected:
        assert part in message
    assert "\n" not in message


def test_range_no_network_of_the_input_shape_can_satisfy_is_refused_for_that_shape_only():
    spec = load_spec(DATA / "bad_kernel_too_large.toml")
    with pytest.raises(SpecError) as info:
        check_feasible(spec, (1, 8, 8), 10)
    message = str(info.value)
    for part in ("bad_kernel_too_large.toml", "families.Conv2d.kernel", "[9, 12]", "1x8x8", "allowed: kernel low <= 4"):
        assert part in message
    check_feasible(spec, (1, 28, 28), 10)  # a 28 side fits kernels of 9 at depth 3


def test_resnet_stem_kernel_that_cannot_fit_the_side_is_refused(tmp_path):
    path = tmp_path / "stem.toml"
    path.write_text("[families.ResNetStyle]\ncounts = { ReLU = 1 }\nstem_kernel = [30, 40]\n")
    with pytest.raises(SpecError, match=r"families\.ResNetStyle\.stem_kernel: \[30, 40\]"):
        check_feasible(load_spec(path), (1, 28, 28), 10)


def test_unknown_spec_name_lists_the_shipped_specs():
    with pytest.raises(SpecError, match="Unknown spec 'defualt'.*default, depth-width"):
        load_spec("defualt")


def test_probability_out_of_range_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("dropout = 1.5\n[families.Linear]\ncounts = { ReLU = 1 }\n")
    with pytest.raises(SpecError, match=r"dropout: 1.5 is not allowed; give a probability in \[0, 1\)"):
        load_spec(path)


def _spec(tmp_path, text: str):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_spec_whose_counts_are_all_zero_is_refused_as_rendering_nothing(tmp_path):
    path = _spec(tmp_path, "basic = false\n[families.Linear]\ncounts = { ReLU = 0, None = 0 }\n")
    with pytest.raises(SpecError, match=r"renders no network.*counts"):
        load_spec(path)


@pytest.mark.parametrize("table, key, allowed", [
    ("depth = [2, 100000]", "families.Linear.depth", "<= 64"),
    ("depth = 100000", "families.Linear.depth", "<= 64"),
    ("width = [10, 1000000]", "families.Linear.width", "<= 8192"),
    ("counts = { ReLU = 100000000 }", "families.Linear.counts.ReLU", "<= 100000"),
    ("grid = { hidden_layers = [1000], width = [8] }", "families.Linear.grid.hidden_layers", "<= 63"),
    ("grid = { hidden_layers = [1], width = [10000000] }", "families.Linear.grid.width", "<= 8192"),
])
def test_linear_values_beyond_their_limit_are_refused_naming_it(tmp_path, table, key, allowed):
    counts = "" if table.startswith("counts") else "counts = { ReLU = 1 }\n"
    with pytest.raises(SpecError) as info:
        load_spec(_spec(tmp_path, f"[families.Linear]\n{counts}{table}\n"))
    assert key in str(info.value) and allowed in str(info.value)


@pytest.mark.parametrize("key, value, allowed", [
    ("channels", "[10, 100000]", "<= 1024"), ("stem_channels", "[10, 100000]", "<= 1024"),
    ("blocks", "[1, 1000]", "<= 32"), ("convs", "[1, 1000]", "<= 16"), ("linears", "[1, 1000]", "<= 32"),
    ("kernel", "[1, 100000]", "<= 10000"), ("stem_kernel", "[1, 100000]", "<= 10000"),
])
def test_resnet_values_beyond_their_limit_are_refused_naming_it(tmp_path, key, value, allowed):
    with pytest.raises(SpecError) as info:
        load_spec(_spec(tmp_path, f"[families.ResNetStyle]\ncounts = {{ ReLU = 1 }}\n{key} = {value}\n"))
    assert f"families.ResNetStyle.{key}" in str(info.value) and allowed in str(info.value)


def test_conv_layers_beyond_their_limit_are_refused(tmp_path):
    with pytest.raises(SpecError, match=r"families\.Conv2dThenLinear\.conv_layers.*<= 63"):
        load_spec(_spec(tmp_path, "[families.Conv2dThenLinear]\ncounts = { ReLU = 1 }\nconv_layers = [1, 500]\n"))


def test_spec_of_more_networks_than_the_limit_is_refused(tmp_path):
    cells = ", ".join(f"{a} = 30000" for a in ACTIVATIONS)
    with pytest.raises(SpecError, match=r"150001 networks.*at most 100000"):
        load_spec(_spec(tmp_path, f"[families.Linear]\ncounts = {{ {cells} }}\n"))


@pytest.mark.parametrize("seed", [-1, 2**63, 10**30])
def test_seed_outside_the_manifests_int64_is_refused(tmp_path, seed):
    with pytest.raises(SpecError, match=r"seed: .* give an integer in \[0, 9223372036854775807\]"):
        load_spec(_spec(tmp_path, f"seed = {seed}\n[families.Linear]\ncounts = {{ ReLU = 1 }}\n"))


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5"])
def test_probabilities_that_are_not_numbers_in_range_are_refused(tmp_path, value):
    with pytest.raises(SpecError, match="bias_probability"):
        load_spec(_spec(tmp_path, f"bias_probability = {value}\n[families.Linear]\ncounts = {{ ReLU = 1 }}\n"))


def test_shipped_specs_stay_within_the_limits():
    for name in shipped_specs():
        load_spec(name)
