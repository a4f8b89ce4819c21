"""The population of trained networks as one row per network: the helpers every exam question shares.

Results are keyed by (network, recipe_hash, seed). The exam answers one recipe at a time (``recipe``: a name
or hash; default the recipe with the most runs) and, where a network was trained with several seeds, uses
the mean over seeds with a 95% confidence interval: columns ``<value>_mean``, ``<value>_ci95`` and ``n_seeds``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from netzoo.errors import ResultsError

METRIC = "test_balanced_acc"   # the study's "accuracy": mean per-class recall on the test split
BASIC = "Basic"                # the study's reference network (and its family)
GOOD = 0.80                    # "good": metric >= GOOD at every epoch
GOLD = 0.98                    # "gold star": good, and metric >= GOLD at the last epoch
# Manifest columns that do not depend on the seed: one value per network.
NETWORK_COLUMNS = ["network", "family", "activation", "depth", "params", "memory", "ops", "macs",
                   "flops_forward", "flops_train_step", "dataset", "classes"]
COSTS = {  # cost column -> axis label with its unit
    "train_time_s": "training time (s)",
    "params": "parameters",
    "memory": "memory (tensor elements per input)",
    "ops": "ops (autograd nodes per input)",
    "flops_forward": "FLOPs per forward pass",
}
LABELS = {"test_balanced_acc": "test accuracy (mean per-class recall)", "test_acc": "test accuracy",
          **COSTS}


@dataclass(frozen=True)
class Tables:
    """The four results tables, as netzoo.results.load returns them (any object with these attributes works)."""

    networks: pd.DataFrame
    epochs: pd.DataFrame
    predictions: pd.DataFrame
    layers: pd.DataFrame


def as_tables(tables) -> Tables:
    """Any object with networks/epochs/predictions/layers attributes as a Tables (missing ones empty)."""
    if isinstance(tables, Tables):
        return tables
    return Tables(*(getattr(tables, name, None) if getattr(tables, name, None) is not None else pd.DataFrame()
                    for name in ("networks", "epochs", "predictions", "layers")))


def label(column: str) -> str:
    """Axis label with its unit for a metric or cost column."""
    return LABELS.get(column, column.replace("_", " "))


# --- recipe and epoch: one place decides which rows a question answers ---------------------------
def recipe_hash(tables, recipe: str | None = None) -> str:
    """The recipe the exam answers: ``recipe`` (name or hash) or the one with the most runs."""
    networks = as_tables(tables).networks
    if networks.empty:
        raise ResultsError("The results hold no networks yet: train some first (netzoo train ... --results DIR).")
    runs = networks.groupby(["recipe_hash", "recipe"], dropna=False).size().reset_index(name="runs")
    if recipe is None:
        runs = runs.sort_values(["runs", "recipe_hash"], ascending=[False, True])
        return str(runs.iloc[0]["recipe_hash"])
    match = runs[(runs["recipe"] == recipe) | (runs["recipe_hash"] == recipe)]
    if match.empty:
        known = ", ".join(f"{r.recipe} ({r.recipe_hash})" for r in runs.itertuples())
        raise ResultsError(f"No results for recipe {recipe!r}; recipes in these results: {known}.")
    return str(match.sort_values("runs", ascending=False).iloc[0]["recipe_hash"])


def for_recipe(tables, recipe: str | None = None) -> Tables:
    """The tables restricted to one recipe's rows (see recipe_hash)."""
    tables = as_tables(tables)
    chosen = recipe_hash(tables, recipe)
    keep = {}
    for name in ("networks", "epochs", "predictions", "layers"):
        frame = getattr(tables, name)
        keep[name] = frame[frame["recipe_hash"] == chosen] if "recipe_hash" in frame.columns else frame
    return Tables(**keep)


def last_epoch(epochs: pd.DataFrame) -> int:
    """The last epoch recorded in an epochs (or predictions) frame."""
    if epochs.empty:
        raise ResultsError("The results hold no epochs yet: train some networks first.")
    return int(epochs["epoch"].max())


def resolve_epoch(epochs: pd.DataFrame, epoch: int | None) -> int:
    """``epoch`` checked against the recorded ones, or the last epoch when None."""
    if epoch is None:
        return last_epoch(epochs)
    recorded = sorted(int(e) for e in epochs["epoch"].unique())
    if epoch not in recorded:
        raise ResultsError(f"No results for epoch {epoch}; recorded epochs: {recorded}. Pass --epoch with one of them.")
    return int(epoch)


# --- means over seeds -----------------------------------------------------------------------------
def ci95(std: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the 95% Student-t confidence interval of a mean (NaN with one seed)."""
    n = n.astype(float)
    t = stats.t.ppf(0.975, np.maximum(n - 1, 1))
    return pd.Series(np.where(n > 1, t * std / np.sqrt(n), np.nan), index=std.index)


def mean_over_seeds(frame: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """One row per ``by`` group: ``n_seeds`` and, for each value, ``<value>_mean`` and ``<value>_ci95``."""
    grouped = frame.groupby(by, sort=True, observed=True)
    out = grouped.size().rename("n_seeds").to_frame()
    means, stds, counts = grouped[values].mean(), grouped[values].std(), grouped[values].count()
    for value in values:
        out[f"{value}_mean"] = means[value]
        out[f"{value}_ci95"] = ci95(stds[value], counts[value])
    return out.reset_index()


def per_epoch(tables, metric: str = METRIC, recipe: str | None = None) -> pd.DataFrame:
    """Metric per network and epoch, mean over seeds: network, family, activation, epoch, <metric>_mean, _ci95."""
    tables = for_recipe(tables, recipe)
    curves = mean_over_seeds(tables.epochs, ["network", "epoch"], [metric])
    return curves.merge(_identity(tables.networks), on="network", how="left")


def _identity(networks: pd.DataFrame) -> pd.DataFrame:
    """network, family, activation (and the manifest costs): one row per network."""
    cols = [c for c in NETWORK_COLUMNS if c in networks.columns]
    return networks[cols].drop_duplicates("network").reset_index(drop=True)


def population(tables, metric: str = METRIC, epoch: int | None = None, recipe: str | None = None,
               good: float = GOOD, gold: float = GOLD) -> pd.DataFrame:
    """One row per network at ``epoch`` (default last): its manifest costs, seed means with CIs of the test
    metrics, per-class recalls and cumulative training time, and the flags ``good`` and ``gold_star``."""
    tables = for_recipe(tables, recipe)
    epoch = resolve_epoch(tables.epochs, epoch)
    at = tables.epochs[tables.epochs["epoch"] == epoch]
    values = [c for c in dict.fromkeys([metric, "test_acc", "test_balanced_acc", "test_loss", "train_acc",
                                        "train_time_s"]) if c in at.columns]
    values += sorted((c for c in at.columns if c.startswith("test_acc_class_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    pop = _identity(tables.networks).merge(mean_over_seeds(at, ["network"], values), on="network", how="inner")
    flags = standing(tables, metric, epoch, good, gold)
    pop = pop.merge(flags, on="network", how="left")
    pop[["good", "gold_star"]] = pop[["good", "gold_star"]].fillna(False).astype(bool)
    pop.attrs.update(metric=metric, epoch=epoch, good=good, gold=gold)
    return pop.sort_values(f"{metric}_mean", ascending=False, kind="stable").reset_index(drop=True)


def standing(tables, metric: str = METRIC, epoch: int | None = None, good: float = GOOD,
             gold: float = GOLD) -> pd.DataFrame:
    """network, good (metric >= good at every epoch up to ``epoch``), gold_star (good and >= gold at ``epoch``).
    A network missing an epoch (diverged, stopped early) is not good. Tables must hold one recipe."""
    tables = as_tables(tables)
    epoch = resolve_epoch(tables.epochs, epoch)
    curves = mean_over_seeds(tables.epochs[tables.epochs["epoch"] <= epoch], ["network", "epoch"], [metric])
    value = curves[f"{metric}_mean"]
    flags = curves.assign(ok=value >= good - 1e-12, final=(curves["epoch"] == epoch) & (value >= gold - 1e-12))
    out = flags.groupby("network").agg(ok=("ok", "all"), epochs=("epoch", "nunique"), final=("final", "any"))
    out["good"] = out["ok"] & (out["epochs"] == epoch)
    out["gold_star"] = out["good"] & out["final"]
    return out[["good", "gold_star"]].reset_index()


def basic_row(pop: pd.DataFrame) -> pd.Series | None:
    """The Basic network's row of a population frame, or None when it was not trained."""
    rows = pop[pop["network"] == BASIC]
    if rows.empty and "family" in pop.columns:
        rows = pop[pop["family"] == BASIC]
    return None if rows.empty else rows.iloc[0]


def with_tables(tables, **frames) -> Tables:
    """A copy of ``tables`` with some frames replaced."""
    return replace(as_tables(tables), **frames)
