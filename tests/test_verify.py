"""Damaged, truncated and inconsistent results are found by one rule that verify, status, load, train and
compact share: a key counts only when every one of its files is whole (issue 12, section C)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from netzoo.results import completed_keys, load, part_name
from netzoo.jobs import plan
from netzoo.runner import run_job
from netzoo.status import status_table
from zoo_fixture import digits_job, make_zoo

NETWORKS = ("Basic", "LinearTanh_1")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"), names=NETWORKS)


@pytest.fixture(scope="module")
def pristine(zoo, tmp_path_factory):
    """Basic and LinearTanh_1 trained one epoch on digits: a whole results folder to copy and damage."""
    results = tmp_path_factory.mktemp("pristine")
    summary = run_job(digits_job(zoo, results, epochs=1))
    assert summary.count("done") == 2
    return results


@pytest.fixture
def results(pristine, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(pristine, copy)
    return copy


def _job(zoo, results):
    return digits_job(zoo, results, epochs=1)


def overwrite_middle(path, count=63):
    """Overwrite ``count`` bytes in the middle of a Parquet file's pages; its footer stays intact."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    middle = (len(data) - footer) // 2
    noise = np.random.default_rng(0).integers(0, 256, count, dtype=np.uint8).tobytes()
    data[middle:middle + count] = noise
    assert len(data) - middle - count > footer
    path.write_bytes(bytes(data))


def overwrite_column(path, column: str, count: int = 4):
    """Overwrite the last ``count`` bytes of a column's chunk (its last page's values: what a page checksum covers;
    the middle of a small file may fall in a page header's statistics, which no reader uses)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    data = bytearray(path.read_bytes())
    data[end - count:end] = bytes(255 - b for b in data[end - count:end])
    path.write_bytes(bytes(data))


def networks_of(tables) -> dict[str, set]:
    return {t: set(getattr(tables, t)["network"]) for t in ("networks", "epochs", "predictions", "layers")}


def whole(results) -> list:
    from netzoo.verify import verify

    return verify(results)


def test_overwritten_bytes_in_an_epochs_part_are_found_never_read_and_retrained(zoo, results):
    job = _job(zoo, results)
    key = ("Basic", job.recipe.hash, 42)
    overwrite_middle(results / "epochs" / part_name(key))
    assert key not in completed_keys(results)
    seen = networks_of(load(results))
    assert all("Basic" not in names for names in seen.values()), seen  # none of its rows, in any table
    (problem,) = whole(results)
    assert problem.key == key and problem.kind == "damaged" and "epochs" in problem.what
    assert [t.key for t in plan(job)] == [key]  # train retrains what verify reports
    summary = run_job(job)
    assert [(o.network, o.status) for o in summary.outcomes] == [("Basic", "done")]
    assert whole(results) == []
    assert len(pd.read_parquet(results / "epochs")) == 2  # plain pandas reads the folder again


def test_truncated_predictions_part_counts_as_incomplete_in_status_load_and_train(zoo, results):
    job = _job(zoo, results)
    key = ("Basic", job.recipe.hash, 42)
    part = results / "predictions" / part_name(key)
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    total = status_table(results).set_index("family").loc["total"]
    assert (total["done"], total["left"]) == (1, 1)  # status agrees with train: Basic is left
    seen = networks_of(load(results))
    assert seen["networks"] == seen["epochs"] == seen["predictions"] == {"LinearTanh_1"}
    assert [p.key for p in whole(results)] == [key]
    assert [t.key for t in plan(job)] == [key]
    run_job(job)
    assert whole(results) == [] and completed_keys(results) == {(n, job.recipe.hash, 42) for n in NETWORKS}


def test_damaged_networks_part_makes_its_key_incomplete(zoo, results):
    job = _job(zoo, results)
    key = ("LinearTanh_1", job.recipe.hash, 42)
    overwrite_column(results / "networks" / part_name(key), "recipe_json")
    assert [t.key for t in plan(job)] == [key]
    assert set(load(results).networks["network"]) == {"Basic"}


def test_a_damaged_compact_file_makes_its_keys_incomplete_everywhere(zoo, results):
    from netzoo.compact import compact_results

    job = _job(zoo, results)
    compact_results(results)
    (compacted,) = (results / "predictions").glob("compact-*.parquet")
    overwrite_middle(compacted)
    keys = {(n, job.recipe.hash, 42) for n in NETWORKS}
    assert completed_keys(results) == set()
    total = status_table(results).set_index("family").loc["total"]
    assert total["left"] == 2 and total["done"] == 0
    assert load(results).networks.empty and load(results).epochs.empty
    assert {p.key for p in whole(results)} == keys
    assert {t.key for t in plan(job)} == keys
    run_job(job)
    assert whole(results) == []
    tables = load(results)
    assert sorted(tables.networks["network"]) == sorted(NETWORKS) and len(tables.predictions) == 2 * 360
    assert len(pd.read_parquet(results / "predictions")) == 2 * 360  # the damaged file is out of the way


def test_verify_cli_prints_one_line_per_bad_key_then_a_summary(zoo, results, capsys, monkeypatch):
    from cli_helpers import run_main

    job = _job(zoo, results)
    assert run_main(monkeypatch, capsys, "verify", "--results", str(results))[0] == 0
    part = results / "predictions" / part_name(("Basic", job.recipe.hash, 42))
    part.write_bytes(part.read_bytes()[:100])
    code, out, err = run_main(monkeypatch, capsys, "verify", "--results", str(results))
    lines = out.strip().splitlines()
    assert code == 1 and len(lines) == 2, out
    assert lines[0].startswith(f"Basic seed 42 recipe {job.recipe.hash}: ") and "predictions" in lines[0]
    assert "1 of 2" in lines[1]


def test_parts_are_written_with_page_checksums_plain_pandas_can_check(results):
    (part,) = (results / "epochs").glob("Basic--*.parquet")
    column = pq.ParquetFile(part).metadata.row_group(0).column(8)  # test_loss: a float page
    end = (column.dictionary_page_offset or column.data_page_offset) + column.total_compressed_size
    data = bytearray(part.read_bytes())
    data[end - 3] ^= 0xFF  # one flipped byte inside the page's data, its header intact
    part.write_bytes(bytes(data))
    with pytest.raises(OSError, match="CRC|checksum"):
        pd.read_parquet(part, page_checksum_verification=True)


@pytest.mark.parametrize("damage", ["a compact predictions file", "a weights file"])
def test_plain_pandas_reads_each_row_once_after_a_compacted_key_is_trained_again(zoo, results, damage):
    """A compacted key trained again (one of its files damaged) leaves no old rows in the other tables'
    compact files: plain pandas, like load, sees every row once."""
    from netzoo.compact import compact_results
    from netzoo.results import weights_file

    job = _job(zoo, results)
    compact_results(results)
    if damage == "a compact predictions file":
        (compacted,) = (results / "predictions").glob("compact-*.parquet")
        overwrite_middle(compacted)
    else:
        path = results / weights_file(("Basic", job.recipe.hash, 42), 1)
        path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    assert whole(results) != []
    run_job(job)
    assert whole(results) == []
    tables = load(results)
    for table, rows in (("networks", ["network", "recipe_hash", "seed"]),
                        ("epochs", ["network", "recipe_hash", "seed", "epoch"]),
                        ("predictions", ["network", "recipe_hash", "seed", "epoch", "sample"])):
        plain = pd.read_parquet(results / table)
        assert not plain.duplicated(rows).any(), f"{table}: a retrained key's old rows are still read"
        assert len(plain) == len(getattr(tables, table)), table
    if damage == "a compact predictions file":  # every key of that compaction left it: no index is left behind
        assert not list((results / "predictions").glob(".compact-*.json"))
    compact_results(results)  # and once its new parts are merged too
    assert whole(results) == []
    assert not pd.read_parquet(results / "epochs").duplicated(["network", "recipe_hash", "seed", "epoch"]).any()
