"""A generated zoo as a registry, like timm's: list_networks('Conv2d*'), load_network(name), from the manifest.

A zoo folder is code: importing a network runs its file. Every import goes through ``import_network``, which
runs a file only when its bytes hash to the sha256 the manifest recorded at generation (an edited file is
refused, naming the command that regenerates it), and every manifest read goes through ``read_manifest``,
which refuses a damaged manifest and a network name outside the naming grammar (netzoo.names).

The one front door to a zoo: every reader of a manifest (``read_manifest``, ``manifest_rows``), every choice of
networks by wildcard or by family and activation (``matching``, ``select_networks``, ``list_networks``) and
every import of a network file (``load_network``, ``import_network``) goes through this module, in natural
order (``natural_key``).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from netzoo.errors import NetworkNameError, UnknownNetworkError, ZooError
from netzoo.names import check_network_name

if TYPE_CHECKING:
    from torch import nn


def natural_key(name: str) -> list:
    """Sort key that puts Conv2dReLU_2 before Conv2dReLU_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_manifest(zoo_dir: str | Path) -> pd.DataFrame:
    """The zoo's manifest.parquet (schema netzoo.schema.MANIFEST): the one reader of a manifest.

    Raises UnknownNetworkError when it is missing, ZooError when it is damaged (truncated, not Parquet, no
    network or file column, a file outside the folder) and NetworkNameError when a name is outside the grammar.
    """
    return _read_manifest(*_signature(zoo_dir)).to_pandas()


def manifest_rows(zoo_dir: str | Path) -> dict[str, dict]:
    """network -> its manifest row as plain Python values, read and checked as ``read_manifest`` does, once per
    version of the file (a worker asks for a row with every task it trains)."""
    return _rows(*_signature(zoo_dir))


def _signature(zoo_dir: str | Path) -> tuple[str, int, int]:
    """(path, mtime_ns, size) of the zoo's manifest, the key of its cached reads; UnknownNetworkError when the
    zoo has none."""
    path = Path(zoo_dir) / "manifest.parquet"
    if not path.is_file():
        raise UnknownNetworkError(f"No zoo at {zoo_dir}: {path} is missing. "
                                  f"Run: netzoo generate --out {zoo_dir}")
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=16)
def _rows(path: str, mtime_ns: int, size: int) -> dict[str, dict]:
    return {row["network"]: row for row in _read_manifest(path, mtime_ns, size).to_pylist()}


@functools.lru_cache(maxsize=16)
def _read_manifest(path: str, mtime_ns: int, size: int) -> pa.Table:
    """The checked manifest table, read once per version of the file (its stat is part of the key)."""
    fix = (f"Regenerate the zoo: netzoo generate --out {Path(path).parent} (with the spec, seed and shape it was "
           f"made with)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        raise ZooError(f"{path} is damaged (not a whole Parquet file: truncated or overwritten). {fix}.") from None
    missing = [c for c in ("network", "file") if c not in table.column_names]
    if missing:
        raise ZooError(f"{path} has no {' or '.join(missing)} column: it is not a netzoo manifest. {fix}.")
    for name, file in zip(table["network"].to_pylist(), table["file"].to_pylist()):
        try:
            check_network_name(name)
        except NetworkNameError as exc:
            raise NetworkNameError(f"{path}: {exc} {fix}.") from None
        if file != f"{name}.py":
            raise ZooError(f"{path}: network {name} names the file {file!r}, not {name}.py in the zoo folder. {fix}.")
    return table


def regenerate_command(row: dict | pd.Series, zoo_dir: str | Path) -> str:
    """The ``netzoo generate`` command that renders a manifest row's zoo again into ``zoo_dir``."""
    args = ["--spec", row["spec"], "--seed", row["seed"], "--input-shape", row["input_shape"], "--classes",
            row["classes"]]
    if row.get("dropout"):
        args += ["--dropout", row["dropout"]]
    if row.get("batch_norm"):
        args.append("--batch-norm")
    args += ["--out", zoo_dir]
    return " ".join(["netzoo generate", *(_shell_word(a) for a in args)])


def _shell_word(value) -> str:
    text = str(value)
    return shlex.quote(text) if text.isprintable() else ascii(text)  # one line, always


def matching(names: Iterable[str], globs: Sequence[str]) -> list[str]:
    """The ``names`` matching any of the shell wildcards ``globs`` (all of them when ``globs`` is empty), each
    once, in natural order: the one way netzoo chooses networks by name."""
    names = dict.fromkeys(names)
    globs = [g.strip() for g in globs if g.strip()]
    return sorted((n for n in names if not globs or any(fnmatchcase(n, g) for g in globs)), key=natural_key)


def select_networks(manifest: pd.DataFrame, names: Sequence[str] = (), family: Sequence[str] = (),
                    activation: Sequence[str] = (), per_cell: int | None = None) -> list[str]:
    """Names of the manifest's networks whose name, family and activation each match one of their globs (an
    empty list matches anything), in natural order; with ``per_cell``, only the first ``per_cell`` networks of
    each family x activation cell. An empty list when nothing matches: callers name the fix."""
    chosen = set(matching(manifest["network"], names))
    for column, globs in (("family", family), ("activation", activation)):
        if globs:
            chosen &= {n for n, v in zip(manifest["network"], manifest[column].astype(str)) if matching([v], globs)}
    ordered = matching(chosen, ())
    if per_cell is not None:
        cells = dict(zip(manifest["network"], zip(manifest["family"], manifest["activation"].astype(str))))
        taken: dict[tuple, int] = {}
        kept = []
        for name in ordered:
            taken[cells[name]] = taken.get(cells[name], 0) + 1
            if taken[cells[name]] <= per_cell:
                kept.append(name)
        ordered = kept
    return ordered


def list_networks(zoo_dir: str | Path, pattern: str = "*") -> pd.DataFrame:
    """Manifest rows whose name matches ``pattern`` (shell wildcards, comma-separated), in natural order.

    Raises UnknownNetworkError, with the closest names, when a pattern matches nothing.
    """
    manifest = read_manifest(zoo_dir)
    names = list(manifest["network"])
    for part in (p.strip() for p in str(pattern).split(",")):
        if part and not matching(names, [part]):
            raise UnknownNetworkError(_no_match(part, names, zoo_dir))
    rank = {name: i for i, name in enumerate(matching(names, str(pattern).split(",")))}
    rows = manifest[manifest["network"].isin(rank)]
    return rows.sort_values("network", key=lambda column: column.map(rank)).reset_index(drop=True)


def _no_match(part: str, names: list[str], zoo_dir) -> str:
    close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
    if not close:  # a case slip like 'conv2drelu*' or 'Conv2dRelu_17'
        close = sorted({n for n in names if fnmatchcase(n.lower(), part.lower())}, key=natural_key)[:3]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown network {part!r} in {zoo_dir}.{hint} (see: netzoo zoo list --zoo {zoo_dir})"


def import_network(path: str | Path, name: str, sha256: str | None = None) -> type[nn.Module]:
    """Import a generated file and return its class ``name`` (registered in sys.modules under a unique name).

    The file runs only when its bytes hash to ``sha256`` or, when None, to the sha256 its zoo's manifest
    (``manifest.parquet`` beside it) records for it; else ZooError names the file and the command that
    regenerates it. The bytes checked are the bytes run (the file is read once).
    """
    check_network_name(name)
    shown = Path(path)
    path = shown.resolve()
    if sha256:
        source = _read(shown, "Regenerate it: netzoo generate … --out DIR")
        _check_bytes(shown, source, sha256, "Regenerate it: netzoo generate … --out DIR")
    else:
        row = _manifest_row_of(shown)
        source = _read(shown, _fix(row, shown.parent))
        _check_bytes(shown, source, row.get("file_sha256"), _fix(row, shown.parent))
    module_name = f"netzoo_zoo_{hashlib.sha1(str(path.parent).encode()).hexdigest()[:10]}_{name}"  # no dot: pickle finds it
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - the bytes just checked
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return getattr(module, name)


def check_files(zoo_dir: str | Path, names=None) -> None:
    """ZooError naming the first network file (of ``names``; all when None) whose bytes differ from the sha256
    its manifest records, or that has none: what a run can check before it trains anything."""
    manifest = read_manifest(zoo_dir)
    if names is not None:
        manifest = manifest[manifest["network"].isin(set(names))]
    for _, row in manifest.iterrows():
        path = Path(zoo_dir) / row["file"]
        _check_bytes(path, _read(path, _fix(row, zoo_dir)), row.get("file_sha256"), _fix(row, zoo_dir))


def _manifest_row_of(path: Path) -> dict:
    """The row of the manifest beside ``path`` that names it (its file is always '<network>.py'; the cached
    rows, not a fresh read per network), else ZooError."""
    row = manifest_rows(path.parent).get(path.stem) if path.suffix == ".py" else None
    if row is None:
        raise ZooError(f"{path} is not in {path.parent / 'manifest.parquet'}; netzoo runs only the files it "
                       f"generated. Regenerate the zoo: netzoo generate --out {path.parent}")
    return row


def _read(path: Path, fix: str) -> bytes:
    """The bytes of a network file, or ZooError when it is missing."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ZooError(f"{path} is missing from its zoo. {fix}") from None


def _fix(row, zoo_dir) -> str:
    return f"Regenerate the zoo: {regenerate_command(row, zoo_dir)}"


def _check_bytes(path: Path, source: bytes, recorded, fix: str) -> None:
    """ZooError unless ``source`` (the bytes of ``path``) hashes to the ``recorded`` sha256."""
    if not isinstance(recorded, str) or not recorded:
        raise ZooError(f"{path.parent / 'manifest.parquet'} records no sha256 for {path.name} (a zoo from an older "
                       f"netzoo); netzoo runs only files whose hash it recorded. {fix}")
    if hashlib.sha256(source).hexdigest() != recorded:
        raise ZooError(f"{path}: its sha256 differs from the one recorded at generation (edited after "
                       f"generation?); netzoo runs only the files it generated. {fix}")


def load_network(zoo_dir: str | Path, name: str) -> nn.Module:
    """Build the network ``name`` of a zoo (imports <Name>.py, constructs it with no arguments)."""
    rows = manifest_rows(zoo_dir)
    if name not in rows:
        raise UnknownNetworkError(_no_match(name, list(rows), zoo_dir))
    return import_network(Path(zoo_dir) / rows[name]["file"], name)()


def describe_network(zoo_dir: str | Path, name: str) -> str:
    """One network's manifest facts and costs, then its source file: what `netzoo zoo show` prints."""
    rows = read_manifest(zoo_dir)
    row = rows[rows["network"] == name]
    if row.empty:
        raise UnknownNetworkError(_no_match(name, list(rows["network"]), zoo_dir))
    r = row.iloc[0]
    facts = [
        ("network", r["network"]), ("family", r["family"]), ("activation", r["activation"]),
        ("depth", r["depth"]), ("input", f"{r['input_shape']} -> {r['classes']} classes"),
        ("params", f"{r['params']:,}"), ("memory", f"{r['memory']:,} elements"), ("ops", r["ops"]),
        ("macs", f"{r['macs']:,}"), ("flops", f"{r['flops_forward']:,} forward, {r['flops_train_step']:,} train step"),
        ("arch_id", r["arch_id"]), ("spec", f"{r['spec']} (seed {r['seed']})"),
        ("file", str(Path(zoo_dir) / r["file"])), ("sha256", r.get("file_sha256") or "not recorded"),
    ]
    width = max(len(k) for k, _ in facts)
    head = "\n".join(f"{k.ljust(width)}  {v}" for k, v in facts)
    source = _read(Path(zoo_dir) / r["file"], _fix(r, zoo_dir)).decode()
    return f"{head}\n\n{source}"
