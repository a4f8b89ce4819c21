"""Zoo specs: one TOML file describes a zoo (families, activations, counts per cell, sampling ranges, seed).

load_spec("default") reads a shipped spec (netzoo/specs/default.toml); load_spec("my.toml") reads a file.
Every problem stops with one SpecError naming the file, the key and what is allowed.

Keys (top level; every option is also settable per family, where it overrides the top level):
    description = "…"             # one line on what the zoo is for
    seed = 0                      # generation seed (generate --seed overrides it)
    basic = true                  # include the Basic network (flat input -> one Linear -> LogSoftmax)
    bias_probability = 0.3        # each weight layer has a bias with this probability (the study's 0.3)
    activation_probability = 0.7  # an activation follows each non-final weight layer with this probability
    dropout = 0.0                 # Dropout(p) after each activation (0: no Dropout layer)
    batch_norm = false            # BatchNorm after each hidden weight layer
    [families.Conv2d]
    counts = { None = 61, ReLU = 23 }  # networks per (family, activation) cell
    depth = [2, 6]                # weight layers, inclusive range (or one integer); spread evenly per cell
    channels = [10, 64]           # conv out channels, uniform
    kernel = [1, 28]              # conv kernel side, uniform, capped by what the input leaves
    width = [10, 128]             # first hidden Linear width; each next one uniform in [low, previous]
    conv_layers = [1, 2]          # ConvNdThenLinear: convs before the Linear layers
    stem_channels, stem_kernel, blocks, convs, linears   # ResNetStyle (stem_kernel is given for a 28 side)
    grid = { hidden_layers = [1, 2], width = [8, 16] }   # Linear: one MLP per combination (constant width)
                                                         # and per count; replaces depth and width

Every range, grid value and count has a limit (netzoo.families.MAXIMA; MAX_COUNT and MAX_NETWORKS below: depth
<= 64, width <= 8192, channels <= 1024, at most 100000 networks), the seed fits an int64, and a spec that renders
no network is refused. netzoo.generate also refuses a sampled network over MAX_WEIGHTS or MAX_ACTIVATIONS.
A spec's name is written into every generated file's header, so a name holding a control character is refused.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netzoo.errors import SpecError
from netzoo.families import MAXIMA, REGISTRY, spec_families
from netzoo.paths import SPECS_DIR

ACTIVATIONS = ("None", "ReLU", "SELU", "Sigmoid", "Tanh")

OPTIONS = {  # option -> (type, default): top level and per family
    "bias_probability": (float, 0.3),
    "activation_probability": (float, 0.7),
    "dropout": (float, 0.0),
    "batch_norm": (bool, False),
}
TOP_KEYS = ("description", "seed", "basic", "families", *OPTIONS)

GRID_KEYS = ("hidden_layers", "width")

MAX_COUNT = 100_000      # networks per cell (per grid point with a grid)
MAX_NETWORKS = 100_000   # networks per spec, Basic included
MAX_SEED = 2**63 - 1     # the manifest's seed column is an int64
MAX_CLASSES = 10_000     # output classes of a generated network (at least 2: one class is a constant output)
MAX_PIXELS = 2**22       # C*H*W of the input (3x1024x1024 fits): Basic alone holds pixels x classes weights
MAX_WEIGHTS = 100_000_000      # weights of one network (400 MB as float32): within the limits above a 63-layer
                               # MLP of width 8192 would hold 4.2e9 and exhaust the memory while generated
MAX_ACTIVATIONS = 2**26        # values one layer outputs for one input (256 MB as float32)


@dataclass(frozen=True)
class FamilySpec:
    """One family's cells, ranges and options, resolved against the spec's top level."""

    family: str
    counts: dict[str, int]                       # activation -> networks (per grid point with a grid)
    ranges: dict[str, tuple[int, int]]           # every range key of the family, defaults filled in
    grid: list[tuple[int, int]] | None = None    # Linear: (hidden_layers, width) combinations
    bias_probability: float = 0.3
    activation_probability: float = 0.7
    dropout: float = 0.0
    batch_norm: bool = False


@dataclass(frozen=True)
class ZooSpec:
    """A parsed, validated zoo spec."""

    name: str                # 'default', 'square', … (shipped) or the file path as given
    path: Path
    sha256: str              # of the file's bytes
    seed: int
    basic: bool
    families: dict[str, FamilySpec] = field(default_factory=dict)
    description: str = ""
    dropout: float = 0.0     # top-level options (families may override them)
    batch_norm: bool = False

    def count(self) -> int:
        """Networks this spec renders (Basic included)."""
        total = int(self.basic)
        for fam in self.families.values():
            per_count = len(fam.grid) if fam.grid else 1
            total += sum(fam.counts.values()) * per_count
        return total


def shipped_specs() -> list[str]:
    """Names of the specs shipped inside the package (netzoo/specs/*.toml)."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.toml"))


def resolve_spec_path(name_or_path: str | Path) -> tuple[str, Path]:
    """('default', …/specs/default.toml) for a shipped name; (path as given, path) for a file."""
    text = str(name_or_path)
    if not text.isprintable():  # it is written into every generated file's header: one plain line only
        raise SpecError(f"spec {text!r} holds a control character (a newline, tab, …); rename the file to a plain "
                        f"one-line name.")
    if not text.endswith(".toml") and (SPECS_DIR / f"{text}.toml").is_file():
        return text, SPECS_DIR / f"{text}.toml"
    path = Path(text)
    if path.is_file():
        return text, path
    raise SpecError(f"Unknown spec {text!r}: not a shipped spec ({', '.join(shipped_specs())}) "
                    f"and no such file. Pass a shipped name or a PATH.toml.")


def load_spec(name_or_path: str | Path = "default") -> ZooSpec:
    """Parse and validate a spec: a shipped name (default, square, …) or a PATH.toml."""
    name, path = resolve_spec_path(name_or_path)
    raw = path.read_bytes()
    where = path.name if path.parent == SPECS_DIR else str(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{where}: TOML syntax error: {exc}. Fix the file (see netzoo/specs/default.toml).") from None
    return parse_spec(data, name=name, path=path, sha256=hashlib.sha256(raw).hexdigest(), where=where)


def parse_spec(data: dict[str, Any], name: str, path: Path, sha256: str, where: str) -> ZooSpec:
    """Validate a spec's parsed TOML; ``where`` names the file in error messages."""
    _check_keys(data, TOP_KEYS, where, "")
    top = {opt: _option(data, opt, default, where, "") for opt, (_, default) in OPTIONS.items()}
    seed = check_seed(data.get("seed", 0), f"{where}: seed")
    basic = data.get("basic", True)
    if not isinstance(basic, bool):
        raise SpecError(f"{where}: basic: {basic!r} is not allowed; give true or false.")
    families_raw = data.get("families", {})
    if not isinstance(families_raw, dict):
        raise SpecError(f"{where}: families: expected tables like [families.Linear].")
    families = {}
    for family, table in families_raw.items():
        key = f"families.{family}"
        if family not in spec_families():
            raise SpecError(f"{where}: {key}: unknown family {family!r}; allowed: {', '.join(spec_families())}.")
        if not isinstance(table, dict):
            raise SpecError(f"{where}: {key}: expected a table with counts = {{ ReLU = 10, … }}.")
        families[family] = _parse_family(family, table, top, where)
    spec = ZooSpec(name=name, path=path, sha256=sha256, seed=seed, basic=basic, families=families,
                   description=str(data.get("description", "")), dropout=top["dropout"],
                   batch_norm=top["batch_norm"])
    total = spec.count()
    if total == 0:
        raise SpecError(f"{where}: the spec renders no network; give a [families.<Family>] table counts above 0, "
                        f"or basic = true.")
    if total > MAX_NETWORKS:
        raise SpecError(f"{where}: the spec renders {total} networks; allowed: at most {MAX_NETWORKS}. "
                        f"Lower the counts.")
    return spec


def check_seed(seed: Any, at: str) -> int:
    """``seed`` when it is an integer in [0, 2**63 - 1] (the manifest's int64), else SpecError naming ``at``."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise SpecError(f"{at}: {seed!r} is not allowed; give an integer in [0, {MAX_SEED}].")
    return seed


def _parse_family(family: str, table: dict[str, Any], top: dict[str, Any], where: str) -> FamilySpec:
    key = f"families.{family}"
    entry = REGISTRY[family]
    allowed = ("counts", *entry.ranges, *OPTIONS) + (("grid",) if entry.grid else ())
    _check_keys(table, allowed, where, key)
    counts_raw = table.get("counts")
    if not isinstance(counts_raw, dict) or not counts_raw:
        raise SpecError(f"{where}: {key}.counts: missing; give networks per activation, "
                        f"e.g. counts = {{ ReLU = 10 }} (activations: {', '.join(ACTIVATIONS)}).")
    counts = {}
    for act in ACTIVATIONS:  # canonical order, whatever the file's order
        if act in counts_raw:
            n = counts_raw[act]
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_COUNT:
                raise SpecError(f"{where}: {key}.counts.{act}: {n!r} is not allowed; give a count >= 0 and "
                                f"<= {MAX_COUNT}.")
            counts[act] = n
    for act in counts_raw:
        if act not in ACTIVATIONS:
            raise SpecError(f"{where}: {key}.counts: unknown activation {act!r}; "
                            f"allowed: {', '.join(ACTIVATIONS)}.")
    ranges = {}
    for rkey, default in entry.ranges.items():
        ranges[rkey] = _range(table[rkey], where, f"{key}.{rkey}", MAXIMA[rkey]) if rkey in table else default
    grid = None
    if "grid" in table:
        grid = _grid(table["grid"], where, f"{key}.grid")
    options = {opt: _option(table, opt, top[opt], where, key) for opt in OPTIONS}
    return FamilySpec(family=family, counts=counts, ranges=ranges, grid=grid, **options)


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str, prefix: str) -> None:
    for k in table:
        if k not in allowed:
            at = f"{prefix}.{k}" if prefix else k
            raise SpecError(f"{where}: {at}: unknown key; allowed here: {', '.join(allowed)}.")


def _option(table: dict[str, Any], opt: str, default: Any, where: str, prefix: str) -> Any:
    at = f"{prefix}.{opt}" if prefix else opt
    if opt not in table:
        return default
    value = table[opt]
    if OPTIONS[opt][0] is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: {at}: {value!r} is not allowed; give true or false.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 \
            or (opt == "dropout" and value >= 1.0):
        allowed = "a probability in [0, 1)" if opt == "dropout" else "a probability in [0, 1]"
        raise SpecError(f"{where}: {at}: {value!r} is not allowed; give {allowed}.")
    return float(value)


def _range(value: Any, where: str, at: str, most: int) -> tuple[int, int]:
    """An inclusive [low, high] range of integers in [1, most] (one integer means [v, v])."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise SpecError(f"{where}: {at}: {value!r} is not allowed; give [low, high] integers or one integer.")
    low, high = value
    if low < 1:
        raise SpecError(f"{where}: {at}: {value!r} starts below 1; give [low, high] with 1 <= low <= high.")
    if low > high:
        raise SpecError(f"{where}: {at}: {value!r} is an empty range (low > high); give [low, high] with low <= high.")
    if high > most:
        raise SpecError(f"{where}: {at}: {value!r} goes beyond the limit; give [low, high] with "
                        f"1 <= low <= high <= {most}.")
    return low, high


def _grid(value: Any, where: str, at: str) -> list[tuple[int, int]]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: {at}: expected a table like {{ hidden_layers = [1], width = [8, 16] }}.")
    _check_keys(value, GRID_KEYS, where, at)
    axes = {}
    for k in GRID_KEYS:
        items = value.get(k)
        if (not isinstance(items, list) or not items
                or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAXIMA[k] for v in items)):
            raise SpecError(f"{where}: {at}.{k}: {items!r} is not allowed; give a non-empty list of integers "
                            f">= 1 and <= {MAXIMA[k]}.")
        if len(set(items)) != len(items):
            raise SpecError(f"{where}: {at}.{k}: {items!r} repeats a value; list each value once.")
        axes[k] = items
    return [(h, w) for h in axes["hidden_layers"] for w in axes["width"]]
