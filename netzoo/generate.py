"""Render a zoo: seeded, shape-aware sampling of every network of a spec; render templates/; check each
rendered file (import, build, forward pass on the target shape); measure its static costs; write the manifest.

    generate_zoo("default", dataset="mnist")  ->  zoo/mnist/<Name>.py + zoo/mnist/manifest.parquet

What each family is (template, input view, sampler, feasibility) lives in its netzoo.families entry; how a
plan becomes a file in netzoo.render. The same spec + seed + input shape gives byte-identical files and
manifest: every random draw comes from a random.Random seeded by (seed, family, activation), and nothing else
(time, paths, dict order) enters them. A zoo is rendered into a staging folder and published at the end, so a
failure midway leaves the output folder as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import torch

from netzoo import schema
from netzoo.datasets import dataset_info
from netzoo.errors import GenerationError, NetzooError, ShapeMismatchError, SpecError
from netzoo.families import REGISTRY, Draw, Fit
from netzoo.measure import static_costs
from netzoo.render import (ACTIVATION_MODULES, Plan, build_steps, check_plan, describe_plan,  # noqa: F401
                           environment, is_int, render)
from netzoo.spec import (ACTIVATIONS, MAX_ACTIVATIONS, MAX_CLASSES, MAX_PIXELS, MAX_WEIGHTS, FamilySpec, ZooSpec,
                         check_seed, load_spec)


# --- sampling ------------------------------------------------------------------------------------
def _cell_rng(seed: int, family: str, activation: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}/{family}/{activation}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _acts(rng: random.Random, n: int, activation: str, p: float) -> list[bool]:
    """Activation after each of n weight layers: probability p, never after the last, at least one in an
    activation cell (when there is a hidden layer), none in a None cell."""
    if activation == "None" or n < 2:
        return [False] * n
    flags = [rng.random() < p for _ in range(n - 1)]
    if not any(flags):
        flags[rng.randrange(n - 1)] = True
    return flags + [False]


def sample_plan(name: str, family: str, activation: str, fam: FamilySpec, rng: random.Random,
                input_shape: tuple[int, int, int], classes: int, depth: int | None,
                grid_point: tuple[int, int] | None = None) -> Plan:
    """Draw one network of a cell with its family's sampler, then where the activations go. ``depth`` (weight
    layers; ResNetStyle: blocks) is chosen by the caller to spread it evenly over the cell."""
    entry = REGISTRY[family]
    view = entry.view(input_shape)
    layers = entry.sample(Draw(rng, fam.ranges, view, classes, depth, grid_point, fam.bias_probability))
    flags = _acts(rng, len(layers), activation, fam.activation_probability)
    for layer, flag in zip(layers, flags):
        layer["act"] = flag and layer["type"] != "BasicBlock"  # a block applies the activation itself
    return Plan(name=name, family=family, activation=activation, view=view, layers=layers,
                dropout=fam.dropout, batch_norm=fam.batch_norm, classes=classes)


def basic_plan(input_shape: tuple[int, int, int], classes: int, dropout: float = 0.0,
               batch_norm: bool = False) -> Plan:
    """The study's Basic: flat input -> one Linear to the classes (with bias) -> LogSoftmax.

    It has no hidden layer, so no Dropout or BatchNorm layer; ``dropout``/``batch_norm`` only record the zoo's
    setting in its manifest row, so that every row of a zoo agrees.
    """
    entry = REGISTRY["Basic"]
    view = entry.view(input_shape)
    layers = [{**layer, "act": False} for layer in entry.sample(Draw(random.Random(0), {}, view, classes, None))]
    return Plan(name="Basic", family="Basic", activation="None", view=view, layers=layers, dropout=dropout,
                batch_norm=batch_norm, classes=classes)


def plan_zoo(spec: ZooSpec, input_shape: tuple[int, int, int], classes: int, seed: int) -> list[Plan]:
    """Every network of a spec, sampled: Basic first, then each family's cells in canonical activation order."""
    plans = [basic_plan(input_shape, classes, spec.dropout, spec.batch_norm)] if spec.basic else []
    for family, fam in spec.families.items():
        for activation in ACTIVATIONS:
            count = fam.counts.get(activation, 0)
            if not count:
                continue
            rng = _cell_rng(seed, family, activation)
            if fam.grid:
                jobs = [(None, point) for point in fam.grid for _ in range(count)]
            else:
                low, high = fam.ranges[REGISTRY[family].spread]
                # spread evenly over depths (ResNetStyle: over block counts): low, low+1, …, high, low, …
                jobs = [(low + j % (high - low + 1), None) for j in range(count)]
            for i, (depth, point) in enumerate(jobs, start=1):
                plans.append(sample_plan(f"{family}{activation}_{i}", family, activation, fam, rng,
                                         input_shape, classes, depth, point))
    return plans


def check_classes(classes: Any) -> int:
    """``classes`` when it is an integer in [2, 10000] (one class makes every network's output constant)."""
    if not (is_int(classes) and 2 <= classes <= MAX_CLASSES):
        raise SpecError(f"classes: {classes!r} is not allowed; give 2 <= classes <= {MAX_CLASSES}.")
    return classes


def check_size(plan: Plan) -> None:
    """SpecError when a sampled network would not fit in memory while generated: more than MAX_WEIGHTS weights
    (biases and BatchNorm aside) or a layer output of more than MAX_ACTIVATIONS values for one input."""
    weights, largest = 0, math.prod(plan.view)
    for step in build_steps(plan):
        largest = max(largest, math.prod(step.shape))
        if step.kind == "Linear":
            weights += step.inputs * step.out
        elif step.kind == "Conv":
            kernel = step.kernel if isinstance(step.kernel, tuple) else (step.kernel,) * step.dims
            weights += step.inputs * step.out * math.prod(kernel)
        elif step.kind == "BasicBlock":
            weights += 9 * step.out * (step.inputs + step.out) + step.inputs * step.out * (step.inputs != step.out)
    if largest > MAX_ACTIVATIONS:
        raise SpecError(f"{plan.name} would hold {largest} activation values per input; allowed: at most "
                        f"{MAX_ACTIVATIONS}. Lower channels or width, or give a smaller input.")
    if weights > MAX_WEIGHTS:
        raise SpecError(f"{plan.name} would hold {weights} weights; allowed: at most {MAX_WEIGHTS}. Lower the "
                        f"spec's width, channels, kernel or depth for its family.")


# --- feasibility: a range no network of this input shape can satisfy ----------------------------------
def check_feasible(spec: ZooSpec, input_shape: tuple[int, int, int], classes: int) -> None:
    """Raise SpecError naming the file and key when a family's ranges cannot fit this input shape (each
    family's rule is its registry entry's ``fits``)."""
    where = spec.path.name if spec.name == spec.path.stem else spec.name
    check_classes(classes)
    for family, fam in spec.families.items():
        if any(fam.counts.values()):
            entry = REGISTRY[family]
            entry.fits(Fit(family, fam.ranges, entry.view(input_shape), input_shape, where, f"families.{family}"))


# --- the manifest and the checks ---------------------------------------------------------------------
def arch_id(plan: Plan) -> str:
    """Stable hash of the canonical architecture (no name, no cell index): equal ids are the same network."""
    uses_activation = any(layer["act"] for layer in plan.layers) or any(
        layer["type"] == "BasicBlock" for layer in plan.layers)
    canonical = {"view": list(plan.view), "classes": plan.classes, "layers": plan.layers,
                 "activation": plan.activation if uses_activation else None,
                 "dropout": plan.dropout if any(layer["act"] for layer in plan.layers) else 0.0,
                 "batch_norm": plan.batch_norm and len(plan.layers) > 1}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_row(plan: Plan, costs: dict[str, int], spec: ZooSpec, seed: int,
                 input_shape: tuple[int, int, int], file_sha256: str) -> dict[str, Any]:
    """One manifest row (schema.MANIFEST) of a rendered network whose file's bytes hash to ``file_sha256``."""
    layers = plan.layers
    kernel_side = [max(layer["kernel"]) if isinstance(layer["kernel"], list) else layer["kernel"] for layer in layers]
    blocks_act = plan.activation != "None"
    return {
        "network": plan.name, "family": plan.family, "activation": plan.activation,
        "depth": sum(2 if layer["type"] == "BasicBlock" else 1 for layer in layers),
        "arch_id": arch_id(plan), "file": f"{plan.name}.py", "file_sha256": file_sha256,
        "template": REGISTRY[plan.family].template,
        "input_shape": "x".join(map(str, input_shape)), "classes": plan.classes, **costs,
        "layer_types": [layer["type"] for layer in layers], "widths": [layer["out"] for layer in layers],
        "kernel_sizes": kernel_side, "biases": [layer["bias"] for layer in layers],
        "activations_after": [blocks_act if layer["type"] == "BasicBlock" else layer["act"] for layer in layers],
        "dropout": plan.dropout, "batch_norm": plan.batch_norm,
        "hparams": json.dumps(plan.hparams(), sort_keys=True), "spec": spec.name, "spec_hash": spec.sha256,
        "seed": seed,
    }


def plan_from_row(row: dict | pd.Series) -> Plan:
    """The plan a manifest row was rendered from (its cell and ``hparams``): rendering it again gives the same
    file, and arch_id the same id."""
    sampled = json.loads(row["hparams"])
    return Plan(name=row["network"], family=row["family"], activation=row["activation"],
                view=tuple(sampled["view"]), layers=sampled["layers"], dropout=sampled["dropout"],
                batch_norm=sampled["batch_norm"], classes=int(row["classes"]))


def check_network(model: torch.nn.Module, name: str, input_shape: tuple[int, int, int], classes: int) -> None:
    """Forward a batch of two on the target shape: (2, classes) finite log-probabilities, else GenerationError."""
    x = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():
        out = model(x)
    if tuple(out.shape) != (2, classes):
        raise GenerationError(f"{name}: forward on (2, {', '.join(map(str, input_shape))}) gave shape "
                              f"{tuple(out.shape)}, expected (2, {classes}). The template or sampler is wrong.")
    if not torch.isfinite(out).all() or not torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-4):
        raise GenerationError(f"{name}: forward did not return finite log-probabilities (rows of exp must sum to 1).")


def _resolve_target(dataset, input_shape, classes) -> tuple[str, tuple[int, int, int], int]:
    if dataset is not None and input_shape is not None:
        info = dataset_info(dataset)
        if tuple(input_shape) != info.input_shape:
            raise ShapeMismatchError(f"--dataset {dataset} gives {'x'.join(map(str, info.input_shape))} inputs, "
                                     f"not {'x'.join(map(str, input_shape))}; give one of --dataset or --input-shape.")
    if classes is not None:
        check_classes(classes)
    if input_shape is None:
        info = dataset_info(dataset or "digits")
        return info.name, info.input_shape, info.classes if classes is None else classes
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ShapeMismatchError(f"input shape {input_shape!r} is not CxHxW with positive sides, e.g. (1, 28, 28).")
    if math.prod(shape) > MAX_PIXELS:
        raise ShapeMismatchError(f"input shape {'x'.join(map(str, shape))} has {math.prod(shape)} pixels; allowed: "
                                 f"at most {MAX_PIXELS} (e.g. 3x1024x1024).")
    return (dataset or "x".join(map(str, shape))), shape, 10 if classes is None else classes


def generate_zoo(spec: str | Path = "default", dataset: str | None = None, input_shape=None, classes=None,
                 seed: int | None = None, out: str | Path | None = None, progress: bool = True,
                 dropout: float | None = None, batch_norm: bool | None = None,
                 networks: Collection[str] | None = None) -> pd.DataFrame:
    """Render every network of ``spec`` into ``out/<Name>.py`` and ``out/manifest.parquet``; return the manifest.

    Each rendered file is imported, built and run forward on the target shape before its costs are measured;
    a failure raises GenerationError naming the network. ``dropout``/``batch_norm`` override the spec's.
    ``networks``: render only these (named as in the whole zoo, with the same architectures); a name the
    spec does not make raises SpecError.
    """
    zoo_spec = load_spec(spec)
    label, shape, n_classes = _resolve_target(dataset, input_shape, classes)
    seed = zoo_spec.seed if seed is None else check_seed(seed, "seed")
    overrides = {}
    if dropout is not None:
        if not 0.0 <= float(dropout) < 1.0:
            raise SpecError(f"dropout={dropout!r} is not allowed; give a probability in [0, 1).")
        overrides["dropout"] = float(dropout)
    if batch_norm is not None:
        overrides["batch_norm"] = bool(batch_norm)
    if overrides:
        zoo_spec = replace(zoo_spec, families={f: replace(fam, **overrides) for f, fam in zoo_spec.families.items()},
                           **overrides)
    check_feasible(zoo_spec, shape, n_classes)
    out = Path(out) if out is not None else Path("zoo") / label

    plans = plan_zoo(zoo_spec, shape, n_classes, seed)
    if networks is not None:
        wanted = set(networks)
        if not wanted:
            raise SpecError(f"no network selected of spec {zoo_spec.name!r}; give network names, or None for all.")
        unknown = sorted(wanted - {plan.name for plan in plans})
        if unknown:
            raise SpecError(f"spec {zoo_spec.name!r} makes no network named {', '.join(unknown[:5])}"
                            f"{' …' if len(unknown) > 5 else ''}; list its networks with: netzoo generate --spec "
                            f"{spec} then netzoo zoo list --zoo DIR")
        plans = [plan for plan in plans if plan.name in wanted]
    for plan in plans:  # before anything is written
        check_size(plan)
    if out.exists() and not out.is_dir():
        raise NetzooError(f"--out {out} is not a folder; give a folder for the zoo.")
    created, stage = [], None
    try:
        created = _make_dirs(out)
        stage = Path(tempfile.mkdtemp(prefix=".tmp-generate-", dir=out))
        rows = _render_checked(plans, zoo_spec, seed, shape, n_classes, stage, progress, out)
        manifest = pd.DataFrame(rows, columns=schema.MANIFEST.names)
        _publish(stage, out, manifest)
    except BaseException as exc:  # a failure (or Ctrl-C) midway leaves the folder as it was: no half-written zoo
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: never a user's files
        if isinstance(exc, OSError):  # disk full, read-only folder, …
            raise NetzooError(f"could not write the zoo into {out}: {exc.strerror or exc}; free space or give "
                              f"another --out, then run it again.") from None
        raise
    manifest.attrs["zoo_dir"] = str(out)
    return manifest


def _render_checked(plans: list[Plan], spec: ZooSpec, seed: int, shape: tuple[int, int, int], classes: int,
                    stage: Path, progress: bool, out: Path) -> list[dict[str, Any]]:
    """Render each plan into ``stage``, import it (checking its hash), build it, run it forward, measure it;
    return the manifest rows. Any failure raises GenerationError naming the network."""
    from netzoo.zoo import import_network

    env = environment()
    rows = []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-of-one passes: threads cost more than they give
    try:
        for plan in _progress(plans, progress, f"generate {spec.name} -> {out}"):
            source = render(plan, spec.name, spec.sha256, seed, shape, env).encode()
            digest = hashlib.sha256(source).hexdigest()
            path = stage / f"{plan.name}.py"
            path.write_bytes(source)
            try:
                model = import_network(path, plan.name, sha256=digest)()
                check_network(model, plan.name, shape, classes)
                costs = static_costs(model, shape, copy_first=False)  # the model is thrown away
            except GenerationError:
                raise
            except Exception as exc:  # any failure to import, build or run is the generator's bug: stop
                raise GenerationError(f"{plan.name} ({out / path.name}) failed to import, build or run on "
                                      f"{'x'.join(map(str, shape))}: {type(exc).__name__}: {exc}") from exc
            rows.append(manifest_row(plan, costs, spec, seed, shape, file_sha256=digest))
    finally:
        torch.set_num_threads(torch_threads)
    return rows


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first (to undo them)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return missing


def _publish(stage: Path, out: Path, manifest: pd.DataFrame) -> None:
    """Move a fully rendered and checked zoo from ``stage`` into ``out``.

    The old manifest goes first and the new one comes last, so a zoo caught between the two generations has
    no manifest and is refused as missing, never read as a mix (its hashes would refuse a mix too). A file
    whose bytes did not change is left in place; files of an earlier generation that this one does not make
    are removed; other files (the user's) stay.
    """
    (out / "manifest.parquet").unlink(missing_ok=True)
    names = set(manifest["file"])
    for name in sorted(names):
        new, old = stage / name, out / name
        if old.is_file() and old.read_bytes() == new.read_bytes():
            continue  # unchanged: keep its mtime
        os.replace(new, old)
    for stale in out.glob("*.py"):  # files of an earlier generation into this folder
        if stale.name not in names and _generated_by_netzoo(stale):
            stale.unlink()
    pq.write_table(schema.conform(manifest, schema.MANIFEST), stage / "manifest.parquet")
    os.replace(stage / "manifest.parquet", out / "manifest.parquet")
    shutil.rmtree(stage)


def _generated_by_netzoo(path: Path) -> bool:
    """Whether ``path``'s first line is a netzoo header ('# Name: generated by netzoo from templates/…')."""
    with path.open("rb") as f:
        return b"generated by netzoo" in f.readline()


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="network", leave=False)
