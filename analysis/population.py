"""The population of trained networks as one row per network: the helpers every exam question shares.

Results are keyed by (network, recipe_hash, seed). The exam answers one recipe at a time (``recipe``: a name
or hash; default the recipe with the most runs) and, where a network was trained with several seeds, uses
the mean over seeds with a 95% confidence interval: columns ``<value>_mean``, ``<value>_ci95``, ``n_seeds``
(the runs counted) and ``seeds_dropped`` (the network's other runs under that recipe).

Picking is never done on the test split when the results hold a validation split: every place that picks
networks (the best network, gold stars, the k best of an ensemble, the Pareto fronts' members, the best recipe,
cascade candidates, the network cleanlab judges alone) picks on ``selection_metric`` (the metric's ``val_``
twin, e.g. ``val_balanced_acc``) and reports the test split's numbers of what it picked. ``select_on``: "val",
"test" (the study's way: picking and reporting on the test split), or None for "val" when the results hold a
validation split and "test" otherwise.

A run that diverged or failed is not an answer, at any epoch: ``answering_runs`` drops it, every analysis calls
it, and each answer says how many runs it left out (``frame.attrs["left_out"]``). Without an epoch, every run
counts with its last recorded epoch (``final_epochs``): a run stopped early answers with the epoch it stopped at.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats

from netzoo.errors import ResultsError
from netzoo.results import ResultTables

METRIC = "test_balanced_acc"   # the study's "accuracy": mean per-class recall on the test split
BASIC = "Basic"                # the study's reference network (and its family)
GOOD = 0.80                    # "good": metric >= GOOD at every epoch
GOLD = 0.98                    # "gold star": good, and metric >= GOLD at the last epoch
# Manifest columns that do not depend on the seed: one value per network.
NETWORK_COLUMNS = ["network", "family", "activation", "depth", "params", "memory", "ops", "macs",
                   "flops_forward", "flops_train_step", "dataset", "classes"]
COSTS = {  # cost column -> axis label with its unit
    "train_time_s": "training time (s)",
    "params": "parameters",
    "memory": "memory (tensor elements per input)",
    "ops": "ops (autograd nodes per input)",
    "flops_forward": "FLOPs per forward pass",
}
LABELS = {"test_balanced_acc": "test accuracy (mean per-class recall)", "test_acc": "test accuracy",
          **COSTS}
RUN = ["network", "recipe_hash", "seed"]              # one training run
SELECT_ON = ("val", "test")                           # the splits networks can be picked on (--select-on)
SPLIT_NAMES = {"val": "validation", "test": "test"}
ANSWERING = ("done", "stopped_early")                 # statuses of runs whose numbers are answers


def as_tables(tables) -> ResultTables:
    """Any object with networks/epochs/predictions/layers attributes as netzoo.results' ResultTables (missing
    ones empty)."""
    if isinstance(tables, ResultTables):
        return tables
    return ResultTables(*(getattr(tables, name, None) if getattr(tables, name, None) is not None
                          else pd.DataFrame() for name in ("networks", "epochs", "predictions", "layers")))


# --- which runs answer: one rule for every analysis --------------------------------------------------
def _run_columns(*frames: pd.DataFrame) -> list[str]:
    """The run key columns (of RUN) that every non-empty frame holding ``network`` has."""
    frames = [f for f in frames if len(f.columns) and "network" in f.columns]
    return [c for c in RUN if all(c in f.columns for f in frames)]


def _runs_of(frame: pd.DataFrame, columns: list[str]) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[columns].astype({"seed": "int64"} if "seed" in columns else {}))


def answering_runs(tables) -> tuple[ResultTables, int]:
    """The tables without the runs that are not answers, and how many runs were left out.

    A run (network, recipe_hash, seed) is left out, from every table and at every epoch, when its networks row
    says diverged or failed (any status but done and stopped_early) or any of its epochs says diverged: its
    predictions are null or meaningless (argmax of NaN) and its accuracies are not measurements. Every
    analysis that counts runs calls this first (after ``for_recipe``) and reports the count, e.g. in
    ``frame.attrs["left_out"]`` and with ``left_out_note`` in a finding. Frames without a status column
    (hand-built tables) leave nothing out.
    """
    tables = as_tables(tables)
    frames = {name: getattr(tables, name) for name in ("networks", "epochs", "predictions", "layers")}
    judged = [f for f in (frames["networks"], frames["epochs"]) if len(f) and "status" in f.columns]
    columns = _run_columns(*judged)
    if not judged or "network" not in columns:
        return tables, 0
    bad = pd.concat([f.loc[~f["status"].isin(ANSWERING), columns] for f in judged], ignore_index=True)
    bad = bad.drop_duplicates()
    if bad.empty:
        return tables, 0
    left_out = _runs_of(bad, columns)
    kept = {}
    for name, frame in frames.items():
        if frame.empty or not set(columns) <= set(frame.columns):  # no run key here: nothing to drop by
            kept[name] = frame
            continue
        suspect = frame["network"].isin(bad["network"].unique())  # cheap first pass: 40M prediction rows
        drop = np.zeros(len(frame), dtype=bool)
        if suspect.any():
            drop[suspect.to_numpy()] = _runs_of(frame[suspect], columns).isin(left_out)
        kept[name] = frame[~drop]
    return ResultTables(**kept), len(left_out)


def left_out_note(left_out: int) -> str:
    """A finding's closing words on the runs an answer left out: ' 2 runs left out (diverged or failed).' or ''."""
    if not left_out:
        return ""
    return f" {left_out} run{'s' if left_out != 1 else ''} left out (diverged or failed)."


def recipe_answers(tables, recipe: str | None = None) -> tuple[ResultTables, int]:
    """``answering_runs(for_recipe(tables, recipe))``; raises ResultsError when no run of the recipe answers."""
    tables, left_out = answering_runs(for_recipe(tables, recipe))
    if left_out and tables.networks.empty and tables.epochs.empty:
        raise ResultsError(f"No run answers: all {left_out} runs of this recipe diverged or failed "
                           f"(netzoo status lists them); train with a recipe under which they converge.")
    return tables, left_out


# --- which split picks: one rule for every analysis that picks networks ----------------------------
def validation_metric(metric: str) -> str:
    """The validation split's twin of a test metric: 'val_balanced_acc' for 'test_balanced_acc'."""
    return "val_" + metric.removeprefix("test_")


def has_validation(tables, metric: str = METRIC) -> bool:
    """Whether every recipe in the tables has validation numbers (``val_…`` not null at some epoch)."""
    epochs = as_tables(tables).epochs
    column = validation_metric(metric)
    if epochs.empty or column not in epochs.columns:
        return False
    if "recipe_hash" not in epochs.columns:
        return bool(epochs[column].notna().any())
    return bool(epochs[column].notna().groupby(epochs["recipe_hash"], observed=True).any().all())


def selection_metric(tables, select_on: str | None = None, metric: str = METRIC) -> str:
    """The column networks are picked on: ``metric``'s validation twin (``validation_metric``) when
    ``select_on`` is "val", or None and the tables hold a validation split (``has_validation``); ``metric``
    itself (picked on the test split, as the study did) when "test", or None without one. Raises ResultsError
    for "val" on tables without a validation split, or an unknown ``select_on``."""
    if select_on not in (None, *SELECT_ON):
        raise ResultsError(f"--select-on {select_on!r}: pick on one of {', '.join(SELECT_ON)}.")
    if select_on == "test" or (select_on is None and not has_validation(tables, metric)):
        return metric
    if not has_validation(tables, metric):
        raise ResultsError("--select-on val: these results hold no validation split (no val_ numbers in the "
                           "epochs table). Train with one (--recipe study+val, or validation = 0.0833 in the "
                           "recipe), or pass --select-on test to pick on the test split.")
    return validation_metric(metric)


def split_of(column: str) -> str:
    """'val' for a validation metric column, 'test' otherwise: the split a selection column is measured on."""
    return "val" if column.startswith("val_") else "test"


def selection_note(column: str) -> str:
    """A sentence saying which split picked the networks, for findings and the report's header."""
    if split_of(column) == "val":
        return f"Networks are picked on the validation split ({column}) and reported on the test split."
    return (f"Networks are picked on the test split ({column}), as the study did: the picks are not measured "
            f"on unseen data.")


def label(column: str) -> str:
    """Axis label with its unit for a metric or cost column."""
    return LABELS.get(column, column.replace("_", " "))


# --- recipe and epoch: one place decides which rows a question answers ---------------------------
def recipe_hash(tables, recipe: str | None = None) -> str:
    """The recipe the exam answers: ``recipe`` (name or hash) or the one with the most runs."""
    networks = as_tables(tables).networks
    if networks.empty:
        raise ResultsError("The results hold no networks yet: train some first (netzoo train ... --results DIR).")
    runs = networks.groupby(["recipe_hash", "recipe"], dropna=False).size().reset_index(name="runs")
    if recipe is None:
        runs = runs.sort_values(["runs", "recipe_hash"], ascending=[False, True])
        return str(runs.iloc[0]["recipe_hash"])
    match = runs[(runs["recipe"] == recipe) | (runs["recipe_hash"] == recipe)]
    if match.empty:
        known = ", ".join(f"{r.recipe} ({r.recipe_hash})" for r in runs.itertuples())
        raise ResultsError(f"No results for recipe {recipe!r}; recipes in these results: {known}.")
    return str(match.sort_values("runs", ascending=False).iloc[0]["recipe_hash"])


def for_recipe(tables, recipe: str | None = None) -> ResultTables:
    """The tables restricted to one recipe's rows (see recipe_hash)."""
    tables = as_tables(tables)
    chosen = recipe_hash(tables, recipe)
    keep = {}
    for name in ("networks", "epochs", "predictions", "layers"):
        frame = getattr(tables, name)
        keep[name] = frame[frame["recipe_hash"] == chosen] if "recipe_hash" in frame.columns else frame
    return ResultTables(**keep)


def last_epoch(epochs: pd.DataFrame) -> int:
    """The last epoch recorded in an epochs (or predictions) frame."""
    if epochs.empty:
        raise ResultsError("The results hold no epochs yet: train some networks first.")
    return int(epochs["epoch"].max())


def resolve_epoch(epochs: pd.DataFrame, epoch: int | None) -> int:
    """``epoch`` checked against the recorded ones, or the last epoch when None."""
    if epoch is None:
        return last_epoch(epochs)
    recorded = sorted(int(e) for e in epochs["epoch"].unique())
    if epoch not in recorded:
        raise ResultsError(f"No results for epoch {epoch}; recorded epochs: {recorded}. Pass --epoch with one of them.")
    return int(epoch)


# --- means over seeds: the one rule the exam, the seed report and compare share ------------------
def final_epochs(epochs: pd.DataFrame, epoch: int | None = None) -> pd.DataFrame:
    """The rows at ``epoch``, or each run's last recorded epoch when None (a run stopped early answers with the
    epoch it stopped at). Works on epochs, predictions and layers frames; one without an epoch column (a
    single epoch's table) is returned as it is."""
    if "epoch" not in epochs.columns:
        return epochs
    if epochs.empty or epoch is not None:
        return epochs if epochs.empty else epochs[epochs["epoch"] == epoch]
    if epochs["epoch"].nunique() == 1:  # e.g. loaded with epoch="last" and no run stopped early
        return epochs
    columns = _run_columns(epochs)
    last = epochs.groupby(columns, observed=True)["epoch"].transform("max")
    return epochs[epochs["epoch"] == last]


def ci95(std: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the 95% Student-t confidence interval of a mean (NaN with one seed)."""
    n = n.astype(float)
    t = stats.t.ppf(0.975, np.maximum(n - 1, 1))
    return pd.Series(np.where(n > 1, t * std / np.sqrt(n), np.nan), index=std.index)


def mean_over_seeds(frame: pd.DataFrame, by: list[str], values: list[str], runs: pd.DataFrame | None = None,
                    std: bool = False) -> pd.DataFrame:
    """One row per ``by`` group of ``frame`` (one row per run: answering runs at one epoch each): ``n_seeds``,
    ``seeds_dropped`` and, for each value, ``<value>_mean``, ``<value>_ci95`` (and ``<value>_std`` with ``std``).

    ``n_seeds``: the runs counted. ``seeds_dropped``: the group's runs in ``runs`` (e.g. the networks table
    before ``answering_runs``: every run trained) that are not counted: diverged, failed, or no row at that
    epoch; 0 without ``runs``. The interval is Student's t over the runs whose value is not null
    (``ci95``; NaN with one). The exam (``population``) and the seed report (``analysis.seeds.per_network``)
    both compute their means here.
    """
    grouped = frame.groupby(by, sort=True, observed=True)
    out = grouped.size().rename("n_seeds").to_frame()
    means, stds, counts = grouped[values].mean(), grouped[values].std(), grouped[values].count()
    for value in values:
        out[f"{value}_mean"] = means[value]
        if std:
            out[f"{value}_std"] = stds[value]
        out[f"{value}_ci95"] = ci95(stds[value], counts[value])
    out = out.reset_index()
    out.insert(len(by) + 1, "seeds_dropped", 0)
    keys = [c for c in by if c != "epoch" and runs is not None and c in runs.columns]
    if keys and "seed" in runs.columns:
        trained = runs.drop_duplicates(keys + ["seed"]).groupby(keys, observed=True).size().rename("_trained")
        trained = out[keys].join(trained, on=keys)["_trained"]
        out["seeds_dropped"] = (trained.fillna(out["n_seeds"]) - out["n_seeds"]).clip(lower=0).astype("int64")
    return out


def per_epoch(tables, metric: str = METRIC, recipe: str | None = None) -> pd.DataFrame:
    """Metric per network and epoch over the answering runs: network, family, activation, epoch, n_seeds,
    seeds_dropped, <metric>_mean, _ci95; ``attrs["left_out"]``: runs left out (diverged or failed)."""
    tables = for_recipe(tables, recipe)
    runs = tables.networks
    tables, left_out = recipe_answers(tables)
    curves = mean_over_seeds(tables.epochs, ["network", "epoch"], [metric], runs=runs)
    curves = curves.merge(_identity(tables.networks), on="network", how="left")
    curves.attrs.update(left_out=left_out)
    return curves


def _identity(networks: pd.DataFrame) -> pd.DataFrame:
    """network, family, activation (and the manifest costs): one row per network."""
    cols = [c for c in NETWORK_COLUMNS if c in networks.columns]
    return networks[cols].drop_duplicates("network").reset_index(drop=True)


def population(tables, metric: str = METRIC, epoch: int | None = None, recipe: str | None = None,
               good: float = GOOD, gold: float = GOLD, select_on: str | None = None) -> pd.DataFrame:
    """One row per network at ``epoch`` (default: each run's last epoch), over its answering runs: its manifest
    costs, seed means with CIs of the test metrics (and of the selection metric), per-class recalls and
    cumulative training time, n_seeds, seeds_dropped, and the flags ``good`` and ``gold_star``, judged on the
    selection metric (``selection_metric(tables, select_on, metric)``). Sorted by the selection metric, best
    first. ``attrs``: metric, selected_by (the selection column), select_on ("val" or "test"), epoch (the last
    when None), good, gold, left_out (runs left out: diverged or failed)."""
    tables = for_recipe(tables, recipe)
    runs = tables.networks
    tables, left_out = recipe_answers(tables)
    select = selection_metric(tables, select_on, metric)
    resolved = resolve_epoch(tables.epochs, epoch)
    at = final_epochs(tables.epochs, epoch)
    values = [c for c in dict.fromkeys([metric, select, "test_acc", "test_balanced_acc", "test_loss", "train_acc",
                                        "train_time_s"]) if c in at.columns]
    values += sorted((c for c in at.columns if c.startswith("test_acc_class_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    pop = _identity(tables.networks).merge(mean_over_seeds(at, ["network"], values, runs=runs), on="network",
                                           how="inner")
    flags = standing(tables, select, resolved, good, gold)
    pop = pop.merge(flags, on="network", how="left")
    pop[["good", "gold_star"]] = pop[["good", "gold_star"]].fillna(False).astype(bool)
    pop.attrs.update(metric=metric, selected_by=select, select_on=split_of(select), epoch=resolved, good=good,
                     gold=gold, left_out=left_out)
    return pop.sort_values(f"{select}_mean", ascending=False, kind="stable").reset_index(drop=True)


def standing(tables, metric: str = METRIC, epoch: int | None = None, good: float = GOOD,
             gold: float = GOLD) -> pd.DataFrame:
    """network, good (metric >= good at every epoch up to ``epoch``), gold_star (good and >= gold at ``epoch``),
    over the answering runs. A network missing an epoch (stopped early) is not good. Tables must hold one recipe.
    Gold stars are picks: ``population`` passes the selection metric (``selection_metric``), not the test one."""
    tables, _ = answering_runs(tables)
    epoch = resolve_epoch(tables.epochs, epoch)
    curves = mean_over_seeds(tables.epochs[tables.epochs["epoch"] <= epoch], ["network", "epoch"], [metric])
    value = curves[f"{metric}_mean"]
    flags = curves.assign(ok=value >= good - 1e-12, final=(curves["epoch"] == epoch) & (value >= gold - 1e-12))
    out = flags.groupby("network").agg(ok=("ok", "all"), epochs=("epoch", "nunique"), final=("final", "any"))
    out["good"] = out["ok"] & (out["epochs"] == epoch)
    out["gold_star"] = out["good"] & out["final"]
    return out[["good", "gold_star"]].reset_index()


def basic_row(pop: pd.DataFrame) -> pd.Series | None:
    """The Basic network's row of a population frame, or None when it was not trained."""
    rows = pop[pop["network"] == BASIC]
    if rows.empty and "family" in pop.columns:
        rows = pop[pop["family"] == BASIC]
    return None if rows.empty else rows.iloc[0]
