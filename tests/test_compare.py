"""netzoo compare: one zoo on two datasets, rank correlation per family, findings that hold on both."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.compare import compare_text, findings_on_both, network_accuracy, paired, rank_correlation
from synthetic import from_curves, write_results

NETWORKS = [f"{family}ReLU_{i}" for family in ("Linear", "Conv2d") for i in range(4)] + ["LinearTanh_0"]


def _results(acc: dict[str, float], dataset: str):
    """Two seeds per network, final accuracies acc +/- 0.01, params rising with the index."""
    curves = {(n, s): [0.1, acc[n] + (0.01 if s else -0.01)] for n in acc for s in (0, 1)}
    tables = from_curves(curves, costs={n: {"params": 100 * (i + 1)} for i, n in enumerate(acc)})
    tables.networks["dataset"] = dataset
    return tables


A = {n: 0.5 + 0.05 * i for i, n in enumerate(NETWORKS)}                          # Conv2d beats Linear
B = {n: A[n] - 0.2 for n in NETWORKS} | {"Conv2dReLU_0": 0.9, "Conv2dReLU_3": 0.3}  # Conv2d order broken


def test_rank_correlation_is_one_where_the_order_holds_and_lower_where_it_does_not():
    pairs = paired(*(network_accuracy(t.epochs, t.networks) for t in (_results(A, "mnist"), _results(B, "fmnist"))))
    rho = rank_correlation(pairs).set_index("family")
    assert rho.loc["Linear", "spearman_rho"] == pytest.approx(1.0)
    assert rho.loc["Conv2d", "spearman_rho"] == pytest.approx(-0.8)  # ranks 1234 vs 4231: 1 - 6*18/60
    assert rho.loc["all", "networks"] == len(NETWORKS)


def test_findings_on_both_flags_the_one_that_flips():
    a, b = (network_accuracy(t.epochs, t.networks) for t in (_results(A, "mnist"), _results(B, "fmnist")))
    both = findings_on_both(a, b).set_index("finding")
    assert bool(both.loc["activation ReLU vs Tanh in Linear", "holds_on_both"])
    assert both.loc["more params, higher accuracy in Conv2d", "value_a"] == pytest.approx(1.0)
    assert not bool(both.loc["more params, higher accuracy in Conv2d", "holds_on_both"])


def test_compare_text_on_two_result_folders_writes_the_scatter(tmp_path):
    write_results(_results(A, "mnist"), tmp_path / "a")
    write_results(_results(B, "fashion-mnist"), tmp_path / "b")
    text = compare_text(tmp_path / "a", tmp_path / "b", out=tmp_path / "cmp")
    assert text.startswith("mnist") and "fashion-mnist" in text and f"{len(NETWORKS)} networks in both" in text
    assert "more params, higher accuracy in Conv2d" in text  # listed among the findings that do not hold
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "cmp" / "accuracy_pairs.csv")) == len(NETWORKS)
