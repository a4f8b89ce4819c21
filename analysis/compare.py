"""One zoo on two datasets (e.g. MNIST vs Fashion-MNIST): do the networks rank alike, do the findings hold on both?

``compare_text(results_a, results_b)`` is ``netzoo compare``: the Spearman rank correlation of the networks'
accuracies per family, the pairwise findings (family A beats B, activation A beats B within a family, more
parameters help) on each dataset and whether they agree, and a scatter of accuracy on one against the other.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from analysis.seeds import per_network
from netzoo import files

METRIC = "test_balanced_acc"


def network_accuracy(epochs: pd.DataFrame, networks: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per network (and recipe): mean final ``metric`` over the seeds that answered (``per_network``), with family,
    activation and params; ``attrs["left_out"]``: runs left out (diverged or failed)."""
    summary = per_network(epochs, metric, networks=networks)
    attrs = networks.drop_duplicates("network").set_index("network")[["family", "activation", "params"]]
    out = summary.join(attrs, on="network")[["network", "recipe", "family", "activation", "params", "mean",
                                             "n_seeds"]]
    out.attrs.update(left_out=summary.attrs["left_out"])
    return out


def paired(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Networks present in both (same name and recipe): columns network, recipe, family, activation, params,
    acc_a, acc_b."""
    keys = ["network", "recipe"]
    return a.merge(b[keys + ["mean"]], on=keys, suffixes=("_a", "_b")).rename(
        columns={"mean_a": "acc_a", "mean_b": "acc_b"}).drop(columns="n_seeds")


def rank_correlation(pairs: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho (and p-value) between the networks' accuracies on the two datasets, per family and over all."""
    rows = []
    groups = [("all", pairs)] + list(pairs.groupby("family", sort=True))
    for family, group in groups:
        if len(group) < 3 or group["acc_a"].nunique() < 2 or group["acc_b"].nunique() < 2:
            rows.append((family, len(group), np.nan, np.nan))
            continue
        result = stats.spearmanr(group["acc_a"], group["acc_b"])
        rows.append((family, len(group), float(result.statistic), float(result.pvalue)))
    return pd.DataFrame(rows, columns=["family", "networks", "spearman_rho", "p_value"])


def findings(acc: pd.DataFrame) -> pd.DataFrame:
    """Findings on one dataset, each a signed number: family A - B and activation A - B (within a family) mean
    accuracy, and per family the Spearman correlation of accuracy with params (positive: bigger is better)."""
    rows = []
    fam = acc.groupby("family")["mean"].mean()
    for a, b in combinations(sorted(fam.index), 2):
        rows.append((f"family {a} vs {b}", fam[a] - fam[b]))
    for family, group in acc.groupby("family", sort=True):
        act = group.groupby("activation")["mean"].mean()
        for a, b in combinations(sorted(act.index.astype(str)), 2):
            rows.append((f"activation {a} vs {b} in {family}", act[a] - act[b]))
        if len(group) >= 3 and group["params"].nunique() > 1 and group["mean"].nunique() > 1:
            rows.append((f"more params, higher accuracy in {family}",
                         float(stats.spearmanr(group["params"], group["mean"]).statistic)))
    return pd.DataFrame(rows, columns=["finding", "value"])


def findings_on_both(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Each finding's value on both datasets and whether it holds on both (same sign)."""
    both = findings(a).merge(findings(b), on="finding", suffixes=("_a", "_b"))
    both["holds_on_both"] = np.sign(both["value_a"]) == np.sign(both["value_b"])
    return both


def scatter_chart(pairs: pd.DataFrame, name_a: str, name_b: str) -> Figure:
    """Accuracy on dataset A against B, one point per network, coloured by family, with the diagonal."""
    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.subplots()
    for family, group in pairs.groupby("family", sort=True):
        ax.scatter(group["acc_a"], group["acc_b"], s=10, alpha=0.7, label=family)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"balanced accuracy on {name_a}")
    ax.set_ylabel(f"balanced accuracy on {name_b}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return fig


def _dataset_name(networks: pd.DataFrame, folder: Path) -> str:
    names = networks["dataset"].dropna().unique() if "dataset" in networks else []
    return str(names[0]) if len(names) == 1 else folder.name


def _strongest(frame: pd.DataFrame, limit: int) -> str:
    """The ``limit`` findings with the largest smaller-magnitude of the two values, as text."""
    if frame.empty:
        return "(none)"
    strength = np.minimum(frame["value_a"].abs(), frame["value_b"].abs())
    shown = frame.assign(strength=strength).nlargest(limit, "strength").drop(columns="strength")
    more = f"\n… and {len(frame) - limit} more (all in findings.csv with --out)" if len(frame) > limit else ""
    return shown.round(4).to_string(index=False) + more


def compare_text(results_a, results_b, out=None, limit: int = 10) -> str:
    """``netzoo compare``: rank correlation per family, findings that hold on both (the ``limit`` strongest each
    way), and (with ``out``) the scatter as compare.png/.svg plus the tables as CSV in ``out``."""
    from netzoo.errors import ResultsError
    from netzoo.results import load

    loaded = [load(d, tables=("networks", "epochs")) for d in (results_a, results_b)]
    names = [_dataset_name(t.networks, Path(d)) for t, d in zip(loaded, (results_a, results_b))]
    acc_a, acc_b = (network_accuracy(t.epochs, t.networks) for t in loaded)
    pairs = paired(acc_a, acc_b)
    if pairs.empty:
        raise ResultsError(f"{results_a} and {results_b} share no (network, recipe): compare one zoo trained on two "
                           f"datasets (same network names), e.g. netzoo generate --dataset mnist then train on "
                           f"mnist and fashion-mnist.")
    rho = rank_correlation(pairs)
    both = findings_on_both(acc_a[acc_a["network"].isin(pairs["network"])],
                            acc_b[acc_b["network"].isin(pairs["network"])])
    held = int(both["holds_on_both"].sum())
    overall = rho.iloc[0]
    lines = [
        f"{names[0]} ({results_a}) vs {names[1]} ({results_b}): {len(pairs)} networks in both",
        f"mean balanced accuracy {pairs['acc_a'].mean():.3f} vs {pairs['acc_b'].mean():.3f}; "
        f"Spearman rank correlation over all networks {overall['spearman_rho']:.3f}",
        f"runs left out (diverged or failed): {acc_a.attrs['left_out']} on {names[0]}, "
        f"{acc_b.attrs['left_out']} on {names[1]}",
        "", "rank correlation of networks by accuracy, per family:", rho.round(4).to_string(index=False),
        "", f"{held} of {len(both)} findings hold on both datasets (same sign). The strongest that hold:",
        _strongest(both[both["holds_on_both"]], limit),
        "", "The strongest that do not hold:", _strongest(both[~both["holds_on_both"]], limit),
    ]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        fig = scatter_chart(pairs, names[0], names[1])
        for suffix in ("png", "svg"):
            files.atomic_write(out / f"compare.{suffix}", lambda f: fig.savefig(f, format=suffix, dpi=120))
        for name, table in (("rank_correlation", rho), ("findings", both), ("accuracy_pairs", pairs)):
            files.atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
        lines += ["", f"written: {out / 'compare.png'}, rank_correlation.csv, findings.csv, accuracy_pairs.csv"]
    return "\n".join(lines)
