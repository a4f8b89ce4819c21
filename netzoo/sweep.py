"""Recipe sweeps: train a chosen subset of the zoo under every recipe of a grid, into one results folder.

Every row carries the recipe's name and hash, so one network under two recipes is two rows, never a collision,
and rerunning a sweep resumes (the runner skips complete (network, recipe_hash, seed) keys).
Dropout and batch norm are template options: a recipe that sets them trains a variant of the zoo generated
with them (same spec and seed, so the same networks by name) under RESULTS/zoos/<variant>/.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from netzoo.datasets import dataset_info
from netzoo.errors import RecipeError
from netzoo.recipe import Grid, Recipe, Selection, load_grid
from netzoo.zoo import read_manifest


@dataclass
class RecipeRun:
    """One recipe of a sweep: where its zoo is, and what the runner reported."""

    recipe: Recipe
    zoo: Path
    steps_per_epoch: int | None
    summary: object = None  # netzoo.runner.Summary


@dataclass
class SweepSummary:
    """What a sweep did, recipe by recipe; ``line()`` is the one line the CLI prints."""

    grid: str
    results: Path
    networks: list[str]
    seeds: list[int] | None
    runs: list[RecipeRun] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def failed(self) -> int:
        """Runs that failed, summed over recipes (0 when the runner reports none)."""
        return sum(int(getattr(r.summary, "failed", 0) or 0) for r in self.runs)

    def line(self) -> str:
        """e.g. 'sweep optimizers: 12 recipes x 3 networks x 1 seed, 0 failed, 41.2 s -> results/sweep-…'"""
        seeds = len(self.seeds) if self.seeds else 1
        return (f"sweep {self.grid}: {len(self.runs)} recipes x {len(self.networks)} networks x {seeds} "
                f"seed{'s' if seeds != 1 else ''}, {self.failed} failed, {self.wall_time_s:.1f} s -> {self.results}")

    def plan_table(self) -> pd.DataFrame:
        """One row per recipe: its hash, optimizer, lr, batch size, steps per epoch, epochs and zoo."""
        return pd.DataFrame([{
            "recipe": r.recipe.name, "recipe_hash": r.recipe.hash, "optimizer": r.recipe.optimizer,
            "lr": r.recipe.lr, "batch_size": r.recipe.batch_size, "steps_per_epoch": r.steps_per_epoch,
            "epochs": r.recipe.epochs, "zoo": str(r.zoo),
        } for r in self.runs])


def _generate(out: Path, quiet: bool, networks: list[str] | None = None, **kwargs) -> pd.DataFrame:
    """Generate a zoo into ``out`` once (only ``networks`` of it, when given); a zoo already there that holds
    them is reused (a rerun), one that lacks some is generated again with the union."""
    from netzoo.generate import generate_zoo

    if (out / "manifest.parquet").is_file():
        manifest = read_manifest(out)
        if networks is None or set(networks) <= set(manifest["network"]):
            return manifest
        networks = sorted(set(manifest["network"]) | set(networks))
    return generate_zoo(out=out, progress=not quiet, networks=networks, **kwargs)


def variant_name(recipe: Recipe) -> str:
    """The folder of the zoo variant a recipe needs: 'dropout0.3', 'bn', 'dropout0.3-bn' or 'plain'."""
    parts = ([f"dropout{recipe.dropout:g}"] if recipe.dropout else []) + (["bn"] if recipe.batch_norm else [])
    return "-".join(parts) or "plain"


def zoo_for(recipe: Recipe, zoo: Path, manifest: pd.DataFrame, results: Path, quiet: bool,
            names: list[str] | None = None) -> Path:
    """The zoo a recipe trains: ``zoo`` itself when its dropout and batch norm match the recipe, else a variant
    generated from the same spec, seed and input shape with the recipe's dropout and batch norm (only the
    networks ``names``, when given: a few networks of a 1001-network spec render in seconds, not minutes)."""
    has_dropout = float(manifest["dropout"].iloc[0]) if "dropout" in manifest else 0.0
    has_bn = bool(manifest["batch_norm"].iloc[0]) if "batch_norm" in manifest else False
    if (has_dropout, has_bn) == (recipe.dropout, recipe.batch_norm):
        return zoo
    spec, seed = manifest["spec"].iloc[0], int(manifest["seed"].iloc[0])
    shape = tuple(int(x) for x in str(manifest["input_shape"].iloc[0]).split("x"))
    out = results / "zoos" / f"{Path(str(spec)).stem}-{variant_name(recipe)}"
    _generate(out, quiet, networks=names, spec=spec, input_shape=shape, classes=int(manifest["classes"].iloc[0]),
              seed=seed, dropout=recipe.dropout, batch_norm=recipe.batch_norm)
    return out


def check_selection(manifest: pd.DataFrame, selection: Selection, where: str) -> list[str]:
    """The selection's network names, or a RecipeError naming the zoo's families and activations."""
    names = selection.select(manifest)
    if not names:
        raise RecipeError(
            f"{where}: the selection {selection.to_dict() or 'all'} matches no network of the zoo; its families: "
            f"{', '.join(sorted(manifest['family'].unique()))}; activations: "
            f"{', '.join(sorted(manifest['activation'].astype(str).unique()))}. Change [grid.networks] or pass "
            f"--networks GLOB[,GLOB…].")
    return names


def run_sweep(grid: str | Path | Grid, zoo: str | Path | None, dataset: str, data_root=None, download: bool = False,
              results: str | Path = "results/sweep", networks: str | None = None, epochs: int | None = None,
              seeds: list[int] | None = None, device: str | None = None, workers: int | None = None,
              quiet: bool = False, echo: Callable[[str], object] | None = None, fuse: str = "auto") -> SweepSummary:
    """Train the grid's networks (or ``networks`` globs) of ``zoo`` under every recipe of ``grid`` into ``results``.

    Every recipe trains in one job (``TrainJob.sweep``), so that a network's runs under recipes that differ only
    in numbers (lr, weight decay, momentum, init, dropout, …) train as one fused group where it pays
    (``fuse``: auto or off, netzoo.grouping). A grid with a ``spec`` generates that zoo under
    RESULTS/zoos/<spec>/ instead of using ``zoo``. ``epochs`` overrides every recipe's epochs (a new hash).
    ``echo(text)`` receives the plan and each recipe's summary line (the CLI prints them; nothing is printed
    here). Returns a SweepSummary; rerunning resumes.
    """
    from netzoo.devices import parse_devices
    from netzoo.jobs import TrainJob
    from netzoo.runner import run_job

    start = time.perf_counter()
    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    results = Path(results)
    if grid.spec is not None:
        zoo = results / "zoos" / Path(grid.spec).stem
        manifest = _generate(zoo, quiet, spec=grid.spec, dataset=dataset)
    else:
        if zoo is None:
            raise RecipeError(f"grid {grid.name!r} trains a subset of a zoo: pass --zoo DIR.")
        zoo = Path(zoo)
        manifest = read_manifest(zoo)
    selection = Selection(name=tuple(g.strip() for g in networks.split(",") if g.strip())) if networks \
        else grid.networks
    names = check_selection(manifest, selection, f"grid {grid.name!r} on {zoo}")
    train_size = dataset_info(dataset).train_size
    summary = SweepSummary(grid=grid.name, results=results, networks=names, seeds=seeds)
    for recipe in grid.recipes:
        if epochs is not None:
            recipe = recipe.replace(epochs=epochs)
        steps = math.ceil(train_size / recipe.batch_size)
        summary.runs.append(RecipeRun(recipe, zoo_for(recipe, zoo, manifest, results, quiet, names), steps))
    if echo is not None:
        echo(f"sweep {grid.name}: {len(summary.runs)} recipes x {len(names)} networks "
             f"({', '.join(names[:4])}{', …' if len(names) > 4 else ''})")
        echo(summary.plan_table().drop(columns="zoo").to_string(index=False))
    job = TrainJob(zoo=zoo, results=results, dataset=dataset, data_root=data_root, download=download,
                   sweep=tuple((run.recipe, run.zoo) for run in summary.runs), seeds=tuple(seeds) if seeds else (42,),
                   networks=",".join(names), workers=workers, devices=parse_devices(device), quiet=quiet, fuse=fuse)
    whole = run_job(job)
    for run in summary.runs:
        run.summary = whole.recipes[run.recipe.hash]
        if echo is not None:
            echo(f"  {run.recipe.name}: {run.summary.line()}")
    summary.wall_time_s = time.perf_counter() - start
    return summary
