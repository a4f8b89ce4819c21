"""Results on disk: one Parquet part file per (network, recipe_hash, seed) per table, written atomically.

Layout under ``--results DIR`` (schemas in ``netzoo.schema``)::

    DIR/networks/<network>--<recipe_hash>--<seed>.parquet   written last: its presence marks the key complete
    DIR/epochs/…, DIR/predictions/…, DIR/layers/…           the same name in every table (possibly 0 rows)
    DIR/<table>/compact-*.parquet                           many keys, merged by netzoo.compact
    DIR/recipes/<recipe_hash>.json, DIR/dataset.json, DIR/jobs/<recipe_hash>.json, DIR/claims/

A part is written to ``.tmp-*`` (ignored by pyarrow and pandas readers) and renamed into place
(``netzoo.files``), so a reader sees a whole file or none.

Whole keys: ``scan`` is the one rule that verify, status, load, train and compact share. Every Parquet file
carries CRC-32 page checksums; a key's ``networks`` part, written last, records the sha256 and size of its
epochs, predictions and layers parts (key-value metadata ``netzoo.parts``); ``netzoo compact`` records the
sha256 and the keys of each compact file in ``DIR/<table>/.compact-<token>.json``. A key is whole when its
networks row reads in full (checksums verified, schema, its own key), every other part matches its recorded
sha256 (or, once compacted, sits in a compact file that matches its own), every weights file its row records
(DIR/weights/, ``weights_sha256``) matches its sha256, and its row agrees with what the folder records
(dataset.json's dataset, the architecture DIR/jobs/ records for its name and recipe).
Anything else is damaged, incomplete or inconsistent: never returned by ``load``, retrained by train.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from netzoo import files
from netzoo.errors import ResultsError
from netzoo.keys import Key, key_name, key_of_name
from netzoo.schema import KEY, NETWORKS, TABLES, columns_match, conform, table_schema

log = logging.getLogger(__name__)

NULLABLE_INT_COLUMNS = ("peak_memory_bytes", "pred", "weights_bytes")  # int64 columns that may hold nulls: "Int64"
COMPACT_PREFIX = "compact-"
INDEX_PREFIX = ".compact-"                # DIR/<table>/.compact-<token>.json: what a compaction wrote
SIBLINGS = ("epochs", "predictions", "layers")  # written before a key's networks part, which records them
PARTS_METADATA = b"netzoo.parts"          # networks part metadata: {table: {"sha256": hex, "bytes": n}}
DAMAGED_DIR = "damaged"                   # DIR/damaged/<table>/: damaged files moved out of every reader's way
PAGE_CHECKSUMS = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))


def part_name(key: Key) -> str:
    """The file name of a key's part in every table: '<network>--<recipe_hash>--<seed>.parquet'."""
    return key_name(key, ".parquet")


WEIGHTS_DIR = "weights"                   # DIR/weights/<part stem>/epoch-<E>.safetensors (netzoo.weights writes them)


def weights_file(key: Key, epoch: int) -> str:
    """Where a key's weights after ``epoch`` live, relative to the results folder:
    'weights/<network>--<recipe_hash>--<seed>/epoch-<E>.safetensors'."""
    return f"{WEIGHTS_DIR}/{key_name(key, '')}/epoch-{int(epoch)}.safetensors"


def key_of(path: Path) -> Key | None:
    """The key a part file's name encodes, or None for other files (compact files, temporaries)."""
    return None if path.name.startswith(COMPACT_PREFIX) else key_of_name(path.name, ".parquet")


def results_folder(path, create: bool = False) -> Path:
    """``path`` as a results folder: created when ``create``, else it must exist; a file there is refused."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultsError(f"--results {path} is a file, not a folder: pass a folder (netzoo train creates it).")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    elif not path.is_dir():
        raise ResultsError(f"No results folder at {path}. Train first: netzoo train --results {path} ...")
    return path


# --- writing ---------------------------------------------------------------------------------------
def write_part(results_dir, table: str, data: pa.Table | pd.DataFrame, key: Key, classes: int = 10) -> Path:
    """Write one key's rows of ``table`` (checked against the schema) atomically; return the part's path.

    Write a key's epochs, predictions and layers parts first and its networks part last: the networks part
    records the others' sha256, and a key is whole only once it is there. Writing any other part of a key
    first removes the key's networks part, which described the parts being replaced.
    """
    schema = table_schema(table, classes)
    if isinstance(data, pd.DataFrame):
        data = conform(data, schema)
    elif not data.schema.equals(schema, check_metadata=False):
        raise ValueError(f"{table} part for {key} does not match the schema:\n{data.schema}\nexpected:\n{schema}")
    results_dir = Path(results_dir)
    path = results_dir / table / part_name(key)
    if table == "networks":
        metadata = {PARTS_METADATA: json.dumps(_sibling_digests(results_dir, key)).encode()}
    else:
        metadata = None
        (results_dir / "networks" / part_name(key)).unlink(missing_ok=True)
    # Field docs stay in netzoo.schema, not in every file (they tripled a 1-row part to 22 kB); snappy
    # writes a small part in ~4 ms against ~9 ms for zstd (measured), and parts are small.
    plain = pa.schema([f.remove_metadata() for f in schema], metadata=metadata)
    rows = pa.Table.from_arrays(data.columns, schema=plain)
    files.atomic_write(path, lambda f: pq.write_table(rows, f, compression="snappy", write_page_checksum=True))
    return path


def _sibling_digests(results_dir: Path, key: Key) -> dict:
    """{table: {"sha256", "bytes"}} of a key's epochs, predictions and layers parts, for its networks part."""
    digests = {}
    for table in SIBLINGS:
        path = results_dir / table / part_name(key)
        if not path.is_file():
            raise ValueError(f"write the {table} part of {key} before its networks part: the networks part, "
                             "written last, records the checksums of the others")
        digests[table] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return digests


# --- what the folder records ---------------------------------------------------------------------
def read_record(path: Path) -> dict | None:
    """A JSON record, None when absent; a ResultsError naming the file when it is damaged."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path} is damaged ({exc}): rerun the netzoo train command that wrote this folder "
                           f"to rewrite it.") from None
    if not isinstance(record, dict):
        raise ResultsError(f"{path} is damaged (not a JSON object): rerun the netzoo train command that wrote "
                           f"this folder to rewrite it.")
    return record


def dataset_record(results_dir) -> dict | None:
    """DIR/dataset.json: the dataset the folder holds (None before the first train)."""
    return read_record(Path(results_dir) / "dataset.json")


def classes_of(results_dir) -> int:
    """The dataset's class count recorded in DIR/dataset.json (10 when absent)."""
    record = dataset_record(results_dir) or {}
    try:
        return int(record.get("classes", 10))
    except (TypeError, ValueError):
        raise ResultsError(f"{Path(results_dir) / 'dataset.json'} is damaged (classes {record.get('classes')!r})"
                           f": rerun the netzoo train command that wrote this folder to rewrite it.") from None


def job_records(results_dir) -> list[tuple[Path, dict | None]]:
    """Every DIR/jobs/<recipe_hash>.json with its record (None when it is damaged)."""
    out = []
    for path in sorted((Path(results_dir) / "jobs").glob("*.json")):
        try:
            out.append((path, read_record(path)))
        except ResultsError:
            out.append((path, None))
    return out


def recorded_architectures(results_dir) -> dict[tuple[str, str], str]:
    """(network, recipe_hash) -> arch_id, as DIR/jobs/ records them (damaged records are left out; each
    record is parsed once per process while it is unchanged: a worker asks for every key it claims)."""
    out = {}
    for path in sorted((Path(results_dir) / "jobs").glob("*.json")):
        try:
            record = _json(_signature(path))
        except OSError:
            continue
        if isinstance(record, dict) and isinstance(record.get("arch_ids"), dict):
            out.update({(n, record.get("recipe_hash")): a for n, a in record["arch_ids"].items()})
    return out


# --- whole keys: the one rule ---------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Why a key (or a file whose keys cannot be told) does not count: kind is damaged, incomplete or
    inconsistent; ``files`` are the damaged files (netzoo train moves them to DIR/damaged/)."""

    key: Key | None
    kind: str
    what: str
    files: tuple[Path, ...] = ()

    def line(self) -> str:
        """'<network> seed <s> recipe <hash>: <kind>: <what>' (or '<file>: …' when no key is known)."""
        if self.key is None:
            return f"{self.files[0]}: {self.kind}: {self.what}"
        network, recipe_hash, seed = self.key
        return f"{network} seed {seed} recipe {recipe_hash}: {self.kind}: {self.what}"


@dataclass(frozen=True)
class Source:
    """A file holding a whole key's rows of one table: its own part, or a compact file (rows of many keys)."""

    path: Path
    compact: bool


@dataclass
class Scan:
    """Whole keys with the files each table's rows come from, the problems of every other key, and the
    (dataset, arch_id) of every networks row that could be read."""

    complete: dict = field(default_factory=dict)   # Key -> {table: tuple[Source, ...]}
    problems: list = field(default_factory=list)   # Problem
    rows: dict = field(default_factory=dict)       # Key -> {"dataset": str, "arch_id": str}


@dataclass(frozen=True)
class _FileCheck:
    """A full read of one Parquet file: the error (None when whole), its keys, networks rows, metadata."""

    error: str | None
    keys: frozenset = frozenset()
    rows: tuple = ()        # (key, dataset, arch_id, ((epoch, weights sha256), …)) of a networks file
    metadata: str = ""      # the netzoo.parts record of a networks part

    @functools.cached_property
    def row_of(self) -> dict:
        """Key -> its first row: one lookup per key, not a walk of a compact file's rows per key."""
        first: dict = {}
        for row in self.rows:
            first.setdefault(row[0], row)
        return first


@dataclass(frozen=True)
class _Compacted:
    """A compact file as its compaction's index records it."""

    path: Path
    sha256: str
    size: int
    created: float


def _signature(path: Path) -> tuple:
    """What changes whenever a file's bytes change (a rewrite moves its ctime, which no user can set)."""
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_sha256(path) -> str:
    """The sha256 of a file's bytes (hex, hashlib.file_digest); cached while the file is unchanged."""
    return _sha256(_signature(Path(path)))


@functools.lru_cache(maxsize=65536)
def _sha256(signature: tuple) -> str:
    with open(signature[0], "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check(path: Path, table: str, classes: int) -> _FileCheck:
    """Read every page of a Parquet file with its checksums verified, and check its schema (cached)."""
    try:
        return _full_read(_signature(path), table, classes)
    except OSError as exc:
        return _FileCheck(f"unreadable ({exc})")


@functools.lru_cache(maxsize=65536)
def _full_read(signature: tuple, table: str, classes: int) -> _FileCheck:
    expected = table_schema(table, classes)
    try:
        file = pq.ParquetFile(signature[0], page_checksum_verification=True)
        got = file.schema_arrow
        if not columns_match(got, expected, table):
            return _FileCheck(f"its columns differ from the {table} table's (damaged, or another netzoo wrote it)")
        keys, rows = set(), []
        extra = ["dataset", "arch_id"] if table == "networks" else []
        weights = table == "networks" and "weights_sha256" in got.names  # a part written before them has none
        for batch in file.iter_batches(batch_size=65536):
            cols = [batch.column(c).to_pylist() for c in (*KEY, *extra)]
            keys.update(zip(*cols[:3]))
            if extra:
                saved = (zip(batch.column("weights_epochs").to_pylist(), batch.column("weights_sha256").to_pylist())
                         if weights else [(None, None)] * batch.num_rows)
                rows += [((n, h, s), d, a, tuple(zip(e or [], w or [])))
                         for (n, h, s, d, a), (e, w) in zip(zip(*cols), saved)]
        metadata = (got.metadata or {}).get(PARTS_METADATA, b"").decode()
    except (OSError, pa.ArrowException, ValueError, UnicodeDecodeError) as exc:
        return _FileCheck(f"unreadable ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})")
    return _FileCheck(None, frozenset(keys), tuple(rows), metadata)


@functools.lru_cache(maxsize=4096)
def _json(signature: tuple) -> dict | None:
    """A JSON file's content (None when unreadable), parsed once while the file is unchanged."""
    try:
        return json.loads(Path(signature[0]).read_text())
    except (OSError, ValueError):
        return None


class _Layout:
    """The files of one results folder, table by table: parts by key, indexed compact files (the newest
    holding each key), and compact files no readable index names (written by other tools: read in full)."""

    def __init__(self, results_dir: Path, keys=None) -> None:
        self.dir, self.classes = results_dir, classes_of(results_dir)
        self.parts: dict[str, dict] = {}
        self.indexed: dict[str, dict] = {}
        self.foreign: dict[str, list] = {}
        self.compacted: dict[str, list] = {}  # every indexed compact file, newest or not
        for table in TABLES:
            folder = results_dir / table
            names = set(os.listdir(folder)) if folder.is_dir() else set()
            if keys is None:
                self.parts[table] = {k: folder / n for n in names if (k := key_of(Path(n))) is not None}
            else:
                self.parts[table] = {k: folder / part_name(k) for k in keys if part_name(k) in names}
            named, newest, self.compacted[table] = set(), {}, []
            for name in sorted(n for n in names if n.startswith(INDEX_PREFIX) and n.endswith(".json")):
                try:
                    record = _json(_signature(folder / name))
                except OSError:
                    record = None
                if record is None:
                    log.warning("cannot read %s: its compact files are read in full instead", folder / name)
                    continue
                for entry in record.get("files", []):
                    named.add(entry["name"])
                    compacted = _Compacted(folder / entry["name"], entry["sha256"], entry["bytes"],
                                           float(record.get("created", 0)))
                    self.compacted[table].append(compacted)
                    for k in map(tuple, entry["keys"]):
                        k = (k[0], k[1], int(k[2]))
                        if (keys is None or k in keys) and (k not in newest or newest[k].created <= compacted.created):
                            newest[k] = compacted
            self.indexed[table] = newest
            self.foreign[table] = [folder / n for n in sorted(names) if n.startswith(COMPACT_PREFIX)
                                   and n.endswith(".parquet") and n not in named]

    def check(self, path: Path, table: str) -> _FileCheck:
        return _check(path, table, self.classes)

    def compact_error(self, compacted: _Compacted) -> str | None:
        """Why an indexed compact file is not whole (missing, another size, another sha256), or None."""
        try:
            if compacted.path.stat().st_size != compacted.size or file_sha256(compacted.path) != compacted.sha256:
                return "its bytes differ from the checksum its compaction recorded"
        except FileNotFoundError:
            return "missing (moved or deleted)"
        except OSError as exc:
            return f"unreadable ({exc})"
        return None

    def candidates(self) -> set:
        """Every key some file of the folder names."""
        keys = set().union(*(self.parts[t] for t in TABLES), self.indexed["networks"])
        for path in self.foreign["networks"]:
            keys |= self.check(path, "networks").keys
        return keys


def _decide(layout: _Layout, key: Key) -> tuple[dict | None, Problem | None, tuple | None]:
    """(sources by table, None, row) for a whole key; (None, Problem, row or None) for any other: its tables'
    files (``_decide_tables``), then the weights files its networks row records (each must match its sha256)."""
    sources, problem, row = _decide_tables(layout, key)
    if problem is not None or row is None:
        return sources, problem, row
    for epoch, sha256 in row[3]:
        path = layout.dir / weights_file(key, epoch)
        try:
            same = file_sha256(path) == sha256
        except FileNotFoundError:
            moved = layout.dir / DAMAGED_DIR / path.parent.name / path.name
            note = f" (a damaged one is in {moved.parent})" if moved.exists() else ""
            return None, Problem(key, "incomplete", f"no weights file for epoch {epoch}{note}"), row
        except OSError:
            same = False
        if not same:
            return None, Problem(key, "damaged", f"weights file {path.name} of epoch {epoch}: its bytes differ from "
                                                 f"the sha256 its networks row recorded", (path,)), row
    return sources, None, row


def _decide_tables(layout: _Layout, key: Key) -> tuple[dict | None, Problem | None, tuple | None]:
    """``_decide`` for the tables' files: networks, epochs, predictions, layers."""

    def damaged(what, *paths):
        return None, Problem(key, "damaged", what, tuple(paths)), row

    row = None
    net_part = layout.parts["networks"].get(key)
    if net_part is not None:
        check = layout.check(net_part, "networks")
        if check.error:
            return damaged(f"networks part {check.error}", net_part)
        if check.keys != {key} or len(check.rows) != 1:
            return damaged("networks part holds another key's rows", net_part)
        row = check.rows[0]
        try:
            digests = json.loads(check.metadata) if check.metadata else {}
        except ValueError:
            return damaged("networks part's record of the other parts is unreadable", net_part)
        sources = {"networks": (Source(net_part, False),)}
        for table in SIBLINGS:
            part = layout.parts[table].get(key)
            if part is None:
                compacted = layout.indexed[table].get(key)
                if compacted is None:
                    moved = layout.dir / DAMAGED_DIR / table / part_name(key)
                    note = f" (a damaged one is in {moved.parent})" if moved.exists() else ""
                    return None, Problem(key, "incomplete", f"no {table} part{note}"), row
                if error := layout.compact_error(compacted):
                    return damaged(f"{table} compact file {compacted.path.name}: {error}", compacted.path)
                sources[table] = (Source(compacted.path, True),)
                continue
            digest = digests.get(table)
            if digest is not None:
                try:
                    same = part.stat().st_size == digest["bytes"] and file_sha256(part) == digest["sha256"]
                except OSError:
                    same = False
                if not same:
                    return damaged(f"{table} part: its bytes differ from the sha256 its networks part recorded", part)
            else:  # a networks part without the record (written by an older netzoo): read the part in full
                sibling = layout.check(part, table)
                if sibling.error or not sibling.keys <= {key}:
                    return damaged(f"{table} part {sibling.error or 'holds rows of another key'}", part)
            sources[table] = (Source(part, False),)
    elif key in layout.indexed["networks"]:
        sources = {}
        for table in TABLES:
            compacted = layout.indexed[table].get(key)
            if compacted is None:
                return None, Problem(key, "incomplete", f"in no compact {table} file"), row
            if error := layout.compact_error(compacted):
                return damaged(f"{table} compact file {compacted.path.name}: {error}", compacted.path)
            if table == "networks":
                row = layout.check(compacted.path, "networks").row_of.get(key)
            sources[table] = (Source(compacted.path, True),)
    else:
        holders = [p for p in layout.foreign["networks"] if key in layout.check(p, "networks").keys]
        if not holders:
            return None, Problem(key, "incomplete", "no networks part (a run stopped while training it, or is "
                                                    "training it now)"), None
        row = layout.check(holders[0], "networks").row_of[key]
        sources = {"networks": tuple(Source(p, True) for p in holders)}
        for table in SIBLINGS:
            bad = [p for p in layout.foreign[table] if layout.check(p, table).error]
            if bad:
                return damaged(f"{table} file {bad[0].name} {layout.check(bad[0], table).error}", *bad)
            sources[table] = tuple(Source(p, True) for p in layout.foreign[table]
                                   if key in layout.check(p, table).keys)
    return sources, None, row


def scan(results_dir, keys=None, fresh: bool = False) -> Scan:
    """Sort the keys of ``results_dir`` (or only ``keys``) into whole ones and problems, by the one rule.

    Reads every byte the rule needs: each networks part in full, the sha256 of every other part and of
    every compact file. Results are cached per process while a file's size, mtime and ctime are unchanged;
    ``fresh=True`` reads everything again (``netzoo verify``).
    """
    results_dir = Path(results_dir)
    if fresh:
        for cached in (_sha256, _full_read, _json):
            cached.cache_clear()
    found = Scan()
    if not results_dir.is_dir():
        return found
    wanted = None if keys is None else {(n, h, int(s)) for n, h, s in keys}
    layout = _Layout(results_dir, wanted)
    dataset = (dataset_record(results_dir) or {}).get("name")
    architectures = recorded_architectures(results_dir)
    for key in sorted(layout.candidates() if wanted is None else wanted, key=lambda k: (k[0], k[1], k[2])):
        sources, problem, row = _decide(layout, key)
        if row is not None:
            _, trained_on, arch_id, _ = row
            found.rows[key] = {"dataset": trained_on, "arch_id": arch_id}
            recorded = architectures.get(key[:2])
            if problem is None and dataset is not None and trained_on != dataset:
                problem = Problem(key, "inconsistent", f"trained on {trained_on}, but this folder holds {dataset} "
                                                       f"(dataset.json)")
            elif problem is None and recorded is not None and arch_id != recorded:
                problem = Problem(key, "inconsistent", f"architecture {arch_id} differs from {recorded}, which "
                                                       f"DIR/jobs records for {key[0]} under recipe {key[1]}")
        if problem is None:
            found.complete[key] = sources
        else:
            found.problems.append(problem)
    if wanted is None:  # damaged compact files no key's problem names (superseded, or their keys unknown)
        named = {path for problem in found.problems for path in problem.files}
        used = {s.path for sources in found.complete.values() for table in sources.values() for s in table}
        accounted = named | used
        for table in TABLES:
            for compacted in layout.compacted[table]:
                if compacted.path not in accounted and compacted.path.exists() \
                        and (error := layout.compact_error(compacted)):
                    found.problems.append(Problem(None, "damaged", error, (compacted.path,)))
            for path in layout.foreign[table]:
                if path not in named and (error := layout.check(path, table).error):
                    found.problems.append(Problem(None, "damaged", f"{error}; the keys it held count as not "
                                                                   "trained", (path,)))
    return found


def key_complete(results_dir, key: Key) -> bool:
    """Whether ``key`` is whole now, by the rule of ``scan`` (a worker asks right after claiming a key,
    because another worker may have trained it, and ``netzoo compact`` merged its parts, since the plan)."""
    return tuple(key) in scan(results_dir, keys=[key]).complete


def completed_keys(results_dir) -> set[Key]:
    """Every (network, recipe_hash, seed) whose results are whole under ``results_dir``."""
    return set(scan(results_dir).complete)


def quarantine(results_dir, problems, keep=frozenset()) -> list[Path]:
    """Move the damaged files of ``problems`` (not those of keys in ``keep``: a live worker is rewriting
    them) to DIR/damaged/<table>/, out of every reader's way (plain pandas included); return where they went."""
    results_dir, moved = Path(results_dir), []
    for problem in problems:
        if problem.kind != "damaged" or problem.key in keep:
            continue
        for path in problem.files:
            if not path.exists():
                continue
            target = results_dir / DAMAGED_DIR / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            n = 1
            while target.exists():
                target = target.with_name(f"{path.stem}.{n}{path.suffix}")
                n += 1
            os.replace(path, target)
            moved.append(target)
    if moved:
        log.warning("moved %d damaged file(s) to %s: %s", len(moved), results_dir / DAMAGED_DIR,
                    ", ".join(p.name for p in moved[:5]))
    return moved


# --- reading ---------------------------------------------------------------------------------------
@dataclass
class ResultTables:
    """The results tables as DataFrames: ``load`` gives them the schema's dtypes (empty, with the columns, when
    absent); the one tables type of netzoo and analysis (hand-built ones may leave tables out: empty frames)."""

    networks: pd.DataFrame = field(default_factory=pd.DataFrame)
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}={len(getattr(self, t))}" for t in TABLES)
        return f"ResultTables({sizes} rows)"


def key_strings(table: pa.Table) -> pa.Array:
    """One 'network|recipe_hash|seed' string per row, for set membership."""
    return pc.binary_join_element_wise(table["network"], table["recipe_hash"],
                                       pc.cast(table["seed"], pa.string()), "|")


def key_string(key: Key) -> str:
    """'network|recipe_hash|seed': the string ``key_strings`` gives a row of ``key``."""
    return "|".join(map(str, key))


def _read_rows(sources: dict, table: str, schema: pa.Schema, columns: list[str], filt, failed: set) -> pa.Table:
    """The rows of ``table`` of every whole key, each from the files ``sources`` names for it (a key's own
    parts first, then compact files, keeping only their rows of keys they are the source of); a file that
    no longer reads adds its keys to ``failed``."""
    parts, compact = {}, {}
    for key, by_table in sources.items():
        for source in by_table[table]:
            if source.compact:
                compact.setdefault(source.path, set()).add(key)
            else:
                parts[source.path] = key

    def read(paths):
        return ds.dataset([str(p) for p in paths], schema=schema, format=PAGE_CHECKSUMS).to_table(
            columns=columns, filter=filt)

    pieces = []
    try:
        pieces.append(read(sorted(parts)) if parts else schema.empty_table().select(columns))
    except (OSError, pa.ArrowException):
        for path in sorted(parts):  # changed since the scan (e.g. compacted meanwhile): find which
            try:
                pieces.append(read([path]))
            except (OSError, pa.ArrowException):
                failed.add(parts[path])
    for path, keys in sorted(compact.items()):
        try:
            chunk = read([path])
        except (OSError, pa.ArrowException):
            failed |= keys
            continue
        pieces.append(chunk.filter(pc.is_in(key_strings(chunk), pa.array(sorted(map(key_string, keys))))))
    return pa.concat_tables(pieces) if pieces else schema.empty_table().select(columns)


def read_keys(results_dir, table: str, keys, found: Scan | None = None) -> pa.Table:
    """The rows of ``table`` of the whole ``keys`` (by ``scan``; ``found``: a scan already made) as one pyarrow
    table of the schema's columns, from the files the scan names (their networks filtered in the read, so a big
    compact file costs only the row groups of these networks). Raises ResultsError for a key that is not whole
    or a file that changed since the scan."""
    found = scan(results_dir) if found is None else found
    keys = [tuple(k) for k in keys]
    missing = [k for k in keys if k not in found.complete]
    if missing:
        raise ResultsError(f"{Path(results_dir)}: {missing[0]} is not whole (netzoo verify lists why)")
    schema = table_schema(table, classes_of(results_dir))
    failed: set = set()
    rows = _read_rows({k: found.complete[k] for k in keys}, table, schema, schema.names,
                      pc.field("network").isin(sorted({k[0] for k in keys})), failed)
    if failed:
        raise ResultsError(f"{Path(results_dir)} changed while it was read ({sorted(failed)[0]}): run again once "
                           f"no netzoo train or compact writes to it.")
    return rows


def to_frame(table: pa.Table, schema: pa.Schema) -> pd.DataFrame:
    """A pyarrow table as pandas with the schema's dtypes (nullable ints as 'Int64')."""
    frame = table.to_pandas()
    for name in frame.columns:
        if name in NULLABLE_INT_COLUMNS:
            frame[name] = frame[name].astype("Int64")
        elif pa.types.is_integer(schema.field(name).type) and frame[name].dtype != "int64":
            frame[name] = frame[name].astype("int64")
    return frame


def load(results_dir, tables=None, columns: dict | None = None, epoch: int | str | None = None,
         keys=None) -> ResultTables:
    """Load the results tables of ``results_dir`` as DataFrames with the schema's dtypes.

    ``tables``: names to read (others come back empty); ``columns={"predictions": [...]}`` reads only those
    columns of a table; ``epoch=E`` or ``"last"`` (each key's last recorded epoch) reads one epoch of
    epochs/predictions/layers; ``keys``: only these (network, recipe_hash, seed) keys (a filtered read: the
    probabilities of a few runs out of 40M prediction rows). Only whole keys (``scan``) are returned, all of a
    key's rows or none, each once; the others are logged (``netzoo verify`` lists them, ``netzoo train``
    retrains them). Raises ResultsError for an epoch E that no run reached (or below 1).
    """
    results_dir = results_folder(results_dir)
    wanted = set(TABLES if tables is None else ([tables] if isinstance(tables, str) else tables))
    unknown = wanted - set(TABLES)
    if unknown:
        raise ResultsError(f"unknown table(s) {sorted(unknown)}; tables: {', '.join(TABLES)}")
    if epoch is not None and epoch != "last" and not isinstance(epoch, int):
        raise ResultsError(f"epoch must be an int or 'last', got {epoch!r}")
    columns = columns or {}
    classes = classes_of(results_dir)
    found = scan(results_dir, keys=keys)
    bad = [p for p in found.problems if p.kind != "incomplete"]
    if bad:
        log.warning("%d key(s) of %s are damaged or inconsistent and left out (e.g. %s); `netzoo verify "
                    "--results %s` lists them, `netzoo train` retrains them", len(bad), results_dir,
                    bad[0].line(), results_dir)
    failed: set = set()

    # networks first: its rows give each key's last epoch.
    net_cols = list(columns.get("networks", NETWORKS.names))
    read_cols = list(dict.fromkeys(list(KEY) + ["epochs_done"] + net_cols))
    networks = _read_rows(found.complete, "networks", NETWORKS, read_cols, None, failed)
    out = {"networks": networks}
    last = None
    held = pc.max(networks["epochs_done"]).as_py() if networks.num_rows else None
    if isinstance(epoch, int) and held is not None and not 1 <= epoch <= held:
        raise ResultsError(f"No run in {results_dir} has an epoch {epoch}: its runs hold epochs 1 to {held}. Pass "
                           f"--epoch between them, or leave it out for each run's last epoch.")
    if epoch == "last":
        last = pa.table({"_key": key_strings(networks), "epoch": networks["epochs_done"]})
    for table in SIBLINGS:
        schema = table_schema(table, classes)
        if table not in wanted:
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
        data = _read_rows(found.complete, table, schema, read, filt, failed)
        if last is not None and data.num_rows:
            wanted_pairs = pc.binary_join_element_wise(last["_key"], pc.cast(last["epoch"], pa.string()), "@")
            pairs = pc.binary_join_element_wise(key_strings(data), pc.cast(data["epoch"], pa.string()), "@")
            data = data.filter(pc.is_in(pairs, wanted_pairs))
        out[table] = data
    frames = {}
    for table in TABLES:
        schema = table_schema(table, classes)
        cols = list(columns.get(table, schema.names))
        data = out.get(table) if table in wanted else None
        if data is None:
            frames[table] = to_frame(schema.empty_table(), schema)
            continue
        if failed:  # a file changed under us: all of those keys' rows go, in every table
            data = data.filter(pc.invert(pc.is_in(key_strings(data), pa.array(sorted(map(key_string, failed))))))
        frames[table] = to_frame(data.select(cols), schema)
    return ResultTables(**frames)


def load_network(results_dir, network: str, seed: int | None = None, recipe: str | None = None,
                 epoch: int | str = "last"):
    """The trained network of one run: the generated class from the zoo its job record (DIR/jobs/) names
    (``netzoo.zoo.import_network``: only a file whose sha256 is the one the run recorded runs), built, with the
    weights saved after ``epoch`` ("last": its last saved epoch; netzoo.weights wrote them), in eval mode.

    ``seed`` and ``recipe`` (a name or hash) choose the run when the network has several. Raises ResultsError,
    one line naming the problem and the fix, for a network, seed or recipe not in the results, an ambiguous
    choice, or an epoch whose weights were not saved; ZooError when the zoo's file is missing or changed."""
    from safetensors.torch import load_file

    from netzoo.zoo import import_network

    results_dir = results_folder(results_dir)
    row = _run_row(results_dir, network, seed, recipe)
    key = (row["network"], row["recipe_hash"], int(row["seed"]))
    saved = [int(e) for e in (row["weights_epochs"] if row["weights_epochs"] is not None else [])]
    if not saved:
        raise ResultsError(f"{network} seed {key[2]} recipe {row['recipe']} was trained without saving its weights "
                           f"(--save-weights none): train it again with --save-weights last into a new --results.")
    chosen = max(saved) if epoch == "last" else epoch
    if chosen not in saved:
        raise ResultsError(f"{network} seed {key[2]}: no weights saved for epoch {epoch!r}; saved epochs: "
                           f"{', '.join(map(str, saved))} (pass one of them, or 'last'; --save-weights every saves "
                           f"every epoch).")
    record = read_record(results_dir / "jobs" / f"{key[1]}.json") or {}
    if not record.get("zoo"):
        raise ResultsError(f"{results_dir / 'jobs' / f'{key[1]}.json'} is missing: the zoo that trained {network} is "
                           f"unknown. Rerun the netzoo train command that wrote {results_dir}.")
    model = import_network(Path(record["zoo"]) / row["file"], network, sha256=row["file_sha256"])()
    model.load_state_dict(load_file(str(results_dir / weights_file(key, chosen))))
    return model.eval()


def _run_row(results_dir: Path, network: str, seed: int | None, recipe: str | None) -> dict:
    """The networks row of the one whole run of ``network`` (with ``seed``, under ``recipe``), or ResultsError."""
    columns = ["network", "recipe", "recipe_hash", "seed", "file", "file_sha256", "weights_epochs"]
    networks = load(results_dir, tables="networks", columns={"networks": columns}).networks
    runs = networks[networks["network"] == network]
    if runs.empty:
        known = sorted(networks["network"].unique())
        raise ResultsError(f"No trained {network!r} in {results_dir} (networks here: {', '.join(known[:5])}"
                           f"{' …' if len(known) > 5 else ''}); netzoo status --results {results_dir} lists them.")
    if recipe is not None:
        runs = runs[(runs["recipe"] == recipe) | (runs["recipe_hash"] == recipe)]
        if runs.empty:
            raise ResultsError(f"{network} was not trained under recipe {recipe!r} in {results_dir}; its recipes: "
                               f"{', '.join(sorted(set(networks.loc[networks['network'] == network, 'recipe'])))}.")
    if seed is not None:
        runs = runs[runs["seed"] == int(seed)]
        if runs.empty:
            raise ResultsError(f"{network} has no run with seed {seed} in {results_dir}; its seeds: "
                               f"{', '.join(map(str, sorted(networks.loc[networks['network'] == network, 'seed'])))}.")
    recipes = sorted(set(runs["recipe"]))
    if len(recipes) > 1:
        raise ResultsError(f"{network} was trained under several recipes ({', '.join(recipes)}): pass recipe=… "
                           f"(a name or hash).")
    if len(runs) > 1:
        raise ResultsError(f"{network} was trained with several seeds ({', '.join(map(str, sorted(runs['seed'])))}): "
                           f"pass seed=….")
    return runs.iloc[0].to_dict()
