"""The study's ten questions about the population, each a pure function from result tables to a DataFrame.

The study's metaphor: networks are students, epochs are attempts, test samples are questions. Every function
takes the tables (``netzoo.results.load``'s ResultTables or any object with networks/epochs/predictions/layers
frames), answers one recipe (``recipe``: default the one with the most runs) and uses seed means
(see analysis.population). Runs that diverged or failed are left out of every answer, and each answer says how
many in ``attrs["left_out"]``. ``answer(question, results_dir)`` loads only what a question needs (CLI ``exam``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.population import (BASIC, GOLD, GOOD, METRIC, basic_row, for_recipe, mean_over_seeds,
                                 per_epoch, population, resolve_epoch, selection_metric, selection_note, split_of)
from analysis.samples import q8_samples
from netzoo.errors import NetzooError, ResultsError

THRESHOLDS = (0.80, 0.90, 0.95, 0.99, 1.00)


def threshold_column(threshold: float) -> str:
    """'reached_80' for 0.80: the Q1 column counting networks at or above a threshold."""
    return f"reached_{threshold * 100:g}"


# --- 1. attempts ---------------------------------------------------------------------------------
def q1_attempts(tables, metric: str = METRIC, thresholds=THRESHOLDS, good: float = GOOD, gold: float = GOLD,
                recipe: str | None = None, select_on: str | None = None) -> pd.DataFrame:
    """Per epoch: networks with a result, how many reached each threshold of ``metric``, and how many are good
    so far (>= ``good`` at every epoch up to this one) and gold stars if training stopped here (good, >= ``gold``),
    both judged on the selection metric (analysis.population.selection_metric). attrs: metric, selected_by."""
    curves = per_epoch(tables, metric, recipe)
    left_out = curves.attrs["left_out"]
    select = selection_metric(for_recipe(tables, recipe), select_on, metric)
    if select != metric:
        picked = per_epoch(tables, select, recipe)[["network", "epoch", f"{select}_mean"]]
        curves = curves.merge(picked, on=["network", "epoch"], how="left", validate="one_to_one")
    value = curves[f"{metric}_mean"].to_numpy()
    chosen = curves[f"{select}_mean"]
    counts = curves[["epoch"]].copy()
    for threshold in thresholds:
        counts[threshold_column(threshold)] = value >= threshold - 1e-12
    # good so far: >= good at every epoch 1..e (a missing epoch breaks the streak)
    order = curves.sort_values(["network", "epoch"]).index
    ok = (chosen[order] >= good - 1e-12) & (curves.loc[order, "epoch"]
                                            == curves.loc[order].groupby("network").cumcount() + 1)
    counts.loc[order, "good"] = ok.groupby(curves.loc[order, "network"]).cummin()
    counts["gold_stars"] = counts["good"].astype(bool) & (chosen.to_numpy() >= gold - 1e-12)
    out = counts.groupby("epoch").agg(networks=("epoch", "size"), **{c: (c, "sum") for c in counts.columns[1:]})
    out = out.astype("int64").reset_index()
    out.attrs.update(metric=metric, selected_by=select, select_on=split_of(select), good=good, gold=gold,
                     left_out=left_out)
    return out


# --- 2-6. a value per family, per activation and per cell ----------------------------------------
def by_group(pop: pd.DataFrame, value: str) -> pd.DataFrame:
    """Distribution of ``value`` per family, per activation and per cell (family x activation): networks,
    gold stars, median, quartiles, min and max. ``family`` or ``activation`` is "all" on the marginal rows."""
    parts = []
    for keys, fill in ((["family"], {"activation": "all"}), (["activation"], {"family": "all"}),
                       (["family", "activation"], {})):
        grouped = pop.groupby(keys, observed=True)
        stats = grouped[value].describe()[["count", "min", "25%", "50%", "75%", "max"]]
        stats.columns = ["networks", "min", "q25", "median", "q75", "max"]
        stats["gold_stars"] = grouped["gold_star"].sum()
        part = stats.reset_index().assign(group="cell" if len(keys) == 2 else keys[0], **fill)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out[["networks", "gold_stars"]] = out[["networks", "gold_stars"]].astype("int64")
    out = out[["group", "family", "activation", "networks", "gold_stars", "median", "q25", "q75", "min", "max"]]
    out.attrs.update(value=value, left_out=pop.attrs.get("left_out", 0))
    return out


def q2_accuracy(tables, metric: str = METRIC, epoch: int | None = None, recipe: str | None = None,
                good: float = GOOD, gold: float = GOLD, select_on: str | None = None) -> pd.DataFrame:
    """Test accuracy (``metric``, seed mean) per family, per activation and per cell (see by_group; gold stars
    judged on the selection metric)."""
    pop = population(tables, metric, epoch, recipe, good, gold, select_on=select_on)
    return by_group(pop, f"{metric}_mean")


def cost_by_group(tables, cost: str, metric: str = METRIC, epoch: int | None = None,
                  recipe: str | None = None, select_on: str | None = None) -> pd.DataFrame:
    """A cost (train_time_s, params, memory, ops, ...) per family, activation and cell (see by_group)."""
    pop = population(tables, metric, epoch, recipe, select_on=select_on)
    value = f"{cost}_mean" if f"{cost}_mean" in pop.columns else cost
    if value not in pop.columns:
        raise ResultsError(f"No cost column {cost!r} in the results; costs: train_time_s, params, memory, ops, "
                           f"macs, flops_forward, flops_train_step.")
    return by_group(pop, value)


def amortised_note(tables, recipe: str | None = None) -> str:
    """What a reader of training times must know when some runs trained as fused groups (networks column
    ``fused_runs`` > 1, issue 15): their time is the group's divided by its runs, or '' when every run trained
    alone."""
    networks = for_recipe(tables, recipe).networks
    if "fused_runs" not in networks.columns:
        return ""
    fused = networks["fused_runs"].fillna(1) > 1
    if not fused.any():
        return ""
    return (f"{int(fused.sum())} of {len(networks)} runs trained in fused groups of up to "
            f"{int(networks['fused_runs'].max())} runs (networks.fused_runs): their training time is the group's "
            f"time divided by its runs, an amortised share, not what one run takes alone.")


def q3_train_time(tables, **kw) -> pd.DataFrame:
    """Training time in seconds up to the epoch (seed mean) per family, activation and cell; attrs["notes"] says
    when times are a fused group's share (amortised_note)."""
    frame = cost_by_group(tables, "train_time_s", **kw)
    note = amortised_note(tables, kw.get("recipe"))
    frame.attrs["notes"] = [note] if note else []  # the CLI says the runs left out after the notes
    return frame


def q4_params(tables, **kw) -> pd.DataFrame:
    """Trainable parameters per family, activation and cell."""
    return cost_by_group(tables, "params", **kw)


def q5_memory(tables, **kw) -> pd.DataFrame:
    """The study's memory (tensor elements of one forward pass) per family, activation and cell."""
    return cost_by_group(tables, "memory", **kw)


def q6_ops(tables, **kw) -> pd.DataFrame:
    """The study's ops (autograd nodes of one forward pass) per family, activation and cell."""
    return cost_by_group(tables, "ops", **kw)


# --- 7. change over attempts ---------------------------------------------------------------------
def q7_curves(tables, metric: str = METRIC, recipe: str | None = None) -> pd.DataFrame:
    """Metric per network and epoch (seed mean): one line per network in the chart."""
    return per_epoch(tables, metric, recipe)


def q7_late_bloomers(tables, metric: str = METRIC, early=(1, 2), top: float = 0.75, epoch: int | None = None,
                     recipe: str | None = None) -> pd.DataFrame:
    """Networks below the median at every ``early`` epoch and in the top quartile (>= the ``top`` quantile)
    at ``epoch`` (default last): network, family, activation and the metric at each epoch."""
    curves = per_epoch(tables, metric, recipe)
    epoch = resolve_epoch(curves, epoch)
    wide = curves.pivot_table(index=["network", "family", "activation"], columns="epoch",
                              values=f"{metric}_mean", observed=True)
    early = [e for e in early if e in wide.columns and e < epoch]
    if not early or epoch not in wide.columns:
        empty = pd.DataFrame(columns=["network", "family", "activation"])
        empty.attrs.update(left_out=curves.attrs["left_out"])
        return empty
    below = np.logical_and.reduce([wide[e] < wide[e].median() for e in early])
    bloom = wide[below & (wide[epoch] >= wide[epoch].quantile(top))]
    bloom = bloom.sort_values(epoch, ascending=False)
    bloom.columns = [f"{metric}_epoch_{e}" for e in bloom.columns]
    bloom = bloom.reset_index()
    bloom.attrs.update(left_out=curves.attrs["left_out"])
    return bloom


def q7_rank_stability(tables, metric: str = METRIC, recipe: str | None = None) -> pd.DataFrame:
    """Spearman rank correlation of the networks' metric between every pair of epochs (long form:
    epoch_a, epoch_b, spearman)."""
    curves = per_epoch(tables, metric, recipe)
    wide = curves.pivot(index="network", columns="epoch", values=f"{metric}_mean")
    corr = wide.corr(method="spearman")
    corr.index.name, corr.columns.name = "epoch_a", "epoch_b"
    out = corr.stack().rename("spearman").reset_index()
    out.attrs.update(left_out=curves.attrs["left_out"])
    return out


def settled_epoch(stability: pd.DataFrame, threshold: float = 0.9) -> int | None:
    """The first epoch from which the ranking correlates >= ``threshold`` (Spearman) with the final one at
    every later epoch: after it, the ranking barely changes. None when it never settles."""
    last = int(stability["epoch_b"].max())
    to_last = stability[stability["epoch_b"] == last].set_index("epoch_a")["spearman"].sort_index()
    settled = None
    for epoch, value in to_last[::-1].items():  # walk back from the last epoch while it holds
        if not value >= threshold:
            break
        settled = int(epoch)
    return settled


# --- 9. the best network -------------------------------------------------------------------------
def best_network(pop: pd.DataFrame, metric: str = METRIC) -> pd.Series:
    """The population row with the highest seed-mean selection metric (``pop.attrs["selected_by"]``: the
    validation split's when the population was picked on it, else ``metric``); ``population`` holds answering
    runs only."""
    if pop.empty:
        raise ResultsError("No network has a result at this epoch: nothing to rank.")
    return pop.loc[pop[f"{pop.attrs.get('selected_by', metric)}_mean"].idxmax()]


def q9_best_percentiles(tables, metric: str = METRIC, epoch: int | None = None,
                        recipe: str | None = None, select_on: str | None = None) -> pd.DataFrame:
    """The best network (picked on the selection metric) and its recall on each test class with its percentile
    among all networks (share of networks whose recall on that class is <= the best's, in %), with the
    population's median and best recall. attrs: network, value (its test metric), selected_by."""
    pop = population(tables, metric, epoch, recipe, select_on=select_on)
    best = best_network(pop, metric)
    columns = [c for c in pop.columns if c.startswith("test_acc_class_") and c.endswith("_mean")]
    rows = []
    for column in columns:
        values = pop[column].dropna().to_numpy()
        mine = best[column]
        rows.append({"class": int(column.split("_")[3]), "accuracy": mine,
                     "percentile": 100.0 * np.mean(values <= mine + 1e-12), "median": np.median(values),
                     "best_of_class": values.max(), "networks_better": int(np.sum(values > mine + 1e-12))})
    out = pd.DataFrame(rows)
    out.attrs.update(network=best["network"], metric=metric, value=best[f"{metric}_mean"],
                     selected_by=pop.attrs["selected_by"], select_on=pop.attrs["select_on"],
                     left_out=pop.attrs["left_out"])
    return out


# --- 10. best vs Basic ---------------------------------------------------------------------------
def q10_best_vs_basic(tables, metric: str = METRIC, epoch: int | None = None,
                      recipe: str | None = None, select_on: str | None = None) -> pd.DataFrame:
    """The best network (picked on the selection metric) and Basic side by side: params, memory, ops, MACs,
    training time and test accuracy, with the ratio best / Basic (and each side's 95% CI over seeds where it
    varies)."""
    pop = population(tables, metric, epoch, recipe, select_on=select_on)
    best, basic = best_network(pop, metric), basic_row(pop)
    if basic is None:
        raise ResultsError(f"The results hold no {BASIC} network to compare with: train it too "
                           f"(netzoo train ... --networks '{BASIC},...').")
    measures = [("params", "params"), ("memory", "memory"), ("ops", "ops"), ("macs", "macs"),
                ("train_time_s", "train_time_s_mean"), (metric, f"{metric}_mean")]
    if metric != "test_acc":
        measures.append(("test_acc", "test_acc_mean"))
    rows = []
    for measure, column in measures:
        if column not in pop.columns:
            continue
        ci = column.replace("_mean", "_ci95")
        rows.append({"measure": measure, "best": float(best[column]), "basic": float(basic[column]),
                     "ratio": float(best[column]) / float(basic[column]) if basic[column] else np.nan,
                     "best_ci95": float(best[ci]) if ci in pop.columns and ci != column else np.nan,
                     "basic_ci95": float(basic[ci]) if ci in pop.columns and ci != column else np.nan})
    out = pd.DataFrame(rows)
    out.attrs.update(best=best["network"], basic=basic["network"], metric=metric, selected_by=pop.attrs["selected_by"],
                     select_on=pop.attrs["select_on"], left_out=pop.attrs["left_out"])
    return out


# --- the CLI's front door ------------------------------------------------------------------------
QUESTIONS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "pareto", "ensembles", "agreement", "label-issues",
             "cascades")
_PREDICTION_COLUMNS = ["network", "recipe_hash", "seed", "epoch", "sample", "label", "pred"]  # pred: "Int64"


def answer(question: str | int, results_dir: Path | str, epoch: int | None = None, recipe: str | None = None,
           metric: str = METRIC, select_on: str | None = None, **options) -> pd.DataFrame:
    """Load what question ``question`` needs from ``results_dir`` and answer it (CLI ``netzoo exam``), picking
    networks on ``select_on`` (analysis.population.selection_metric; attrs["notes"] says which split picked).
    ``options``: known_label_errors (a FILE) and network, for label-issues (see analysis.verdicts)."""
    frame = _answer(question, results_dir, epoch, recipe, metric, select_on, **options)
    if "selected_by" in frame.attrs:
        best = frame.attrs.get("network", frame.attrs.get("best"))
        note = selection_note(frame.attrs["selected_by"]) + (f" The best network: {best}." if best else "")
        frame.attrs["notes"] = [*frame.attrs.get("notes", []), note]
    return frame


def _answer(question, results_dir, epoch, recipe, metric, select_on, **options) -> pd.DataFrame:
    from analysis import beyond
    from netzoo.results import load

    question = str(question).strip().lower()
    if question not in QUESTIONS:
        raise NetzooError(f"Unknown exam question {question!r}; questions: {', '.join(QUESTIONS)}.")
    if not Path(results_dir).is_dir():
        raise ResultsError(f"No results folder at {results_dir}; pass --results DIR written by netzoo train.")
    if epoch is not None:  # an epoch no run reached: one line naming those held (load raises), for every question
        load(results_dir, tables="networks", columns={"networks": ["epochs_done"]}, epoch=epoch)
    if question in ("label-issues", "cascades") or any(v is not None for v in options.values()):
        from analysis.verdicts import answer_verdict

        return answer_verdict(question, results_dir, epoch=epoch, recipe=recipe, metric=metric, select_on=select_on,
                              **options)
    if question in ("8", "agreement"):
        at = epoch if epoch is not None else "last"
        tables = load(results_dir, tables=["networks", "epochs", "predictions"],
                      columns={"predictions": _PREDICTION_COLUMNS}, epoch=at)
        if question == "8":
            return q8_samples(tables, recipe=recipe)  # the loaded epoch is the only one
        return beyond.agreement(tables, recipe=recipe)
    tables = load(results_dir, tables=["networks", "epochs"])
    if question == "ensembles":  # probabilities of only the ensembles' runs: a filtered read
        predictions = beyond.ensemble_predictions(results_dir, tables, epoch=epoch, recipe=recipe, metric=metric,
                                                  select_on=select_on)
        return beyond.ensembles(tables, metric=metric, epoch=epoch, recipe=recipe, predictions=predictions,
                                select_on=select_on)
    kw = {"metric": metric, "recipe": recipe}
    simple = {"2": q2_accuracy, "3": q3_train_time, "4": q4_params, "5": q5_memory, "6": q6_ops,
              "9": q9_best_percentiles, "10": q10_best_vs_basic, "pareto": beyond.pareto_fronts}
    if question in simple:
        return simple[question](tables, epoch=epoch, select_on=select_on, **kw)
    if question == "1":
        curves = q1_attempts(tables, select_on=select_on, **kw)
        if epoch is None:
            return curves
        shown = curves[curves["epoch"] <= epoch].reset_index(drop=True)
        shown.attrs = dict(curves.attrs)
        return shown
    return q7_late_bloomers(tables, epoch=epoch, **kw)


__all__ = ["answer", "q1_attempts", "q2_accuracy", "q3_train_time", "q4_params", "q5_memory", "q6_ops",
           "q7_curves", "q7_late_bloomers", "q7_rank_stability", "settled_epoch", "q8_samples",
           "q9_best_percentiles", "q10_best_vs_basic", "by_group", "best_network",
           "mean_over_seeds", "for_recipe"]
