"""A generated zoo as a registry, like timm's: list_networks('Conv2d*'), load_network(name), from the manifest.

The one front door to a zoo: every reader of a manifest (``read_manifest``, ``manifest_rows``), every choice of
networks by wildcard or by family and activation (``matching``, ``select_networks``, ``list_networks``) and
every import of a network file (``load_network``) goes through this module, in natural order (``natural_key``).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import re
import sys
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from netzoo.errors import NetzooError, UnknownNetworkError

if TYPE_CHECKING:
    from torch import nn


def natural_key(name: str) -> list:
    """Sort key that puts Conv2dReLU_2 before Conv2dReLU_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_manifest(zoo_dir: str | Path) -> pd.DataFrame:
    """The zoo's manifest.parquet (schema netzoo.schema.MANIFEST), or a clear error when it is missing or damaged."""
    return _manifest(*_signature(zoo_dir)).to_pandas()


def manifest_rows(zoo_dir: str | Path) -> dict[str, dict]:
    """network -> its manifest row as plain Python values, read once per version of the file (a worker asks
    for a row with every task it trains)."""
    return _rows(*_signature(zoo_dir))


def _signature(zoo_dir: str | Path) -> tuple[str, int, int]:
    """(path, mtime_ns, size) of the zoo's manifest: the cache key of its reads."""
    path = Path(zoo_dir) / "manifest.parquet"
    if not path.is_file():
        raise UnknownNetworkError(f"No zoo at {zoo_dir}: {path} is missing. "
                                  f"Run: netzoo generate --out {zoo_dir}")
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=16)
def _manifest(path: str, mtime_ns: int, size: int):
    """The manifest as a pyarrow table, read once per version of the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise NetzooError(f"{path} is damaged ({first}): regenerate the zoo with the netzoo generate command that "
                          f"made it (--out {Path(path).parent}).") from None


@functools.lru_cache(maxsize=16)
def _rows(path: str, mtime_ns: int, size: int) -> dict[str, dict]:
    return {row["network"]: row for row in _manifest(path, mtime_ns, size).to_pylist()}


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


def import_network(path: str | Path, name: str) -> type[nn.Module]:
    """Import a generated file and return its class ``name`` (registered in sys.modules under a unique name)."""
    path = Path(path).resolve()
    module_name = f"netzoo_zoo_{hashlib.sha1(str(path.parent).encode()).hexdigest()[:10]}_{name}"  # no dot: pickle finds it
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return getattr(module, name)


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
        ("file", str(Path(zoo_dir) / r["file"])),
    ]
    width = max(len(k) for k, _ in facts)
    head = "\n".join(f"{k.ljust(width)}  {v}" for k, v in facts)
    source = (Path(zoo_dir) / r["file"]).read_text()
    return f"{head}\n\n{source}"
