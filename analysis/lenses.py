"""Inside the networks: the variance-as-size study and the health table, from the ``layers`` table.

The companion study trained one-hidden-layer ReLU MLPs of widths 1…2048 and asked whether the inside of a
network says it is oversized: per-neuron activation variances shift towards 0, dead neurons grow with width,
and the per-neuron variances look most normal (Shapiro-Wilk W) near the width where test accuracy peaks.
These pure functions answer those questions on any results folder (tables in, DataFrames out; charts are
separate functions returning a Figure). A network has a *width axis* when it is a one-hidden-layer MLP
(two Linear weight layers): its width is the hidden layer's width, its activation layer is the hidden one.
Every statistic is read at each run's last recorded epoch; with several seeds, per-width values are the
mean and the standard deviation over seeds, and peak widths are found per seed, then summarised. The width
study and the normality question leave out runs that diverged or failed (``answering_runs``; counted in
``attrs["left_out"]``); the health table keeps them: their gradients are what it diagnoses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter
from scipy import stats

from analysis.population import METRIC, answering_runs, as_tables, for_recipe, left_out_note
from analysis.section import Section

RUN = ["network", "recipe_hash", "seed"]
DEAD_LAYER = 0.5      # health: a layer with more than this share of dead neurons
VANISHING = 1e-6      # health: a layer whose mean weight-gradient norm over the last epoch is below this
EXPLODING = 1e3       # health: a layer whose largest weight-gradient norm over the last epoch is above this
MIN_NORMALITY_WIDTH = 8  # the normality peak ignores narrower layers: W of 3-7 variances is near 1 by chance
STATS = ["dead_fraction", "dead_neurons", "activation_rate", "var_mean", "var_sum", "var_q50", "shapiro_w",
         "shapiro_p", METRIC]
RUN_COLUMNS = RUN + ["activation", "width", "layer"] + STATS


# --- selecting rows -------------------------------------------------------------------------------
def last_epoch_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last recorded epoch (runs that stopped early or diverged keep their last one)."""
    if frame.empty:
        return frame
    last = frame.groupby(RUN, observed=True)["epoch"].transform("max")
    return frame[frame["epoch"] == last]


def width_axis(networks: pd.DataFrame) -> pd.DataFrame:
    """network, activation, width of every one-hidden-layer MLP (two Linear weight layers), one row each."""
    if networks.empty or "widths" not in networks.columns:
        return pd.DataFrame({"network": pd.Series(dtype=object), "activation": pd.Series(dtype=object),
                             "width": pd.Series(dtype="int64")})
    rows = networks.drop_duplicates("network")
    keep = [len(w) == 2 and all(t == "Linear" for t in types)
            for w, types in zip(rows["widths"], rows["layer_types"])]
    rows = rows[keep]
    return pd.DataFrame({"network": rows["network"].to_numpy(), "activation": rows["activation"].to_numpy(),
                         "width": [int(w[0]) for w in rows["widths"]]})


def activation_layers(layers: pd.DataFrame) -> pd.DataFrame:
    """Rows of activation layers (those with activation statistics) at each run's last epoch."""
    rows = last_epoch_rows(layers)
    return rows[rows["dead_fraction"].notna()] if not rows.empty else rows


def _accuracy(epochs: pd.DataFrame) -> pd.DataFrame:
    """network, recipe_hash, seed, METRIC at each run's last epoch."""
    if epochs.empty:
        return pd.DataFrame(columns=RUN + [METRIC])
    return last_epoch_rows(epochs)[RUN + [METRIC]]


# --- the width study ------------------------------------------------------------------------------
def width_runs(tables, recipe: str | None = None) -> pd.DataFrame:
    """One row per run of a width-axis network: its hidden activation layer's statistics and test accuracy.

    Columns: network, recipe_hash, seed, activation, width, layer, dead_fraction, dead_neurons (count),
    activation_rate, var_mean, var_sum, var_q50, shapiro_w, shapiro_p, test_balanced_acc.
    """
    tables = as_tables(tables)
    if tables.layers.empty or tables.networks.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    tables, left_out = answering_runs(for_recipe(tables, recipe))
    axis = width_axis(tables.networks)
    acts = activation_layers(tables.layers)
    acts = acts[~acts["layer"].str.contains("#")].sort_values(RUN + ["layer"])
    hidden = acts.drop_duplicates(RUN).drop(columns=["width"]).merge(axis, on="network", how="inner")
    if hidden.empty:
        empty = pd.DataFrame(columns=RUN_COLUMNS)
        empty.attrs.update(left_out=left_out)
        return empty
    hidden = hidden.merge(_accuracy(tables.epochs), on=RUN, how="left")
    hidden["dead_neurons"] = (hidden["dead_fraction"] * hidden["width"]).round().astype("int64")
    out = hidden[RUN_COLUMNS].sort_values(["activation", "width", "seed"], ignore_index=True)
    out.attrs.update(left_out=left_out)
    return out


def width_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (activation, width): n_seeds and, for each statistic, ``<stat>_mean`` and ``<stat>_std`` over seeds."""
    if runs.empty:
        return pd.DataFrame(columns=["activation", "width", "n_seeds"])
    grouped = runs.groupby(["activation", "width"], sort=True, observed=True)
    out = grouped.size().rename("n_seeds").to_frame()
    values = runs[["activation", "width"] + STATS].astype({s: float for s in STATS})
    grouped = values.groupby(["activation", "width"], sort=True, observed=True)
    means, stds = grouped.mean(), grouped.std()
    for stat in STATS:
        out[f"{stat}_mean"], out[f"{stat}_std"] = means[stat], stds[stat]
    return out.reset_index()


def variance_by_width(tables, recipe: str | None = None) -> pd.DataFrame:
    """Long frame of every hidden neuron's activation variance: network, seed, activation, width, neuron, variance."""
    tables = as_tables(tables)
    runs = width_runs(tables, recipe)
    if runs.empty:
        return pd.DataFrame(columns=["network", "seed", "activation", "width", "neuron", "variance"])
    layers = last_epoch_rows(tables.layers)[RUN + ["layer", "variances"]]
    layers = layers.merge(runs[RUN + ["layer", "activation", "width"]], on=RUN + ["layer"])
    parts = [pd.DataFrame({"network": row.network, "seed": row.seed, "activation": row.activation,
                           "width": row.width, "neuron": np.arange(len(row.variances)),
                           "variance": np.asarray(row.variances, dtype=float)})
             for row in layers.itertuples() if row.variances is not None]
    return pd.concat(parts, ignore_index=True).sort_values(["width", "seed", "neuron"], ignore_index=True)


def _regress(runs: pd.DataFrame, x: str, y: str, log_x: bool, log_y: bool):
    """scipy's linregress of y on x (each optionally logged) over runs with both values (and > 0 where logged):
    (result or None when under 3 points or one x value, points used)."""
    ok = runs[[x, y]].astype(float).dropna()
    logged = [c for c, log in ((x, log_x), (y, log_y)) if log]
    ok = ok[(ok[logged] > 0).all(axis=1)]
    if len(ok) < 3 or ok[x].nunique() < 2:
        return None, len(ok)
    xs, ys = (np.log(ok[x]) if log_x else ok[x]), (np.log(ok[y]) if log_y else ok[y])
    return stats.linregress(xs, ys), len(ok)


def _line(fit, n: int) -> dict:
    if fit is None:
        return {"slope": np.nan, "intercept": np.nan, "r2": np.nan, "n": n}
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.rvalue ** 2), "n": n}


def log_fit(runs: pd.DataFrame, y: str = "var_sum", x: str = "width") -> dict:
    """Least-squares fit y = intercept + slope * ln(x) over every run: slope, intercept, r2, n."""
    return _line(*_regress(runs, x, y, log_x=True, log_y=False))


def linear_fit(runs: pd.DataFrame, y: str = "dead_neurons", x: str = "width") -> dict:
    """Least-squares fit y = intercept + slope * x over every run: slope, intercept, r2, n."""
    return _line(*_regress(runs, x, y, log_x=False, log_y=False))


def power_fit(runs: pd.DataFrame, y: str = "var_sum", x: str = "width") -> dict:
    """Least-squares fit ln y = ln(scale) + exponent * ln x over runs with y > 0: scale, exponent, r2 (log-log), n."""
    fit, n = _regress(runs, x, y, log_x=True, log_y=True)
    if fit is None:
        return {"scale": np.nan, "exponent": np.nan, "r2": np.nan, "n": n}
    return {"scale": float(np.exp(fit.intercept)), "exponent": float(fit.slope), "r2": float(fit.rvalue ** 2), "n": n}


def plateau_width(summary: pd.DataFrame, stat: str = METRIC, within: float = 0.01) -> int | None:
    """The smallest width whose mean ``stat`` is within ``within`` of the best mean (where the curve flattens)."""
    values = summary[["width", f"{stat}_mean"]].dropna()
    if values.empty:
        return None
    best = values[f"{stat}_mean"].max()
    return int(values.loc[values[f"{stat}_mean"] >= best - within, "width"].min())


def peak_widths(runs: pd.DataFrame, min_width: int = MIN_NORMALITY_WIDTH) -> pd.DataFrame:
    """Per (activation, seed): the width where Shapiro W peaks and the width where test accuracy peaks.

    Columns: activation, seed, normality_peak_width, accuracy_peak_width, peak_shapiro_w, peak_accuracy.
    The W peak is sought among widths >= ``min_width`` (on digits, one seed's W was 0.99999 at width 3).
    Ties go to the smaller width. A seed with no defined W there has a null normality peak.
    """
    columns = ["activation", "seed", "normality_peak_width", "accuracy_peak_width", "peak_shapiro_w", "peak_accuracy"]
    out = []
    for (activation, seed), group in runs.groupby(["activation", "seed"], sort=True, observed=True):
        group = group.sort_values("width")
        w, acc = group["shapiro_w"].astype(float), group[METRIC].astype(float)
        w = w.where(group["width"] >= min_width)
        out.append((activation, seed,
                    int(group.loc[w.idxmax(), "width"]) if w.notna().any() else None,
                    int(group.loc[acc.idxmax(), "width"]) if acc.notna().any() else None,
                    float(w.max()), float(acc.max())))
    return pd.DataFrame(out, columns=columns)


def peak_summary(peaks: pd.DataFrame) -> pd.DataFrame:
    """Per activation: seeds, and median, mean, std, min, max of each peak width over seeds (the peaks' spread)."""
    if peaks.empty:
        return pd.DataFrame(columns=["activation", "peak", "n_seeds", "median", "mean", "std", "min", "max"])
    long = peaks.melt(id_vars=["activation", "seed"], value_vars=["normality_peak_width", "accuracy_peak_width"],
                      var_name="peak", value_name="width").dropna(subset=["width"])
    long["peak"] = long["peak"].str.replace("_peak_width", "")
    return (long.groupby(["activation", "peak"], sort=True)["width"]
            .agg(n_seeds="count", median="median", mean="mean", std="std", min="min", max="max").reset_index())


def normality_accuracy(tables, recipe: str | None = None) -> pd.DataFrame:
    """Per run of the whole population: family, activation, Shapiro W (mean over its activation layers), accuracy."""
    tables = as_tables(tables)
    if tables.layers.empty or tables.networks.empty:
        return pd.DataFrame(columns=RUN + ["family", "activation", "shapiro_w", METRIC])
    tables, left_out = answering_runs(for_recipe(tables, recipe))
    w = activation_layers(tables.layers).groupby(RUN, observed=True)["shapiro_w"].mean().reset_index()
    identity = tables.networks[RUN + ["family", "activation"]].drop_duplicates(RUN)
    out = identity.merge(w, on=RUN).merge(_accuracy(tables.epochs), on=RUN, how="left")
    out.attrs.update(left_out=left_out)
    return out


def rank_correlation(frame: pd.DataFrame, x: str = "shapiro_w", y: str = METRIC) -> dict:
    """Spearman's rank correlation of two columns over the rows where both are defined: rho, p, n."""
    ok = frame[[x, y]].astype(float).dropna()
    if len(ok) < 3 or ok[x].nunique() < 2 or ok[y].nunique() < 2:
        return {"rho": np.nan, "p": np.nan, "n": len(ok)}
    result = stats.spearmanr(ok[x], ok[y])
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(ok)}


# --- health -----------------------------------------------------------------------------------------
def health(tables, recipe: str | None = None, dead: float = DEAD_LAYER, vanishing: float = VANISHING,
           exploding: float = EXPLODING) -> pd.DataFrame:
    """Runs with a layer over ``dead`` dead, a mean gradient norm under ``vanishing``, or a max over ``exploding``.

    At each run's last epoch, every run trained: a run that diverged is kept, and counts as exploding (its
    gradient norms are not finite, so no layer's max names it; its exploding columns are then empty). Columns: network, recipe_hash, seed, family, activation, problems (e.g.
    "dead, vanishing"), dead_layer, max_dead_fraction, vanishing_layer, min_grad_norm, exploding_layer,
    max_grad_norm. One row per unhealthy run, worst layers named; empty when every run is healthy.
    """
    columns = RUN + ["family", "activation", "problems", "dead_layer", "max_dead_fraction", "vanishing_layer",
                     "min_grad_norm", "exploding_layer", "max_grad_norm"]
    tables = as_tables(tables)
    if tables.layers.empty or tables.networks.empty:
        return pd.DataFrame(columns=columns)
    tables = for_recipe(tables, recipe)
    rows = last_epoch_rows(tables.layers)
    networks = tables.networks
    diverged = set(map(tuple, networks.loc[networks["status"] == "diverged", RUN].to_numpy().tolist())) \
        if "status" in networks else set()
    out = []
    for key, group in rows.groupby(RUN, sort=True, observed=True):
        worst_dead = group.loc[group["dead_fraction"].idxmax()] if group["dead_fraction"].notna().any() else None
        weak = group.loc[group["grad_norm_mean"].idxmin()] if group["grad_norm_mean"].notna().any() else None
        strong = group.loc[group["grad_norm_max"].idxmax()] if group["grad_norm_max"].notna().any() else None
        problems = [name for name, hit in (
            ("dead", worst_dead is not None and worst_dead["dead_fraction"] > dead),
            ("vanishing", weak is not None and weak["grad_norm_mean"] < vanishing),
            # a diverged run's gradient norms are NaN or inf (not finite): its gradients exploded
            ("exploding", (strong is not None and strong["grad_norm_max"] > exploding) or key in diverged)) if hit]
        if problems:
            out.append(key + (", ".join(problems),
                              worst_dead["layer"] if worst_dead is not None else None,
                              worst_dead["dead_fraction"] if worst_dead is not None else np.nan,
                              weak["layer"] if weak is not None else None,
                              weak["grad_norm_mean"] if weak is not None else np.nan,
                              strong["layer"] if strong is not None else None,
                              strong["grad_norm_max"] if strong is not None else np.nan))
    frame = pd.DataFrame(out, columns=[c for c in columns if c not in ("family", "activation")])
    identity = tables.networks[RUN + ["family", "activation"]].drop_duplicates(RUN)
    return frame.merge(identity, on=RUN, how="left")[columns]


def health_counts(unhealthy: pd.DataFrame, tables, recipe: str | None = None) -> pd.DataFrame:
    """Per family and activation: runs, and how many are dead, vanishing, exploding (a run may count twice)."""
    tables = for_recipe(as_tables(tables), recipe)
    runs = tables.networks.drop_duplicates(RUN).groupby(["family", "activation"]).size().rename("runs")
    out = runs.to_frame()
    for problem in ("dead", "vanishing", "exploding"):
        hit = unhealthy[unhealthy["problems"].str.contains(problem)] if not unhealthy.empty else unhealthy
        out[problem] = hit.groupby(["family", "activation"]).size() if not hit.empty else 0
    return out.fillna(0).astype("int64").reset_index()


# --- charts ------------------------------------------------------------------------------------------
def _figure(height: float = 4.0, width: float = 7.0) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def variance_ridge_chart(variances: pd.DataFrame, max_rows: int = 32) -> Figure:
    """Ridge plot: the density (KDE of log10 variance) of per-neuron variance, one ridge per width, seeds pooled.

    The study's first plot, on a log axis so that widths whose variances differ by orders of magnitude share
    one chart; dead neurons (variance exactly 0) cannot sit on a log axis and are given as a share per ridge.
    """
    widths = sorted(variances["width"].unique())
    if len(widths) > max_rows:  # keep every k-th width, always the smallest and the largest
        keep = np.unique(np.linspace(0, len(widths) - 1, max_rows).round().astype(int))
        widths = [widths[i] for i in keep]
    alive = variances.loc[variances["variance"] > 0, "variance"]
    low, high = (np.log10(np.quantile(alive, [0.005, 0.995])) if len(alive) else (-1.0, 1.0))
    grid = np.linspace(low - 0.25, high + 0.25, 256)
    fig, ax = _figure(height=max(4.0, 0.32 * len(widths) + 1.5))
    colors = sns.color_palette("viridis", len(widths))
    for i, (width, color) in enumerate(zip(widths, colors)):
        values = variances.loc[variances["width"] == width, "variance"].to_numpy()
        logs = np.log10(values[values > 0])
        if len(logs) >= 3 and np.ptp(logs) > 0:
            density = stats.gaussian_kde(logs)(grid)
            ax.fill_between(10 ** grid, i, i + 0.9 * density / density.max(), color=color, alpha=0.8, lw=0.5,
                            edgecolor="black")
        else:  # too few distinct values for a density: mark each value
            ax.vlines(10 ** np.clip(logs, grid[0], grid[-1]), i, i + 0.6, color=color, lw=1.5)
        dead = float(np.mean(values == 0)) if len(values) else 0.0
        ax.text(1.01, i + 0.15, f"{dead:.0%} dead", fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
    ax.set_xscale("log")
    ax.set_xlim(10 ** grid[0], 10 ** grid[-1])
    ax.set_yticks(np.arange(len(widths)) + 0.2, [str(w) for w in widths], fontsize=7)
    ax.set_xlabel("per-neuron activation variance on the test split (log scale)")
    ax.set_ylabel("hidden width")
    ax.set_title("Variance of each hidden neuron, by width (dead share on the right)")
    return fig


def _width_axis(ax) -> None:
    """Log-2 width axis labelled with plain numbers (1, 2, 4, …)."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("hidden width")


def _errorbars(ax, summary: pd.DataFrame, stat: str, label: str, color=None) -> None:
    for activation, group in summary.groupby("activation", sort=True):
        ax.errorbar(group["width"], group[f"{stat}_mean"], yerr=group[f"{stat}_std"].fillna(0), marker="o",
                    ms=3, capsize=2, color=color, label=f"{label} ({activation})")


def dead_chart(summary: pd.DataFrame, fit: dict | None = None) -> Figure:
    """Dead hidden neurons (count, mean ± std over seeds) against width, log-x, with the linear fit."""
    fig, ax = _figure()
    _errorbars(ax, summary, "dead_neurons", "dead neurons")
    if fit and not np.isnan(fit["slope"]):
        x = np.geomspace(summary["width"].min(), summary["width"].max(), 100)
        ax.plot(x, fit["intercept"] + fit["slope"] * x, "--", color="gray",
                label=f"linear fit: {fit['slope']:.3f}·width (R²={fit['r2']:.2f})")
    _width_axis(ax)
    ax.set_ylabel("dead neurons (zero test variance)")
    ax.legend(fontsize=8)
    return fig


def total_variance_chart(summary: pd.DataFrame, fit: dict) -> Figure:
    """Sum of per-neuron variances (mean ± std over seeds) against width, with the fit a + b·ln(width) and its R²."""
    fig, ax = _figure()
    _errorbars(ax, summary, "var_sum", "total variance")
    if not np.isnan(fit["slope"]):
        x = np.geomspace(summary["width"].min(), summary["width"].max(), 100)
        ax.plot(x, fit["intercept"] + fit["slope"] * np.log(x), "--", color="gray",
                label=f"{fit['intercept']:.2f} + {fit['slope']:.2f}·ln(width) (R²={fit['r2']:.2f})")
    _width_axis(ax)
    ax.set_ylabel("sum of per-neuron activation variances")
    ax.legend(fontsize=8)
    return fig


def normality_accuracy_chart(summary: pd.DataFrame, peaks: pd.DataFrame) -> Figure:
    """Shapiro W (left axis) and test accuracy (right axis) against width, mean ± std over seeds; peaks marked."""
    fig, ax = _figure()
    palette = sns.color_palette("deep")
    _errorbars(ax, summary, "shapiro_w", "Shapiro W", color=palette[0])
    right = ax.twinx()
    _errorbars(right, summary, METRIC, "test accuracy", color=palette[1])
    for column, color, name in (("normality_peak_width", palette[0], "W peak"),
                                ("accuracy_peak_width", palette[1], "accuracy peak")):
        values = peaks[column].dropna().astype(float)
        if len(values):
            ax.axvline(values.median(), ls=":", color=color, label=f"{name} (median over seeds): {values.median():g}")
    _width_axis(ax)
    ax.set_ylabel("Shapiro-Wilk W of per-neuron variances", color=palette[0])
    right.set_ylabel("test accuracy (mean per-class recall)", color=palette[1])
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower center")
    return fig


def normality_scatter_chart(frame: pd.DataFrame) -> Figure:
    """Each run's Shapiro W (mean over its activation layers) against its test accuracy, one colour per family."""
    fig, ax = _figure()
    sns.scatterplot(frame, x="shapiro_w", y=METRIC, hue="family", style="activation", s=18, ax=ax)
    ax.set_xlabel("Shapiro-Wilk W of per-neuron variances (mean over activation layers)")
    ax.set_ylabel("test accuracy (mean per-class recall)")
    ax.legend(fontsize=6, ncols=2)
    return fig


def health_chart(counts: pd.DataFrame) -> Figure:
    """Share of runs per family × activation with a dead layer, vanishing or exploding gradients."""
    long = counts.melt(id_vars=["family", "activation", "runs"], value_vars=["dead", "vanishing", "exploding"],
                       var_name="problem", value_name="count")
    long["share"] = long["count"] / long["runs"]
    long["cell"] = long["family"] + " × " + long["activation"]
    fig, ax = _figure(height=max(3.0, 0.25 * long["cell"].nunique() + 1.5))
    sns.barplot(long, y="cell", x="share", hue="problem", ax=ax, orient="h")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of runs")
    ax.set_ylabel("")
    return fig


# --- report --------------------------------------------------------------------------------------------
def _spread(values: pd.Series) -> str:
    values = values.dropna().astype(float)
    if values.empty:
        return "n/a"
    if len(values) == 1 or values.min() == values.max():
        return f"{values.iloc[0]:g}" + (f" on all {len(values)} seeds" if len(values) > 1 else "")
    return f"{values.median():g} (median; range {values.min():g}–{values.max():g} over {len(values)} seeds)"


def _width_sections(tables) -> list[Section]:
    runs = width_runs(tables)
    if runs.empty or runs["width"].nunique() < 2:
        return []
    summary = width_summary(runs)
    variances = variance_by_width(tables)
    smallest, largest = summary.loc[summary["width"].idxmin()], summary.loc[summary["width"].idxmax()]
    top = summary.loc[summary["var_q50_mean"].idxmax()]
    seeds = runs["seed"].nunique()
    over = f" (mean over {seeds} seeds)" if seeds > 1 else ""
    sections = [Section(
        key="lenses-variance", title="Variance distribution vs width", group="Inside the networks",
        question="How does the distribution of per-neuron activation variance change as the hidden layer grows?",
        finding=(f"{runs['network'].nunique()} one-hidden-layer networks, widths {int(smallest['width'])}–"
                 f"{int(largest['width'])}{over}: the median neuron's variance is largest at width {int(top['width'])} "
                 f"({top['var_q50_mean']:.3g}), then shifts towards 0, {top['var_q50_mean'] / largest['var_q50_mean']:.3g}× "
                 f"smaller at width {int(largest['width'])} ({largest['var_q50_mean']:.3g}); the mean variance goes from "
                 f"{top['var_mean_mean']:.3g} to {largest['var_mean_mean']:.3g}."
                 + left_out_note(runs.attrs["left_out"])),
        table=summary[["activation", "width", "n_seeds", "var_mean_mean", "var_mean_std", "var_q50_mean",
                       "var_sum_mean", "var_sum_std"]].round(5),
        figures=[variance_ridge_chart(variances)],
    )]
    dead_fit = linear_fit(runs, "dead_neurons")
    sections.append(Section(
        key="lenses-dead", title="Dead neurons vs width", group="Inside the networks",
        question="How many hidden neurons are dead (zero variance over the test split) at each width?",
        finding=(f"At width {int(largest['width'])}, {largest['dead_neurons_mean']:.1f} neurons "
                 f"({largest['dead_fraction_mean']:.1%}) are dead{over}; at width {int(smallest['width'])}, "
                 f"{smallest['dead_neurons_mean']:.1f}. A straight line gives {dead_fit['slope']:.4f} dead neurons "
                 f"per unit of width (R² = {dead_fit['r2']:.2f})."),
        table=summary[["activation", "width", "n_seeds", "dead_neurons_mean", "dead_neurons_std",
                       "dead_fraction_mean", "activation_rate_mean"]].round(4),
        figures=[dead_chart(summary, dead_fit)],
    ))
    var_fit, power = log_fit(runs, "var_sum"), power_fit(runs, "var_sum")
    better = "fits better" if power["r2"] > var_fit["r2"] else "fits worse"
    sections.append(Section(
        key="lenses-total-variance", title="Total variance vs width", group="Inside the networks",
        question="Does the sum of per-neuron variances grow like the log of the width?",
        finding=(f"Total variance ≈ {var_fit['intercept']:.3g} + {var_fit['slope']:.3g}·ln(width), "
                 f"R² = {var_fit['r2']:.2f} over {var_fit['n']} runs: from {smallest['var_sum_mean']:.3g} at width "
                 f"{int(smallest['width'])} to {largest['var_sum_mean']:.3g} at width {int(largest['width'])}. "
                 f"A power law {power['scale']:.3g}·width^{power['exponent']:.2f} {better} "
                 f"(R² = {power['r2']:.2f} on log-log axes)."),
        table=pd.DataFrame([
            {"fit": "var_sum = a + b·ln(width)", "a": var_fit["intercept"], "b": var_fit["slope"],
             "r2": var_fit["r2"], "runs": var_fit["n"]},
            {"fit": "ln var_sum = ln a + b·ln(width)", "a": power["scale"], "b": power["exponent"],
             "r2": power["r2"], "runs": power["n"]}]).round(4),
        figures=[total_variance_chart(summary, var_fit)],
    ))
    peaks = peak_widths(runs)
    within = rank_correlation(runs)
    population = normality_accuracy(tables)
    corr = (f"; across the whole population ({population['network'].nunique()} networks) ρ = "
            f"{rank_correlation(population)['rho']:.2f}" if len(population) > len(runs) else "")
    plateau = plateau_width(summary)
    sections.append(Section(
        key="lenses-normality", title="Normality vs accuracy", group="Inside the networks",
        question="Are the per-neuron variances most normal (Shapiro-Wilk W) at the width where accuracy peaks?",
        finding=(f"Shapiro W (widths ≥ {MIN_NORMALITY_WIDTH}) peaks at width {_spread(peaks['normality_peak_width'])}; "
                 f"test accuracy peaks at width "
                 f"{_spread(peaks['accuracy_peak_width'])} and is within 0.01 of its best from width {plateau} on. "
                 f"Over the widths, W and accuracy have Spearman ρ = {within['rho']:.2f} (p = {within['p']:.2g}, "
                 f"{within['n']} runs){corr}."),
        table=peak_summary(peaks).round(1),
        figures=[normality_accuracy_chart(summary, peaks)],
    ))
    return sections


def _health_section(tables) -> Section:
    unhealthy = health(tables)
    counts = health_counts(unhealthy, tables)
    runs = int(counts["runs"].sum())
    totals = {p: int(counts[p].sum()) for p in ("dead", "vanishing", "exploding")}
    worst = counts.assign(bad=counts[["dead", "vanishing", "exploding"]].max(axis=1) / counts["runs"])
    worst = worst.sort_values("bad", ascending=False).iloc[0] if len(worst) else None
    diverged = int((tables.networks.drop_duplicates(RUN)["status"] == "diverged").sum()) \
        if "status" in tables.networks else 0
    kept = f" ({diverged} of them diverged: kept here, their gradients are what this table is for)" if diverged else ""
    finding = (f"Of {runs} runs at the last epoch{kept}: {totals['dead']} with a layer over {DEAD_LAYER:.0%} dead, "
               f"{totals['vanishing']} with a layer whose mean gradient norm is under {VANISHING:g} (vanishing), "
               f"{totals['exploding']} with one over {EXPLODING:g} (exploding).")
    if worst is not None and worst["bad"] > 0:
        finding += (f" Worst cell: {worst['family']} × {worst['activation']} ({worst['dead']} dead, "
                    f"{worst['vanishing']} vanishing, {worst['exploding']} exploding of {worst['runs']} runs).")
    shown = unhealthy.sort_values(["family", "activation", "network", "seed"], ignore_index=True)
    for column in ("max_dead_fraction", "min_grad_norm", "max_grad_norm"):  # absent (no such layer): blank
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    for column in ("dead_layer", "vanishing_layer", "exploding_layer"):
        shown[column] = shown[column].fillna("")
    return Section(
        key="lenses-health", title="Health table", group="Inside the networks",
        question=(f"Which networks have a layer over {DEAD_LAYER:.0%} dead, or vanishing (< {VANISHING:g}) or "
                  f"exploding (> {EXPLODING:g}) weight gradients, and in which families and activations?"),
        finding=finding,
        table=shown.drop(columns=["recipe_hash"]) if not shown.empty else counts,
        figures=[health_chart(counts)],
    )


def report_sections(tables, results_dir=None, select_on: str | None = None) -> list[Section]:
    """The report's "Inside the networks" sections: the width study (when the zoo has a width axis) and health.

    Empty when the results hold no ``layers`` rows (trained with --no-lenses).
    """
    tables = as_tables(tables)
    if tables.layers.empty or tables.networks.empty:
        return []
    sections = _width_sections(tables)
    if not sections:  # no width axis: the normality question across the whole population only
        everyone = normality_accuracy(tables)
        population = everyone.dropna(subset=["shapiro_w", METRIC])
        corr = rank_correlation(population)
        if corr["n"] >= 3:
            by_family = population.groupby("family")[["shapiro_w", METRIC]].median().round(3).reset_index()
            sections.append(Section(
                key="lenses-normality", title="Normality vs accuracy", group="Inside the networks",
                question="Do networks whose per-neuron variances look more normal (Shapiro-Wilk W) test better?",
                finding=(f"Across {corr['n']} runs, Shapiro W (mean over a network's activation layers) and test "
                         f"accuracy have Spearman ρ = {corr['rho']:.2f} (p = {corr['p']:.2g})."
                         + left_out_note(everyone.attrs["left_out"])),
                table=by_family, figures=[normality_scatter_chart(population)],
            ))
    return sections + [_health_section(tables)]
