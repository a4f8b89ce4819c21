"""Trained weights: safetensors files per run and epoch, a key whole only with them, and the way back to a module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from netzoo import weights as w
from netzoo.errors import ResultsError
from netzoo.recipe import STUDY
from netzoo.results import load_network, part_name, quarantine, scan, weights_file, write_part
from netzoo.runner import run_job
from netzoo.schema import NETWORKS
from zoo_fixture import digits_job, make_zoo

RECIPE = STUDY.replace(epochs=2).hash
KEY = ("LinearReLU_1", RECIPE, 42)


def attach(results: Path, key, states: dict, dtype: str = "float32") -> dict:
    """Write ``states`` as the key's weights, then its networks part again with the weights columns (the order
    a run that saves its weights writes them in)."""
    row = pq.read_table(results / "networks" / part_name(key)).to_pylist()[0]
    columns = w.write_weights(results, key, states, dtype)
    write_part(results, "networks", pa.Table.from_pylist([{**row, **columns}], schema=NETWORKS), key, 10)
    return columns


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    zoo = make_zoo(root / "zoo", names=("Basic", "LinearReLU_1"))
    results = root / "results"
    run_job(digits_job(zoo, results))
    return results


@pytest.fixture
def results(trained, tmp_path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(trained, copy)
    return copy


def states_of(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.Linear(32, 10))
    return model.state_dict()


def test_weights_round_trip_exactly_in_float32_and_within_rounding_in_float16(results):
    state = states_of()
    attach(results, KEY, {2: state})
    back = load_file(results / weights_file(KEY, 2))
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    columns = attach(results, KEY, {2: state}, "float16")
    half = load_file(results / columns["weights_file"])
    assert half["0.weight"].dtype == torch.float16 and half["1.num_batches_tracked"].dtype == torch.int64
    assert torch.allclose(half["0.weight"].float(), state["0.weight"], rtol=1e-3, atol=1e-4)
    assert columns["weights_bytes"] == (results / columns["weights_file"]).stat().st_size
    assert columns["weights_epochs"] == [2] and columns["weights_dtype"] == "float16"


def test_a_weights_file_is_safetensors_with_its_run_in_the_header(results):
    from safetensors import safe_open

    attach(results, KEY, {2: states_of()})
    with safe_open(str(results / weights_file(KEY, 2)), "pt") as f:
        assert f.metadata() == {"network": "LinearReLU_1", "recipe_hash": RECIPE, "seed": "42", "epoch": "2",
                                "dtype": "float32", "written_by": "netzoo"}
    assert not (results / weights_file(KEY, 2)).read_bytes().startswith(b"\x80")  # not a pickle


def test_a_key_is_whole_only_while_its_weights_are(results):
    attach(results, KEY, {1: states_of(1), 2: states_of(2)})
    assert KEY in scan(results, fresh=True).complete
    path = results / weights_file(KEY, 1)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped in a tensor
    problem = next(p for p in scan(results, fresh=True).problems if p.key == KEY)
    assert problem.kind == "damaged" and "epoch 1" in problem.what and problem.files == (path,)
    quarantine(results, [problem])
    problem = next(p for p in scan(results, fresh=True).problems if p.key == KEY)
    assert problem.kind == "incomplete" and "no weights file for epoch 1" in problem.what and "damaged" in problem.what
    assert KEY not in scan(results, fresh=True).complete and ("Basic", RECIPE, 42) in scan(results).complete


def test_writing_weights_unmarks_the_key_until_its_networks_part_is_written_again(results):
    w.write_weights(results, KEY, {2: states_of()})
    assert not (results / "networks" / part_name(KEY)).exists() and KEY not in scan(results, fresh=True).complete


def test_weights_of_a_run_trained_again_replace_the_old_ones(results):
    attach(results, KEY, {1: states_of(1), 2: states_of(2)})
    columns = attach(results, KEY, {2: states_of(3)})
    folder = (results / weights_file(KEY, 2)).parent
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-2.safetensors"] and columns["weights_epochs"] == [2]
    assert attach(results, KEY, {}) == w.NO_WEIGHTS and not folder.exists()
    assert KEY in scan(results, fresh=True).complete  # a run saved without weights is whole without them


def test_load_network_refuses_bad_input_with_one_line_naming_the_fix(results):
    attach(results, KEY, {2: states_of()})
    cases = [
        ({"network": "LinearReLU_9"}, "No trained 'LinearReLU_9'"),
        ({"network": "LinearReLU_1", "seed": 7}, "no run with seed 7 in .*; its seeds: 42"),
        ({"network": "LinearReLU_1", "recipe": "adamw"}, "not trained under recipe 'adamw'"),
        ({"network": "LinearReLU_1", "epoch": 1}, "no weights saved for epoch 1; saved epochs: 2"),
        ({"network": "Basic"}, "without saving its weights (--save-weights none)"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ResultsError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
            load_network(results, **kwargs)
        assert "\n" not in str(info.value)
