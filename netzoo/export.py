"""An export anyone can load without netzoo: a results folder as a self-describing dataset folder.

``export_results(results_dir, out)`` writes, in the layout the Hugging Face Hub reads as a dataset::

    OUT/README.md                        dataset card: a YAML header with one config per table, then the columns
    OUT/croissant.json                   Croissant 1.0 metadata: every table and column (from netzoo.schema)
    OUT/data/<table>/<table>-NNNNN.parquet   networks, epochs, predictions, layers: sorted by key, zstd
    OUT/zoos/<zoo>/manifest.parquet, <Network>.py   the generated code of every exported network
    OUT/weights/<network>--<recipe_hash>--<seed>/epoch-<E>.safetensors   the trained weights, where saved
    OUT/jobs/<recipe_hash>.json          which zoo (a path inside OUT) trained each recipe's networks
    OUT/recipes/, OUT/splits/, OUT/dataset.json     the recipes, validation splits and dataset, as recorded

Only whole keys are exported (``netzoo.results.scan``: all of a run's rows or none). Every table and column is
described once, in ``netzoo.schema``: the card's column tables are ``netzoo.schema.schema_markdown()``, the
Croissant fields are read from the same schemas. The export is written into a temporary folder beside OUT and
renamed into place at the end, so OUT is either whole or absent; an OUT that exists and is not empty is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from netzoo import files
from netzoo import results as res
from netzoo.compact import sort_rows
from netzoo.errors import ExportError
from netzoo.schema import KEY, MANIFEST, TABLE_DOCS, TABLES, conform, describe, table_schema

EXPORT_VERSION = "1.0.0"    # the export's layout (Croissant's dataset version): changes when the layout does
ROWS_PER_FILE = 1_000_000   # rows per Parquet file of a table (a predictions file of 10 classes: ~30 MB)
KEYS_PER_READ = 64          # runs read at once: memory stays bounded whatever the folder's size
CROISSANT_CONTEXT = {       # the Croissant 1.0 JSON-LD context (mlcommons.org/croissant/1.0)
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract", "field": "cr:field",
    "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet", "format": "cr:format",
    "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key",
    "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField", "transform": "cr:transform",
}


def export_results(results_dir, out) -> Path:
    """Export the whole keys of ``results_dir`` to the new folder ``out`` (see the module docstring); return it.

    Raises ExportError when ``out`` exists and is not empty, or a zoo that trained an exported network is gone
    or changed; ResultsError when the folder holds no whole network."""
    results_dir = res.results_folder(results_dir)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out} exists and is not empty: an export never overwrites; pass a new folder.")
    found = res.scan(results_dir)
    keys = sorted(found.complete)
    if not keys:
        raise res.ResultsError(f"{results_dir} holds no whole network to export: train first (netzoo status "
                               f"--results {results_dir} shows what is done).")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{files.TMP_PREFIX}{out.name}-", dir=out.parent))
    try:
        rows = {table: _write_table(results_dir, found, table, keys, staging) for table in TABLES}
        networks = pq.read_table(staging / "data" / "networks")
        zoos = _copy_zoos(results_dir, networks, staging)
        _copy_records(results_dir, networks, zoos, staging)
        _copy_weights(results_dir, networks, staging)
        facts = _facts(results_dir, networks, rows)
        files.atomic_write_text(staging / "croissant.json", json.dumps(croissant(facts), indent=1))
        files.atomic_write_text(staging / "README.md", dataset_card(facts))
        if out.exists():
            out.rmdir()  # empty: checked above
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


# --- tables --------------------------------------------------------------------------------------
def _write_table(results_dir: Path, found, table: str, keys: list, out: Path) -> int:
    """Write ``table``'s rows of ``keys`` as OUT/data/<table>/<table>-NNNNN.parquet (sorted by key, column
    docs kept in the Parquet schema); return the rows written."""
    schema = table_schema(table, res.classes_of(results_dir))
    folder = out / "data" / table
    folder.mkdir(parents=True)
    writer, written, total, shards = None, 0, 0, 0
    try:
        for start in range(0, len(keys), KEYS_PER_READ):
            chunk = sort_rows(res.read_keys(results_dir, table, keys[start:start + KEYS_PER_READ], found))
            chunk = pa.Table.from_arrays(chunk.select(schema.names).columns, schema=schema)
            if writer is None or (written >= ROWS_PER_FILE and chunk.num_rows):
                if writer is not None:
                    writer.close()
                writer = pq.ParquetWriter(folder / f"{table}-{shards:05d}.parquet", schema, compression="zstd",
                                          write_page_checksum=True)
                written, shards = 0, shards + 1
            writer.write_table(chunk, row_group_size=256_000)
            written += chunk.num_rows
            total += chunk.num_rows
    finally:
        if writer is not None:
            writer.close()
    return total


# --- the zoos and the folder's records -----------------------------------------------------------
def _copy_zoos(results_dir: Path, networks: pa.Table, out: Path) -> dict[str, str]:
    """Copy, for each recipe, the manifest rows and generated files of its exported networks from the zoo its
    job record names (each file checked against the sha256 the run recorded) to OUT/zoos/<zoo>/; return
    recipe_hash -> the zoo's path inside OUT."""
    from netzoo.zoo import check_files, read_manifest

    by_zoo: dict[Path, set] = {}
    zoo_of: dict[str, Path] = {}
    trained = {}  # network -> the file sha256 its networks rows record
    for network, recipe_hash, sha in zip(*(networks[c].to_pylist() for c in ("network", "recipe_hash", "file_sha256"))):
        if recipe_hash not in zoo_of:
            record = res.read_record(results_dir / "jobs" / f"{recipe_hash}.json") or {}
            if not record.get("zoo"):
                raise ExportError(f"{results_dir / 'jobs' / f'{recipe_hash}.json'} is missing: the zoo that trained "
                                  f"recipe {recipe_hash} is unknown. Rerun the netzoo train command that wrote "
                                  f"{results_dir} (it records the zoo), then export again.")
            zoo_of[recipe_hash] = Path(record["zoo"])
        by_zoo.setdefault(zoo_of[recipe_hash], set()).add(network)
        trained.setdefault((zoo_of[recipe_hash], network), sha)
    names: dict[Path, str] = {}
    for zoo in sorted(by_zoo):
        name = zoo.name
        while name in names.values():
            name = f"{name}-{len(names)}"
        names[zoo] = name
        check_files(zoo, sorted(by_zoo[zoo]))  # ZooError naming a missing or edited file, and the fix
        manifest = read_manifest(zoo)
        manifest = manifest[manifest["network"].isin(by_zoo[zoo])]
        for row in manifest.itertuples():
            if row.file_sha256 != trained[(zoo, row.network)]:
                raise ExportError(f"{zoo / row.file} is not the file {row.network} was trained from (its sha256 "
                                  f"differs from the one {results_dir}/networks records): regenerate the zoo that "
                                  f"trained it, then export again.")
            target = out / "zoos" / name / row.file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(zoo / row.file, target)
        files.atomic_write(out / "zoos" / name / "manifest.parquet",
                           lambda f, m=manifest: pq.write_table(conform(m, MANIFEST), f))
    return {recipe_hash: f"zoos/{names[zoo]}" for recipe_hash, zoo in zoo_of.items()}


def _copy_records(results_dir: Path, networks: pa.Table, zoos: dict[str, str], out: Path) -> None:
    """dataset.json, the exported recipes' recipes/ and jobs/ records (jobs naming the zoo inside OUT) and every
    validation split (splits/)."""
    shutil.copyfile(results_dir / "dataset.json", out / "dataset.json")
    for recipe_hash, zoo in zoos.items():
        (out / "recipes").mkdir(exist_ok=True)
        shutil.copyfile(results_dir / "recipes" / f"{recipe_hash}.json", out / "recipes" / f"{recipe_hash}.json")
        record = res.read_record(results_dir / "jobs" / f"{recipe_hash}.json") or {}
        exported = set(networks.filter(pc.equal(networks["recipe_hash"], recipe_hash))["network"].to_pylist())
        record.update(zoo=zoo, networks=[n for n in record.get("networks", []) if n in exported],
                      arch_ids={n: a for n, a in record.get("arch_ids", {}).items() if n in exported})
        files.atomic_write_text(out / "jobs" / f"{recipe_hash}.json", json.dumps(record, indent=1))
    if (results_dir / "splits").is_dir():
        shutil.copytree(results_dir / "splits", out / "splits",
                        ignore=shutil.ignore_patterns(f"{files.TMP_PREFIX}*"))


def _copy_weights(results_dir: Path, networks: pa.Table, out: Path) -> None:
    """Every saved weights file of the exported runs, at the same path under OUT (the networks rows name them;
    the scan that chose the whole keys checked their sha256)."""
    if "weights_epochs" not in networks.column_names:
        return
    for network, recipe_hash, seed, epochs in zip(*(networks[c].to_pylist() for c in
                                                    ("network", "recipe_hash", "seed", "weights_epochs"))):
        for epoch in epochs or []:
            relative = res.weights_file((network, recipe_hash, seed), epoch)
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results_dir / relative, out / relative)


# --- what the export says about itself -----------------------------------------------------------
def _facts(results_dir: Path, networks: pa.Table, rows: dict[str, int]) -> dict:
    """Name, dataset, counts and the tables' files: what the card and the Croissant metadata state."""
    import datetime as dt

    from netzoo import __version__

    dataset = res.dataset_record(results_dir) or {}
    return {"name": f"netzoo-{dataset.get('name', 'results')}-{results_dir.resolve().name}",
            "date": dt.datetime.now(dt.timezone.utc).date().isoformat(), "version": EXPORT_VERSION,
            "netzoo_version": __version__,
            "dataset": dataset, "rows": rows, "classes": res.classes_of(results_dir),
            "networks": len(set(networks["network"].to_pylist())), "runs": networks.num_rows,
            "recipes": sorted(set(networks["recipe"].to_pylist())),
            "seeds": sorted(set(networks["seed"].to_pylist())),
            "files": {table: f"data/{table}/*.parquet" for table in TABLES} | {"manifest": "zoos/*/manifest.parquet"}}


def _data_type(dtype: pa.DataType) -> str:
    """The Croissant (schema.org) data type of an Arrow type; lists are described by their items."""
    if pa.types.is_list(dtype):
        return _data_type(dtype.value_type)
    if pa.types.is_boolean(dtype):
        return "sc:Boolean"
    if pa.types.is_integer(dtype):
        return "sc:Integer"
    if pa.types.is_floating(dtype):
        return "sc:Float"
    if pa.types.is_timestamp(dtype):
        return "sc:DateTime"
    return "sc:Text"


def croissant(facts: dict) -> dict:
    """Croissant 1.0 metadata (JSON-LD): one FileSet and one RecordSet per table, one Field per column, every
    description from netzoo.schema."""
    dataset = facts["dataset"]
    distribution, record_sets = [], []
    for table in ("manifest",) + TABLES:
        schema = table_schema(table, facts["classes"])
        files_id = f"{table}-files"
        distribution.append({"@type": "cr:FileSet", "@id": files_id, "name": files_id,
                             "description": f"Parquet files of the {table} table",
                             "encodingFormat": "application/x-parquet", "includes": facts["files"][table]})
        fields = []
        for name, doc in describe(schema).items():
            dtype = schema.field(name).type
            field = {"@type": "cr:Field", "@id": f"{table}/{name}", "name": name, "description": doc,
                     "dataType": _data_type(dtype),
                     "source": {"fileSet": {"@id": files_id}, "extract": {"column": name}}}
            if pa.types.is_list(dtype):
                field.update({"cr:isArray": True, "cr:arrayShape": "-1"})
            fields.append(field)
        record_sets.append({"@type": "cr:RecordSet", "@id": table, "name": table, "description": TABLE_DOCS[table],
                            "field": fields})
    distribution += [
        {"@type": "cr:FileSet", "@id": "code-files", "name": "code-files", "encodingFormat": "text/x-python",
         "description": "the generated PyTorch code of each network: class <network> in zoos/<zoo>/<network>.py "
                        "(jobs/<recipe_hash>.json names the zoo of each recipe)", "includes": "zoos/*/*.py"},
        {"@type": "cr:FileSet", "@id": "weights-files", "name": "weights-files",
         "encodingFormat": "application/octet-stream",
         "description": "each run's state dict after a saved epoch, as safetensors (networks.weights_file names the "
                        "last one): load_state_dict of the network's class takes it", "includes": "weights/*/*.safetensors"},
    ]
    return {"@context": CROISSANT_CONTEXT, "@type": "sc:Dataset", "name": facts["name"],
            "description": _summary(facts), "conformsTo": "http://mlcommons.org/croissant/1.0",
            "datePublished": facts["date"], "version": facts["version"],
            "keywords": ["model zoo", "neural networks", "netzoo", str(dataset.get("name", ""))],
            "distribution": distribution, "recordSet": record_sets}


def _summary(facts: dict) -> str:
    """One paragraph: what was trained on what, and what each run left."""
    dataset = facts["dataset"]
    return (f"{facts['runs']} training runs of {facts['networks']} generated networks on {dataset.get('name')} "
            f"({dataset.get('input_shape')}, {dataset.get('classes')} classes, {dataset.get('train_size')} train / "
            f"{dataset.get('test_size')} test samples) under recipes {', '.join(facts['recipes'])}, seeds "
            f"{', '.join(map(str, facts['seeds']))}, exported by netzoo: every run's per-epoch losses and "
            f"accuracies, every test prediction with its class probabilities, per-layer statistics, measured "
            f"costs, and the generated PyTorch code of every network (netzoo {facts['netzoo_version']}, export "
            f"layout {facts['version']}).")


def _yaml_string(text: str) -> str:
    """A YAML scalar: JSON's double-quoted string is valid YAML."""
    return json.dumps(text)


def dataset_card(facts: dict) -> str:
    """README.md for the Hugging Face Hub: a YAML header with one config per table, what the export holds, how
    to load it, and every table's columns (``netzoo.schema.schema_markdown``)."""
    header = ["---", f"pretty_name: {_yaml_string(facts['name'])}", "tags:", "- model-zoo", "- netzoo", "configs:"]
    for table in TABLES + ("manifest",):
        header += [f"- config_name: {table}", f"  data_files: {_yaml_string(facts['files'][table])}"]
        if table == "networks":
            header.append("  default: true")
    header.append("---")
    rows = ", ".join(f"{table} {n:,}" for table, n in facts["rows"].items())
    body = f"""
# {facts['name']}

{_summary(facts)}

Rows: {rows}. Every results table is keyed by `({', '.join(KEY)})`; a run that diverged or failed keeps its rows
with `status` saying so (its accuracies are null): leave it out of any answer.

## Files

```
README.md, croissant.json           this card; Croissant 1.0 metadata describing every table and column
data/<table>/<table>-NNNNN.parquet  networks, epochs, predictions, layers (sorted by key)
zoos/<zoo>/manifest.parquet         the generated networks (the manifest table) and their code: <Network>.py
weights/<network>--<recipe_hash>--<seed>/epoch-<E>.safetensors   trained state dicts (networks.weights_file)
jobs/<recipe_hash>.json             the zoo (a folder here) that trained each recipe's networks
recipes/<recipe_hash>.json          each recipe, resolved; dataset.json: the dataset; splits/: validation splits
```

## Loading

```python
import pandas as pd
networks = pd.read_parquet("data/networks")                  # plain pandas, or pyarrow, or polars
from datasets import load_dataset
epochs = load_dataset("parquet", data_files="data/epochs/*.parquet", split="train")
```

## Rebuilding a trained network (PyTorch and safetensors, no netzoo)

{REBUILD}
## Tables

{_schema_sections()}
"""
    return "\n".join(header) + "\n" + body


# How anyone rebuilds a run's network from the export: the card shows it, tests/test_export.py runs it.
REBUILD = """```python
import importlib.util, json
import pandas as pd
from safetensors.torch import load_file

run = pd.read_parquet("data/networks").dropna(subset=["weights_file"]).iloc[0]  # a run saved with its weights
zoo = json.load(open(f"jobs/{run.recipe_hash}.json"))["zoo"]                   # the zoo that trained it
spec = importlib.util.spec_from_file_location(run.network, f"{zoo}/{run.file}")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)                                                 # the generated file: plain PyTorch
model = getattr(module, run.network)()
model.load_state_dict(load_file(run.weights_file))                              # float16 files load into float32
model.eval()
```
"""


def _schema_sections() -> str:
    """Every table's columns, as docs/results.md renders them from netzoo.schema, with what a row is."""
    from netzoo.schema import schema_markdown

    text = schema_markdown()
    for table, doc in TABLE_DOCS.items():
        text = text.replace(f"### `{table}`\n", f"### `{table}`\n\nOne row: {doc}.\n", 1)
    return text
