"""Label issues found by a population of networks, beside cleanlab's confident learning on one network.

The question the study left open: "If many networks are wrong for a given subset of the data, is the data
labeled incorrectly?" Every run of the chosen recipe gives each test sample a probability per class. The
test split's probabilities are *out of sample* for every network here (each was trained on the training
split only), which is what confident learning needs (Northcutt, Jiang & Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 70, 2021): no cross-validation is needed to score the test
labels.

The population's score (``score``, lower = more suspect) of sample i with given label y:

    score_i = mean_r p_r(y | x_i) - mean_r p_r(c | x_i),   c = the most-voted class other than y

(votes are the runs' predicted classes; ties between classes go to the higher mean probability). It is the
*normalized margin* that confident learning ranks label issues by (Northcutt et al. 2021; cleanlab's
``get_normalized_margin_for_each_label``: p(y) - max_{k != y} p(k)) taken over the population's mean
probabilities, with the rival class chosen by the population's votes. Averaging a margin over many
predictors follows "area under the margin" (Pleiss et al., NeurIPS 2020), which averages it over training
epochs; here it is averaged over networks of different families, so one architecture's blind spot does
not make a sample suspect. Against the two simpler candidates: the mean probability of y alone (the
ensemble's *self-confidence*) ranks a sample whose votes are spread over many classes (a hard, ambiguous
image) as suspect as one the population confidently calls another class; the share of runs that are wrong
(``wrong_share``, reported beside, and the first tie-break) saturates at 1.0 for dozens of samples and
cannot order them. A label error shows as one specific rival class that the population agrees on
(confident learning's off-diagonal of the confident joint), which is what the margin against the
most-voted rival measures. Score in [-1, 1]; a negative score means the population prefers the rival.

cleanlab's view, side by side: ``cleanlab.rank.get_label_quality_scores`` (its default self-confidence
score) and ``cleanlab.filter.find_label_issues`` on ONE network's probabilities, and
``cleanlab.rank.get_label_quality_ensemble_scores`` over every run (uniform weights: cleanlab's default
weighting by accuracy would weight the members by their accuracy on the very labels being judged, the
test split's). Which single network: ``network`` if given, else the run with the highest *validation*
metric at the epoch when the results hold a validation split (``analysis.population.selection_metric``), else
the highest *training* accuracy (``train_acc``; more parameters, then the name, break ties). The test split's
accuracy is never used to pick it, even with ``--select-on test``: that would pick the network that agrees
most with the labels under suspicion. cleanlab is an optional dependency (``pip install 'netzoo[data]'``); without it the cleanlab
columns are empty and ``attrs["notes"]`` says why.

Runs that diverged, failed, or stored no probabilities are left out and counted (``attrs["left_out"]``).
Trivial and impossible samples follow Meding, Buschoff, Geirhos & Wichmann, "Trivial or Impossible —
dichotomous data difficulty masks model differences (on ImageNet and beyond)", ICLR 2022: every run right /
no run right.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.population import answering_runs, as_tables, final_epochs, for_recipe, selection_metric, split_of
from analysis.samples import KINDS, classify
from netzoo.errors import LabelListError, ResultsError

KS = (10, 20, 50, 100)                  # k of precision at k and of top-k overlaps
SIZES = (10, 30, 100)                   # population sizes of the stability check
TOP = 50                                # top-k compared across population sizes
COLUMNS = ["sample", "label", "suggested_label", "score", "rank", "wrong_share", "runs", "cleanlab_score",
           "cleanlab_rank"]
NO_CLEANLAB = ("cleanlab is not installed: the cleanlab columns are empty "
               "(pip install 'netzoo[data]', or make venv, installs it).")


# --- the runs that answer ------------------------------------------------------------------------
def answering_predictions(tables) -> tuple[pd.DataFrame, int]:
    """The predictions of runs that answer, and how many runs of the networks table were left out.

    ``analysis.population.answering_runs`` drops the runs that diverged or failed; a run left with a null pred
    or probs at some epoch (results written before diverged epochs stored nulls) is dropped here too. NaN
    inside stored probabilities is caught where they are stacked (run_probs, cascades)."""
    tables = as_tables(tables)
    key = ["network", "seed"]
    all_runs = (tables.networks if len(tables.networks) else tables.predictions)[key].drop_duplicates()
    preds = answering_runs(tables)[0].predictions
    if "probs" in preds.columns and len(preds):
        null = preds["probs"].isna() | (preds["pred"].isna() if "pred" in preds.columns else False)
        bad = preds.loc[null, key].drop_duplicates()
        if len(bad):
            preds = preds.merge(bad.assign(_bad=True), on=key, how="left")
            preds = preds[preds["_bad"].isna()].drop(columns="_bad")
    answering = preds[key].drop_duplicates()
    return preds, int(len(all_runs.merge(answering, on=key, how="left", indicator=True)
                          .query("_merge == 'left_only'")))


@dataclass(frozen=True)
class RunProbs:
    """Every answering run's test probabilities at one epoch: the input of every ranking here."""

    probs: np.ndarray      # (R, N, K) float16 as stored: run r's probability of class k for sample i
    preds: np.ndarray      # (R, N) int64: run r's predicted class (argmax of its logits)
    labels: np.ndarray     # (N,) int64: the given label of each sample
    samples: np.ndarray    # (N,) int64: test index of each sample, ascending
    runs: pd.DataFrame     # R rows: network, seed (and train_acc, params where known)
    left_out: int          # runs left out: diverged, failed, without (finite) probabilities or samples
    epoch: int | None      # the epoch answered (None: each run's last)

    def subset(self, rows) -> "RunProbs":
        """The same samples, only runs ``rows`` (positions)."""
        rows = np.asarray(rows)
        return replace(self, probs=self.probs[rows], preds=self.preds[rows],
                       runs=self.runs.iloc[rows].reset_index(drop=True))

    def votes(self) -> np.ndarray:
        """(N, K) int: how many runs predict each class for each sample."""
        n, k = self.probs.shape[1:]
        flat = (np.arange(n)[None, :] * k + self.preds).ravel()
        return np.bincount(flat, minlength=n * k).reshape(n, k)

    def mean_probs(self) -> np.ndarray:
        """(N, K) float64: the population's mean probability of each class."""
        return self.probs.mean(0, dtype=np.float64)


def run_probs(tables, epoch: int | None = None, recipe: str | None = None) -> RunProbs:
    """The probabilities of every answering run of ``recipe`` at ``epoch`` (default: each run's last
    recorded epoch, so a run stopped early answers with its last one) as arrays. Raises ResultsError when
    the tables hold no probabilities or fewer than two answering runs."""
    tables = for_recipe(tables, recipe)
    if tables.predictions.empty or "probs" not in tables.predictions.columns:
        raise ResultsError("The results hold no predictions with probabilities: label issues and cascades need "
                           "the predictions table's probs (netzoo train writes them for every network).")
    preds, left_out = answering_predictions(tables)
    preds = final_epochs(preds, epoch)
    if preds.empty:
        raise ResultsError(f"No run answers{'' if epoch is None else f' at epoch {epoch}'}: every run diverged, "
                           f"failed or stored no probabilities ({left_out} left out).")
    samples = np.unique(preds["sample"].to_numpy(np.int64))
    code, runs = pd.factorize(pd.MultiIndex.from_arrays([preds["network"], preds["seed"].astype("int64")]))
    complete = np.bincount(code, minlength=len(runs)) == len(samples)   # a run must answer every sample
    stacked = np.stack(preds["probs"].to_numpy()).astype(np.float16)   # (rows, K)
    classes = stacked.shape[1]
    probs = np.zeros((len(runs), len(samples), classes), dtype=np.float16)
    position = np.searchsorted(samples, preds["sample"].to_numpy(np.int64))
    probs[code, position] = stacked
    pred = np.zeros((len(runs), len(samples)), dtype=np.int64)
    pred[code, position] = preds["pred"].to_numpy(dtype=np.int64)
    complete &= np.isfinite(probs).all(axis=(1, 2))
    labels = np.zeros(len(samples), dtype=np.int64)
    labels[position] = preds["label"].to_numpy(np.int64)
    run_frame = pd.DataFrame({"network": runs.get_level_values(0), "seed": runs.get_level_values(1)})
    run_frame = _with_run_facts(run_frame, tables, preds)[complete].reset_index(drop=True)
    answered = preds["epoch"].unique() if "epoch" in preds.columns else []
    chosen_epoch = int(answered[0]) if len(answered) == 1 else None
    out = RunProbs(probs[complete], pred[complete], labels, samples, run_frame,
                   left_out + int((~complete).sum()), chosen_epoch)
    if len(out.runs) < 2:
        raise ResultsError(f"Only {len(out.runs)} run answers ({out.left_out} left out): a population needs at "
                           f"least two runs. Train more networks (netzoo train ... --networks ...).")
    return out


def _with_run_facts(runs: pd.DataFrame, tables, preds: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with each run's train_acc (and validation metrics, where recorded) at its answered epoch and its
    params (NaN where unknown)."""
    epochs, networks = tables.epochs, tables.networks
    facts = [c for c in ("train_acc", "val_acc", "val_balanced_acc") if c in epochs.columns]
    if len(epochs) and facts:
        answered = preds[["network", "seed", "epoch"]].drop_duplicates(["network", "seed"])
        runs = runs.merge(answered.merge(epochs[["network", "seed", "epoch", *facts]], how="left"),
                          on=["network", "seed"], how="left").drop(columns="epoch")
    if "params" in networks.columns:
        runs = runs.merge(networks[["network", "params"]].drop_duplicates("network"), on="network", how="left")
    for column in ("train_acc", "params"):
        if column not in runs.columns:
            runs[column] = np.nan
    return runs


# --- the population's ranking --------------------------------------------------------------------
def population_ranking(rp: RunProbs) -> pd.DataFrame:
    """One row per test sample: sample, label, suggested_label (the most-voted class), score (the margin of
    the given label against the most-voted other class, over the population's mean probabilities: see the
    module docstring), rank (1 = most suspect), wrong_share (share of runs whose prediction is not the
    label) and runs. Ranked by score, then wrong_share (higher first), then sample."""
    votes, mean = rp.votes(), rp.mean_probs()
    n = len(rp.labels)
    rows = np.arange(n)
    preference = votes + 0.5 * mean                # votes first; among equal votes, the higher mean probability
    suggested = preference.argmax(1)
    rivals = preference.copy()
    rivals[rows, rp.labels] = -np.inf
    rival = rivals.argmax(1)
    score = mean[rows, rp.labels] - mean[rows, rival]
    wrong_share = 1.0 - votes[rows, rp.labels] / len(rp.runs)
    frame = pd.DataFrame({"sample": rp.samples, "label": rp.labels, "suggested_label": suggested,
                          "score": score, "rank": _ranks(score, -wrong_share, rp.samples),
                          "wrong_share": wrong_share, "runs": len(rp.runs)})
    return frame


def agreeing_share(rp: RunProbs, issues: pd.DataFrame) -> np.ndarray:
    """For each row of ``issues`` (sample, suggested_label): the share of runs that predict its suggested label."""
    position = np.searchsorted(rp.samples, issues["sample"].to_numpy(np.int64))
    return rp.votes()[position, issues["suggested_label"].to_numpy(np.int64)] / len(rp.runs)


def _ranks(*keys) -> np.ndarray:
    """1-based ranks ordering by the first key, then the next ones (all ascending)."""
    order = np.lexsort(keys[::-1])
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


# --- cleanlab ------------------------------------------------------------------------------------
def _cleanlab():
    """cleanlab's filter and rank modules, or None when cleanlab is not installed."""
    try:
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        return None
    return cleanlab


def _normalised(probs: np.ndarray) -> np.ndarray:
    """float32 rows summing to 1 (float16 storage leaves them off by up to ~1e-3; cleanlab checks)."""
    probs = probs.astype(np.float32)
    return probs / probs.sum(-1, keepdims=True)


def picking_column(tables, select_on: str | None = None, recipe: str | None = None) -> str:
    """The column the single network is picked on: the selection metric when it is the validation split's
    (analysis.population.selection_metric), else ``train_acc``: never the test split's."""
    tables = as_tables(tables)
    select = selection_metric(for_recipe(tables, recipe) if len(tables.networks) else tables, select_on)
    return select if split_of(select) == "val" else "train_acc"


def single_network(rp: RunProbs, network: str | None = None, by: str = "train_acc") -> tuple[int, str]:
    """The run cleanlab judges alone, and why: ``network`` (its lowest seed) if given, else the run with the
    highest ``by`` at the epoch (``picking_column``: a validation metric, or the training accuracy; more
    parameters, then the name, break ties). Never the test split's accuracy: that would favour the network
    that agrees most with the labels under suspicion."""
    runs = rp.runs
    if network is not None:
        hits = runs.index[runs["network"] == network]
        if not len(hits):
            raise ResultsError(f"No answering run of network {network!r}; networks here: "
                               f"{', '.join(sorted(runs['network'].unique())[:8])} … ({runs['network'].nunique()}).")
        row = runs.loc[hits].sort_values("seed").index[0]
        return int(row), "named with --network"
    if by.startswith("test_"):
        raise ValueError(f"the single network is never picked on the test split ({by})")
    values = runs[by] if by in runs.columns else pd.Series(np.nan, index=runs.index)
    ordered = runs.assign(_acc=values.fillna(-1), _params=runs["params"].fillna(-1))
    ordered = ordered.sort_values(["_acc", "_params", "network", "seed"], ascending=[False, False, True, True])
    row = ordered.index[0]
    if values.notna().any():
        what = f"validation split's {by}" if split_of(by) == "val" else "training accuracy"
        return int(row), f"the highest {what} ({values[row]:.3f}), not the test split's"
    return int(row), f"the most parameters (no {by} recorded)"


def cleanlab_ranking(rp: RunProbs, network: str | None = None, by: str = "train_acc") -> pd.DataFrame:
    """cleanlab on one network (see single_network, picked on ``by``): sample, cleanlab_score (label quality,
    self-confidence: low = suspect), cleanlab_rank (1 = most suspect) and cleanlab_issue (find_label_issues,
    pruned by noise rate). Empty columns, and attrs["notes"] saying so, when cleanlab is not installed."""
    row, why = single_network(rp, network, by)
    name, seed = rp.runs.loc[row, "network"], int(rp.runs.loc[row, "seed"])
    frame = pd.DataFrame({"sample": rp.samples})
    frame.attrs.update(network=name, seed=seed, why=why, issues=None, notes=[])
    lab = _cleanlab()
    if lab is None:
        frame["cleanlab_score"], frame["cleanlab_rank"] = np.nan, pd.array([pd.NA] * len(frame), dtype="Int64")
        frame["cleanlab_issue"] = pd.array([pd.NA] * len(frame), dtype="boolean")
        frame.attrs["notes"] = [NO_CLEANLAB]
        return frame
    probs = _normalised(rp.probs[row])
    score = lab.rank.get_label_quality_scores(rp.labels, probs)
    issue = lab.filter.find_label_issues(rp.labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    frame["cleanlab_score"] = score.astype(float)
    frame["cleanlab_rank"] = pd.array(_ranks(score, rp.samples), dtype="Int64")
    frame["cleanlab_issue"] = pd.array(issue, dtype="boolean")
    frame.attrs["issues"] = int(issue.sum())
    return frame


def cleanlab_ensemble_ranking(rp: RunProbs) -> pd.DataFrame:
    """cleanlab's ensemble label quality over every run (uniform weights, self-confidence): sample,
    ensemble_score, ensemble_rank. None when cleanlab is not installed."""
    lab = _cleanlab()
    if lab is None:
        return None
    probs = [_normalised(p) for p in rp.probs]
    score = lab.rank.get_label_quality_ensemble_scores(rp.labels, probs, weight_ensemble_members_by="uniform",
                                                        verbose=False)
    return pd.DataFrame({"sample": rp.samples, "ensemble_score": score.astype(float),
                         "ensemble_rank": _ranks(score, rp.samples)})


# --- the answer ----------------------------------------------------------------------------------
def label_issues(tables, epoch: int | None = None, recipe: str | None = None, network: str | None = None,
                 rp: RunProbs | None = None, select_on: str | None = None) -> pd.DataFrame:
    """One row per test sample, most suspect first: sample, label, suggested_label, score, rank,
    wrong_share, runs (the population's view, see population_ranking) and cleanlab_score, cleanlab_rank
    (cleanlab on one network, see cleanlab_ranking; empty without cleanlab). attrs: runs, left_out,
    epoch, cleanlab_network, cleanlab_why, cleanlab_issues, notes. ``rp``: already built run_probs."""
    rp = run_probs(tables, epoch, recipe) if rp is None else rp
    ranking = population_ranking(rp)
    single = cleanlab_ranking(rp, network, picking_column(tables, select_on, recipe))
    out = ranking.merge(single[["sample", "cleanlab_score", "cleanlab_rank"]], on="sample", how="left")
    out = out.sort_values("rank").reset_index(drop=True)[COLUMNS]
    notes = list(single.attrs["notes"])
    if rp.left_out:
        notes.append(f"{rp.left_out} runs left out (diverged, failed or without probabilities); "
                     f"{len(rp.runs)} runs answer.")
    out.attrs.update(runs=len(rp.runs), left_out=rp.left_out, epoch=rp.epoch, samples=len(rp.samples),
                     cleanlab_network=single.attrs["network"], cleanlab_seed=single.attrs["seed"],
                     cleanlab_why=single.attrs["why"], cleanlab_issues=single.attrs["issues"], notes=notes)
    return out


# --- comparing rankings --------------------------------------------------------------------------
def _top(ranks: pd.Series, samples: pd.Series, k: int) -> set:
    """The samples ranked 1..k (empty when the ranks are missing)."""
    ranks = pd.to_numeric(ranks, errors="coerce")
    return set(samples[ranks <= k].tolist())


def precision_at_k(issues: pd.DataFrame, known, ks=KS, rankings=("rank", "cleanlab_rank")) -> pd.DataFrame:
    """How many of each ranking's top k are known label errors: ranking (a rank column of ``issues``), k,
    found, precision (found / k) and recall (found / known errors); NaN where the ranking is empty."""
    known = set(int(s) for s in known)
    rows = []
    for column in rankings:
        empty = column not in issues.columns or issues[column].isna().all()
        for k in ks:
            k = min(k, len(issues))
            found = len(_top(issues[column], issues["sample"], k) & known) if not empty else np.nan
            rows.append({"ranking": column, "k": k, "found": found,
                         "precision": found / k if not empty else np.nan,
                         "recall": found / len(known) if not empty and known else np.nan})
    out = pd.DataFrame(rows).drop_duplicates(["ranking", "k"]).reset_index(drop=True)
    out.attrs.update(known=len(known))
    return out


def top_k_overlap(issues: pd.DataFrame, a: str = "rank", b: str = "cleanlab_rank", ks=KS) -> pd.DataFrame:
    """Overlap of two rankings' top k: k, common (samples in both), overlap (common / k) and jaccard
    (common / samples in either); NaN where either ranking is empty."""
    rows = []
    for k in ks:
        k = min(k, len(issues))
        top_a, top_b = _top(issues[a], issues["sample"], k), _top(issues[b], issues["sample"], k)
        if not top_a or not top_b:
            rows.append({"k": k, "common": np.nan, "overlap": np.nan, "jaccard": np.nan})
            continue
        common = len(top_a & top_b)
        rows.append({"k": k, "common": common, "overlap": common / k, "jaccard": common / len(top_a | top_b)})
    return pd.DataFrame(rows).drop_duplicates("k").reset_index(drop=True)


def size_stability(rp: RunProbs, sizes=SIZES, k: int = TOP, repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """How much the population's top k depends on its size: for each size below the population's, ``repeats``
    random subsets of runs (numpy generator seeded with ``seed``), each ranked alone and compared with the
    whole population's top k: runs, repeats, overlap_mean, overlap_min, overlap_max (shares of k), and the
    whole population as the last row (overlap 1)."""
    full = population_ranking(rp)
    k = min(k, len(full))
    reference = set(full.loc[full["rank"] <= k, "sample"])
    rng = np.random.default_rng(seed)
    rows = []
    for size in sorted(s for s in sizes if 2 <= s < len(rp.runs)):
        overlaps = []
        for _ in range(repeats):
            sub = population_ranking(rp.subset(np.sort(rng.choice(len(rp.runs), size, replace=False))))
            overlaps.append(len(set(sub.loc[sub["rank"] <= k, "sample"]) & reference) / k)
        rows.append({"runs": size, "repeats": repeats, "overlap_mean": float(np.mean(overlaps)),
                     "overlap_min": float(np.min(overlaps)), "overlap_max": float(np.max(overlaps))})
    rows.append({"runs": len(rp.runs), "repeats": 1, "overlap_mean": 1.0, "overlap_min": 1.0, "overlap_max": 1.0})
    out = pd.DataFrame(rows)
    out.attrs.update(k=k, seed=seed)
    return out


# --- trivial and impossible ----------------------------------------------------------------------
def difficulty(rp: RunProbs) -> pd.DataFrame:
    """How many test samples are of each kind among the answering runs: kind, samples, share, definition.
    easy, weird, confusing as question 8 defines them (analysis.samples); trivial (every run right) and
    impossible (no run right) as Meding et al. (ICLR 2022) define them. easy and trivial coincide by
    definition; impossible includes weird samples and hard ones whose wrong votes disagree."""
    votes = rp.votes()
    frame = pd.DataFrame(votes, columns=[f"votes_{c}" for c in range(votes.shape[1])])
    frame.insert(0, "label", rp.labels)
    frame.insert(0, "sample", rp.samples)
    kinds = classify(frame)["kind"].value_counts()
    right = votes[np.arange(len(rp.labels)), rp.labels]
    counts = {kind: int(kinds.get(kind, 0)) for kind in KINDS}
    counts.update(trivial=int((right == len(rp.runs)).sum()), impossible=int((right == 0).sum()))
    definitions = {"easy": "every run right (question 8)",
                   "weird": "most runs wrong, agreeing on one wrong class (question 8)",
                   "confusing": "no class has a majority of the votes (question 8)",
                   "trivial": "every run right (Meding et al. 2022)",
                   "impossible": "no run right (Meding et al. 2022)"}
    out = pd.DataFrame({"kind": list(counts), "samples": list(counts.values())})
    out["share"] = out["samples"] / len(rp.samples)
    out["definition"] = out["kind"].map(definitions)
    out.attrs.update(runs=len(rp.runs), samples=len(rp.samples))
    return out


# --- a list of known label errors ----------------------------------------------------------------
def parse_sample_list(text: str, samples, source: str = "the list") -> list[int]:
    """Test indices from text, one per line (blank lines and lines starting with # are skipped), checked
    against ``samples`` (the test split's indices). Raises LabelListError naming the first bad line."""
    known, valid = [], set(int(s) for s in samples)
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            index = int(line)
        except ValueError:
            raise LabelListError(f"{source}, line {number}: {line[:40]!r} is not a test index; write one integer "
                                 f"per line (lines starting with # are comments).") from None
        if index not in valid:
            raise LabelListError(f"{source}, line {number}: sample {index} is outside the test split (indices "
                                 f"0…{max(valid)}, {len(valid)} samples); list test indices only.")
        known.append(index)
    if not known:
        raise LabelListError(f"{source} names no sample: write one test index per line.")
    return sorted(set(known))
