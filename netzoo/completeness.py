"""Completeness: networks x seeds x recipes x datasets, each run done, diverged, failed or missing.

Pure functions of the ``networks`` table (and the planned keys): ``netzoo status`` prints ``completeness_text``
and the report's completeness section (``analysis.completeness``) shows ``completeness`` and ``missing``.

A missing seed must never pass for a result: before averaging over seeds or comparing recipes, this table says
which runs exist. What is *expected* is the full product of what the results (and the zoo's manifest, when
given) hold: per dataset and recipe, every network seen (or planned) under it x every seed seen (or planned).
"""

from __future__ import annotations

import pandas as pd


RUN = ["dataset", "network", "recipe", "recipe_hash", "seed"]
STATES = ["done", "diverged", "failed", "missing"]


def runs(networks: pd.DataFrame, expected_networks: list[str] | None = None,
         expected_seeds: list[int] | None = None, planned: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per expected run with its ``state``: done (done or stopped early), diverged, failed or missing.

    Expected, per dataset and recipe: every network seen under that recipe x every seed seen under it, plus
    ``expected_networks`` / ``expected_seeds`` and the ``planned`` keys (network, recipe_hash, seed: what the
    runner's job records planned). Columns: dataset, network, recipe, recipe_hash, seed, state.
    """
    if networks.empty:
        return pd.DataFrame(columns=RUN + ["state"])
    have = networks.assign(state=networks["status"].map(
        {"done": "done", "stopped_early": "done", "diverged": "diverged", "failed": "failed"}).fillna("failed"))
    have = have.drop_duplicates(RUN, keep="last")
    out = []
    for (dataset, recipe, recipe_hash), group in have.groupby(["dataset", "recipe", "recipe_hash"], sort=True,
                                                              dropna=False):
        plan = planned[planned["recipe_hash"] == recipe_hash] if planned is not None else None
        names = set(group["network"]) | set(expected_networks or []) | set(plan["network"] if plan is not None else [])
        seeds = (set(group["seed"].astype(int)) | set(expected_seeds or [])
                 | set(plan["seed"].astype(int) if plan is not None else []))
        frame = pd.MultiIndex.from_product([sorted(names), sorted(seeds)], names=["network", "seed"]).to_frame(
            index=False).assign(dataset=dataset, recipe=recipe, recipe_hash=recipe_hash)
        frame = frame.merge(group[RUN + ["state"]], on=RUN, how="left")
        out.append(frame.fillna({"state": "missing"}))
    return pd.concat(out, ignore_index=True)[RUN + ["state"]]


def completeness(networks: pd.DataFrame, expected_networks: list[str] | None = None,
                 expected_seeds: list[int] | None = None, planned: pd.DataFrame | None = None) -> pd.DataFrame:
    """Counts per (dataset, recipe, seed): expected, done, diverged, failed, missing runs (see ``runs``)."""
    table = runs(networks, expected_networks, expected_seeds, planned)
    if table.empty:
        return pd.DataFrame(columns=["dataset", "recipe", "recipe_hash", "seed", "expected"] + STATES)
    counts = pd.crosstab([table["dataset"], table["recipe"], table["recipe_hash"], table["seed"]], table["state"])
    counts = counts.reindex(columns=STATES, fill_value=0)
    counts.insert(0, "expected", counts.sum(axis=1))
    return counts.reset_index().rename_axis(columns=None)


def missing(networks: pd.DataFrame, expected_networks: list[str] | None = None,
            expected_seeds: list[int] | None = None, planned: pd.DataFrame | None = None) -> pd.DataFrame:
    """The expected runs that are missing or failed (see ``runs``)."""
    table = runs(networks, expected_networks, expected_seeds, planned)
    return table[table["state"].isin(["missing", "failed"])].reset_index(drop=True)


def completeness_text(networks: pd.DataFrame, expected_networks: list[str] | None = None,
                      expected_seeds: list[int] | None = None, planned: pd.DataFrame | None = None,
                      limit: int = 10) -> str:
    """The completeness table as text for ``netzoo status``, with the first missing or failed runs named."""
    table = completeness(networks, expected_networks, expected_seeds, planned)
    if table.empty:
        return "completeness: no runs yet"
    lines = ["completeness (networks x seeds x recipes x datasets):", table.to_string(index=False)]
    gaps = missing(networks, expected_networks, expected_seeds, planned)
    if gaps.empty:
        lines.append(f"all {int(table['expected'].sum())} expected runs are present")
    else:
        shown = ", ".join(f"{r.network} {r.recipe} seed {r.seed} ({r.state})" for r in gaps.head(limit).itertuples())
        lines.append(f"{len(gaps)} runs missing or failed: {shown}{', …' if len(gaps) > limit else ''}; "
                     f"rerun the same train or sweep command to fill them")
    return "\n".join(lines)
