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

from analysis.population import RUN, answering_runs, final_epochs, left_out_note, mean_over_seeds
from analysis.section import Section
from netzoo.results import ResultTables

PER_NETWORK_COLUMNS = ["network", "recipe", "recipe_hash", "n_seeds", "seeds_dropped", "mean", "std", "ci95_low",
                       "ci95_high"]
__all__ = ["final_epochs", "per_network", "sign_changes", "ci_chart", "report_sections"]


def _answering(epochs: pd.DataFrame, networks: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(epochs of the answering runs, every run trained as network/recipe_hash/seed rows, runs left out)."""
    networks = networks if networks is not None else pd.DataFrame()
    kept, left_out = answering_runs(ResultTables(networks, epochs))
    keys = [c for c in RUN if c in epochs.columns and (networks.empty or c in networks.columns)]
    runs = pd.concat([f[keys] for f in (epochs, networks) if not f.empty], ignore_index=True) if keys else None
    return kept.epochs, runs, left_out


def per_network(epochs: pd.DataFrame, metric: str = "test_balanced_acc", epoch: int | None = None,
                networks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (network, recipe): seeds, mean, std and 95% t-interval of ``metric`` at ``epoch`` (default: each run's
    last), over the runs that answered, by ``analysis.population.mean_over_seeds`` (the exam's rule).

    Columns: network, recipe, recipe_hash, n_seeds, seeds_dropped (runs trained but not counted: diverged,
    failed or no row at that epoch; ``networks`` adds failed runs with no epoch row), mean, std, ci95_low,
    ci95_high (one seed: NaN std and interval). ``attrs["left_out"]``: runs left out (diverged or failed).
    """
    kept, runs, left_out = _answering(epochs, networks)
    rows = final_epochs(kept, epoch)
    if rows.empty:
        frame = pd.DataFrame({c: pd.Series(dtype=float if c not in ("network", "recipe", "recipe_hash") else object)
                              for c in PER_NETWORK_COLUMNS}).astype({"n_seeds": "int64", "seeds_dropped": "int64"})
        frame.attrs.update(left_out=left_out)
        return frame
    if metric not in rows.columns:
        raise KeyError(f"per_network: no column {metric!r} in epochs; columns: {', '.join(rows.columns)}")
    out = mean_over_seeds(rows, ["network", "recipe", "recipe_hash"], [metric], runs=runs, std=True)
    out = out.rename(columns={f"{metric}_mean": "mean", f"{metric}_std": "std"})
    half = out.pop(f"{metric}_ci95")
    out["ci95_low"], out["ci95_high"] = out["mean"] - half, out["mean"] + half
    frame = out[PER_NETWORK_COLUMNS].astype({"n_seeds": "int64", "seeds_dropped": "int64"})
    frame.attrs.update(left_out=left_out)
    return frame


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
    groups count; runs that diverged or failed do not (``attrs["left_out"]``). Columns: finding, kind, a, b,
    n_seeds, mean_diff, min_diff, max_diff, n_positive, n_negative, changes_sign. Empty when fewer than two seeds.
    """
    columns = ["finding", "kind", "a", "b", "n_seeds", "mean_diff", "min_diff", "max_diff", "n_positive",
               "n_negative", "changes_sign"]
    kept, _, left_out = _answering(epochs, networks if "status" in networks.columns else None)
    rows = _with_attributes(final_epochs(kept, epoch), networks)
    if rows.empty or rows["seed"].nunique() < 2:
        frame = pd.DataFrame(columns=columns)
        frame.attrs.update(left_out=left_out)
        return frame
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
    frame = frame.sort_values(["changes_sign", "kind", "finding"], ascending=[False, True, True], ignore_index=True)
    frame.attrs.update(left_out=left_out)
    return frame


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


def report_sections(tables, results_dir=None, select_on: str | None = None) -> list[Section]:
    """The report's seed sections: completeness (networks x seeds x recipes x datasets: done / missing / failed),
    then, with two seeds or more, per-network mean ± 95% CI and the findings that change sign across seeds."""
    from analysis import completeness

    epochs, networks = tables.epochs, tables.networks
    sections = completeness.report_sections(tables)
    if epochs.empty or epochs["seed"].nunique() < 2:
        return sections
    metric = "test_balanced_acc"
    summary = per_network(epochs, metric, networks=networks)
    repeated = summary[summary["n_seeds"] >= 2]
    width = (repeated["ci95_high"] - repeated["ci95_low"])
    seeds = sorted(epochs["seed"].unique().tolist())
    table = summary.copy()
    table["mean ± ci95"] = [f"{m:.3f} ± {(h - m):.3f}" if n >= 2 else f"{m:.3f}"
                            for m, h, n in zip(table["mean"], table["ci95_high"], table["n_seeds"])]
    dropped = summary[summary["seeds_dropped"] > 0]
    finding = (f"{len(repeated)} of {len(summary)} (network, recipe) pairs have ≥2 seeds (seeds {seeds}); the median "
               f"95% interval of balanced accuracy is ±{width.median() / 2:.3f} (widest ±{width.max() / 2:.3f}, "
               f"{repeated.loc[width.idxmax(), 'network'] if len(repeated) else '-'}).")
    if len(dropped):
        finding += (f" {len(dropped)} pairs average fewer seeds than were trained (seeds_dropped), e.g. "
                    f"{dropped.iloc[0]['network']} over {int(dropped.iloc[0]['n_seeds'])} of "
                    f"{int(dropped.iloc[0]['n_seeds'] + dropped.iloc[0]['seeds_dropped'])}.")
    finding += left_out_note(summary.attrs["left_out"])
    sections.append(Section(
        key="seeds-ci", title="Mean over seeds", group="Seeds",
        question="How much does a network's accuracy move between training seeds?",
        finding=finding,
        table=table.sort_values("mean", ascending=False)[["network", "recipe", "n_seeds", "seeds_dropped",
                                                          "mean ± ci95", "std"]],
        figures=[ci_chart(summary, networks, metric)],
    ))
    flips = sign_changes(epochs, networks, metric)
    if not flips.empty:
        changed, stable = flips[flips["changes_sign"]], flips[~flips["changes_sign"]]
        examples = "; ".join(changed["finding"].head(3))
        finding = (f"{len(changed)} of {len(flips)} pairwise findings change sign across seeds"
                   + (f" (e.g. {examples}): treat those as noise." if len(changed) else
                      ": every comparison points the same way on every seed."))
        finding += left_out_note(flips.attrs.get("left_out", 0))
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
