"""Picking on the validation split: every analysis that picks networks picks on the validation metric when the
results hold a validation split (or --select-on val), reports the test split's numbers, and says which it used.

The synthetic population here is built so that the two splits disagree: LinearReLU_1 is best on the test split
and mediocre on the validation split, LinearTanh_1 best on the validation split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import beyond, cascades, exam
from analysis import label_issues as li
from analysis import recipes as recipe_analysis
from analysis.population import has_validation, population, selection_metric
from cli_helpers import run_main
from netzoo.errors import ResultsError
from netzoo.recipe import Recipe
from netzoo.results import ResultTables
from synthetic import from_curves, from_predictions, write_results

TEST = {"Basic": [0.50, 0.60], "LinearReLU_1": [0.85, 0.99], "LinearTanh_1": [0.85, 0.95],
        "Conv2dReLU_1": [0.70, 0.90]}
VAL = {"Basic": [0.50, 0.60], "LinearReLU_1": [0.60, 0.70], "LinearTanh_1": [0.90, 0.99],
       "Conv2dReLU_1": [0.80, 0.85]}
COSTS = {"Basic": {"params": 100, "flops_forward": 100}, "LinearReLU_1": {"params": 1000, "flops_forward": 1000},
         "LinearTanh_1": {"params": 2000, "flops_forward": 2000}, "Conv2dReLU_1": {"params": 500, "flops_forward": 500}}


def with_validation(tables, val: dict):
    """``tables`` with validation numbers per network and epoch (val_acc = val_balanced_acc; val_loss = 1 - it)."""
    epochs = tables.epochs.copy()
    value = [val[n][e - 1] for n, e in zip(epochs["network"], epochs["epoch"])]
    epochs["val_balanced_acc"] = epochs["val_acc"] = value
    epochs["val_loss"] = 1 - np.asarray(value)
    tables.epochs = epochs
    return tables


def disagreeing(val: dict | None = VAL, **kw):
    tables = from_curves(TEST, costs=COSTS, classes=3, **kw)
    return with_validation(tables, val) if val is not None else tables


# --- one rule decides -----------------------------------------------------------------------------
def test_selection_is_the_validation_metric_when_the_results_hold_one_else_the_test_metric():
    assert has_validation(disagreeing()) and not has_validation(disagreeing(val=None))
    assert selection_metric(disagreeing()) == "val_balanced_acc"
    assert selection_metric(disagreeing(), "test") == "test_balanced_acc"
    assert selection_metric(disagreeing(val=None)) == "test_balanced_acc"
    assert selection_metric(disagreeing(), metric="test_acc") == "val_acc"


def test_picking_on_a_validation_split_that_is_not_there_is_refused_with_the_fix():
    with pytest.raises(ResultsError, match=r"hold no validation split.*--recipe study\+val.*--select-on test"):
        selection_metric(disagreeing(val=None), "val")
    with pytest.raises(ResultsError, match="pick on one of val, test"):
        selection_metric(disagreeing(), "train")


# --- every picker -----------------------------------------------------------------------------------
@pytest.mark.parametrize("question", [exam.q9_best_percentiles, exam.q10_best_vs_basic])
def test_the_best_network_is_picked_on_validation_and_reported_on_test(question):
    tables = disagreeing()
    on_val, on_test = question(tables), question(tables, select_on="test")
    best = "network" if question is exam.q9_best_percentiles else "best"
    assert (on_val.attrs[best], on_test.attrs[best]) == ("LinearTanh_1", "LinearReLU_1")
    assert on_val.attrs["select_on"] == "val" and on_test.attrs["select_on"] == "test"
    if question is exam.q9_best_percentiles:
        assert on_val.attrs["value"] == pytest.approx(0.95)  # its test split's number, not its validation one
    else:
        assert on_val.set_index("measure").loc["test_balanced_acc", "best"] == pytest.approx(0.95)


def test_without_a_validation_split_the_best_network_is_the_studys_pick_on_test():
    assert exam.q9_best_percentiles(disagreeing(val=None)).attrs["network"] == "LinearReLU_1"


def test_gold_stars_are_judged_on_validation():
    on_val, on_test = population(disagreeing()), population(disagreeing(), select_on="test")
    stars = {frame.attrs["select_on"]: set(frame.loc[frame["gold_star"], "network"]) for frame in (on_val, on_test)}
    assert stars == {"val": {"LinearTanh_1"}, "test": {"LinearReLU_1"}}
    assert exam.q1_attempts(disagreeing())["gold_stars"].tolist() == [0, 1]
    good = population(disagreeing()).set_index("network")["good"]
    assert not good["LinearReLU_1"] and good["LinearTanh_1"] and good["Conv2dReLU_1"]


def test_the_k_best_of_an_ensemble_are_ranked_on_validation():
    assert [n for n, _ in beyond.ensemble_runs(disagreeing())["best"]] == \
        ["LinearTanh_1", "Conv2dReLU_1", "LinearReLU_1", "Basic"]
    assert [n for n, _ in beyond.ensemble_runs(disagreeing(), select_on="test")["best"]] == \
        ["LinearReLU_1", "LinearTanh_1", "Conv2dReLU_1", "Basic"]


def test_the_pareto_fronts_members_are_picked_on_validation_and_show_their_test_numbers():
    def members(frame):
        return frame[frame["cost"] == "params"]["network"].tolist()

    on_val = beyond.pareto_fronts(disagreeing(), costs=("params",))
    assert members(on_val) == ["Basic", "Conv2dReLU_1", "LinearTanh_1"]
    assert members(beyond.pareto_fronts(disagreeing(), costs=("params",), select_on="test")) == \
        ["Basic", "Conv2dReLU_1", "LinearReLU_1"]
    assert on_val.set_index("network").loc["LinearTanh_1", "test_balanced_acc_mean"] == pytest.approx(0.95)
    assert on_val.set_index("network").loc["LinearTanh_1", "val_balanced_acc_mean"] == pytest.approx(0.99)


def test_cascade_candidates_are_picked_on_validation():
    def pool(**kw):
        return cascades.candidates(disagreeing(), cheapest_good=1, **kw)

    on_val, on_test = pool(), pool(select_on="test")
    assert on_val[on_val["on_single_front"]]["network"].tolist() == ["Basic", "Conv2dReLU_1", "LinearTanh_1"]
    assert on_test[on_test["on_single_front"]]["network"].tolist() == ["Basic", "Conv2dReLU_1", "LinearReLU_1"]
    assert on_val.attrs["selected_by"] == "val_balanced_acc"


def test_the_best_recipe_is_picked_on_validation():
    # recipe "a" trains better on the test split, "b" on the validation split
    a = with_validation(from_curves({"LinearReLU_1": [0.9, 0.95]}, recipe="a", recipe_hash="a" * 16),
                        {"LinearReLU_1": [0.6, 0.6]})
    b = with_validation(from_curves({"LinearReLU_1": [0.8, 0.85]}, recipe="b", recipe_hash="b" * 16),
                        {"LinearReLU_1": [0.9, 0.9]})
    networks = pd.concat([a.networks, b.networks], ignore_index=True)
    networks["recipe_json"] = [Recipe(name=r, lr=0.002 if r == "a" else 0.01).to_json() for r in networks["recipe"]]
    tables = ResultTables(networks, pd.concat([a.epochs, b.epochs], ignore_index=True))

    def finding(**kw):
        (section,) = [s for s in recipe_analysis.report_sections(tables, **kw) if s.key == "recipes-comparison"]
        return section.finding

    assert finding().startswith("b gives the best") and "picked on the validation split" in finding()
    assert finding(select_on="test").startswith("a gives the best")


def test_label_issues_single_network_is_picked_on_validation_never_on_test():
    labels = np.arange(30) % 3
    preds = np.tile(labels, (3, 1, 1))
    preds[1, 0, :3] = (labels[:3] + 1) % 3
    meta = pd.DataFrame({"network": ["LinearReLU_1", "LinearTanh_1", "Conv2dReLU_1"], "seed": 42})
    tables = from_predictions(meta, preds, labels, 3)
    tables.epochs["train_acc"] = [0.9, 0.5, 0.5]   # LinearReLU_1 trains best
    tables.epochs["val_balanced_acc"] = [0.5, 0.95, 0.6]  # LinearTanh_1 is best on the validation split
    assert li.label_issues(tables).attrs["cleanlab_network"] == "LinearTanh_1"
    # with --select-on test, it falls back on training accuracy: the test split never picks it
    issues = li.label_issues(tables, select_on="test")
    assert issues.attrs["cleanlab_network"] == "LinearReLU_1" and "training accuracy" in issues.attrs["cleanlab_why"]
    with pytest.raises(ValueError, match="never picked on the test split"):
        li.single_network(li.run_probs(tables), by="test_acc")


# --- the CLI and the report say which split picked ----------------------------------------------------
def test_exam_select_on_picks_on_the_split_it_names_and_says_so(tmp_path, monkeypatch, capsys):
    results = write_results(disagreeing(), tmp_path / "results")
    code, out, err = run_main(monkeypatch, capsys, "exam", "10", "--results", results)
    assert code == 0 and "picked on the validation split (val_balanced_acc)" in err and "LinearTanh_1" in err
    code, out, err = run_main(monkeypatch, capsys, "exam", "10", "--results", results, "--select-on", "test")
    assert code == 0 and "picked on the test split" in err and "LinearReLU_1" in err
    code, out, err = run_main(monkeypatch, capsys, "exam", "pareto", "--results", results)
    assert code == 0 and "LinearTanh_1" in out and "val_balanced_acc_mean" in out


def test_select_on_val_without_a_validation_split_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    results = write_results(disagreeing(val=None), tmp_path / "results")
    for command in (["exam", "9"], ["report", "--out", tmp_path / "report"]):
        code, out, err = run_main(monkeypatch, capsys, *command, "--results", results, "--select-on", "val")
        assert code == 2 and err.count("\n") == 1 and "--select-on test" in err, (command, err)
    assert not (tmp_path / "report").exists()
    code, _, err = run_main(monkeypatch, capsys, "exam", "9", "--results", results, "--select-on", "train")
    assert code == 2 and "'train' is not one of 'val', 'test'" in err


def test_the_report_header_says_which_split_picked(tmp_path, monkeypatch):
    from netzoo import report

    monkeypatch.setattr(report, "collect_sections", lambda tables, results_dir=None, select_on=None: [])
    for tables, expected in ((disagreeing(), "picked on the validation split (val_balanced_acc)"),
                             (disagreeing(val=None), "picked on the test split (test_balanced_acc)")):
        results = write_results(tables, tmp_path / expected.split()[4])
        page = report.write_report(results).read_text()
        assert expected in page
