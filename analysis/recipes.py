"""Recipe comparison, depth x width, and gradient norms per layer: pure functions over the results tables.

A sweep (``netzoo sweep GRID``) trains the same networks under several recipes into one results folder; rows
carry ``recipe`` and ``recipe_hash``. These functions compare the recipes: accuracy and time per recipe and family,
learning curves, the generalisation gap (train - test accuracy), accuracy over MLP depth x width, and the
per-layer gradient norms of the lenses' ``layers`` table against depth (the vanishing gradient). Runs that diverged
or failed are left out of every mean (``analysis.population.answering_runs``) and counted: ``left_out`` per recipe,
``attrs["left_out"]`` elsewhere; the diverged share per recipe is over every run trained.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.population import (SPLIT_NAMES, answering_runs, final_epochs, left_out_note, selection_metric, split_of,
                                 validation_metric)
from analysis.section import Section
from netzoo.results import ResultTables
from netzoo.datasets import DATASETS, dataset_info
from netzoo.recipe import Recipe
from netzoo.zoo import natural_key

METRIC = "test_balanced_acc"
GROUP = "Recipes"
WEIGHT_KINDS = ("Linear", "Conv1d", "Conv2d", "Conv3d")  # the layers the manifest's depth counts


# When two recipe fields always change together (adamw comes with weight decay), the axis is named by the
# field earlier in this list; fields not listed come after, in Recipe order.
AXIS_PREFERENCE = ["dropout", "weight_decay", "batch_norm", "batch_size", "early_stopping_patience", "init", "lr",
                   "schedule", "optimizer", "epochs"]


def _recipe_order(frame: pd.DataFrame) -> list[str]:
    """Recipes sorted by name: the same order in every table, chart and legend."""
    return sorted(frame["recipe"].astype(str).unique())


def recipe_fields(networks: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe: its name, hash and every field of its resolved recipe (from ``recipe_json``)."""
    rows = []
    for (name, recipe_hash), group in networks.groupby(["recipe", "recipe_hash"], sort=True, observed=True):
        values = json.loads(group["recipe_json"].iloc[0]) if "recipe_json" in group else {}
        values.pop("name", None)
        rows.append({"recipe": name, "recipe_hash": recipe_hash, **values})
    return pd.DataFrame(rows)


def _determines(codes: pd.DataFrame, a: str, b: str) -> bool:
    """Whether field ``a``'s value fixes field ``b``'s across the recipes."""
    return bool((codes.groupby(a)[b].nunique() <= 1).all())


def recipe_axes(networks: pd.DataFrame) -> pd.DataFrame:
    """The grid's axes read back from the recipes: one row per recipe, one column per independent field that varies.

    A field fixed by another (SGD's lr and momentum come with the optimizer) is not an axis; of two fields that fix
    each other the one earlier in AXIS_PREFERENCE names the axis. Optimizer x init gives columns optimizer, init.
    """
    fields = recipe_fields(networks)
    if fields.empty:
        return pd.DataFrame(columns=["recipe"])
    candidates = [c for c in fields.columns if c not in ("recipe", "recipe_hash", "eval_batch_size")
                  and fields[c].astype(str).nunique() > 1]
    codes = pd.DataFrame({c: pd.factorize(fields[c].astype(str))[0] for c in candidates})
    rank = {f: (AXIS_PREFERENCE.index(f) if f in AXIS_PREFERENCE else len(AXIS_PREFERENCE)) for f in candidates}
    axes = []
    for f in candidates:
        dropped = False
        for g in candidates:
            if g == f or not _determines(codes, g, f):
                continue
            if not _determines(codes, f, g) or rank[g] < rank[f]:
                dropped = True  # g is finer than f, or the same partition with a preferred name
                break
        if not dropped:
            axes.append(f)
    order = [f.name for f in dataclasses.fields(Recipe)]
    axes.sort(key=lambda f: order.index(f) if f in order else len(order))
    return fields[["recipe"] + axes]


def recipe_comparison(epochs: pd.DataFrame, networks: pd.DataFrame, by_family: bool = True,
                      train_size: int | None = None) -> pd.DataFrame:
    """Per recipe (and family): runs that answered, left_out (runs that diverged or failed), their mean balanced
    accuracy, its std, mean train - test accuracy gap, mean training seconds, epochs run, and the diverged share
    of every run trained; the mean validation balanced accuracy (val_balanced_acc) where recorded; with batch
    size and steps per epoch when ``train_size`` is known."""
    every = final_epochs(epochs)
    if every.empty:
        return pd.DataFrame()
    keys = ["recipe"] + (["family"] if by_family else [])

    def with_family(rows: pd.DataFrame) -> pd.DataFrame:
        if "family" in rows:
            return rows
        return rows.join(networks.drop_duplicates("network").set_index("network")[["family"]], on="network")

    kept, _ = answering_runs(ResultTables(networks, epochs))
    rows = with_family(final_epochs(kept.epochs))
    rows = rows.assign(gap=rows["train_acc"] - rows["test_acc"])
    every = with_family(every).assign(diverged=every["status"].eq("diverged"))
    trained = every.groupby(keys, sort=False, observed=True).agg(trained=("network", "size"),
                                                                diverged=("diverged", "mean"))
    val = validation_metric(METRIC)
    validated = val in rows.columns and rows[val].notna().any()
    answers = rows.groupby(keys, sort=False, observed=True).agg(
        runs=("network", "size"), test_balanced_acc=(METRIC, "mean"), std=(METRIC, "std"),
        gap=("gap", "mean"), train_time_s=("train_time_s", "mean"), epochs_run=("epoch", "mean"),
        **({val: (val, "mean")} if validated else {}))
    out = trained.join(answers).reset_index()
    out["runs"] = out["runs"].fillna(0).astype("int64")
    out.insert(len(keys) + 1, "left_out", out.pop("trained") - out["runs"])
    out = out[keys + ["runs", "left_out", "test_balanced_acc", *([val] if validated else []), "std", "gap",
                      "train_time_s", "epochs_run", "diverged"]]
    fields = recipe_fields(networks)
    axis_names: list[str] = []
    if not fields.empty and "batch_size" in fields:
        axis_names = [c for c in recipe_axes(networks).columns if c != "recipe"]
        axes = recipe_axes(networks).drop(columns="batch_size", errors="ignore")
        out = out.merge(axes, on="recipe", how="left").merge(fields[["recipe", "batch_size"]], on="recipe", how="left")
        out = out[["recipe"] + [c for c in axes.columns if c != "recipe"] + [c for c in out if c not in axes]]
        if train_size:
            out["steps_per_epoch"] = [math.ceil(train_size / b) if b else None for b in out["batch_size"]]
    order = {r: i for i, r in enumerate(_recipe_order(every))}
    by = axis_names + keys  # the grid's axes first, numbers as numbers (batch 16 before 128), then the name
    return out.sort_values(by, key=lambda s: s.map(order) if s.name == "recipe" else s, ignore_index=True)


def learning_curves(epochs: pd.DataFrame, metric: str = METRIC, networks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean ``metric``, train and test loss per recipe per epoch, over every network and seed that reached it and
    answered (``networks`` adds the failed runs to leave out); ``attrs["left_out"]``: runs left out."""
    kept, left_out = answering_runs(ResultTables(networks if networks is not None else pd.DataFrame(), epochs))
    epochs = kept.epochs
    if epochs.empty:
        out = pd.DataFrame(columns=["recipe", "epoch", metric, "train_loss", "test_loss", "runs"])
    else:
        out = epochs.groupby(["recipe", "epoch"], sort=False, observed=True).agg(
            **{metric: (metric, "mean")}, train_loss=("train_loss", "mean"), test_loss=("test_loss", "mean"),
            runs=("network", "size")).reset_index()
    out.attrs.update(left_out=left_out)
    return out


def depth_width(epochs: pd.DataFrame, networks: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Mean final ``metric`` per (recipe, depth, width) of constant-width MLPs that answered: depth counts hidden
    layers (the depth-width spec's 1, 2, 6, 10; the manifest's ``depth`` adds the output layer), width is their
    width. ``attrs["left_out"]``: runs left out (diverged or failed)."""
    kept, left_out = answering_runs(ResultTables(networks, epochs))
    last = final_epochs(kept.epochs)
    nets = networks.drop_duplicates("network").set_index("network")
    hidden = nets["widths"].map(lambda w: list(w)[:-1] if w is not None and len(w) > 1 else [])
    mlp = nets[(nets["family"] == "Linear") & hidden.map(lambda w: len(w) > 0 and len(set(w)) == 1)]
    if last.empty or mlp.empty:
        out = pd.DataFrame(columns=["recipe", "depth", "width", metric, "runs"])
        out.attrs.update(left_out=left_out)
        return out
    rows = last[last["network"].isin(mlp.index)].copy()
    rows["depth"] = rows["network"].map(hidden.map(len))
    rows["width"] = rows["network"].map(hidden.map(lambda w: int(w[0]) if w else 0))
    out = rows.groupby(["recipe", "depth", "width"], observed=True).agg(
        **{metric: (metric, "mean")}, runs=("network", "size")).reset_index()
    out.attrs.update(left_out=left_out)
    return out


def gradient_by_depth(layers: pd.DataFrame, networks: pd.DataFrame, deepest: int = 2,
                      recipes: int = 6) -> pd.DataFrame:
    """Mean weight-gradient L2 norm per weight layer (layer 1 = nearest the input, in the file's module order), over
    epochs and seeds of the runs that answered, for the ``deepest`` networks under up to ``recipes`` recipes.
    Columns: recipe, network, depth, layer_index, layer, grad_norm_mean."""
    columns = ["recipe", "network", "depth", "layer_index", "layer", "grad_norm_mean"]
    if layers.empty or "grad_norm_mean" not in layers:
        return pd.DataFrame(columns=columns)
    kept, left_out = answering_runs(ResultTables(networks, pd.DataFrame(), layers=layers))
    layers = kept.layers
    weighted = layers[layers["grad_norm_mean"].notna()]
    if "kind" in weighted:  # weight layers only: a BatchNorm's affine weights are not a layer of the depth
        weighted = weighted[weighted["kind"].isin(WEIGHT_KINDS)]
    if weighted.empty:
        return pd.DataFrame(columns=columns)
    depth = networks.drop_duplicates("network").set_index("network")["depth"]
    names = sorted(weighted["network"].unique(), key=lambda n: (-depth.get(n, 0), natural_key(str(n))))[:deepest]
    chosen = sorted(weighted["recipe"].astype(str).unique())[:recipes]
    weighted = weighted[weighted["network"].isin(names) & weighted["recipe"].isin(chosen)]
    # groupby(sort=False) keeps the layers in the order the lenses wrote them: the module order of the file
    means = weighted.groupby(["recipe", "network", "layer"], sort=False, observed=True)["grad_norm_mean"].mean()
    means = means.reset_index()
    means["depth"] = means["network"].map(depth)
    means["layer_index"] = means.groupby(["recipe", "network"], sort=False).cumcount() + 1
    order = {n: i for i, n in enumerate(names)}
    means = means.sort_values(["network", "recipe", "layer_index"], key=lambda c: c.map(order) if c.name == "network"
                              else c, ignore_index=True)[columns]
    means.attrs.update(left_out=left_out)
    return means


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


def axes_chart(table: pd.DataFrame, rows: str, columns: str, metric: str = METRIC) -> Figure:
    """Balanced accuracy over a two-axis grid (e.g. optimizer x init): one cell per recipe."""
    pivot = table.pivot_table(index=rows, columns=columns, values=metric)
    fig = Figure(figsize=(1.6 * pivot.shape[1] + 3, 0.7 * pivot.shape[0] + 2), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(pivot, annot=True, fmt=".3f", cmap="viridis", ax=ax)  # colours span the data: small gaps show
    ax.set_title("balanced test accuracy (final epoch)", fontsize=9)
    return fig


def curves_chart(curves: pd.DataFrame, axes: pd.DataFrame | None = None, metric: str = METRIC) -> Figure:
    """Learning curves: mean balanced accuracy and test loss against epoch, one line per recipe (colour: the first
    axis of the grid, dashes: the second)."""
    names = [c for c in (axes.columns if axes is not None else []) if c != "recipe"][:2]
    if names:
        curves = curves.merge(axes[["recipe"] + names].astype(str), on="recipe", how="left")
    hue, style = (names[0], names[1] if len(names) > 1 else None) if names else ("recipe", None)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    sns.lineplot(data=curves, x="epoch", y=metric, hue=hue, style=style, marker="o", ax=ax_acc, legend=False)
    sns.lineplot(data=curves, x="epoch", y="test_loss", hue=hue, style=style, marker="o", ax=ax_loss)
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
        ax.set_ylabel("depth (hidden layers)")
        ax.set_xlabel("width (units per hidden layer)")
    return fig


def gradient_chart(grads: pd.DataFrame) -> Figure:
    """Gradient norm per weight layer (log scale) against its position from the input, one line per network."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax = fig.subplots()
    for (recipe, network), g in grads.groupby(["recipe", "network"], sort=False):
        ax.plot(g["layer_index"], g["grad_norm_mean"], marker=".", lw=1, label=f"{network} · {recipe}")
    ax.set_yscale("log")
    ax.set_xlabel("weight layer (1 = nearest the input)")
    ax.set_ylabel("mean weight-gradient L2 norm")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3, which="both")
    return fig


# --- report ------------------------------------------------------------------------------------------
def _train_size(networks: pd.DataFrame) -> int | None:
    """Training samples of the results' one dataset (for steps per epoch; netzoo.datasets' registry), or None
    when the results hold several datasets or one netzoo does not know."""
    names = networks["dataset"].dropna().unique() if "dataset" in networks else []
    if len(names) != 1 or str(names[0]) not in DATASETS:
        return None
    return dataset_info(str(names[0])).train_size


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def report_sections(tables, results_dir=None, select_on: str | None = None) -> list[Section]:
    """The report's recipe sections: comparison, learning curves and gap when there are several recipes (the best
    recipe picked on ``select_on``: analysis.population.selection_metric); the depth x width heatmap for
    constant-width MLPs of several depths and widths; gradient norms per layer from `layers`."""
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
        axes = recipe_axes(networks) if "recipe_json" in networks else None
        names = [c for c in (axes.columns if axes is not None else []) if c != "recipe"]
        select = selection_metric(ResultTables(networks, epochs), select_on, METRIC)
        best, worst = overall.loc[overall[select].idxmax()], overall.loc[overall[select].idxmin()]
        picked = (f" (picked on the {SPLIT_NAMES[split_of(select)]} split's {select}: {_fmt(best[select])} and "
                  f"{_fmt(worst[select])})") if select != METRIC else ""
        fastest = overall.loc[overall["train_time_s"].idxmin()]
        steps = (" Steps per epoch: " + ", ".join(f"{r} {s}" for r, s in zip(overall["recipe"], overall["steps_per_epoch"]))
                 + ".") if "steps_per_epoch" in overall else ""
        if overall["epochs_run"].nunique() > 1:  # early stopping: how many epochs each recipe really ran
            steps += " Mean epochs run: " + ", ".join(f"{r} {e:.1f}" for r, e in zip(overall["recipe"],
                                                                                      overall["epochs_run"])) + "."
        by_axis = "".join(
            f" By {a}: " + ", ".join(f"{v} {_fmt(m)}" for v, m in overall.groupby(a, sort=True)[METRIC].mean().items())
            + "." for a in names[:2] if a in overall)
        figures = [comparison_chart(per_family)]
        if len(names) == 2 and all(a in overall for a in names):
            figures.insert(0, axes_chart(overall, names[0], names[1]))
        sections.append(Section(
            key="recipes-comparison", title="Accuracy and time per recipe", group=GROUP,
            question="Which recipe trains the same networks best, and at what cost in time?",
            finding=(f"{best['recipe']} gives the best mean balanced accuracy ({_fmt(best[METRIC])} over "
                     f"{int(best['runs'])} runs), {worst['recipe']} the worst ({_fmt(worst[METRIC])}){picked}; "
                     f"{fastest['recipe']} trains fastest ({fastest['train_time_s']:.2f} s per run)." + by_axis + steps
                     + left_out_note(int(overall["left_out"].sum()))),
            table=overall.round(4), figures=figures))
        curves = learning_curves(epochs, networks=networks)
        final = curves.sort_values("epoch").groupby("recipe", sort=False).tail(1).set_index("recipe")
        first = curves.sort_values("epoch").groupby("recipe", sort=False).head(1).set_index("recipe")
        gain = (final[METRIC] - first[METRIC]).sort_values()
        sections.append(Section(
            key="recipes-curves", title="Learning curves per recipe", group=GROUP,
            question="How does test accuracy evolve epoch by epoch under each recipe?",
            finding=(f"From the first to the last epoch, {gain.index[-1]} gains the most accuracy "
                     f"({gain.iloc[-1]:+.3f}) and {gain.index[0]} the least ({gain.iloc[0]:+.3f})."
                     + left_out_note(curves.attrs["left_out"])),
            table=per_family.round(4), figures=[curves_chart(curves, axes)]))
        gap = overall.sort_values("gap")
        sections.append(Section(
            key="recipes-gap", title="Generalisation gap per recipe", group=GROUP,
            question="How far is train accuracy above test accuracy under each recipe?",
            finding=(f"The gap (train - test accuracy, final epoch) is smallest under {gap['recipe'].iloc[0]} "
                     f"({gap['gap'].iloc[0]:+.3f}) and largest under {gap['recipe'].iloc[-1]} "
                     f"({gap['gap'].iloc[-1]:+.3f})." + left_out_note(int(overall["left_out"].sum()))),
            table=gap[["recipe", "runs", "left_out", "gap", METRIC]].round(4)))
    grid = depth_width(epochs, networks)
    if grid["depth"].nunique() > 1 and grid["width"].nunique() > 1:
        best = grid.loc[grid[METRIC].idxmax()]
        worst = grid.loc[grid[METRIC].idxmin()]
        by_depth = grid.groupby("depth")[METRIC].mean()
        sections.append(Section(
            key="recipes-depth-width", title="Depth and width", group=GROUP,
            question="How does an MLP's balanced accuracy change with its depth (hidden layers) and width?",
            finding=(f"Best: depth {int(best['depth'])} x width {int(best['width'])} ({_fmt(best[METRIC])}); worst: "
                     f"depth {int(worst['depth'])} x width {int(worst['width'])} ({_fmt(worst[METRIC])}). Averaged "
                     f"over widths, accuracy is {_fmt(by_depth.iloc[0])} at depth {by_depth.index[0]} and "
                     f"{_fmt(by_depth.iloc[-1])} at depth {by_depth.index[-1]}."
                     + left_out_note(grid.attrs["left_out"])),
            table=grid.round(4), figures=[heatmap_chart(grid)]))
    grads = gradient_by_depth(layers, networks)
    if not grads.empty:
        ratios = []
        for (recipe, network), g in grads.groupby(["recipe", "network"], sort=False):
            first, last = g["grad_norm_mean"].iloc[0], g["grad_norm_mean"].iloc[-1]
            ratio = f"{first / last:.2g}" if first > 0 and last > 0 else (
                "0: no gradient reaches the first layer" if last > 0 else "undefined: the last layer has no gradient")
            tiny = g.loc[g["grad_norm_mean"] < 1e-6 * last, "layer_index"]
            below = f", under a millionth of the last layer's from layer {tiny.max()} down" if len(tiny) else ""
            ratios.append(f"{network} ({len(g)} weight layers) under {recipe}: first/last layer {ratio}{below}")
        sections.append(Section(
            key="recipes-gradients", title="Gradient norm per layer against depth", group=GROUP,
            question="Do gradients vanish towards the input of deep networks?",
            finding=("Ratio of the first weight layer's mean gradient norm to the last's (below 1: gradients shrink "
                     "towards the input): " + "; ".join(ratios[:6]) + "." + left_out_note(grads.attrs["left_out"])),
            table=grads.round(6), figures=[gradient_chart(grads)]))
    return sections
