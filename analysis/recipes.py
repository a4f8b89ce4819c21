"""Recipe comparison, depth x width, and gradient norms per layer: pure functions over the results tables.

A sweep (``netzoo sweep GRID``) trains the same networks under several recipes into one results folder; rows
carry ``recipe`` and ``recipe_hash``. These functions compare the recipes: accuracy and time per recipe and family,
learning curves, the generalisation gap (train - test accuracy), accuracy over MLP depth x width, and the
per-layer gradient norms of the lenses' ``layers`` table against depth (the vanishing gradient).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from analysis.section import Section
from analysis.seeds import final_epochs

METRIC = "test_balanced_acc"
GROUP = "Recipes"


def _natural_key(text: str) -> str:
    """'fc2' before 'fc10': numbers zero-padded, so plain string order is natural order."""
    return re.sub(r"\d+", lambda m: m.group().zfill(8), str(text))


def _recipe_order(frame: pd.DataFrame) -> list[str]:
    """Recipes in the order they first appear (a grid's order), for tables and legends."""
    return list(dict.fromkeys(frame["recipe"].astype(str)))


def recipe_fields(networks: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe_hash: recipe name and the fields a reader compares (optimizer, lr, batch size, ...)."""
    keep = ["optimizer", "lr", "weight_decay", "batch_size", "epochs", "init", "dropout", "batch_norm",
            "early_stopping_patience"]
    rows = []
    for (name, recipe_hash), group in networks.groupby(["recipe", "recipe_hash"], sort=False, observed=True):
        values = json.loads(group["recipe_json"].iloc[0]) if "recipe_json" in group else {}
        rows.append({"recipe": name, "recipe_hash": recipe_hash, **{k: values.get(k) for k in keep}})
    return pd.DataFrame(rows)


def recipe_comparison(epochs: pd.DataFrame, networks: pd.DataFrame, by_family: bool = True,
                      train_size: int | None = None) -> pd.DataFrame:
    """Per recipe (and family): runs, mean balanced accuracy, its std, mean train - test accuracy gap, mean
    training seconds, epochs run, diverged share; with batch size and steps per epoch when ``train_size`` is known."""
    last = final_epochs(epochs)
    if last.empty:
        return pd.DataFrame()
    keys = ["recipe"] + (["family"] if by_family else [])
    rows = last.join(networks.drop_duplicates("network").set_index("network")[["family"]], on="network") \
        if "family" not in last else last
    rows = rows.assign(gap=rows["train_acc"] - rows["test_acc"], diverged=rows["status"].eq("diverged"))
    out = rows.groupby(keys, sort=False, observed=True).agg(
        runs=("network", "size"), test_balanced_acc=(METRIC, "mean"), std=(METRIC, "std"),
        gap=("gap", "mean"), train_time_s=("train_time_s", "mean"), epochs_run=("epoch", "mean"),
        diverged=("diverged", "mean")).reset_index()
    fields = recipe_fields(networks)
    if not fields.empty:
        out = out.merge(fields[["recipe", "batch_size"]].drop_duplicates("recipe"), on="recipe", how="left")
        if train_size:
            out["steps_per_epoch"] = [math.ceil(train_size / b) if b else None for b in out["batch_size"]]
    order = {r: i for i, r in enumerate(_recipe_order(last))}
    return out.sort_values(keys, key=lambda s: s.map(order) if s.name == "recipe" else s, ignore_index=True)


def learning_curves(epochs: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Mean ``metric``, train and test loss per recipe per epoch, over every network and seed that reached it."""
    if epochs.empty:
        return pd.DataFrame(columns=["recipe", "epoch", metric, "train_loss", "test_loss", "runs"])
    return epochs.groupby(["recipe", "epoch"], sort=False, observed=True).agg(
        **{metric: (metric, "mean")}, train_loss=("train_loss", "mean"), test_loss=("test_loss", "mean"),
        runs=("network", "size")).reset_index()


def depth_width(epochs: pd.DataFrame, networks: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Mean final ``metric`` per (recipe, depth, width) of constant-width MLPs: depth counts hidden layers (the
    depth-width spec's 1, 2, 6, 10; the manifest's ``depth`` adds the output layer), width is their width."""
    last = final_epochs(epochs)
    nets = networks.drop_duplicates("network").set_index("network")
    hidden = nets["widths"].map(lambda w: list(w)[:-1] if w is not None and len(w) > 1 else [])
    mlp = nets[(nets["family"] == "Linear") & hidden.map(lambda w: len(w) > 0 and len(set(w)) == 1)]
    if last.empty or mlp.empty:
        return pd.DataFrame(columns=["recipe", "depth", "width", metric, "runs"])
    rows = last[last["network"].isin(mlp.index)].copy()
    rows["depth"] = rows["network"].map(hidden.map(len))
    rows["width"] = rows["network"].map(hidden.map(lambda w: int(w[0]) if w else 0))
    return rows.groupby(["recipe", "depth", "width"], observed=True).agg(
        **{metric: (metric, "mean")}, runs=("network", "size")).reset_index()


def gradient_by_depth(layers: pd.DataFrame, networks: pd.DataFrame, deepest: int = 3) -> pd.DataFrame:
    """Mean weight-gradient L2 norm per weight layer (layer 1 = nearest the input), over epochs and seeds, for the
    ``deepest`` networks of each recipe. Columns: recipe, network, depth, layer_index, layer, grad_norm_mean."""
    columns = ["recipe", "network", "depth", "layer_index", "layer", "grad_norm_mean"]
    if layers.empty or "grad_norm_mean" not in layers:
        return pd.DataFrame(columns=columns)
    weighted = layers[layers["grad_norm_mean"].notna()]
    if weighted.empty:
        return pd.DataFrame(columns=columns)
    depth = networks.drop_duplicates("network").set_index("network")["depth"]
    means = weighted.groupby(["recipe", "network", "layer"], observed=True)["grad_norm_mean"].mean().reset_index()
    means["depth"] = means["network"].map(depth)
    keep = (means.drop_duplicates(["recipe", "network"]).sort_values(["depth", "network"], ascending=[False, True])
            .groupby("recipe", sort=False).head(deepest)[["recipe", "network"]])
    means = means.merge(keep, on=["recipe", "network"])
    means = means.sort_values(["recipe", "network", "layer"], key=lambda s: s.map(_natural_key) if s.name == "layer"
                              else s, ignore_index=True)
    means["layer_index"] = means.groupby(["recipe", "network"]).cumcount() + 1
    return means[columns]


# --- charts ------------------------------------------------------------------------------------------
def comparison_chart(table: pd.DataFrame) -> Figure:
    """Balanced accuracy per recipe (bars), one bar per family."""
    fig = Figure(figsize=(max(6, 0.6 * table["recipe"].nunique() + 4), 4.5), layout="constrained")
    ax = fig.subplots()
    sns.barplot(data=table, x="recipe", y="test_balanced_acc", hue="family" if "family" in table else None, ax=ax)
    ax.set_ylabel("balanced test accuracy (final epoch)")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return fig


def curves_chart(curves: pd.DataFrame, metric: str = METRIC) -> Figure:
    """Learning curves: mean balanced accuracy and test loss against epoch, one line per recipe."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    sns.lineplot(data=curves, x="epoch", y=metric, hue="recipe", marker="o", ax=ax_acc, legend=False)
    sns.lineplot(data=curves, x="epoch", y="test_loss", hue="recipe", marker="o", ax=ax_loss)
    ax_acc.set_ylabel("balanced test accuracy")
    ax_loss.set_ylabel("test loss")
    if (curves["test_loss"] > 0).all() and curves["test_loss"].max() / max(curves["test_loss"].min(), 1e-12) > 20:
        ax_loss.set_yscale("log")
    ax_loss.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def heatmap_chart(grid: pd.DataFrame, metric: str = METRIC) -> Figure:
    """Balanced accuracy over depth (rows) x width (columns), one panel per recipe."""
    recipes = _recipe_order(grid)
    fig = Figure(figsize=(4.5 * len(recipes), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(recipes)))
    for ax, recipe in zip(axes, recipes):
        table = grid[grid["recipe"] == recipe].pivot_table(index="depth", columns="width", values=metric)
        sns.heatmap(table, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=ax is axes[-1])
        ax.set_title(recipe, fontsize=9)
    return fig


def gradient_chart(grads: pd.DataFrame) -> Figure:
    """Gradient norm per weight layer (log scale) against its position from the input, one line per network."""
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    for (recipe, network), g in grads.groupby(["recipe", "network"], sort=False):
        ax.plot(g["layer_index"], g["grad_norm_mean"], marker=".", lw=1, label=f"{network} · {recipe}")
    ax.set_yscale("log")
    ax.set_xlabel("weight layer (1 = nearest the input)")
    ax.set_ylabel("mean weight-gradient L2 norm")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return fig


# --- report ------------------------------------------------------------------------------------------
def _train_size(networks: pd.DataFrame) -> int | None:
    """Training samples of the results' dataset (for steps per epoch), or None when it cannot be loaded here."""
    from netzoo.datasets import load_dataset

    names = networks["dataset"].dropna().unique() if "dataset" in networks else []
    if len(names) != 1:
        return None
    try:  # digits is embedded; a torchvision dataset loads from its default root, or is skipped
        return int(load_dataset(str(names[0])).x_train.shape[0])
    except Exception:
        return None


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def report_sections(tables) -> list[Section]:
    """The report's recipe sections: comparison, learning curves and gap when there are several recipes; the depth
    x width heatmap for constant-width MLPs of several depths and widths; gradient norms per layer from `layers`."""
    epochs, networks = tables.epochs, tables.networks
    layers = getattr(tables, "layers", pd.DataFrame())
    sections: list[Section] = []
    if epochs.empty:
        return sections
    if epochs["recipe"].nunique() > 1:
        batch_sizes = recipe_fields(networks)["batch_size"].nunique() if "recipe_json" in networks else 0
        train_size = _train_size(networks) if batch_sizes > 1 else None  # steps per epoch matter then
        overall = recipe_comparison(epochs, networks, by_family=False, train_size=train_size)
        per_family = recipe_comparison(epochs, networks, by_family=True)
        best, worst = overall.loc[overall[METRIC].idxmax()], overall.loc[overall[METRIC].idxmin()]
        fastest = overall.loc[overall["train_time_s"].idxmin()]
        steps = (" Steps per epoch: " + ", ".join(f"{r} {s}" for r, s in zip(overall["recipe"], overall["steps_per_epoch"]))
                 + ".") if "steps_per_epoch" in overall else ""
        sections.append(Section(
            key="recipes-comparison", title="Accuracy and time per recipe", group=GROUP,
            question="Which recipe trains the same networks best, and at what cost in time?",
            finding=(f"{best['recipe']} gives the best mean balanced accuracy ({_fmt(best[METRIC])} over "
                     f"{int(best['runs'])} runs), {worst['recipe']} the worst ({_fmt(worst[METRIC])}); "
                     f"{fastest['recipe']} trains fastest ({fastest['train_time_s']:.2f} s per run)." + steps),
            table=overall.round(4), figures=[comparison_chart(per_family)]))
        curves = learning_curves(epochs)
        final = curves.sort_values("epoch").groupby("recipe", sort=False).tail(1).set_index("recipe")
        first = curves.sort_values("epoch").groupby("recipe", sort=False).head(1).set_index("recipe")
        gain = (final[METRIC] - first[METRIC]).sort_values()
        sections.append(Section(
            key="recipes-curves", title="Learning curves per recipe", group=GROUP,
            question="How does test accuracy evolve epoch by epoch under each recipe?",
            finding=(f"From the first to the last epoch, {gain.index[-1]} gains the most accuracy "
                     f"({gain.iloc[-1]:+.3f}) and {gain.index[0]} the least ({gain.iloc[0]:+.3f})."),
            table=per_family.round(4), figures=[curves_chart(curves)]))
        gap = overall.sort_values("gap")
        sections.append(Section(
            key="recipes-gap", title="Generalisation gap per recipe", group=GROUP,
            question="How far is train accuracy above test accuracy under each recipe?",
            finding=(f"The gap (train - test accuracy, final epoch) is smallest under {gap['recipe'].iloc[0]} "
                     f"({gap['gap'].iloc[0]:+.3f}) and largest under {gap['recipe'].iloc[-1]} "
                     f"({gap['gap'].iloc[-1]:+.3f})."),
            table=gap[["recipe", "runs", "gap", METRIC]].round(4)))
    grid = depth_width(epochs, networks)
    if grid["depth"].nunique() > 1 and grid["width"].nunique() > 1:
        best = grid.loc[grid[METRIC].idxmax()]
        worst = grid.loc[grid[METRIC].idxmin()]
        by_depth = grid.groupby("depth")[METRIC].mean()
        sections.append(Section(
            key="recipes-depth-width", title="Depth and width", group=GROUP,
            question="How does an MLP's accuracy change with its depth and width?",
            finding=(f"Best: depth {int(best['depth'])} x width {int(best['width'])} ({_fmt(best[METRIC])}); worst: "
                     f"depth {int(worst['depth'])} x width {int(worst['width'])} ({_fmt(worst[METRIC])}). Averaged "
                     f"over widths, accuracy is {_fmt(by_depth.iloc[0])} at depth {by_depth.index[0]} and "
                     f"{_fmt(by_depth.iloc[-1])} at depth {by_depth.index[-1]}."),
            table=grid.round(4), figures=[heatmap_chart(grid)]))
    grads = gradient_by_depth(layers, networks)
    if not grads.empty:
        ratios = []
        for (recipe, network), g in grads.groupby(["recipe", "network"], sort=False):
            ratio = g["grad_norm_mean"].iloc[0] / g["grad_norm_mean"].iloc[-1] if g["grad_norm_mean"].iloc[-1] else np.nan
            ratios.append(f"{network} ({len(g)} weight layers) under {recipe}: first/last layer {ratio:.2g}")
        sections.append(Section(
            key="recipes-gradients", title="Gradient norm per layer against depth", group=GROUP,
            question="Do gradients vanish towards the input of deep networks?",
            finding=("Ratio of the first weight layer's mean gradient norm to the last's (below 1: gradients shrink "
                     "towards the input): " + "; ".join(ratios[:6]) + "."),
            table=grads.round(6), figures=[gradient_chart(grads)]))
    return sections
