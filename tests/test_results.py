"""Results on disk: schema dtypes, atomic parts, epoch and column selection, compact files, no duplicates."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from netzoo.errors import ResultsError
from netzoo.results import completed_keys, load, part_name, to_frame, write_part
from netzoo.runner import run_job
from netzoo.schema import LAYERS, NETWORKS, PREDICTIONS, epochs_schema
from zoo_fixture import digits_job, make_zoo


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """The generator's tiny spec (Basic + one network per cell over every family) rendered for digits."""
    from netzoo.generate import generate_zoo

    out = tmp_path_factory.mktemp("tiny")
    generate_zoo(spec="tests/data/tiny.toml", dataset="digits", out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(tiny_zoo, tmp_path_factory):
    """The tiny zoo trained 2 epochs on digits with the study's recipe, lenses on."""
    results = tmp_path_factory.mktemp("results")
    summary = run_job(digits_job(tiny_zoo, results, lenses=True))
    return results, summary


def expected_dtypes(schema: pa.Schema) -> pd.Series:
    return to_frame(schema.empty_table(), schema).dtypes


def test_small_zoo_tables_match_the_schema_and_relu_networks_beat_chance(trained):
    results, summary = trained
    assert summary.failed == 0 and summary.count("done") == len(summary.outcomes) >= 8
    tables = load(results)
    for name, schema in [("networks", NETWORKS), ("epochs", epochs_schema(10)), ("predictions", PREDICTIONS),
                         ("layers", LAYERS)]:
        frame = getattr(tables, name)
        assert list(frame.columns) == schema.names, name
        assert frame.dtypes.equals(expected_dtypes(schema)), name
        assert len(frame) > 0, name
    # plain pandas reads every table too
    assert len(pd.read_parquet(results / "epochs")) == len(tables.epochs) == 2 * len(tables.networks)
    last = tables.epochs[tables.epochs["epoch"] == 2].merge(tables.networks[["network", "activation"]])
    relu = last[last["activation"] == "ReLU"]
    assert len(relu) >= 2 and (relu["test_acc"] > 0.5).all()  # chance is 0.1
    probs = tables.predictions["probs"].iloc[0]
    assert probs.dtype == "float16" and len(probs) == 10 and abs(float(probs.astype("float32").sum()) - 1) < 0.02
    assert set(tables.layers["epoch"]) == {1, 2}
    assert tables.networks["peak_memory_bytes"].isna().all() and (tables.networks["device"] == "cpu").all()


def test_load_reads_one_epoch_or_the_last_and_only_the_asked_columns(trained):
    results, _ = trained
    last = load(results, tables=["epochs", "predictions"], epoch="last",
                columns={"predictions": ["network", "seed", "epoch", "pred"]})
    assert set(last.epochs["epoch"]) == {2} and list(last.predictions.columns) == ["network", "seed", "epoch", "pred"]
    assert len(last.predictions) == 360 * len(last.epochs)
    assert last.networks.empty and list(last.layers.columns) == LAYERS.names  # tables not asked: empty, typed
    first = load(results, tables="epochs", epoch=1)
    assert set(first.epochs["epoch"]) == {1}
    with pytest.raises(ResultsError, match="no column"):
        load(results, tables="epochs", columns={"epochs": ["nope"]})


def test_load_reads_compact_files_and_never_returns_a_row_twice_whenever_compaction_is_killed(
        trained, tmp_path, monkeypatch):
    import shutil

    from netzoo import compact
    from test_compact import kill_compaction_at

    results, _ = trained
    before = load(results)
    crash_at, points = 0, None
    while points is None or crash_at < points:
        copy = tmp_path / f"r{crash_at}"
        shutil.copytree(results, copy)
        calls = kill_compaction_at(monkeypatch, crash_at)
        try:
            compact.compact_results(copy, max_rows=500)
            points = len(calls)  # no crash: every rename and delete was made
        except KeyboardInterrupt:
            pass
        monkeypatch.undo()
        after = load(copy)  # mid-way, whatever was renamed or deleted: every key whole, every row once
        for table in ("networks", "epochs", "predictions", "layers"):
            key = ["network", "seed"] + (["epoch"] if table != "networks" else []) + \
                  (["sample"] if table == "predictions" else []) + (["layer"] if table == "layers" else [])
            a = getattr(after, table).sort_values(key).reset_index(drop=True)
            b = getattr(before, table).sort_values(key).reset_index(drop=True)
            assert len(a) == len(b) and not a.duplicated(key).any(), (table, crash_at)
        assert completed_keys(copy) == completed_keys(results), crash_at
        crash_at += 1
    assert points >= 8


def test_a_part_is_written_atomically_and_temporaries_are_ignored(tmp_path):
    frame = pd.DataFrame({"network": ["Basic"], "recipe": ["default"], "recipe_hash": ["h"], "seed": [1],
                          "epoch": [1], "sample": [0], "label": [3], "pred": [3],
                          "probs": [[0.1] * 10]})
    table = pa.Table.from_pandas(frame, schema=PREDICTIONS, preserve_index=False)
    path = write_part(tmp_path, "predictions", table, ("Basic", "h", 1))
    assert path.name == part_name(("Basic", "h", 1)) == "Basic--h--1.parquet"
    (tmp_path / "predictions" / ".tmp-Basic--h--2.parquet-123-abc").write_bytes(b"PAR1 half a file")
    assert len(pd.read_parquet(tmp_path / "predictions")) == 1
    with pytest.raises(ValueError, match="does not match the schema"):
        write_part(tmp_path, "epochs", table, ("Basic", "h", 1))


def test_incomplete_keys_are_not_returned(tmp_path):
    zoo = make_zoo(tmp_path / "zoo", names=("Basic",))
    job = digits_job(zoo, tmp_path / "r", epochs=1)
    run_job(job)
    (tmp_path / "r" / "networks" / part_name(("Basic", job.recipe.hash, 42))).unlink()  # as if killed before it
    tables = load(tmp_path / "r")
    assert tables.epochs.empty and tables.predictions.empty and completed_keys(tmp_path / "r") == set()


def test_load_of_a_missing_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(ResultsError, match="netzoo train"):
        load(tmp_path / "nothing")
