"""Network names become class names, file names and part names: only the naming grammar gets through."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from cli_run import netzoo, one_line_error
from netzoo.claims import claim_path
from netzoo.errors import NetworkNameError
from netzoo.names import check_network_name
from netzoo.results import part_name
from zoo_fixture import make_zoo

BAD = ["../evil", "../../evil", "a/b", "a\\b", "..", ".hidden", "", "x" * 129, "class", "None", "Basic\n",
       "a b", "a-b", "Lin\x00ear", "LinearReLU_1.py", "é" * 3]


@pytest.mark.parametrize("name", ["Basic", "LinearReLU_1", "Conv2dThenLinearSELU_100", "ResNetStyleNone_7",
                                  "NaNNet_1", "my_net"])
def test_names_of_the_grammar_are_accepted(name):
    assert check_network_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_names_that_could_leave_a_folder_or_a_class_statement_are_refused(name):
    with pytest.raises(NetworkNameError, match="not a network name"):
        check_network_name(name)


@pytest.mark.parametrize("name", ["../../evil", "a/b"])
def test_part_and_claim_paths_refuse_a_name_outside_the_grammar(tmp_path, name):
    with pytest.raises(NetworkNameError):
        part_name((name, "0123456789abcdef", 42))
    with pytest.raises(NetworkNameError):
        claim_path(tmp_path, (name, "0123456789abcdef", 42))


def _zoo_with_a_path_name(tmp_path):
    zoo = make_zoo(tmp_path / "zoo")
    table = pq.read_table(zoo / "manifest.parquet")
    names = [("../../evil" if n == "LinearReLU_1" else n) for n in table["network"].to_pylist()]
    table = table.set_column(table.schema.get_field_index("network"), "network", [names])
    pq.write_table(table, zoo / "manifest.parquet")
    return zoo


def _files_outside(tmp_path, *inside) -> list:
    return sorted(str(p) for p in tmp_path.rglob("*") if p.is_file() and not any(q in p.parents for q in inside))


def test_cli_zoo_list_refuses_a_manifest_with_a_path_for_a_name(tmp_path, capsys, monkeypatch):
    zoo = _zoo_with_a_path_name(tmp_path)
    line = one_line_error(netzoo(["zoo", "list", "--zoo", zoo], capsys, monkeypatch))
    assert "'../../evil'" in line and "netzoo generate" in line


def test_cli_train_refuses_a_manifest_with_a_path_for_a_name_and_writes_nothing_outside_results(
        tmp_path, capsys, monkeypatch):
    zoo = _zoo_with_a_path_name(tmp_path)
    results = tmp_path / "deep" / "results"
    ran = netzoo(["train", "--zoo", zoo, "--dataset", "digits", "--results", results, "--epochs", "1",
                  "--networks", "*evil", "--workers", "1", "--device", "cpu", "--no-lenses", "--quiet"],
                 capsys, monkeypatch)
    assert "'../../evil'" in one_line_error(ran)
    assert _files_outside(tmp_path, zoo, results) == []
