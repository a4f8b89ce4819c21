"""What the study asked but could not answer: Pareto fronts, ensembles, and agreement between families.

Pure functions over the result tables, like analysis.exam (one recipe, seed means where a number is per
network, runs that diverged or failed left out and counted in ``attrs["left_out"]``). Ensembles and agreement
read the predictions of one epoch (default: each run's last).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.population import (BASIC, COSTS, METRIC, final_epochs, population, recipe_answers, recipe_hash,
                                 selection_metric, split_of)
from netzoo.errors import ResultsError

PARETO_COSTS = ("params", "memory", "train_time_s", "flops_forward")
K_MAX = 10


# --- Pareto fronts -------------------------------------------------------------------------------
def front_mask(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """True where no other point has a cost <= and a value >= (one of them strictly): the Pareto front of
    low cost and high value. Equal points keep the first one."""
    order = np.lexsort((-value, cost))                 # by cost, then best value first
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], value[order][:-1]]))
    mask = np.zeros(len(cost), dtype=bool)
    mask[order] = value[order] > best_before
    return mask


def pareto_fronts(tables, costs=PARETO_COSTS, metric: str = METRIC, epoch: int | None = None,
                  recipe: str | None = None, select_on: str | None = None) -> pd.DataFrame:
    """The networks no other network beats on both the selection metric and a cost, for each cost: cost,
    network, family, activation, cost_value, <metric>_mean and _ci95 (the test split's, over seeds), and the
    selection metric's mean when it is another (picked on the validation split), sorted by cost within each
    cost. attrs: metric, selected_by, select_on, left_out."""
    pop = population(tables, metric, epoch, recipe, select_on=select_on)
    value, select = f"{metric}_mean", f"{pop.attrs['selected_by']}_mean"
    parts = []
    for cost in costs:
        column = f"{cost}_mean" if f"{cost}_mean" in pop.columns else cost
        if column not in pop.columns:
            continue
        rows = pop.dropna(subset=[column, select])
        front = rows[front_mask(rows[column].to_numpy(float), rows[select].to_numpy(float))]
        parts.append(pd.DataFrame({"cost": cost, "network": front["network"], "family": front["family"],
                                   "activation": front["activation"], "cost_value": front[column].astype(float),
                                   value: front[value], f"{metric}_ci95": front[f"{metric}_ci95"],
                                   **({select: front[select]} if select != value else {})})
                     .sort_values("cost_value"))
    if not parts:
        raise ResultsError(f"None of the costs {list(costs)} is in the results; known: {', '.join(COSTS)}.")
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update(metric=metric, selected_by=pop.attrs["selected_by"], select_on=pop.attrs["select_on"],
                     left_out=pop.attrs["left_out"])
    return out


# --- ensembles -----------------------------------------------------------------------------------
def _scores(pred: np.ndarray, label: np.ndarray, classes: int) -> tuple[float, float]:
    """(plain accuracy, mean per-class recall) of predictions."""
    correct = pred == label
    recalls = [correct[label == k].mean() for k in range(classes) if np.any(label == k)]
    return float(correct.mean()), float(np.mean(recalls))


def ensemble_runs(tables, k_max: int = K_MAX, metric: str = METRIC, epoch: int | None = None,
                  recipe: str | None = None, select_on: str | None = None) -> dict[str, list[tuple[str, int]]]:
    """The runs (network, seed) each ensemble draws from, among the runs that answered: "best": the k_max best
    networks (each its best seed), ranked on the selection metric (analysis.population.selection_metric),
    "basic": Basic's runs by seed. At ``epoch`` (default: each run's last)."""
    tables, _ = recipe_answers(tables, recipe)
    select = selection_metric(tables, select_on, metric)
    at = final_epochs(tables.epochs, epoch)
    ranked = at.sort_values([select, "network", "seed"], ascending=[False, True, True])
    best = ranked.drop_duplicates("network").head(k_max)
    basic = at[at["network"] == BASIC].sort_values("seed").head(k_max)
    return {"best": list(zip(best["network"], best["seed"].astype(int))),
            "basic": list(zip(basic["network"], basic["seed"].astype(int)))}


def ensembles(tables, k_max: int = K_MAX, metric: str = METRIC, epoch: int | None = None,
              recipe: str | None = None, predictions: pd.DataFrame | None = None,
              select_on: str | None = None) -> pd.DataFrame:
    """Test accuracy of the ensemble (mean of probabilities) of the k best networks (picked on the selection
    metric, see ensemble_runs) and of k Basic runs with different seeds, k = 1..k_max: kind, k, added (the run
    added at k), test_acc, test_balanced_acc, best_single and gain (ensemble metric - best_single).
    ``best_single``: the best single run's test metric when picked on the test split; when picked on the
    validation split, the test metric of the single run it picks (the "best" ensemble at k = 1), not the test
    split's best. Needs the predictions' probs at the epoch: ``predictions`` (at least the ensembles' runs) or
    the tables'. Runs that diverged or failed are never members (``attrs["left_out"]`` counts them)."""
    tables, left_out = recipe_answers(tables, recipe)
    select = selection_metric(tables, select_on, metric)
    runs = ensemble_runs(tables, k_max, metric, epoch, select_on=select_on)
    preds = tables.predictions if predictions is None else predictions
    if "recipe_hash" in preds.columns and len(tables.networks):
        preds = preds[preds["recipe_hash"].isin(tables.networks["recipe_hash"].unique())]
    if preds.empty or "probs" not in preds.columns:
        raise ResultsError("Ensembles need the predictions table with its probs column "
                           "(netzoo train writes it for every network).")
    if "epoch" in preds.columns:
        preds = final_epochs(preds, epoch)
    wanted = pd.MultiIndex.from_tuples(sorted(set(runs["best"] + runs["basic"])), names=["network", "seed"])
    keyed = pd.MultiIndex.from_arrays([preds["network"], preds["seed"].astype(int)])
    chosen = preds[keyed.isin(wanted)].sort_values(["network", "seed", "sample"])
    probs, labels = {}, None
    for (network, seed), rows in chosen.groupby(["network", "seed"], sort=False):
        probs[(network, int(seed))] = np.stack(rows["probs"].to_numpy()).astype(np.float32)  # (N, K)
        labels = rows["label"].to_numpy()
    if not probs:
        raise ResultsError("No predictions for the ensemble's networks at this epoch.")
    classes = next(iter(probs.values())).shape[1]
    out = []
    for kind, members in runs.items():
        members = [m for m in members if m in probs]
        total = np.zeros_like(next(iter(probs.values())))
        for k, member in enumerate(members, start=1):
            total += probs[member]
            acc, balanced = _scores(total.argmax(1), labels, classes)
            out.append({"kind": kind, "k": k, "added": f"{member[0]} (seed {member[1]})",
                        "test_acc": acc, "test_balanced_acc": balanced})
    frame = pd.DataFrame(out)
    single = frame[frame["k"] == 1].set_index("kind")[metric]
    frame["best_single"] = single.max() if select == metric or "best" not in single.index else single["best"]
    frame["gain"] = frame[metric] - frame["best_single"]
    frame.attrs.update(metric=metric, selected_by=select, select_on=split_of(select), left_out=left_out)
    return frame


# --- agreement between families ------------------------------------------------------------------
def agreement(tables, epoch: int | None = None, recipe: str | None = None) -> pd.DataFrame:
    """For each pair of families: how often a network of one and a network of the other get the same
    samples wrong. both_wrong: expected samples both get wrong (distinct pairs within a family);
    jaccard: both_wrong / expected samples either gets wrong; wrong_a, wrong_b: mean samples wrong. Over the runs
    that answered, at ``epoch`` (default: each run's last); ``attrs["left_out"]``: runs left out."""
    tables, left_out = recipe_answers(tables, recipe)
    preds = tables.predictions
    if preds.empty:
        raise ResultsError("Agreement needs the predictions table (written by netzoo train).")
    if "epoch" in preds.columns:
        preds = final_epochs(preds, epoch)
    families = tables.networks.drop_duplicates("network").set_index("network")["family"]
    names = sorted(families.unique())
    run_family = families.reindex(preds["network"].unique())
    code = pd.Categorical(preds["network"].map(run_family), categories=names).codes.astype(np.int64)
    sample = preds["sample"].to_numpy(np.int64)
    n_samples = int(sample.max()) + 1
    wrong = (preds["pred"].to_numpy() != preds["label"].to_numpy()).astype(float)
    # c[f, s]: runs of family f wrong on sample s; n[f]: runs of family f
    c = np.bincount(code * n_samples + sample, weights=wrong, minlength=len(names) * n_samples)
    c = c.reshape(len(names), n_samples)
    runs = preds.drop_duplicates(["network", "seed"])
    n = runs["network"].map(run_family).value_counts().reindex(names, fill_value=0).to_numpy(float)
    rows = []
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                pairs = n[i] * (n[i] - 1)
                both = np.sum(c[i] ** 2 - c[i]) / pairs if pairs else np.nan
            else:
                both = np.sum(c[i] * c[j]) / (n[i] * n[j])
            wrong_a, wrong_b = c[i].sum() / n[i], c[j].sum() / n[j]
            either = wrong_a + wrong_b - both
            rows.append({"family_a": a, "family_b": b, "networks_a": int(n[i]), "networks_b": int(n[j]),
                         "wrong_a": wrong_a, "wrong_b": wrong_b, "both_wrong": both,
                         "jaccard": both / either if either else np.nan})
    frame = pd.DataFrame(rows)
    frame.attrs.update(left_out=left_out)
    return frame


def ensemble_predictions(results_dir, tables, epoch: int | None = None, recipe: str | None = None,
                         metric: str = METRIC, select_on: str | None = None) -> pd.DataFrame:
    """Predictions at ``epoch`` (default: each run's last), probs included, of only the runs the ensembles use
    (runs that answered: never a diverged or failed one; picked on ``select_on``), read through
    netzoo.results.load (whole keys only) with a filter on those keys: 40M prediction rows cost no more than the
    few runs needed."""
    from netzoo.results import load

    chosen = recipe_hash(tables, recipe)
    runs = ensemble_runs(tables, metric=metric, epoch=epoch, recipe=recipe, select_on=select_on)
    members = sorted({member for group in runs.values() for member in group})
    if not members:
        return pd.DataFrame()
    at = final_epochs(recipe_answers(tables, recipe)[0].epochs, epoch)[["network", "seed", "epoch"]]
    at = at[pd.MultiIndex.from_frame(at[["network", "seed"]]).isin(members)]
    frame = load(results_dir, tables=["predictions"], keys=[(n, chosen, s) for n, s in members],
                 epoch="last" if epoch is None else epoch).predictions
    # each member at its own epoch (its last, without ``epoch``)
    return frame.merge(at.astype({"seed": "int64", "epoch": "int64"}), on=["network", "seed", "epoch"])
