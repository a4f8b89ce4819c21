"""Repeated runs: the mean over seeds with a 95% confidence interval, and which findings change sign across seeds.

The study trained every network once; its author asked whether the findings were noise. With
``netzoo train --seeds 0,1,2`` every (network, recipe) has one run per seed, and these functions say how far
each number moves between runs. Pure functions: tables in, DataFrames out.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from analysis.population import ci95

from analysis.section import Section

RUN = ["network", "recipe", "recipe_hash", "seed"]  # one training run
PER_NETWORK_COLUMNS = ["network", "recipe", "recipe_hash", "n_seeds", "mean", "std", "ci95_low", "ci95_high"]


def final_epochs(epochs: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """One row per run: epoch ``epoch``, or each run's last recorded epoch when None (early stopping varies)."""
    if epochs.empty:
        return epochs.iloc[0:0]
    if epoch is not None:
        return epochs[epochs["epoch"] == epoch]
    last = epochs.groupby(RUN, observed=True)["epoch"].transform("max")
    return epochs[epochs["epoch"] == last]


def mean_ci(values: pd.Series | np.ndarray) -> tuple[int, float, float, float, float]:
    """(n, mean, std, low, high) with the 95% Student-t interval of analysis.population.ci95; NaN for one value."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return 0, np.nan, np.nan, np.nan, np.nan
    mean = float(x.mean())
    if n == 1:
        return 1, mean, np.nan, np.nan, np.nan
    std = float(x.std(ddof=1))
    half = float(ci95(pd.Series([std]), pd.Series([n])).iloc[0])
    return n, mean, std, mean - half, mean + half


def per_network(epochs: pd.DataFrame, metric: str = "test_balanced_acc", epoch: int | None = None) -> pd.DataFrame:
    """Per (network, recipe): seeds, mean, std and 95% t-interval of ``metric`` at ``epoch`` (default: each run's last).

    Columns: network, recipe, recipe_hash, n_seeds, mean, std, ci95_low, ci95_high (one seed: NaN std and interval).
    """
    rows = final_epochs(epochs, epoch)
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=float if c not in ("network", "recipe", "recipe_hash") else object)
                             for c in PER_NETWORK_COLUMNS}).astype({"n_seeds": "int64"})
    if metric not in rows.columns:
        raise KeyError(f"per_network: no column {metric!r} in epochs; columns: {', '.join(rows.columns)}")
    out = []
    for (network, recipe, recipe_hash), group in rows.groupby(["network", "recipe", "recipe_hash"], sort=True,
                                                              observed=True):
        n, mean, std, low, high = mean_ci(group[metric])
        out.append((network, recipe, recipe_hash, n, mean, std, low, high))
    frame = pd.DataFrame(out, columns=PER_NETWORK_COLUMNS)
    return frame.astype({"n_seeds": "int64"})


def _with_attributes(rows: pd.DataFrame, networks: pd.DataFrame) -> pd.DataFrame:
    """Epoch rows with each network's family, activation and params (from the networks table)."""
    wanted = [c for c in ("family", "activation", "params", "depth") if c in networks.columns and c not in rows]
    if not wanted:
        return rows
    attrs = networks.drop_duplicates("network").set_index("network")[wanted]
    return rows.join(attrs, on="network")


def sign_changes(epochs: pd.DataFrame, networks: pd.DataFrame, metric: str = "test_balanced_acc",
                 epoch: int | None = None) -> pd.DataFrame:
    """Each pairwise finding, per seed: family A vs B, activation A vs B within a family, recipe A vs B.

    A finding is the difference of group means of ``metric`` (A minus B) computed on one seed's runs; it
    *changes sign* when some seeds give a positive difference and others a negative one. Only seeds with both
    groups count. Columns: finding, kind, a, b, n_seeds, mean_diff, min_diff, max_diff, n_positive,
    n_negative, changes_sign. Empty when fewer than two seeds.
    """
    columns = ["finding", "kind", "a", "b", "n_seeds", "mean_diff", "min_diff", "max_diff", "n_positive",
               "n_negative", "changes_sign"]
    rows = _with_attributes(final_epochs(epochs, epoch), networks)
    if rows.empty or rows["seed"].nunique() < 2:
        return pd.DataFrame(columns=columns)
    comparisons: list[tuple[str, str, pd.DataFrame, str]] = []  # (kind, where, rows, column)
    default_recipe = rows["recipe"].mode().iloc[0]
    one_recipe = rows[rows["recipe"] == default_recipe]
    if "family" in rows:
        comparisons.append(("family", "", one_recipe, "family"))
    if "activation" in rows and "family" in rows:
        for family, group in one_recipe.groupby("family", sort=True):
            comparisons.append(("activation", f" in {family}", group, "activation"))
    if rows["recipe"].nunique() > 1:
        comparisons.append(("recipe", "", rows, "recipe"))
    out = []
    for kind, where, group, column in comparisons:
        means = group.groupby([column, "seed"], observed=True)[metric].mean().unstack("seed")
        for a, b in combinations(sorted(means.index.astype(str)), 2):
            diff = (means.loc[a] - means.loc[b]).dropna()
            if len(diff) < 2:
                continue
            pos, neg = int((diff > 0).sum()), int((diff < 0).sum())
            out.append((f"{kind} {a} vs {b}{where}", kind, a, b, len(diff), float(diff.mean()), float(diff.min()),
                        float(diff.max()), pos, neg, bool(pos and neg)))
    frame = pd.DataFrame(out, columns=columns)
    return frame.sort_values(["changes_sign", "kind", "finding"], ascending=[False, True, True], ignore_index=True)


def ci_chart(summary: pd.DataFrame, networks: pd.DataFrame, metric: str = "test_balanced_acc") -> Figure:
    """Each network's mean over seeds with its 95% interval as an error bar, sorted, coloured by family."""
    frame = summary.join(networks.drop_duplicates("network").set_index("network")[["family"]], on="network")
    frame = frame.sort_values("mean", ignore_index=True)
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    for family, group in frame.groupby("family", sort=True):
        err = np.vstack([group["mean"] - group["ci95_low"], group["ci95_high"] - group["mean"]])
        ax.errorbar(group.index, group["mean"], yerr=np.nan_to_num(err), fmt="o", ms=2.5, elinewidth=0.7,
                    capsize=0, label=family)
    ax.set_xlabel("network (sorted by mean)")
    ax.set_ylabel(f"{metric.replace('_', ' ')}, mean over seeds (95% CI)")
    ax.legend(fontsize=7, ncols=3)
    ax.grid(alpha=0.3)
    return fig


def report_sections(tables) -> list[Section]:
    """The report's seed sections: completeness (networks x seeds x recipes x datasets: done / missing / failed),
    then, with two seeds or more, per-network mean ± 95% CI and the findings that change sign across seeds."""
    from analysis import completeness

    epochs, networks = tables.epochs, tables.networks
    sections = completeness.report_sections(tables)
    if epochs.empty or epochs["seed"].nunique() < 2:
        return sections
    metric = "test_balanced_acc"
    summary = per_network(epochs, metric)
    repeated = summary[summary["n_seeds"] >= 2]
    width = (repeated["ci95_high"] - repeated["ci95_low"])
    seeds = sorted(epochs["seed"].unique().tolist())
    table = summary.copy()
    table["mean ± ci95"] = [f"{m:.3f} ± {(h - m):.3f}" if n >= 2 else f"{m:.3f}"
                            for m, h, n in zip(table["mean"], table["ci95_high"], table["n_seeds"])]
    finding = (f"{len(repeated)} of {len(summary)} (network, recipe) pairs have ≥2 seeds (seeds {seeds}); the median "
               f"95% interval of balanced accuracy is ±{width.median() / 2:.3f} (widest ±{width.max() / 2:.3f}, "
               f"{repeated.loc[width.idxmax(), 'network'] if len(repeated) else '-'}).")
    sections.append(Section(
        key="seeds-ci", title="Mean over seeds", group="Seeds",
        question="How much does a network's accuracy move between training seeds?",
        finding=finding,
        table=table.sort_values("mean", ascending=False)[["network", "recipe", "n_seeds", "mean ± ci95", "std"]],
        figures=[ci_chart(summary, networks, metric)],
    ))
    flips = sign_changes(epochs, networks, metric)
    if not flips.empty:
        changed, stable = flips[flips["changes_sign"]], flips[~flips["changes_sign"]]
        examples = "; ".join(changed["finding"].head(3))
        finding = (f"{len(changed)} of {len(flips)} pairwise findings change sign across seeds"
                   + (f" (e.g. {examples}): treat those as noise." if len(changed) else
                      ": every comparison points the same way on every seed."))
        if len(stable):
            top = stable.loc[stable["mean_diff"].abs().idxmax()]
            finding += (f" The strongest that holds on every seed: {top['finding']} "
                        f"({top['mean_diff']:+.3f} on average, {top['min_diff']:+.3f} to {top['max_diff']:+.3f}).")
        shown = flips.copy()
        for c in ("mean_diff", "min_diff", "max_diff"):
            shown[c] = shown[c].round(4)
        sections.append(Section(
            key="seeds-sign", title="Findings that change sign across seeds", group="Seeds",
            question="Which comparisons (family, activation within a family, recipe) flip between seeds?",
            finding=finding, table=shown,
        ))
    return sections
