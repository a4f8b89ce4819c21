"""Completeness: networks x seeds x recipes x datasets, each run done, diverged, failed or missing.

A missing seed must never pass for a result: before averaging over seeds or comparing recipes, this table says
which runs exist. What is *expected* is the full product of what the results (and the zoo's manifest, when
given) hold: every network seen, under every recipe seen, with every seed seen, per dataset.
"""

from __future__ import annotations

import pandas as pd

from analysis.section import Section

RUN = ["dataset", "network", "recipe", "recipe_hash", "seed"]
STATES = ["done", "diverged", "failed", "missing"]


def runs(networks: pd.DataFrame, expected_networks: list[str] | None = None,
         expected_seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per expected run with its ``state``: done (done or stopped early), diverged, failed or missing.

    Expected: per dataset, every network seen (plus ``expected_networks``) x every recipe seen x every seed seen
    (plus ``expected_seeds``). Columns: dataset, network, recipe, recipe_hash, seed, state.
    """
    if networks.empty and not expected_networks:
        return pd.DataFrame(columns=RUN + ["state"])
    have = networks.assign(state=networks["status"].map(
        {"done": "done", "stopped_early": "done", "diverged": "diverged", "failed": "failed"}).fillna("failed"))
    have = have.drop_duplicates(RUN, keep="last")
    out = []
    for dataset, group in have.groupby("dataset", sort=True, dropna=False):
        names = sorted(set(group["network"]) | set(expected_networks or []))
        seeds = sorted(set(group["seed"].astype(int)) | set(expected_seeds or []))
        recipes = group[["recipe", "recipe_hash"]].drop_duplicates().itertuples(index=False)
        expected = pd.MultiIndex.from_product([names, list(recipes), seeds], names=["network", "recipe_pair", "seed"])
        frame = expected.to_frame(index=False)
        frame["recipe"] = frame["recipe_pair"].map(lambda p: p[0])
        frame["recipe_hash"] = frame["recipe_pair"].map(lambda p: p[1])
        frame["dataset"] = dataset
        frame = frame.drop(columns="recipe_pair").merge(group[RUN + ["state"]], on=RUN, how="left")
        out.append(frame.fillna({"state": "missing"}))
    return pd.concat(out, ignore_index=True)[RUN + ["state"]]


def completeness(networks: pd.DataFrame, expected_networks: list[str] | None = None,
                 expected_seeds: list[int] | None = None) -> pd.DataFrame:
    """Counts per (dataset, recipe, seed): expected, done, diverged, failed, missing runs."""
    table = runs(networks, expected_networks, expected_seeds)
    if table.empty:
        return pd.DataFrame(columns=["dataset", "recipe", "recipe_hash", "seed", "expected"] + STATES)
    counts = pd.crosstab([table["dataset"], table["recipe"], table["recipe_hash"], table["seed"]], table["state"])
    counts = counts.reindex(columns=STATES, fill_value=0)
    counts.insert(0, "expected", counts.sum(axis=1))
    return counts.reset_index().rename_axis(columns=None)


def missing(networks: pd.DataFrame, expected_networks: list[str] | None = None,
            expected_seeds: list[int] | None = None) -> pd.DataFrame:
    """The expected runs that are missing or failed: what a rerun of train or sweep would (re)do."""
    table = runs(networks, expected_networks, expected_seeds)
    return table[table["state"].isin(["missing", "failed"])].reset_index(drop=True)


def completeness_text(networks: pd.DataFrame, expected_networks: list[str] | None = None, limit: int = 10) -> str:
    """The completeness table as text for ``netzoo status``, with the first missing or failed runs named."""
    table = completeness(networks, expected_networks)
    if table.empty:
        return "completeness: no runs yet"
    lines = ["completeness (networks x seeds x recipes x datasets):", table.to_string(index=False)]
    gaps = missing(networks, expected_networks)
    if gaps.empty:
        lines.append(f"all {int(table['expected'].sum())} expected runs are present")
    else:
        shown = ", ".join(f"{r.network} {r.recipe} seed {r.seed} ({r.state})" for r in gaps.head(limit).itertuples())
        lines.append(f"{len(gaps)} runs missing or failed: {shown}{', …' if len(gaps) > limit else ''}; "
                     f"rerun the same train or sweep command to fill them")
    return "\n".join(lines)


def report_sections(tables) -> list[Section]:
    """The report's completeness section: counts per dataset x recipe x seed, and the missing runs named."""
    networks = tables.networks
    if networks.empty or not set(RUN + ["status"]) <= set(networks.columns):
        return []
    table = completeness(networks)
    gaps = missing(networks)
    total = int(table["expected"].sum())
    if gaps.empty:
        finding = (f"All {total} expected runs ({networks['network'].nunique()} networks x "
                   f"{networks['recipe_hash'].nunique()} recipes x {networks['seed'].nunique()} seeds) are present: "
                   f"{int(table['done'].sum())} done, {int(table['diverged'].sum())} diverged.")
    else:
        named = ", ".join(f"{r.network} {r.recipe} seed {r.seed} ({r.state})" for r in gaps.head(5).itertuples())
        finding = (f"{len(gaps)} of {total} expected runs are missing or failed (e.g. {named}): averages over seeds "
                   f"and recipe comparisons below exclude them.")
    return [Section(key="completeness", title="Completeness", group="Seeds",
                    question="Which runs of networks x seeds x recipes x datasets exist?",
                    finding=finding, table=table)]
