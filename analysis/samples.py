"""Question 8: easy, weird and confusing test samples, from every network's predictions at one epoch.

Each run (network, seed) of the chosen recipe that answered casts one vote per test sample: its predicted
class. A run that diverged or failed casts none (``analysis.population.answering_runs``), so a sample's votes sum
to the runs that answered; ``attrs["left_out"]`` says how many runs were left out.
- easy: every run is right.
- weird: more than ``wrong_share`` of the runs are wrong, and the wrong ones agree: one wrong class takes
  at least ``agree_share`` of the wrong votes.
- confusing: no class gets a majority (more than half) of the votes.
Vectorised with numpy (bincount over sample x class): tens of millions of prediction rows, no Python loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.population import final_epochs, recipe_answers, resolve_epoch
from netzoo.errors import ResultsError

WRONG_SHARE = 0.90   # weird: more than this share of runs are wrong ...
AGREE_SHARE = 0.90   # ... and one wrong class takes at least this share of the wrong votes
KINDS = ("easy", "weird", "confusing")


def vote_table(predictions: pd.DataFrame, classes: int | None = None) -> pd.DataFrame:
    """One row per test sample: sample, label, votes (an int array per class) as columns votes_0..votes_{K-1}.
    A row with no prediction (null ``pred``: a diverged epoch) casts no vote."""
    if predictions["pred"].isna().any():
        predictions = predictions[predictions["pred"].notna()]
    sample = predictions["sample"].to_numpy(dtype=np.int64)
    label = predictions["label"].to_numpy(dtype=np.int64)
    pred = predictions["pred"].to_numpy(dtype=np.int64)
    if classes is None:
        classes = int(max(label.max(), pred.max())) + 1
    n_samples = int(sample.max()) + 1                       # test indices are dense: 0..N-1
    votes = np.bincount(sample * classes + pred, minlength=n_samples * classes).reshape(n_samples, classes)
    labels = np.full(n_samples, -1, dtype=np.int64)
    labels[sample] = label
    seen = votes.sum(1) > 0
    frame = pd.DataFrame(votes[seen], columns=[f"votes_{k}" for k in range(classes)])
    frame.insert(0, "label", labels[seen])
    frame.insert(0, "sample", np.flatnonzero(seen))
    return frame


def classify(votes: pd.DataFrame, wrong_share: float = WRONG_SHARE, agree_share: float = AGREE_SHARE) -> pd.DataFrame:
    """``votes`` (from vote_table) with ``kind`` (easy, weird, confusing or ordinary), ``majority`` (the
    most-voted class) and ``voters``."""
    counts = votes.filter(like="votes_").to_numpy()
    rows, label = np.arange(len(counts)), votes["label"].to_numpy()
    voters = counts.sum(1)
    right = counts[rows, label]
    wrong = voters - right
    wrong_votes = counts.copy()
    wrong_votes[rows, label] = 0
    easy = right == voters
    weird = (wrong > wrong_share * voters) & (wrong_votes.max(1) >= agree_share * wrong) & (wrong > 0)
    confusing = counts.max(1) * 2 <= voters
    kind = np.select([easy, weird, confusing], list(KINDS), default="ordinary")
    out = votes.copy()
    out.insert(2, "kind", kind)
    out.insert(3, "majority", counts.argmax(1))
    out["voters"] = voters
    return out


def q8_samples(tables, wrong_share: float = WRONG_SHARE, agree_share: float = AGREE_SHARE,
               epoch: int | None = None, recipe: str | None = None) -> pd.DataFrame:
    """One row per easy, weird or confusing test sample at ``epoch`` (default: each run's last epoch): sample,
    label, kind, majority, votes_0..votes_{K-1}, over the runs that answered. Reads only sample, label and pred
    (plus the key). ``attrs``: epoch, wrong_share, agree_share, voters, samples, left_out."""
    tables, left_out = recipe_answers(tables, recipe)
    predictions = tables.predictions
    if predictions.empty:
        raise ResultsError("The results hold no predictions: question 8 needs the predictions table "
                           "(written by netzoo train for every network).")
    if "epoch" in predictions.columns:
        shown = resolve_epoch(predictions, epoch)
        predictions = final_epochs(predictions, epoch)
        epoch = shown
    classes = int(tables.networks["classes"].max()) if "classes" in tables.networks.columns else None
    table = classify(vote_table(predictions, classes), wrong_share, agree_share)
    out = table[table["kind"] != "ordinary"].drop(columns="voters")
    out = out.sort_values(["kind", "sample"], key=lambda s: s.map(KINDS.index) if s.name == "kind" else s)
    out = out.reset_index(drop=True)
    out.attrs.update(epoch=epoch, wrong_share=wrong_share, agree_share=agree_share,
                     voters=int(table["voters"].max()) if len(table) else 0, samples=len(table), left_out=left_out)
    return out


def q8_counts(samples: pd.DataFrame) -> pd.DataFrame:
    """How many samples of each kind: kind, samples, share (of all test samples)."""
    total = samples.attrs.get("samples", len(samples)) or 1
    counts = samples["kind"].value_counts().reindex(list(KINDS), fill_value=0)
    return pd.DataFrame({"kind": list(KINDS), "samples": counts.to_numpy(), "share": counts.to_numpy() / total})
