"""``netzoo status``: how far a results folder is: done / diverged / failed / running / left per family.

What was planned comes from DIR/jobs/<recipe_hash>.json (written by every ``netzoo train``: the zoo, its
networks and seeds); what is finished from the ``networks`` table; what is running from live claim files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from netzoo.claims import live_claims
from netzoo.errors import ResultsError
from netzoo.results import load

COLUMNS = ["done", "diverged", "failed", "stopped_early", "running", "left", "planned"]


def _planned(results_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Planned keys (network, recipe_hash, seed, family) from DIR/jobs/*.json, and notes on unreadable zoos."""
    rows, notes = [], []
    for path in sorted((results_dir / "jobs").glob("*.json")):
        record = json.loads(path.read_text())
        families = {}
        try:
            manifest = pd.read_parquet(Path(record["zoo"]) / "manifest.parquet", columns=["network", "family"])
            families = dict(zip(manifest["network"], manifest["family"]))
        except (OSError, ValueError, KeyError):
            notes.append(f"zoo {record.get('zoo')} is not readable: families of networks not trained yet are unknown")
        rows += [{"network": n, "recipe_hash": record["recipe_hash"], "seed": int(s), "family": families.get(n, "?")}
                 for n in record["networks"] for s in record["seeds"]]
    return pd.DataFrame(rows, columns=["network", "recipe_hash", "seed", "family"]), notes


def status_table(results_dir) -> pd.DataFrame:
    """One row per family (and a total): done, diverged, failed, stopped_early, running, left, planned."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"No results folder at {results_dir}. Start one with: netzoo train --results {results_dir} …")
    networks = load(results_dir, tables=["networks"],
                    columns={"networks": ["network", "recipe_hash", "seed", "family", "status"]}).networks
    planned, _ = _planned(results_dir)
    key = ["network", "recipe_hash", "seed"]
    finished = set(zip(networks["network"], networks["recipe_hash"], networks["seed"]))
    running = {(c["claim"].rsplit(".", 1)[0].split("--")[0], c["claim"].split("--")[1],
                int(c["claim"].rsplit(".", 1)[0].split("--")[2])) for c in live_claims(results_dir)} - finished
    keys = set(zip(planned["network"], planned["recipe_hash"], planned["seed"]))
    frame = pd.concat([
        networks[key + ["family", "status"]],
        planned.loc[[k not in finished for k in zip(planned["network"], planned["recipe_hash"], planned["seed"])]]
        .assign(status=lambda f: ["running" if k in running else "left"
                                  for k in zip(f["network"], f["recipe_hash"], f["seed"])]),
    ], ignore_index=True)
    frame["planned"] = [k in keys for k in zip(frame["network"], frame["recipe_hash"], frame["seed"])]
    table = pd.crosstab(frame["family"], frame["status"]).reindex(columns=COLUMNS[:-1], fill_value=0)
    table["planned"] = frame.groupby("family")["planned"].sum().reindex(table.index).fillna(0).astype(int)
    table.loc["total"] = table.sum()
    return table.astype(int).rename_axis("family").reset_index()


def status_report(results_dir) -> str:
    """The status table as text, with a headline (complete / planned) and any notes."""
    results_dir = Path(results_dir)
    table = status_table(results_dir)
    _, notes = _planned(results_dir)
    total = table.iloc[-1]
    complete = int(total[["done", "diverged", "failed", "stopped_early"]].sum())
    planned = int(total["planned"])
    share = f" ({100 * complete / planned:.0f}% of {planned} planned)" if planned else " (no plan recorded)"
    lines = [f"{results_dir}: {complete} complete{share}, {int(total['running'])} running, {int(total['left'])} left",
             table.to_string(index=False)]
    from analysis.completeness import completeness_text  # networks x seeds x recipes x datasets: done / missing

    runs = load(results_dir, tables=["networks"], columns={"networks": ["network", "recipe", "recipe_hash", "seed",
                                                                         "status", "dataset"]}).networks
    lines[1:1] = [completeness_text(runs, planned=_planned(results_dir)[0]), ""]  # the family table stays last
    return "\n".join(lines + [f"note: {n}" for n in notes])
