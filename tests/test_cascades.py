"""Cascades of a cheap and an expensive network on synthetic tables where the best cascade is planted."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis import cascades as cas
from netzoo.errors import ResultsError
from analysis.exam import answer
from synthetic import from_predictions, make_zoo, write_results

K, N = 4, 100
COLUMNS = ["cheap", "expensive", "threshold", "test_acc", "test_balanced_acc", "deferred_share",
           "flops_per_sample", "on_front"]
# network -> (flops_forward, params, samples it gets wrong, its confidence on right / wrong samples)
PLANTED = {
    "LinearReLU_0": (100, 1_000, range(80, 100), (0.99, 0.40)),      # cheap: sure and right, or unsure and wrong
    "Conv2dReLU_0": (10_000, 50_000, range(0, 10), (0.90, 0.90)),    # expensive: right where the cheap one fails
    "Conv2dTanh_0": (5_000, 20_000, range(0, 40), (0.90, 0.90)),     # mid-cost, worse than both
}


def planted(networks=PLANTED, statuses=None):
    labels = np.arange(N) % K
    names = list(networks)
    preds = np.tile(labels, (len(names), 1))
    probs = np.empty((len(names), 1, N, K), dtype=np.float32)
    for r, name in enumerate(names):
        _, _, wrong, (sure, unsure) = networks[name]
        wrong = list(wrong)
        preds[r, wrong] = (labels[wrong] + 1) % K
        conf = np.full(N, sure)
        conf[wrong] = unsure
        probs[r, 0] = ((1 - conf) / (K - 1))[:, None]
        np.put_along_axis(probs[r, 0], preds[r][:, None], conf[:, None], axis=-1)
    meta = pd.DataFrame({"network": names, "seed": 42,
                         "flops_forward": [networks[n][0] for n in names], "params": [networks[n][1] for n in names]})
    tables = from_predictions(meta, preds[:, None, :], labels, K, probs=probs)
    for name, status in (statuses or {}).items():
        tables.networks.loc[tables.networks["network"] == name, "status"] = status
    return tables


def test_planted_cascade_beats_both_of_its_members():
    tables = planted()
    frame = cas.cascades(tables, thresholds=(0.5, 0.95))
    assert list(frame.columns[:len(COLUMNS)]) == COLUMNS
    row = frame[(frame["cheap"] == "LinearReLU_0") & (frame["expensive"] == "Conv2dReLU_0")
                & (frame["threshold"] == 0.5)].iloc[0]
    assert row["test_acc"] == 1.0 and row["test_balanced_acc"] == 1.0      # cheap alone 0.80, expensive alone 0.90
    assert row["deferred_share"] == pytest.approx(0.20)
    assert row["flops_per_sample"] == pytest.approx(100 + 0.20 * 10_000)    # cheap on all, expensive on 20%
    assert row["params_per_sample"] == pytest.approx(1_000 + 0.20 * 50_000)
    assert row["on_front"]
    singles = cas.single_networks(tables).set_index("network")["test_balanced_acc_mean"]
    assert row["test_balanced_acc"] > singles["LinearReLU_0"] and row["test_balanced_acc"] > singles["Conv2dReLU_0"]


def test_a_cascade_no_better_than_a_cheaper_single_network_is_not_on_the_front():
    frame = cas.cascades(planted(), thresholds=(0.5, 0.95))
    # Conv2dTanh_0 is sure (0.9) of every answer: at τ=0.5 it never defers (0.60, beaten by the cheaper
    # LinearReLU_0's 0.80), at τ=0.95 it defers everything (Conv2dReLU_0's 0.90 for more than its FLOPs)
    worse = frame[(frame["cheap"] == "Conv2dTanh_0") & (frame["expensive"] == "Conv2dReLU_0")]
    assert not worse["on_front"].any()
    assert (frame["flops_per_sample"] > 0).all() and frame["deferred_share"].between(0, 1).all()


def test_candidates_are_the_single_front_and_the_cheapest_good_networks():
    networks = dict(PLANTED)
    networks["LinearTanh_0"] = (50_000, 1, range(0, 90), (0.9, 0.9))     # dear and bad: neither front nor good
    cand = cas.candidates(planted(networks)).set_index("network")
    # Conv2dTanh_0 (0.60) is beaten by the cheaper LinearReLU_0 and is not good (< 0.80); LinearTanh_0 neither
    assert cand.index.tolist() == ["LinearReLU_0", "Conv2dReLU_0"]
    assert cand["on_single_front"].all() and cand["cheapest_good"].all()
    one = cas.candidates(planted(networks), cheapest_good=1).set_index("network")
    assert one["cheapest_good"].tolist() == [True, False]   # only the cheapest good network is flagged


def test_the_search_is_bounded_by_the_candidates():
    rng = np.random.default_rng(0)
    networks = {f"LinearReLU_{i}": (int(f), 10, rng.choice(N, int(rng.integers(5, 60)), replace=False), (0.9, 0.6))
                for i, f in enumerate(rng.integers(100, 100_000, 60))}
    tables = planted(networks)
    frame = cas.cascades(tables, thresholds=(0.5, 0.9))
    used = set(frame["cheap"]) | set(frame["expensive"])
    assert used <= set(frame.attrs["candidates"])
    assert len(frame.attrs["candidates"]) <= len(cas.candidates(tables, cheapest_good=0)) + cas.CHEAPEST_GOOD


def test_diverged_runs_are_left_out_of_cascades_and_counted():
    frame = cas.cascades(planted(statuses={"Conv2dTanh_0": "diverged"}))
    assert "Conv2dTanh_0" not in set(frame["cheap"]) | set(frame["expensive"])
    assert frame.attrs["left_out"] == 1


@pytest.mark.parametrize("stored", ["null", "nan"])
def test_runs_without_finite_probabilities_are_left_out_of_cascades(stored):
    networks = dict(PLANTED)
    networks["Conv2dSELU_0"] = (20_000, 9, range(0, 5), (0.95, 0.95))   # would be on the front
    tables = planted(networks)
    preds = tables.predictions
    rows = preds.index[preds["network"] == "Conv2dSELU_0"]
    preds["probs"] = preds["probs"].astype(object)
    if stored == "null":                                                # a diverged epoch, as now stored
        preds["pred"] = preds["pred"].astype("Int64")
        preds.loc[rows, "pred"] = pd.NA
        preds.loc[rows, "probs"] = None
    else:                                                               # NaN probabilities under status done
        preds.loc[rows, "probs"] = pd.Series([np.full(K, np.nan, np.float16)] * len(rows), index=rows)
    frame = cas.cascades(tables)
    assert "Conv2dSELU_0" not in set(frame["cheap"]) | set(frame["expensive"])
    assert frame.attrs["left_out"] == 1 and frame["test_acc"].notna().all()


def test_fewer_than_two_answering_networks_is_refused():
    with pytest.raises(ResultsError, match="at least two answering networks"):
        cas.cascades(planted(statuses={"Conv2dTanh_0": "failed", "Conv2dReLU_0": "diverged"}))
    empty = planted()
    empty.predictions = empty.predictions.iloc[:0]
    with pytest.raises(ResultsError, match="probs"):
        cas.cascades(empty)


def test_exam_cascades_prints_the_contract_columns_and_refuses_one_network(tmp_path):
    results = write_results(planted(), tmp_path / "results")
    proc = subprocess.run([sys.executable, "-m", "netzoo.cli", "exam", "cascades", "--results", str(results), "--csv"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith(",".join(COLUMNS))
    lone = {"LinearReLU_0": PLANTED["LinearReLU_0"]}
    results = write_results(planted(lone), tmp_path / "lone")
    proc = subprocess.run([sys.executable, "-m", "netzoo.cli", "exam", "cascades", "--results", str(results)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "at least two" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_exam_cascades_reads_every_epoch_so_good_networks_are_candidates(tmp_path):
    # "good" needs the metric at every epoch: reading only the last epoch would make no network good
    zoo = make_zoo(per_cell=1)
    via_exam = answer("cascades", write_results(zoo, tmp_path / "results"))
    direct = cas.cascades(zoo)
    assert cas.candidates(zoo)["cheapest_good"].sum() > 0
    assert via_exam.attrs["candidates"] == direct.attrs["candidates"]
    pd.testing.assert_frame_equal(via_exam.reset_index(drop=True), direct.reset_index(drop=True), check_like=True)
