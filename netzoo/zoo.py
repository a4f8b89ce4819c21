"""A generated zoo as a registry, like timm's: list_networks('Conv2d*'), load_network(name), from the manifest."""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import re
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import pandas as pd
from torch import nn

from netzoo.errors import UnknownNetworkError


def natural_key(name: str) -> list:
    """Sort key that puts Conv2dReLU_2 before Conv2dReLU_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_manifest(zoo_dir: str | Path) -> pd.DataFrame:
    """The zoo's manifest.parquet (schema netzoo.schema.MANIFEST), or a clear error when it is missing."""
    path = Path(zoo_dir) / "manifest.parquet"
    if not path.is_file():
        raise UnknownNetworkError(f"No zoo at {zoo_dir}: {path} is missing. "
                                  f"Run: netzoo generate --out {zoo_dir}")
    return pd.read_parquet(path)


def list_networks(zoo_dir: str | Path, pattern: str = "*") -> pd.DataFrame:
    """Manifest rows whose name matches ``pattern`` (shell wildcards, comma-separated), in natural order.

    Raises UnknownNetworkError, with the closest names, when a pattern matches nothing.
    """
    manifest = read_manifest(zoo_dir)
    names = list(manifest["network"])
    keep: set[str] = set()
    for part in (p.strip() for p in str(pattern).split(",")):
        if not part:
            continue
        hits = {n for n in names if fnmatchcase(n, part)}
        if not hits:
            raise UnknownNetworkError(_no_match(part, names, zoo_dir))
        keep |= hits
    rows = manifest[manifest["network"].isin(keep)]
    order = sorted(rows.index, key=lambda i: natural_key(rows.at[i, "network"]))
    return rows.loc[order].reset_index(drop=True)


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
    rows = read_manifest(zoo_dir)
    row = rows[rows["network"] == name]
    if row.empty:
        raise UnknownNetworkError(_no_match(name, list(rows["network"]), zoo_dir))
    return import_network(Path(zoo_dir) / row["file"].iloc[0], name)()


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
