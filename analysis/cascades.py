"""Cascades: a cheap network answers first, an expensive one only when the cheap one is unsure.

The study's closing idea: "The small network can provide a quick prediction, which can be checked by
requesting the large network for a prediction if needed." For a pair (cheap, expensive) and a threshold τ
on the cheap network's top probability, the cascade answers a test sample with the cheap network's class
when that probability is at least τ, else with the expensive network's class. Its cost per sample is

    flops_per_sample = flops_forward(cheap) + deferred_share * flops_forward(expensive)

(the cheap network runs on every sample; the expensive one on the deferred share), and likewise for the
parameters touched per sample and, where the epochs table records it, the evaluation time per sample.
Everything comes from the stored ``probs`` and ``pred`` of the test split: no network is run again.

Candidates, so the search stays small on 1001 networks: the networks on the single-network Pareto front of
FLOPs per forward pass against the metric, and the ``cheapest_good`` cheapest good networks (>= GOOD at
every epoch); every ordered pair of them with cheap FLOPs < expensive FLOPs, at every τ of ``thresholds``.
Each network answers with its lowest-seed answering run (a fixed rule, not a pick by accuracy).

The candidates are picked on the selection metric (``analysis.population.selection_metric``: the validation
split's when the results hold one, else the test split's, as the study did). The cascades' scores, their front
and any "best" τ are read off the test split (no validation predictions are stored): the frame describes what
cascades would have scored on it. A τ or a pair picked here is not a recommendation measured on unseen data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.beyond import front_mask
from analysis.label_issues import answering_predictions
from analysis.population import METRIC, final_epochs, for_recipe, population
from netzoo.errors import ResultsError

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)  # τ on the cheap network's top probability
CHEAPEST_GOOD = 10
TIE = 1e-9          # a cascade scoring within this of a single network does not beat it (float rounding)
COST = "flops_forward"
COLUMNS = ["cheap", "expensive", "threshold", "test_acc", "test_balanced_acc", "deferred_share",
           "flops_per_sample", "on_front", "params_per_sample", "time_per_sample_s"]


def candidates(tables, metric: str = METRIC, epoch: int | None = None, recipe: str | None = None,
               cheapest_good: int = CHEAPEST_GOOD, select_on: str | None = None) -> pd.DataFrame:
    """The networks cascades are built from: network, flops_forward, params, <metric>_mean (and the selection
    metric's mean when it is another), on_single_front (no network has fewer FLOPs and a higher selection
    metric), cheapest_good (among the ``cheapest_good`` cheapest networks good on the selection metric).
    Sorted by FLOPs. attrs: selected_by."""
    pop = population(tables, metric, epoch, recipe, select_on=select_on)
    value, select = f"{metric}_mean", f"{pop.attrs['selected_by']}_mean"
    pop = pop.dropna(subset=[COST, select])
    if pop.empty:
        raise ResultsError(f"No network has both {COST} and {pop.attrs['selected_by']} recorded: nothing to cascade.")
    on_front = front_mask(pop[COST].to_numpy(float), pop[select].to_numpy(float))
    cheap_good = pop[pop["good"]].sort_values([COST, "network"]).head(cheapest_good)["network"]
    out = pop.assign(on_single_front=on_front, cheapest_good=pop["network"].isin(cheap_good))
    out = out[out["on_single_front"] | out["cheapest_good"]]
    keep = list(dict.fromkeys(["network", COST, "params", value, select, "on_single_front", "cheapest_good"]))
    out = out[keep].sort_values([COST, "network"]).reset_index(drop=True)
    out.attrs.update(selected_by=pop.attrs["selected_by"])
    return out


def single_networks(tables, metric: str = METRIC, epoch: int | None = None, recipe: str | None = None) -> pd.DataFrame:
    """Every network as its own answer: network, flops_forward, <metric>_mean (over seeds) and on_front (the
    single networks' Pareto front of FLOPs against the metric). What a cascade must beat."""
    value = f"{metric}_mean"
    singles = population(tables, metric, epoch, recipe)[["network", COST, value]].dropna().reset_index(drop=True)
    singles["on_front"] = front_mask(singles[COST].to_numpy(float), singles[value].to_numpy(float))
    return singles


def _answers(tables, names, epoch: int | None) -> tuple[dict, np.ndarray, int]:
    """For each network in ``names`` with an answering run: (pred (N,), top probability (N,), eval seconds per
    sample or NaN) of its lowest-seed run at ``epoch`` (default: its last); the labels (N,); runs left out."""
    preds, left_out = answering_predictions(tables)
    preds = preds[preds["network"].isin(names)]
    if preds.empty:
        return {}, np.array([]), left_out
    preds = final_epochs(preds, epoch)
    seed = preds.groupby("network")["seed"].transform("min")
    preds = preds[preds["seed"] == seed].sort_values(["network", "sample"])
    epochs = tables.epochs
    answers, labels = {}, None
    for network, rows in preds.groupby("network", sort=True):
        probs = np.stack(rows["probs"].to_numpy()).astype(np.float32)
        labels = rows["label"].to_numpy(np.int64) if labels is None else labels
        if len(rows) != len(labels) or not np.isfinite(probs).all():
            left_out += 1  # not every sample answered, or NaN probabilities: no answer to pair sample by sample
            continue
        timed = epochs[(epochs["network"] == network) & (epochs["seed"] == rows["seed"].iloc[0])
                       & (epochs["epoch"] == rows["epoch"].iloc[0])] if "eval_time_s" in epochs.columns else epochs[:0]
        seconds = float(timed["eval_time_s"].iloc[0]) / len(rows) if len(timed) else np.nan
        answers[network] = (rows["pred"].to_numpy(np.int64), probs.max(1), seconds)
    return answers, labels, left_out


def cascades(tables, thresholds=THRESHOLDS, metric: str = METRIC, epoch: int | None = None,
             recipe: str | None = None, cheapest_good: int = CHEAPEST_GOOD, select_on: str | None = None) -> pd.DataFrame:
    """Every cascade of two candidate networks (see candidates) at every τ in ``thresholds``: cheap,
    expensive, threshold, test_acc, test_balanced_acc (mean per-class recall), deferred_share (share of
    samples sent to the expensive network), flops_per_sample, on_front (no single network and no other
    cascade has fewer or equal FLOPs per sample and a higher or equal ``metric``), params_per_sample,
    time_per_sample_s (NaN where not recorded). A description of the test split (see the module docstring);
    the candidates are picked on the selection metric. attrs: metric, candidates, selected_by, left_out."""
    tables = for_recipe(tables, recipe)
    pool = candidates(tables, metric, epoch, recipe, cheapest_good, select_on=select_on)  # no answering run: says so
    if tables.predictions.empty or "probs" not in tables.predictions.columns:
        raise ResultsError("Cascades need the predictions table with its probs column "
                           "(netzoo train writes it for every network).")
    selected_by = pool.attrs["selected_by"]
    answers, labels, left_out = _answers(tables, pool["network"].tolist(), epoch)
    pool = pool[pool["network"].isin(answers)].reset_index(drop=True)
    if len(pool) < 2:
        raise ResultsError(f"Cascades need at least two answering networks among the candidates; found "
                           f"{len(pool)} ({left_out} runs left out: diverged, failed or without probabilities).")
    classes = int(max(labels.max(), max(a[0].max() for a in answers.values()))) + 1
    onehot = np.eye(classes)[labels]                        # (N, K)
    present = onehot.sum(0) > 0
    tau = np.asarray(thresholds, dtype=np.float64)[:, None]  # (T, 1)
    rows = []
    for i, cheap in pool.iterrows():
        pred_c, conf_c, time_c = answers[cheap["network"]]
        defer = conf_c[None, :] < tau                        # (T, N): the cheap network is unsure
        for _, expensive in pool.iloc[i + 1:].iterrows():
            if expensive[COST] <= cheap[COST]:
                continue
            pred_e, _, time_e = answers[expensive["network"]]
            correct = np.where(defer, pred_e == labels, pred_c == labels)  # (T, N)
            recall = (correct @ onehot)[:, present] / onehot.sum(0)[present]
            share = defer.mean(1)
            rows.append(pd.DataFrame({
                "cheap": cheap["network"], "expensive": expensive["network"], "threshold": tau[:, 0].astype(float),
                "test_acc": correct.mean(1), "test_balanced_acc": recall.mean(1), "deferred_share": share,
                "flops_per_sample": cheap[COST] + share * expensive[COST],
                "params_per_sample": cheap["params"] + share * expensive["params"],
                "time_per_sample_s": time_c + share * time_e}))
    if not rows:
        raise ResultsError("No pair of candidate networks differs in FLOPs: nothing to cascade.")
    out = pd.concat(rows, ignore_index=True)
    singles = single_networks(tables, metric, epoch, recipe)
    cost = np.concatenate([singles[COST].to_numpy(float), out["flops_per_sample"].to_numpy(float)])
    # singles first, and a cascade must beat them by more than rounding: a tie keeps the single network
    value = np.concatenate([singles[f"{metric}_mean"].to_numpy(float), out[metric].to_numpy(float) - TIE])
    out["on_front"] = front_mask(cost, value)[len(singles):]
    out = out[COLUMNS].sort_values(["flops_per_sample", "cheap", "expensive", "threshold"]).reset_index(drop=True)
    out.attrs.update(metric=metric, candidates=pool["network"].tolist(), selected_by=selected_by, left_out=left_out)
    return out
