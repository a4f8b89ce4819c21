"""netzoo export: a results folder as a dataset anyone can load without netzoo (plain pandas, Hugging Face
datasets, Croissant), with only whole keys, written whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cli_helpers import run_main
from netzoo.compact import compact_results
from netzoo.export import export_results
from netzoo.results import load, part_name, scan
from netzoo.runner import run_job
from netzoo.schema import KEY, TABLES, describe, table_schema
from zoo_fixture import digits_job, make_zoo


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Four fixture networks on digits (seed 42 compacted, then seed 1 as parts), lenses on, and one key made
    incomplete: the export must leave that one out."""
    root = tmp_path_factory.mktemp("export")
    zoo = make_zoo(root / "zoo")
    folder = root / "results"
    run_job(digits_job(zoo, folder, lenses=True))
    compact_results(folder)
    run_job(digits_job(zoo, folder, lenses=True, seeds=(1,)))
    incomplete = next(k for k in scan(folder).complete if k[0] == "LinearTanh_1" and k[2] == 1)
    (folder / "networks" / part_name(incomplete)).unlink()  # a run killed before its networks part
    return folder


@pytest.fixture(scope="module")
def exported(results, tmp_path_factory) -> Path:
    return export_results(results, tmp_path_factory.mktemp("out") / "digits")


def test_every_table_loads_with_plain_pandas_with_the_rows_of_whole_keys(results, exported):
    tables = load(results)
    assert len(tables.networks) == 7  # 8 runs, one incomplete
    for table in TABLES:
        frame = pd.read_parquet(exported / "data" / table)
        assert len(frame) == len(getattr(tables, table)) > 0, table
        assert list(frame.columns) == table_schema(table, 10).names
        keys = list(frame[list(KEY)].itertuples(index=False, name=None))
        assert keys == sorted(keys), f"{table} is not sorted by key"
        assert ("LinearTanh_1", 1) not in set(zip(frame["network"], frame["seed"])), table


def test_every_table_loads_with_hugging_face_datasets_by_its_config_and_as_parquet(results, exported, tmp_path,
                                                                                  monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tables = load(results)
    for table in TABLES:
        by_config = datasets.load_dataset(str(exported), table, split="train", cache_dir=str(tmp_path / "hf"))
        assert by_config.num_rows == len(getattr(tables, table)), table
    plain = datasets.load_dataset("parquet", data_files=str(exported / "data" / "predictions" / "*.parquet"),
                                  split="train", cache_dir=str(tmp_path / "hf"))
    assert plain.num_rows == len(tables.predictions) and plain.features["probs"].feature.dtype == "float16"


def test_card_header_names_one_config_per_table_with_its_files(exported):
    import yaml

    text = (exported / "README.md").read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    configs = {c["config_name"]: c["data_files"] for c in header["configs"]}
    assert configs == {**{t: f"data/{t}/*.parquet" for t in TABLES}, "manifest": "zoos/*/manifest.parquet"}
    for table in ("manifest",) + TABLES:  # the columns, as netzoo.schema describes them
        assert f"### `{table}`" in text
        assert all(f"`{name}`" in text for name in describe(table_schema(table, 1)) if not name.startswith("test_acc_class"))


def test_croissant_metadata_validates_and_describes_every_column_from_the_schema(results, exported):
    mlc = pytest.importorskip("mlcroissant")
    dataset = mlc.Dataset(jsonld=str(exported / "croissant.json"))  # raises on any validation error
    warnings = dataset.metadata.issues.warnings
    assert all("recommended" in str(w) for w in warnings), warnings  # license, citeAs: the publisher's to give
    record_sets = {rs.name: rs for rs in dataset.metadata.record_sets}
    assert set(record_sets) == {"manifest", *TABLES}
    for table, record_set in record_sets.items():
        assert {f.name: f.description for f in record_set.fields} == describe(table_schema(table, 10)), table
    assert len(list(dataset.records("networks"))) == len(load(results, tables="networks").networks)


def test_the_zoo_of_every_exported_network_is_there_as_generated(results, exported):
    networks = pd.read_parquet(exported / "data" / "networks")
    for row in networks.itertuples():
        job = json.loads((exported / "jobs" / f"{row.recipe_hash}.json").read_text())
        path = exported / job["zoo"] / row.file
        import hashlib

        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.file_sha256
    manifest = pd.read_parquet(exported / "zoos" / "zoo" / "manifest.parquet")
    assert sorted(manifest["network"]) == sorted(networks["network"].unique())
    assert json.loads((exported / "dataset.json").read_text()) == json.loads((results / "dataset.json").read_text())


def test_export_into_a_folder_that_is_not_empty_exits_2_with_one_line_and_touches_nothing(results, tmp_path,
                                                                                         monkeypatch, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, err = run_main(monkeypatch, capsys, "export", "--results", results, "--out", out)
    assert code == 2 and err.count("\n") == 1 and "exists and is not empty" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and not list(tmp_path.glob(".tmp-*"))
    code, out_text, _ = run_main(monkeypatch, capsys, "export", "--results", results, "--out", tmp_path / "empty")
    assert code == 0 and (tmp_path / "empty" / "croissant.json").is_file()


def test_an_export_that_fails_midway_leaves_no_folder_and_no_temporary_files(results, tmp_path, monkeypatch, capsys):
    # a zoo file edited since training: the export refuses it, after the tables were written
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    zoo = tmp_path / "zoo"
    shutil.copytree(results.parent / "zoo", zoo)
    for job in (copy / "jobs").glob("*.json"):
        record = json.loads(job.read_text())
        job.write_text(json.dumps({**record, "zoo": str(zoo)}))
    (zoo / "Basic.py").write_text((zoo / "Basic.py").read_text() + "# edited\n")
    code, _, err = run_main(monkeypatch, capsys, "export", "--results", copy, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "Basic.py" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))


def test_a_results_folder_without_whole_networks_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "results").mkdir()
    code, _, err = run_main(monkeypatch, capsys, "export", "--results", tmp_path / "results", "--out", tmp_path / "o")
    assert code == 2 and "no whole network" in err and not (tmp_path / "o").exists()


def test_large_tables_are_split_into_files_of_bounded_rows(results, tmp_path, monkeypatch):
    from netzoo import export

    monkeypatch.setattr(export, "ROWS_PER_FILE", 1000)
    monkeypatch.setattr(export, "KEYS_PER_READ", 1)
    out = export_results(results, tmp_path / "out")
    shards = sorted((out / "data" / "predictions").iterdir())
    assert len(shards) > 1 and all(pq.read_metadata(p).num_rows <= 1000 + 720 for p in shards)
    assert len(pd.read_parquet(out / "data" / "predictions")) == len(load(results, tables="predictions").predictions)
    assert os.path.basename(shards[0]) == "predictions-00000.parquet"


def test_a_network_rebuilds_from_the_export_with_pytorch_and_safetensors_alone(exported, tmp_path):
    """The dataset card's own recipe, run in a fresh interpreter that cannot import netzoo, predicts every test
    sample as the exported predictions say."""
    import subprocess
    import sys

    import numpy as np

    from netzoo.datasets import load_dataset
    from netzoo.export import REBUILD

    np.save(tmp_path / "x_test.npy", load_dataset("digits").x_test.numpy())
    card = (exported / "README.md").read_text()
    assert REBUILD in card
    recipe = REBUILD.split("```python\n", 1)[1].split("```", 1)[0]
    script = f"""
import importlib.abc, sys
class NoNetzoo(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("netzoo", "analysis"):
            raise ImportError("netzoo is not installed here")
sys.meta_path.insert(0, NoNetzoo())
{recipe}
import numpy as np, torch
with torch.inference_mode():
    pred = model(torch.from_numpy(np.load({str(tmp_path / "x_test.npy")!r}))).argmax(1).numpy()
stored = pd.read_parquet("data/predictions")
stored = stored[(stored.network == run.network) & (stored.seed == run.seed) & (stored.epoch == run.epochs_done)]
assert (pred == stored.sort_values("sample")["pred"].to_numpy()).all()
assert not [m for m in sys.modules if m.split(".")[0] in ("netzoo", "analysis")]
print("rebuilt", run.network, len(pred))
"""
    ran = subprocess.run([sys.executable, "-c", script], cwd=exported, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("rebuilt ")


def test_the_weights_of_every_exported_run_are_there_and_whole(results, exported):
    import hashlib

    networks = pd.read_parquet(exported / "data" / "networks")
    assert networks["weights_file"].notna().all()
    for row in networks.itertuples():
        for epoch, sha in zip(row.weights_epochs, row.weights_sha256):
            path = exported / f"weights/{row.network}--{row.recipe_hash}--{row.seed}/epoch-{epoch}.safetensors"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    copied = {p.parent.name for p in (exported / "weights").rglob("*.safetensors")}
    assert copied == {f"{r.network}--{r.recipe_hash}--{r.seed}" for r in networks.itertuples()}  # whole keys only
