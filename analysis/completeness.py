"""The report's completeness section: networks x seeds x recipes x datasets, each run done, diverged, failed or
missing (the counts come from ``netzoo.completeness``, which ``netzoo status`` prints too)."""

from __future__ import annotations

from analysis.section import Section
from netzoo.completeness import RUN, completeness, missing


def report_sections(tables, results_dir=None, select_on: str | None = None) -> list[Section]:
    """The report's completeness section: counts per dataset x recipe x seed, and the missing runs named."""
    networks = tables.networks
    if networks.empty or not set(RUN + ["status"]) <= set(networks.columns):
        return []
    table = completeness(networks)
    gaps = missing(networks)
    total = int(table["expected"].sum())
    if gaps.empty:
        counts = {"network": networks["network"].nunique(), "recipe": networks["recipe_hash"].nunique(),
                  "seed": networks["seed"].nunique()}
        sizes = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in counts.items())
        finding = (f"All {total} expected runs ({sizes}) are present: "
                   f"{int(table['done'].sum())} done, {int(table['diverged'].sum())} diverged.")
    else:
        named = ", ".join(f"{r.network} {r.recipe} seed {r.seed} ({r.state})" for r in gaps.head(5).itertuples())
        finding = (f"{len(gaps)} of {total} expected runs are missing or failed (e.g. {named}): averages over seeds "
                   f"and recipe comparisons below exclude them.")
    return [Section(key="completeness", title="Completeness", group="Seeds",
                    question="Which runs of networks x seeds x recipes x datasets exist?",
                    finding=finding, table=table)]
