"""Chart functions: an analysis frame in, a matplotlib Figure (drawn with seaborn) out. No computing here.

Every chart is titled, labels its axes with units, uses a log axis for costs, and colours a family or an
activation the same way everywhere (FAMILY_COLORS, ACTIVATION_COLORS).
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")  # files only: the report never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.population import BASIC, label  # noqa: E402

FAMILIES = ["Basic", "Linear", "Conv1d", "Conv2d", "Conv3d", "Conv1dThenLinear", "Conv2dThenLinear",
            "Conv3dThenLinear", "ResNetStyle"]
ACTIVATIONS = ["None", "ReLU", "SELU", "Sigmoid", "Tanh"]
FAMILY_COLORS = dict(zip(FAMILIES, sns.color_palette("tab10", len(FAMILIES)).as_hex()))
ACTIVATION_COLORS = dict(zip(ACTIVATIONS, sns.color_palette("Dark2", len(ACTIVATIONS)).as_hex()))
GOLD_STAR = dict(marker="*", s=140, color="gold", edgecolor="black", linewidth=0.6, zorder=5)
sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
plt.rcParams["figure.max_open_warning"] = 0  # a report holds every chart until it is saved


def palette(kind: str, names) -> dict[str, str]:
    """Colour per family or activation: fixed for the known names, then tab20 for any others."""
    fixed = FAMILY_COLORS if kind == "family" else ACTIVATION_COLORS
    extra = iter(sns.color_palette("tab20", 20).as_hex()[::-1])
    return {name: fixed.get(name) or next(extra) for name in names}


def order(kind: str, names) -> list[str]:
    """Known names in their fixed order, then the rest sorted."""
    known = FAMILIES if kind == "family" else ACTIVATIONS
    names = set(names)
    return [n for n in known if n in names] + sorted(names - set(known))


def _figure(width: float, height: float, ncols: int = 1, **kw) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), layout="constrained", squeeze=False, **kw)
    return fig, axes[0]


def distribution(pop: pd.DataFrame, value: str, title: str, log: bool = False,
                 reference: float | None = None) -> Figure:
    """Box + strip of ``value`` per family (left) and per activation (right); gold stars as stars; Basic's
    value as a dashed line."""
    fig, axes = _figure(13, 5.2, 2, sharex=True)
    for ax, kind in zip(axes, ("family", "activation")):
        names = order(kind, pop[kind].unique())
        colors = palette(kind, names)
        with warnings.catch_warnings():  # seaborn 0.13.2 passes matplotlib 3.11's deprecated ``vert``: harmless
            warnings.filterwarnings("ignore", message="vert: bool was deprecated")
            sns.boxplot(data=pop, x=value, y=kind, order=names, hue=kind, palette=colors, ax=ax, showfliers=False,
                        boxprops={"alpha": 0.45}, legend=False, log_scale=log)
        sns.stripplot(data=pop, x=value, y=kind, order=names, hue=kind, palette=colors, ax=ax, size=2.5,
                      alpha=0.6, jitter=0.25, legend=False)
        stars = pop[pop["gold_star"]]
        if len(stars):
            ax.scatter(stars[value], stars[kind].map({n: i for i, n in enumerate(names)}), label="gold star",
                       **GOLD_STAR)
        if reference is not None and np.isfinite(reference):
            ax.axvline(reference, color="black", linestyle="--", linewidth=1, label=f"{BASIC}: {reference:.3g}")
        ax.set(xlabel=label(value.removesuffix("_mean")) + (" (log scale)" if log else ""), ylabel=kind,
               title=f"per {kind}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return fig


def cell_grid(summary: pd.DataFrame, title: str, fmt: str = ".2f", log: bool = False) -> Figure:
    """Heatmap of the median per cell (family x activation) from a by_group frame."""
    cells = summary[summary["group"] == "cell"]
    grid = cells.pivot(index="family", columns="activation", values="median")
    grid = grid.reindex(index=order("family", grid.index), columns=order("activation", grid.columns))
    fig, axes = _figure(7.5, 0.45 * len(grid) + 1.8)
    values = grid.to_numpy()
    norm = matplotlib.colors.LogNorm() if log and (values[np.isfinite(values)] > 0).all() else None
    text = grid.map(lambda v: "" if pd.isna(v) else f"{v:,.0f}" if abs(v) >= 1000 else format(v, fmt))
    sns.heatmap(grid, annot=text, fmt="", cmap="viridis", norm=norm, ax=axes[0], linewidths=0.5,
                cbar_kws={"label": "median"})
    if norm is not None:
        cbar = axes[0].collections[0].colorbar
        cbar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.4g}"))
        cbar.ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set(title=title, xlabel="activation", ylabel="family")
    return fig


def attempts(q1: pd.DataFrame, title: str) -> Figure:
    """Networks at or above each threshold per epoch, with good and gold-star counts."""
    fig, axes = _figure(8, 4.5)
    ax = axes[0]
    columns = [c for c in q1.columns if c.startswith("reached_")] + ["good", "gold_stars"]
    long = q1.melt(id_vars="epoch", value_vars=columns, var_name="count", value_name="how many")
    long["count"] = long["count"].str.replace("reached_", "≥ ").str.replace(r"(\d)$", r"\1%", regex=True)
    sns.lineplot(data=long, x="epoch", y="how many", hue="count", style="count", markers=True, dashes=False, ax=ax)
    ax.set(title=title, xlabel="epoch (attempt)", ylabel="networks", xticks=sorted(q1["epoch"].unique()))
    ax.legend(title=None, fontsize=8, ncols=2)
    return fig


def curves(curves_frame: pd.DataFrame, value: str, title: str) -> Figure:
    """A line per network over epochs, coloured by family, with each family's median as a thick line."""
    fig, axes = _figure(9, 5)
    ax = axes[0]
    names = order("family", curves_frame["family"].dropna().unique())
    colors = palette("family", names)
    for family in names:
        rows = curves_frame[curves_frame["family"] == family]
        wide = rows.pivot(index="network", columns="epoch", values=value)
        segments = [np.column_stack([wide.columns, line]) for line in wide.to_numpy()]
        ax.add_collection(LineCollection(segments, colors=colors[family], alpha=0.15, linewidths=0.7))
        median = wide.median()
        ax.plot(median.index, median.to_numpy(), color=colors[family], linewidth=2.5, label=family)
    ax.autoscale()
    ax.set(title=title, xlabel="epoch (attempt)", ylabel=label(value.removesuffix("_mean")),
           xticks=sorted(curves_frame["epoch"].unique()))
    ax.legend(title="family (median)", fontsize=8, loc="lower right")
    return fig


def rank_heatmap(stability: pd.DataFrame, title: str) -> Figure:
    """Spearman rank correlation between epochs (undefined cells, where every network ties or fewer than two
    answer, are left blank)."""
    grid = stability.pivot(index="epoch_a", columns="epoch_b", values="spearman")
    fig, axes = _figure(5.5, 4.5)
    values = grid.to_numpy(dtype=float)
    low = np.nanmin(values) if np.isfinite(values).any() else 0.0  # all undefined (ties): an empty map, no warning
    sns.heatmap(grid, annot=True, fmt=".2f", cmap="mako", vmin=min(0, low), vmax=1,
                ax=axes[0], cbar_kws={"label": "Spearman rank correlation"})
    axes[0].set(title=title, xlabel="epoch", ylabel="epoch")
    return fig


def sample_grid(images: np.ndarray, frame: pd.DataFrame, title: str, columns: int = 12) -> Figure:
    """Test images (N, C, H, W) of the rows of a Q8 frame, titled 'label → majority'."""
    n = len(frame)
    columns = max(1, min(columns, n))
    rows = max(1, int(np.ceil(n / columns)))
    # a fixed grid: constrained layout over dozens of titled axes costs seconds
    fig, axes = plt.subplots(rows, columns, figsize=(max(columns * 0.95, 7), rows * 1.15 + 0.6), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.6 / (rows * 1.15 + 0.6), hspace=0.35,
                        wspace=0.1)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), frame.itertuples()):
        image = images[row.sample]
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
        image = (image - image.min()) / (np.ptp(image) or 1)
        ax.imshow(image, cmap="gray_r" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(f"#{row.sample}: {row.label}→{row.majority}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def percentiles(q9: pd.DataFrame, title: str) -> Figure:
    """The best network's percentile per class, with its recall written on each bar."""
    fig, axes = _figure(8, 4)
    ax = axes[0]
    sns.barplot(data=q9, x="class", y="percentile", color=sns.color_palette("tab10")[0], ax=ax)
    for i, row in enumerate(q9.itertuples()):
        ax.text(i, row.percentile + 1, f"{row.accuracy:.3f}", ha="center", fontsize=7)
    ax.set(title=title, xlabel="class", ylabel="percentile among all networks (%)", ylim=(0, 108))
    return fig


def ratios(q10: pd.DataFrame, title: str) -> Figure:
    """Best / Basic ratio per measure on a log axis (1 = the same); accuracy green, costs orange."""
    fig, axes = _figure(8, 0.45 * len(q10) + 1.6)
    ax = axes[0]
    colors = ["tab:green" if "acc" in m else "tab:orange" for m in q10["measure"]]  # accuracy vs cost
    ax.barh(q10["measure"], q10["ratio"] - 1, left=1, color=colors)  # bars grow from 1 (the same) either way
    ax.axvline(1, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    for i, r in enumerate(q10["ratio"]):
        ax.text(r, i, f" ×{r:.3g}", va="center", fontsize=8)
    ax.set(title=title, xlabel="best / Basic (log scale)", ylabel="measure")
    ax.invert_yaxis()
    return fig


def pareto(pop: pd.DataFrame, front: pd.DataFrame, cost: str, value: str, title: str) -> Figure:
    """All networks by cost (log axis) and metric, coloured by family, with the Pareto front as a step line
    (and each network's 95% interval over seeds as an error bar, when there are several seeds)."""
    column = f"{cost}_mean" if f"{cost}_mean" in pop.columns else cost
    fig, axes = _figure(7, 4.5)
    ax = axes[0]
    names = order("family", pop["family"].unique())
    ci = value.replace("_mean", "_ci95")
    if ci in pop.columns and pop[ci].notna().any():  # several seeds: the 95% interval of each mean
        ax.errorbar(pop[column], pop[value], yerr=pop[ci], fmt="none", ecolor="grey", alpha=0.35, linewidth=0.7)
    sns.scatterplot(data=pop, x=column, y=value, hue="family", hue_order=names, palette=palette("family", names),
                    s=14, alpha=0.7, ax=ax, linewidth=0)
    line = front.sort_values("cost_value")
    ax.step(line["cost_value"], line[value], where="post", color="black", linewidth=1.2, label="Pareto front")
    ax.scatter(line["cost_value"], line[value], s=30, facecolor="none", edgecolor="black")
    ax.set_xscale("log")
    ax.set(title=title, xlabel=label(cost) + " (log scale)", ylabel=label(value.removesuffix("_mean")))
    ax.legend(fontsize=7, ncols=2)
    return fig


def ensemble_lines(ens: pd.DataFrame, metric: str, title: str) -> Figure:
    """Ensemble metric against k for each kind, and the best single network as a dashed line."""
    fig, axes = _figure(7, 4.2)
    ax = axes[0]
    sns.lineplot(data=ens, x="k", y=metric, hue="kind", style="kind", markers=True, dashes=False, ax=ax)
    ax.axhline(ens["best_single"].iloc[0], color="black", linestyle="--", linewidth=1, label="best single network")
    ax.set(title=title, xlabel="networks in the ensemble (k)", ylabel=label(metric))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


def agreement_heatmap(agr: pd.DataFrame, title: str) -> Figure:
    """Jaccard overlap of wrong samples between families."""
    grid = agr.pivot(index="family_a", columns="family_b", values="jaccard")
    names = order("family", grid.index)
    grid = grid.reindex(index=names, columns=names)
    fig, axes = _figure(0.7 * len(names) + 3, 0.6 * len(names) + 1.8)
    sns.heatmap(grid, annot=True, fmt=".2f", cmap="rocket_r", vmin=0, vmax=1, ax=axes[0], linewidths=0.5,
                cbar_kws={"label": "Jaccard of wrong samples (0-1)"})
    axes[0].set(title=title, xlabel="family", ylabel="family")
    return fig
