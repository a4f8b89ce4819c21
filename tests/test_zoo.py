"""The zoo as a registry: list by wildcard in natural order, load by name, describe; the CLI over it."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from torch import nn

from netzoo.cli import cli
from netzoo.errors import UnknownNetworkError
from netzoo.zoo import describe_network, list_networks, load_network, natural_key, read_manifest

TINY = Path(__file__).parent / "data" / "tiny.toml"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The tiny spec rendered through the CLI, as a user would."""
    out = tmp_path_factory.mktemp("zoo")
    result = CliRunner().invoke(cli, ["generate", "--spec", str(TINY), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_natural_sort_puts_2_before_10():
    assert sorted(["LinearReLU_10", "LinearReLU_2", "Basic"], key=natural_key) == \
        ["Basic", "LinearReLU_2", "LinearReLU_10"]


def test_list_networks_takes_comma_separated_wildcards(zoo):
    frame = list_networks(zoo, "Linear*,Conv2d*")
    assert list(frame["network"]) == ["Conv2dTanh_1", "Conv2dThenLinearReLU_1", "LinearNone_1", "LinearReLU_1"]
    assert len(list_networks(zoo)) == len(read_manifest(zoo)) == 8


def test_unknown_network_suggests_the_close_names(zoo):
    with pytest.raises(UnknownNetworkError, match="Unknown network 'LinearRelu_1'.*Did you mean 'LinearReLU_1'"):
        load_network(zoo, "LinearRelu_1")
    with pytest.raises(UnknownNetworkError, match="netzoo zoo list"):
        list_networks(zoo, "Conv9d*")


def test_missing_zoo_says_how_to_generate_it(tmp_path):
    with pytest.raises(UnknownNetworkError, match="Run: netzoo generate --out"):
        read_manifest(tmp_path / "nowhere")


def test_load_network_builds_the_class_named_like_its_file(zoo):
    model = load_network(zoo, "ResNetStyleReLU_1")
    assert isinstance(model, nn.Module) and type(model).__name__ == "ResNetStyleReLU_1"


def test_describe_network_shows_costs_and_source(zoo):
    text = describe_network(zoo, "Basic")
    row = read_manifest(zoo).set_index("network").loc["Basic"]
    assert f"params      {row['params']:,}" in text and "class Basic(nn.Module):" in text


def test_cli_zoo_list_prints_matching_networks_and_their_costs(zoo):
    result = CliRunner().invoke(cli, ["zoo", "list", "Linear*", "--zoo", str(zoo)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["network", "family", "activation", "depth", "params", "memory", "ops", "macs"]
    assert lines[1].split()[0] == "LinearNone_1" and lines[-1] == "2 networks"


def test_cli_zoo_show_prints_the_source(zoo):
    result = CliRunner().invoke(cli, ["zoo", "show", "Conv2dTanh_1", "--zoo", str(zoo)])
    assert result.exit_code == 0, result.output
    assert "family      Conv2d" in result.output and "class Conv2dTanh_1(nn.Module):" in result.output


def test_loaded_network_pickles_and_deep_copies(zoo):
    import copy
    import pickle

    model = load_network(zoo, "LinearReLU_1")
    assert type(pickle.loads(pickle.dumps(model))).__name__ == "LinearReLU_1"
    assert type(copy.deepcopy(model)).__name__ == "LinearReLU_1"


# --- a zoo folder is code: each file checked against its manifest hash (issue 12, A2 and case 15) -----
def _copy(zoo, tmp_path):
    import shutil

    return Path(shutil.copytree(zoo, tmp_path / "copy"))


def test_manifest_records_each_files_sha256(zoo):
    import hashlib

    manifest = read_manifest(zoo)
    for _, row in manifest.iterrows():
        assert row["file_sha256"] == hashlib.sha256((zoo / row["file"]).read_bytes()).hexdigest()


def test_a_file_edited_after_generation_is_refused_naming_it_and_the_fix(zoo, tmp_path, monkeypatch):
    from netzoo.errors import ZooError

    copy = _copy(zoo, tmp_path)
    monkeypatch.chdir(tmp_path)
    with (copy / "LinearReLU_1.py").open("a") as f:
        f.write("open('MARKER', 'w')\n")
    for load in (load_network,):  # the one loader: the trainer's tasks build networks through it too
        with pytest.raises(ZooError) as info:
            load(copy, "LinearReLU_1")
        message = str(info.value)
        assert str(copy / "LinearReLU_1.py") in message and "sha256" in message and "\n" not in message
        assert f"netzoo generate --spec {TINY} --seed 0 --input-shape 1x8x8 --classes 10 --out {copy}" in message
    assert not (tmp_path / "MARKER").exists()
    assert type(load_network(copy, "Basic")).__name__ == "Basic"  # the untouched files still load


def test_a_zoo_without_recorded_hashes_is_refused_with_the_fix(zoo, tmp_path):
    import pyarrow.parquet as pq

    from netzoo.errors import ZooError

    copy = _copy(zoo, tmp_path)
    table = pq.read_table(copy / "manifest.parquet")
    pq.write_table(table.drop_columns(["file_sha256"]), copy / "manifest.parquet")
    assert len(list_networks(copy)) == 8  # listing runs no code
    with pytest.raises(ZooError, match="records no sha256.*netzoo generate"):
        load_network(copy, "Basic")


@pytest.mark.parametrize("command", [["zoo", "list"], ["zoo", "show", "Basic"]])
def test_cli_zoo_list_and_show_refuse_a_truncated_manifest_in_one_line(zoo, tmp_path, capsys, monkeypatch, command):
    from cli_run import netzoo, one_line_error

    copy = _copy(zoo, tmp_path)
    data = (copy / "manifest.parquet").read_bytes()
    (copy / "manifest.parquet").write_bytes(data[: len(data) // 2])
    line = one_line_error(netzoo([*command, "--zoo", copy], capsys, monkeypatch))
    assert str(copy / "manifest.parquet") in line and "damaged" in line and "netzoo generate" in line


def test_zoo_show_names_the_files_hash(zoo):
    text = describe_network(zoo, "Basic")
    assert f"sha256      {read_manifest(zoo).set_index('network').at['Basic', 'file_sha256']}" in text


def test_check_files_names_the_first_edited_file_before_anything_runs(zoo, tmp_path):
    from netzoo.errors import ZooError
    from netzoo.zoo import check_files

    copy = _copy(zoo, tmp_path)
    check_files(copy)  # a fresh zoo passes
    with (copy / "Conv2dTanh_1.py").open("a") as f:
        f.write("# an edit\n")
    check_files(copy, names=["Basic", "LinearReLU_1"])  # the edited file is not among these
    with pytest.raises(ZooError, match=r"Conv2dTanh_1\.py: its sha256 differs"):
        check_files(copy)


def test_a_missing_network_file_is_one_line_naming_it_and_the_fix(zoo, tmp_path, capsys, monkeypatch):
    from cli_run import netzoo, one_line_error
    from netzoo.errors import ZooError

    copy = _copy(zoo, tmp_path)
    (copy / "Basic.py").unlink()
    line = one_line_error(netzoo(["zoo", "show", "Basic", "--zoo", copy], capsys, monkeypatch))
    assert str(copy / "Basic.py") in line and "is missing" in line and "netzoo generate" in line
    with pytest.raises(ZooError, match="Basic.py is missing"):
        load_network(copy, "Basic")
