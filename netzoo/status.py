"""``netzoo status``: how far a results folder is: done / diverged / failed / running / left per family.

What was planned comes from DIR/jobs/<recipe_hash>.json (written by every ``netzoo train``: the zoo, its
networks and seeds); what is finished from the ``networks`` table of whole keys only (``netzoo.results.scan``,
the rule ``netzoo verify`` applies: a damaged or incomplete key is left, as train sees it); what is running
from live claim files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from netzoo.claims import held_keys
from netzoo.completeness import completeness_text
from netzoo.errors import NetzooError, ResultsError
from netzoo.results import job_records, load, results_folder
from netzoo.zoo import manifest_rows

COLUMNS = ["done", "diverged", "failed", "stopped_early", "running", "left", "planned"]


def _planned(results_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Planned keys (network, recipe_hash, seed, family) from DIR/jobs/*.json, and notes on unreadable zoos."""
    rows, notes = [], []
    for path, record in job_records(results_dir):
        if record is None or not {"zoo", "networks", "seeds", "recipe_hash"} <= set(record):
            raise ResultsError(f"{path} is damaged: rerun the netzoo train command that wrote it (it rewrites "
                               f"the record), or delete it to leave its plan out of the count.")
        families = {}
        try:
            families = {name: row["family"] for name, row in manifest_rows(record["zoo"]).items()}
        except (NetzooError, OSError, KeyError):
            notes.append(f"zoo {record.get('zoo')} is not readable: families of networks not trained yet are unknown")
        rows += [{"network": n, "recipe_hash": record["recipe_hash"], "seed": int(s), "family": families.get(n, "?")}
                 for n in record["networks"] for s in record["seeds"]]
    return pd.DataFrame(rows, columns=["network", "recipe_hash", "seed", "family"]), notes


def status_table(results_dir) -> pd.DataFrame:
    """One row per family (and a total): done, diverged, failed, stopped_early, running, left, planned."""
    results_dir = results_folder(results_dir)
    networks = load(results_dir, tables=["networks"], columns={"networks": list(COLUMNS_READ)}).networks
    return _table(results_dir, networks, _planned(results_dir)[0])


COLUMNS_READ = ("network", "recipe", "recipe_hash", "seed", "family", "status", "dataset")


def _table(results_dir: Path, networks: pd.DataFrame, planned: pd.DataFrame) -> pd.DataFrame:
    """The status table from the whole keys' networks rows and the planned keys."""
    key = ["network", "recipe_hash", "seed"]
    finished = set(zip(networks["network"], networks["recipe_hash"], networks["seed"]))
    running = held_keys(results_dir) - finished
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
    results_dir = results_folder(results_dir)
    networks = load(results_dir, tables=["networks"], columns={"networks": list(COLUMNS_READ)}).networks
    planned, notes = _planned(results_dir)
    table = _table(results_dir, networks, planned)
    total = table.iloc[-1]
    complete = int(total[["done", "diverged", "failed", "stopped_early"]].sum())
    planned_n = int(total["planned"])
    share = f" ({100 * complete / planned_n:.0f}% of {planned_n} planned)" if planned_n else " (no plan recorded)"
    lines = [f"{results_dir}: {complete} complete{share}, {int(total['running'])} running, {int(total['left'])} left",
             completeness_text(networks, planned=planned), "",  # the family table stays last
             table.to_string(index=False)]
    return "\n".join(lines + [f"note: {n}" for n in notes])
