"""Trained weights: safetensors files per run and epoch, a key whole only with them, and the way back to a module."""

from __future__ import annotations

import json
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
    run_job(digits_job(zoo, results, save_weights="none"))  # each test attaches the weights it needs
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
        assert json.loads(f.metadata()["netzoo"]) == {"network": "LinearReLU_1", "recipe_hash": RECIPE, "seed": 42,
                                                      "epoch": 2, "dtype": "float32"}
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


# --- end to end: netzoo train keeps the weights, verify and train hold the rule, load_network rebuilds -----------
# The smallest network of each family of the default digits zoo (one per family, activations mixed).
FAMILY_NETWORKS = ["Basic", "Conv1dSELU_1", "Conv1dThenLinearTanh_1", "Conv2dSigmoid_17", "Conv2dThenLinearNone_9",
                   "Conv3dReLU_2", "Conv3dThenLinearSELU_11", "LinearTanh_16", "ResNetStyleReLU_92"]


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> tuple[Path, Path]:
    """One network per family of the default zoo, trained 2 epochs on digits keeping every epoch's weights."""
    from netzoo.generate import generate_zoo
    from netzoo.jobs import TrainJob

    root = tmp_path_factory.mktemp("families")
    generate_zoo(spec="default", dataset="digits", out=root / "zoo", progress=False, networks=FAMILY_NETWORKS)
    job = TrainJob(zoo=root / "zoo", results=root / "results", dataset="digits", recipe=STUDY.replace(epochs=2),
                   workers=1, devices=("cpu",), quiet=True, save_weights="every")
    assert run_job(job).failed == 0
    return root / "zoo", root / "results"


@pytest.mark.parametrize("network", FAMILY_NETWORKS)
@pytest.mark.parametrize("epoch", [1, "last"])
def test_a_loaded_network_reproduces_its_stored_test_predictions(families, network, epoch):
    import numpy as np

    from netzoo.datasets import load_dataset
    from netzoo.results import load

    _, results = families
    model = load_network(results, network, epoch=epoch)
    assert not model.training
    x_test = load_dataset("digits").x_test
    with torch.inference_mode():
        log_probs = model(x_test).double().numpy()
    stored = load(results, tables="predictions", epoch=2 if epoch == "last" else epoch).predictions
    stored = stored[stored["network"] == network].sort_values("sample")
    assert (log_probs.argmax(1) == stored["pred"].to_numpy(np.int64)).all()  # the same class for every sample
    probs = np.stack(stored["probs"].to_numpy()).astype(np.float64)
    assert np.allclose(probs, np.exp(log_probs), rtol=2 ** -10, atol=2 ** -14)  # within float16 rounding


def test_every_run_keeps_its_weights_and_the_networks_table_records_them(families):
    from netzoo.results import load

    _, results = families
    networks = load(results, tables="networks").networks.set_index("network")
    for network in FAMILY_NETWORKS:
        row = networks.loc[network]
        key = (network, RECIPE, 42)
        assert row["weights_file"] == weights_file(key, 2) and list(row["weights_epochs"]) == [1, 2]
        assert row["weights_bytes"] == (results / row["weights_file"]).stat().st_size and row["weights_dtype"] == "float32"
        state = load_file(str(results / row["weights_file"]))
        assert sum(t.numel() for n, t in state.items() if "running" not in n and "num_batches" not in n) == row["params"]


def test_a_float16_network_predicts_as_its_float32_one_nearly_everywhere(families, tmp_path):
    from netzoo.jobs import TrainJob

    zoo, results = families
    job = TrainJob(zoo=zoo, results=tmp_path / "half", dataset="digits", recipe=STUDY.replace(epochs=2), workers=1,
                   devices=("cpu",), quiet=True, networks="Conv2dSigmoid_17,ResNetStyleReLU_92", weights_dtype="float16")
    run_job(job)
    from netzoo.datasets import load_dataset

    x_test = load_dataset("digits").x_test
    for network in ("Conv2dSigmoid_17", "ResNetStyleReLU_92"):
        half, full = load_network(tmp_path / "half", network), load_network(results, network)
        assert (tmp_path / "half" / weights_file((network, RECIPE, 42), 2)).stat().st_size < \
            0.6 * (results / weights_file((network, RECIPE, 42), 2)).stat().st_size
        with torch.inference_mode():
            agree = (half(x_test).argmax(1) == full(x_test).argmax(1)).float().mean().item()
        assert agree >= 0.99, (network, agree)


def test_save_weights_none_keeps_no_weights_and_the_keys_are_whole(families, tmp_path, monkeypatch, capsys):
    from cli_helpers import run_main

    zoo, _ = families
    code, out, err = run_main(monkeypatch, capsys, "train", "--zoo", zoo, "--dataset", "digits", "--results",
                              tmp_path / "r", "--epochs", "1", "--networks", "Basic", "--workers", "1", "--device",
                              "cpu", "--save-weights", "none", "--quiet")
    assert code == 0, err
    assert not (tmp_path / "r" / "weights").exists() and len(scan(tmp_path / "r").complete) == 1


def test_save_weights_sometimes_is_refused_by_its_choices(tmp_path, monkeypatch, capsys):
    from cli_helpers import run_main

    code, _, err = run_main(monkeypatch, capsys, "train", "--zoo", tmp_path, "--dataset", "digits", "--results",
                            tmp_path / "r", "--save-weights", "sometimes")
    assert code == 2 and "'sometimes' is not one of 'last', 'every', 'none'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage", ["missing", "one bit flipped"])
def test_a_missing_or_damaged_weights_file_is_reported_and_its_run_trained_again(tmp_path, monkeypatch, capsys, damage):
    from cli_helpers import run_main

    zoo = make_zoo(tmp_path / "zoo", names=("Basic", "LinearReLU_1"))
    results = tmp_path / "results"
    train = ["train", "--zoo", zoo, "--dataset", "digits", "--results", results, "--epochs", "2", "--workers", "1",
             "--device", "cpu", "--quiet"]
    assert run_main(monkeypatch, capsys, *train)[0] == 0
    path = results / weights_file(KEY, 2)
    before = path.read_bytes()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(before[:-1] + bytes([before[-1] ^ 1]))
    code, out, _ = run_main(monkeypatch, capsys, "verify", "--results", results)
    assert code == 1 and f"LinearReLU_1 seed 42 recipe {RECIPE}: " + \
        ("incomplete: no weights file for epoch 2" if damage == "missing" else "damaged: weights file") in out
    code, out, _ = run_main(monkeypatch, capsys, "status", "--results", results)
    assert code == 0
    code, out, _ = run_main(monkeypatch, capsys, *train)
    assert code == 0 and "trained 1 " in out and "1 already complete" in out  # only the damaged run
    assert path.read_bytes() == before  # trained again the same way: the same weights
    assert run_main(monkeypatch, capsys, "verify", "--results", results)[0] == 0


def test_after_compaction_a_key_is_still_whole_only_with_its_weights(tmp_path):
    from netzoo.compact import compact_results

    zoo = make_zoo(tmp_path / "zoo", names=("Basic", "LinearReLU_1"))
    results = tmp_path / "results"
    run_job(digits_job(zoo, results))
    compact_results(results)
    assert not list((results / "networks").glob("*--*.parquet"))  # the rows now live in compact files
    assert KEY in scan(results, fresh=True).complete
    (results / weights_file(KEY, 2)).unlink()
    problem = next(p for p in scan(results, fresh=True).problems if p.key == KEY)
    assert problem.kind == "incomplete" and "no weights file for epoch 2" in problem.what
    run_job(digits_job(zoo, results))
    assert KEY in scan(results, fresh=True).complete and (results / weights_file(KEY, 2)).is_file()
