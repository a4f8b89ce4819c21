"""Results on disk: one Parquet part file per (network, recipe_hash, seed) per table, written atomically.

Layout under ``--results DIR`` (schemas in ``netzoo.schema``)::

    DIR/networks/<network>--<recipe_hash>--<seed>.parquet   written last: its presence marks the key complete
    DIR/epochs/…, DIR/predictions/…, DIR/layers/…           the same name in every table (possibly 0 rows)
    DIR/<table>/compact-*.parquet                           many keys, merged by netzoo.compact
    DIR/recipes/<recipe_hash>.json, DIR/dataset.json, DIR/jobs/<recipe_hash>.json, DIR/claims/

A part is written to ``.tmp-*`` (ignored by pyarrow and pandas readers) and ``os.replace``'d into place, so a
reader sees a whole file or none. A key counts as complete only when all four parts exist and their Parquet
footers read; anything else is retrained. ``load`` never returns a row of an incomplete key, reads a file
that fails to parse as data, or returns a row twice (a key found in a part and a compact file is read from
the part, the newer).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from netzoo.errors import ResultsError
from netzoo.names import check_network_name
from netzoo.schema import KEY, NETWORKS, TABLES, conform, table_schema

log = logging.getLogger(__name__)

Key = tuple[str, str, int]               # (network, recipe_hash, seed)
NULLABLE_INT_COLUMNS = ("peak_memory_bytes",)  # int64 columns that may hold nulls: pandas "Int64"
COMPACT_PREFIX = "compact-"
SEP = "--"                                # between the key's parts in a part file's name


def part_name(key: Key) -> str:
    """The file name of a key's part in every table: '<network>--<recipe_hash>--<seed>.parquet'."""
    network, recipe_hash, seed = key
    return f"{check_network_name(network)}{SEP}{recipe_hash}{SEP}{int(seed)}.parquet"


def key_of(path: Path) -> Key | None:
    """The key a part file's name encodes, or None for other files (compact files, temporaries)."""
    if path.name.startswith((".", COMPACT_PREFIX)) or path.suffix != ".parquet":
        return None
    bits = path.stem.split(SEP)
    if len(bits) != 3 or not bits[2].lstrip("-").isdigit():
        return None
    return bits[0], bits[1], int(bits[2])


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_part(results_dir, table: str, data: pa.Table | pd.DataFrame, key: Key, classes: int = 10) -> Path:
    """Write one key's rows of ``table`` (checked against the schema) atomically; return the part's path."""
    schema = table_schema(table, classes)
    if isinstance(data, pd.DataFrame):
        data = conform(data, schema)
    elif not data.schema.equals(schema, check_metadata=False):
        raise ValueError(f"{table} part for {key} does not match the schema:\n{data.schema}\nexpected:\n{schema}")
    folder = Path(results_dir) / table
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / part_name(key)
    tmp = folder / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # Field docs stay in netzoo.schema, not in every file (they tripled a 1-row part to 22 kB); snappy
    # writes a small part in ~4 ms against ~9 ms for zstd (measured), and parts are small.
    plain = pa.schema([f.remove_metadata() for f in schema])
    pq.write_table(pa.Table.from_arrays(data.columns, schema=plain), tmp, compression="snappy")
    os.replace(tmp, path)
    return path


def part_ok(path: Path) -> bool:
    """Whether a part file is a whole Parquet file (its footer and metadata read): a truncated one is not."""
    try:
        pq.read_metadata(path)
        return True
    except (OSError, pa.ArrowException, ValueError):
        return False


@dataclass
class Scan:
    """What is on disk: complete keys, keys from compact files, and part files that failed to read."""

    complete: set = field(default_factory=set)
    corrupt: list = field(default_factory=list)


def scan(results_dir) -> Scan:
    """Find complete keys (all four parts whole, or the networks row in a compact file) and corrupt parts."""
    results_dir = Path(results_dir)
    found = Scan()
    networks = results_dir / "networks"
    if not networks.is_dir():
        return found
    for path in sorted(networks.glob("*.parquet")):
        key = key_of(path)
        if key is None:
            continue
        parts = [results_dir / t / path.name for t in TABLES]
        bad = [p for p in parts if p.exists() and not part_ok(p)]
        found.corrupt.extend(bad)
        if not bad and all(p.exists() for p in parts):
            found.complete.add(key)
    compacted, unreadable = _compact_keys(networks)
    found.complete |= compacted
    found.corrupt.extend(unreadable)
    if found.corrupt:
        log.warning("%d corrupt or truncated part file(s) under %s; their networks will be retrained: %s",
                    len(found.corrupt), results_dir, ", ".join(str(p) for p in found.corrupt[:5]))
    return found


@functools.lru_cache(maxsize=1024)
def _keys_in_compact_file(path: Path, mtime_ns: int, size: int) -> frozenset[Key]:
    """The keys of one compact networks file, read once per process (compact files are written once, under a
    new name; the stat in the cache key catches any rewrite). A failed read raises and is not cached."""
    table = pq.read_table(path, columns=list(KEY))
    return frozenset(zip(*(table.column(c).to_pylist() for c in KEY)))


def _compact_keys(networks: Path) -> tuple[set[Key], list[Path]]:
    """The keys held by the compact files of a networks folder, and the compact files that failed to read."""
    keys, unreadable = set(), []
    for path in sorted(networks.glob(f"{COMPACT_PREFIX}*.parquet")):
        try:
            stat = path.stat()
            keys |= _keys_in_compact_file(path, stat.st_mtime_ns, stat.st_size)
        except (OSError, pa.ArrowException) as exc:
            log.warning("cannot read %s (%s): its keys count as not trained", path, exc)
            unreadable.append(path)
    return keys, unreadable


def key_complete(results_dir, key: Key) -> bool:
    """Whether ``key`` is complete now: its four parts whole, or its networks row in a compact file.

    Cheap when nothing is compacted (four stats and footers); a worker calls it right after claiming a key,
    because another worker may have trained it, and ``netzoo compact`` merged its parts, since the plan.
    """
    results_dir = Path(results_dir)
    name = part_name(key)
    if all((results_dir / t / name).exists() and part_ok(results_dir / t / name) for t in TABLES):
        return True
    return key in _compact_keys(results_dir / "networks")[0]


def completed_keys(results_dir) -> set[Key]:
    """Every (network, recipe_hash, seed) whose results are complete and readable under ``results_dir``."""
    return scan(results_dir).complete


# --- reading ---------------------------------------------------------------------------------------
@dataclass
class ResultTables:
    """The results tables as DataFrames with the schema's dtypes (empty, with the columns, when absent)."""

    networks: pd.DataFrame
    epochs: pd.DataFrame
    predictions: pd.DataFrame
    layers: pd.DataFrame

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}={len(getattr(self, t))}" for t in TABLES)
        return f"ResultTables({sizes} rows)"


def classes_of(results_dir) -> int:
    """The dataset's class count recorded in DIR/dataset.json (10 when absent)."""
    path = Path(results_dir) / "dataset.json"
    try:
        return int(json.loads(path.read_text())["classes"])
    except (OSError, ValueError, KeyError):
        return 10


def _key_strings(table: pa.Table) -> pa.Array:
    """One 'network|recipe_hash|seed' string per row, for set membership."""
    return pc.binary_join_element_wise(table["network"], table["recipe_hash"],
                                       pc.cast(table["seed"], pa.string()), "|")


def _read_files(files: list[Path], schema: pa.Schema, columns: list[str], filt) -> pa.Table:
    """Read ``files`` as one table; on a read error fall back to file by file, skipping (and reporting) bad ones."""
    if not files:
        return schema.empty_table().select(columns)
    try:
        return ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table(columns=columns, filter=filt)
    except (OSError, pa.ArrowException):
        pieces = []
        for f in files:
            try:
                pieces.append(ds.dataset(str(f), schema=schema, format="parquet").to_table(columns=columns, filter=filt))
            except (OSError, pa.ArrowException) as exc:
                log.warning("skipping unreadable part %s (%s): rerun netzoo train to retrain it", f, exc)
        return pa.concat_tables(pieces) if pieces else schema.empty_table().select(columns)


def _read_table(folder: Path, schema: pa.Schema, columns: list[str], filt, keep: set[str] | None) -> pa.Table:
    """One table's rows: parts first, then compact files' rows of keys no part (or earlier compact file) holds."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    parts = [f for f in files if key_of(f) is not None]
    compact = [f for f in files if f.name.startswith(COMPACT_PREFIX)]
    pieces = [_read_files(parts, schema, columns, filt)]
    seen = {"|".join(map(str, key_of(f))) for f in parts}
    for f in compact:
        chunk = _read_files([f], schema, columns, filt)
        keys = _key_strings(chunk)
        chunk = chunk.filter(pc.invert(pc.is_in(keys, pa.array(sorted(seen), pa.string()))))
        seen.update(pc.unique(_key_strings(chunk)).to_pylist())
        pieces.append(chunk)
    out = pa.concat_tables(pieces)
    if keep is not None:
        out = out.filter(pc.is_in(_key_strings(out), pa.array(sorted(keep), pa.string())))
    return out


def to_frame(table: pa.Table, schema: pa.Schema) -> pd.DataFrame:
    """A pyarrow table as pandas with the schema's dtypes (nullable ints as 'Int64')."""
    frame = table.to_pandas()
    for name in frame.columns:
        if name in NULLABLE_INT_COLUMNS:
            frame[name] = frame[name].astype("Int64")
        elif pa.types.is_integer(schema.field(name).type) and frame[name].dtype != "int64":
            frame[name] = frame[name].astype("int64")
    return frame


def load(results_dir, tables=None, columns: dict | None = None, epoch: int | str | None = None) -> ResultTables:
    """Load the results tables of ``results_dir`` as DataFrames with the schema's dtypes.

    ``tables``: names to read (others come back empty); ``columns={"predictions": [...]}`` reads only those
    columns of a table; ``epoch=E`` or ``"last"`` (each key's last recorded epoch) reads one epoch of
    epochs/predictions/layers. Only complete keys are returned, each row once.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"No results folder at {results_dir}. Train first: netzoo train --results {results_dir} ...")
    wanted = set(TABLES if tables is None else ([tables] if isinstance(tables, str) else tables))
    unknown = wanted - set(TABLES)
    if unknown:
        raise ResultsError(f"unknown table(s) {sorted(unknown)}; tables: {', '.join(TABLES)}")
    columns = columns or {}
    classes = classes_of(results_dir)

    # networks first: its rows define the complete keys and each key's last epoch.
    net_cols = list(columns.get("networks", NETWORKS.names))
    read_cols = list(dict.fromkeys(list(KEY) + ["epochs_done"] + net_cols))
    networks = _read_table(results_dir / "networks", NETWORKS, read_cols, None, None)
    keep = set(_key_strings(networks).to_pylist())
    out = {"networks": to_frame(networks.select(net_cols), NETWORKS) if "networks" in wanted
           else to_frame(NETWORKS.empty_table(), NETWORKS)}

    last = None
    if epoch == "last":
        last = pa.table({"_key": _key_strings(networks), "epoch": networks["epochs_done"]})
    elif epoch is not None and not isinstance(epoch, int):
        raise ResultsError(f"epoch must be an int or 'last', got {epoch!r}")
    for table in ("epochs", "predictions", "layers"):
        schema = table_schema(table, classes)
        if table not in wanted:
            out[table] = to_frame(schema.empty_table(), schema)
            continue
        cols = list(columns.get(table, schema.names))
        missing = [c for c in cols if c not in schema.names]
        if missing:
            raise ResultsError(f"{table} has no column(s) {missing}; columns: {', '.join(schema.names)}")
        read = list(dict.fromkeys(list(KEY) + ["epoch"] + cols))
        filt = None
        if isinstance(epoch, int):
            filt = pc.field("epoch") == epoch
        elif last is not None:
            filt = pc.field("epoch").isin(pc.unique(last["epoch"]))
        data = _read_table(results_dir / table, schema, read, filt, keep)
        if last is not None and data.num_rows:
            wanted_pairs = pc.binary_join_element_wise(last["_key"], pc.cast(last["epoch"], pa.string()), "@")
            pairs = pc.binary_join_element_wise(_key_strings(data), pc.cast(data["epoch"], pa.string()), "@")
            data = data.filter(pc.is_in(pairs, wanted_pairs))
        out[table] = to_frame(data.select(cols), schema)
    return ResultTables(**out)


# --- documentation -----------------------------------------------------------------------------------
def _type_name(dtype: pa.DataType) -> str:
    """'int64', 'string', 'list<float16>', 'timestamp[us, UTC]'."""
    if pa.types.is_list(dtype):
        return f"list<{_type_name(dtype.value_type)}>"
    return str(dtype).replace("tz=", "")


def schema_markdown() -> str:
    """The column tables of docs/results.md, rendered from netzoo.schema (tests/test_schema.py checks the doc)."""
    from netzoo.schema import describe

    sections = []
    for table in ("manifest",) + TABLES:
        schema = table_schema(table, 1)
        lines = [f"### `{table}`", "", "| column | type | meaning |", "| --- | --- | --- |"]
        for name, doc in describe(schema).items():
            if name.startswith("test_acc_class_"):
                name, doc = "test_acc_class_0 … test_acc_class_{K-1}", "recall of each class on the test split, in [0, 1]"
            lines.append(f"| `{name}` | {_type_name(schema.field(name.split(' ')[0]).type)} | {doc} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
