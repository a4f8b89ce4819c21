"""The exam's answers on small synthetic tables whose answers are known by construction (tests/synthetic.py)."""

import io

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis import beyond, exam
from analysis.population import for_recipe, population, recipe_hash
from analysis.samples import q8_samples, vote_table
from netzoo.cli import cli
from netzoo.errors import NetzooError, ResultsError
from synthetic import CONFUSING, EASY, WEIRD, from_curves, from_predictions, make_zoo, stop_runs, write_results


@pytest.fixture(scope="module")
def zoo():
    return make_zoo(per_cell=1)


def _runs(*networks, seeds=(42,)):
    return pd.DataFrame([(n, s) for n in networks for s in seeds], columns=["network", "seed"])


# --- 1 -------------------------------------------------------------------------------------------
def test_q1_counts_thresholds_good_networks_and_gold_stars_per_epoch():
    tables = from_curves({"LinearReLU_0": [0.85, 0.90, 0.99],   # good, gold star
                          "LinearReLU_1": [0.79, 0.95, 0.99],   # below 80% at epoch 1: never good
                          "LinearTanh_0": [0.90, 0.92, 0.95],   # good, not gold
                          "LinearTanh_1": [1.00, 1.00, 1.00]})  # good, gold, 100% throughout
    q1 = exam.q1_attempts(tables).set_index("epoch")
    assert q1.loc[1, ["networks", "reached_80", "reached_90", "reached_95", "reached_99", "reached_100"]].tolist() \
        == [4, 3, 2, 1, 1, 1]
    assert q1.loc[3, ["reached_80", "reached_90", "reached_95", "reached_99", "reached_100"]].tolist() == [4, 4, 4, 3, 1]
    assert q1["good"].tolist() == [3, 3, 3]
    assert q1["gold_stars"].tolist() == [1, 1, 2]
    pop = population(tables).set_index("network")
    assert set(pop.index[pop["gold_star"]]) == {"LinearReLU_0", "LinearTanh_1"}
    assert set(pop.index[pop["good"]]) == {"LinearReLU_0", "LinearTanh_0", "LinearTanh_1"}


def test_thresholds_and_metric_are_parameters():
    tables = from_curves({"LinearReLU_0": [0.85, 0.90], "LinearTanh_0": [0.70, 0.96]})
    q1 = exam.q1_attempts(tables, thresholds=(0.5, 0.95), good=0.6, gold=0.95, metric="test_acc")
    assert list(q1.columns) == ["epoch", "networks", "reached_50", "reached_95", "good", "gold_stars"]
    assert q1["reached_95"].tolist() == [0, 1] and q1["good"].tolist() == [2, 2] and q1["gold_stars"].tolist() == [0, 1]


# --- 2-6 -----------------------------------------------------------------------------------------
def test_q2_summarises_per_family_activation_and_cell_with_gold_stars():
    tables = from_curves({"LinearReLU_0": [0.99], "LinearReLU_1": [0.90], "LinearTanh_0": [0.70],
                          "Conv2dReLU_0": [0.60], "Basic": [0.80]})
    q2 = exam.q2_accuracy(tables)
    linear = q2[(q2["group"] == "family") & (q2["family"] == "Linear")].iloc[0]
    assert linear["networks"] == 3 and linear["gold_stars"] == 1 and linear["median"] == pytest.approx(0.90)
    relu = q2[(q2["group"] == "activation") & (q2["activation"] == "ReLU")].iloc[0]
    assert relu["family"] == "all" and relu["networks"] == 3 and relu["max"] == pytest.approx(0.99)
    cell = q2[(q2["group"] == "cell") & (q2["family"] == "Linear") & (q2["activation"] == "ReLU")].iloc[0]
    assert cell["median"] == pytest.approx(0.945)


def test_costs_per_family_use_the_manifest_and_seed_mean_training_time():
    tables = from_curves({"LinearReLU_0": [0.9], "Conv2dReLU_0": [0.8], "Conv2dReLU_1": [0.7]},
                         costs={"LinearReLU_0": {"params": 10}, "Conv2dReLU_0": {"params": 1000},
                                "Conv2dReLU_1": {"params": 3000}})
    q4 = exam.q4_params(tables).set_index(["group", "family"]).loc["family"]
    assert q4.loc["Conv2d", "median"] == 2000 and q4.loc["Linear", "max"] == 10
    q3 = exam.q3_train_time(tables)  # from_curves: 1 s per epoch
    assert (q3["median"] == 1.0).all()
    assert q3.attrs["notes"] == []  # every run trained alone: nothing to say


def test_training_times_of_fused_groups_are_said_to_be_amortised(tmp_path):
    """Runs trained as one fused group are each charged the group's time divided by its runs: question 3 says so,
    in the CLI's notes and in the report's finding."""
    from analysis.exam_report import report_sections

    tables = from_curves({"LinearReLU_0": [0.9], "Conv2dReLU_0": [0.8], "Conv2dReLU_1": [0.7]})
    tables.networks.loc[tables.networks["network"] != "LinearReLU_0", "fused_runs"] = 8
    (note,) = exam.q3_train_time(tables).attrs["notes"]
    assert note.startswith("2 of 3 runs trained in fused groups of up to 8 runs") and "amortised" in note
    (q3,) = [s for s in report_sections(tables) if s.key == "q3"]
    assert note in q3.finding
    result = CliRunner().invoke(cli, ["exam", "3", "--results", str(write_results(tables, tmp_path))])
    assert result.exit_code == 0 and note in result.stderr


# --- seeds and recipes ---------------------------------------------------------------------------
def test_numbers_per_network_are_seed_means_with_a_95_percent_interval():
    tables = from_curves({("LinearReLU_0", 0): [0.8], ("LinearReLU_0", 1): [0.9], ("LinearTanh_0", 0): [0.5]})
    pop = population(tables).set_index("network")
    assert pop.loc["LinearReLU_0", "n_seeds"] == 2
    assert pop.loc["LinearReLU_0", "test_balanced_acc_mean"] == pytest.approx(0.85)
    assert pop.loc["LinearReLU_0", "test_balanced_acc_ci95"] == pytest.approx(12.7062 * np.std([0.8, 0.9], ddof=1)
                                                                               / np.sqrt(2), rel=1e-4)
    assert np.isnan(pop.loc["LinearTanh_0", "test_balanced_acc_ci95"])


def test_the_exam_answers_the_recipe_with_most_runs_unless_told():
    big = from_curves({"LinearReLU_0": [0.9], "LinearReLU_1": [0.8]}, recipe="default", recipe_hash="a" * 16)
    small = from_curves({"LinearReLU_0": [0.5]}, recipe="adam-lr1", recipe_hash="b" * 16)
    tables = type(big)(*(pd.concat([getattr(big, t), getattr(small, t)], ignore_index=True)
                         for t in ("networks", "epochs", "predictions", "layers")))
    assert recipe_hash(tables) == "a" * 16
    assert len(for_recipe(tables).networks) == 2
    assert population(tables, recipe="adam-lr1")["test_balanced_acc_mean"].tolist() == [0.5]
    with pytest.raises(ResultsError, match="adam-lr1"):
        population(tables, recipe="sgd")


# --- 7 -------------------------------------------------------------------------------------------
def test_late_bloomers_are_below_the_median_early_and_in_the_top_quartile_at_the_end():
    curves = {f"LinearReLU_{i}": [0.50 + 0.04 * i, 0.60 + 0.04 * i, 0.70 + 0.02 * i] for i in range(7)}
    curves["LinearTanh_0"] = [0.30, 0.40, 0.99]   # the planted late bloomer
    curves["LinearTanh_1"] = [0.31, 0.41, 0.42]   # slow and stays slow
    bloomers = exam.q7_late_bloomers(from_curves(curves))
    assert bloomers["network"].tolist() == ["LinearTanh_0"]
    assert bloomers["test_balanced_acc_epoch_3"].tolist() == [pytest.approx(0.99)]


def test_ranking_settles_after_the_epoch_from_which_it_matches_the_final_one():
    # epochs 1-2 shuffle the order, from epoch 3 on it is the final order
    curves = {f"LinearReLU_{i}": [0.5 + 0.05 * ((i * 3) % 5), 0.5 + 0.05 * ((i * 2) % 5), 0.6 + 0.05 * i,
                                  0.7 + 0.05 * i] for i in range(5)}
    stability = exam.q7_rank_stability(from_curves(curves))
    assert exam.settled_epoch(stability) == 3
    assert stability.query("epoch_a == 3 and epoch_b == 4")["spearman"].item() == pytest.approx(1.0)


# --- 8 -------------------------------------------------------------------------------------------
def test_three_samples_every_network_gets_wrong_the_same_way_are_exactly_the_weird_ones(zoo):
    q8 = exam.q8_samples(zoo)
    kinds = q8.groupby("kind")["sample"].apply(sorted).to_dict()
    assert kinds == {"easy": EASY, "weird": WEIRD, "confusing": CONFUSING}
    weird = q8[q8["kind"] == "weird"].set_index("sample")
    assert (weird["majority"] == (weird["label"] + 1) % 10).all()
    runs = len(zoo.networks)
    assert (weird.apply(lambda r: r[f"votes_{r['majority']}"], axis=1) == runs).all()
    assert list(q8.columns) == ["sample", "label", "kind", "majority"] + [f"votes_{k}" for k in range(10)]


def test_weird_and_confusing_follow_their_thresholds():
    labels = np.zeros(4, dtype=np.int64)
    # 10 runs, 4 samples of class 0; run 0 is always right. Wrong runs: sample 0 all say 2, sample 1 all say 1,
    # sample 2 splits over 0/1/2 (4/3/3 votes), sample 3: eight say 1, one says 2.
    preds = np.array([[0, 0, 0, 0]] + [[2, 1, k % 3, 2 if k == 8 else 1] for k in range(9)])
    tables = from_predictions(_runs(*[f"LinearReLU_{i}" for i in range(10)]), preds[:, None, :], labels, 3)

    def kinds(**thresholds):
        return q8_samples(tables, **thresholds).set_index("sample")["kind"].to_dict()

    assert kinds() == {2: "confusing"}  # 90% wrong is not more than 90%
    assert kinds(wrong_share=0.85) == {0: "weird", 1: "weird", 2: "confusing"}  # sample 3: 8/9 agree < 90%
    assert kinds(wrong_share=0.85, agree_share=0.85) == {0: "weird", 1: "weird", 2: "confusing", 3: "weird"}


def test_exam_8_csv_has_one_row_per_sample_with_the_contract_columns(zoo, tmp_path):
    write_results(zoo, tmp_path / "results")
    result = CliRunner().invoke(cli, ["exam", "8", "--results", str(tmp_path / "results"), "--csv"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame.columns) == ["sample", "label", "kind", "majority"] + [f"votes_{k}" for k in range(10)]
    assert sorted(frame["sample"]) == sorted(WEIRD + CONFUSING + EASY) and frame["sample"].is_unique


def test_every_question_answers_from_a_results_folder(zoo, tmp_path):
    results = write_results(zoo, tmp_path / "results")
    for question in exam.QUESTIONS:
        frame = exam.answer(question, results)
        assert isinstance(frame, pd.DataFrame) and len(frame), question
    assert exam.answer("1", results, epoch=2)["epoch"].tolist() == [1, 2]
    with pytest.raises(NetzooError, match="questions: 1, 2"):
        exam.answer("11", results)


# --- 9, 10 ---------------------------------------------------------------------------------------
def test_a_planted_best_networks_percentiles_per_class():
    tables = from_curves({"LinearReLU_0": [0.5, 0.9], "LinearReLU_1": [0.5, 0.8], "LinearReLU_2": [0.5, 0.7],
                          "LinearReLU_3": [0.5, 0.6]},
                         class_acc={"LinearReLU_0": [1.0, 0.6, 1.0], "LinearReLU_1": [0.9, 0.9, 0.7],
                                    "LinearReLU_2": [0.8, 0.7, 0.8], "LinearReLU_3": [0.7, 0.5, 0.9]})
    q9 = exam.q9_best_percentiles(tables)
    assert q9.attrs["network"] == "LinearReLU_0"
    assert q9["percentile"].tolist() == [100.0, 50.0, 100.0]
    assert q9["networks_better"].tolist() == [0, 2, 0]
    assert q9["accuracy"].tolist() == [1.0, 0.6, 1.0]


def test_best_vs_basic_puts_them_side_by_side_with_ratios():
    tables = from_curves({"LinearReLU_0": [0.99], "Basic": [0.90], "LinearTanh_0": [0.5]},
                         costs={"LinearReLU_0": {"params": 300, "memory": 50}, "Basic": {"params": 100, "memory": 100},
                                "LinearTanh_0": {"params": 1, "memory": 1}})
    q10 = exam.q10_best_vs_basic(tables).set_index("measure")
    assert q10.attrs["best"] == "LinearReLU_0" and q10.attrs["basic"] == "Basic"
    assert q10.loc["params", ["best", "basic", "ratio"]].tolist() == [300, 100, 3]
    assert q10.loc["memory", "ratio"] == 0.5
    assert q10.loc["test_balanced_acc", "ratio"] == pytest.approx(1.1)
    with pytest.raises(ResultsError, match="no Basic"):
        exam.q10_best_vs_basic(from_curves({"LinearReLU_0": [0.9]}))


# --- beyond the study ----------------------------------------------------------------------------
def test_pareto_front_keeps_only_networks_nobody_beats_on_both():
    tables = from_curves({"LinearReLU_0": [0.90], "LinearReLU_1": [0.80], "LinearReLU_2": [0.95],
                          "LinearReLU_3": [0.85], "LinearReLU_4": [0.95]},
                         costs={"LinearReLU_0": {"params": 100}, "LinearReLU_1": {"params": 10},
                                "LinearReLU_2": {"params": 1000}, "LinearReLU_3": {"params": 500},
                                "LinearReLU_4": {"params": 2000}})
    front = beyond.pareto_fronts(tables, costs=("params",))
    assert front["network"].tolist() == ["LinearReLU_1", "LinearReLU_0", "LinearReLU_2"]


def test_an_ensemble_of_three_networks_wrong_on_disjoint_samples_is_always_right():
    labels = np.arange(9) % 3
    preds = np.tile(labels, (6, 1))
    for run in range(3):  # network r is wrong on samples 3r, 3r+1; Basic's seed r on 3r..3r+2
        preds[run, 3 * run:3 * run + 2] = (labels[3 * run:3 * run + 2] + 1) % 3
        preds[3 + run, 3 * run:3 * run + 3] = (labels[3 * run:3 * run + 3] + 1) % 3
    runs = pd.concat([_runs("LinearReLU_0", "LinearReLU_1", "LinearReLU_2"), _runs("Basic", seeds=(0, 1, 2))])
    tables = from_predictions(runs.reset_index(drop=True), preds[:, None, :], labels, 3)
    ens = beyond.ensembles(tables, k_max=3).set_index(["kind", "k"])
    assert ens.loc[("best", 1), "test_acc"] == pytest.approx(7 / 9)
    assert ens.loc[("best", 3), "test_acc"] == 1.0 and ens.loc[("basic", 3), "test_acc"] == 1.0
    assert ens.loc[("basic", 1), "test_acc"] == pytest.approx(6 / 9)
    assert ens.loc[("best", 3), "gain"] == pytest.approx(2 / 9)
    assert ens.loc[("basic", 2), "added"] == "Basic (seed 1)"


def test_agreement_counts_samples_two_families_both_get_wrong():
    labels = np.zeros(4, dtype=np.int64)
    preds = np.array([[1, 1, 0, 0], [1, 1, 0, 0],    # Linear networks: wrong on samples 0 and 1
                      [0, 1, 1, 0], [0, 0, 1, 1]])   # Conv2d networks: wrong on {1, 2} and {2, 3}
    tables = from_predictions(_runs("LinearReLU_0", "LinearReLU_1", "Conv2dReLU_0", "Conv2dReLU_1"),
                              preds[:, None, :], labels, 2)
    agr = beyond.agreement(tables).set_index(["family_a", "family_b"])
    assert agr.loc[("Linear", "Linear"), ["both_wrong", "jaccard"]].tolist() == [2.0, 1.0]
    assert agr.loc[("Conv2d", "Conv2d"), ["both_wrong", "jaccard"]].tolist() == [1.0, pytest.approx(1 / 3)]
    # Linear vs Conv2d: pairs share 1 wrong sample (with {1,2}) or none (with {2,3}): 0.5 on average
    assert agr.loc[("Linear", "Conv2d"), "both_wrong"] == 0.5
    assert agr.loc[("Linear", "Conv2d"), "jaccard"] == pytest.approx(0.5 / (2 + 2 - 0.5))


# --- runs that diverged or failed are not answers (issue 12, case 9) -------------------------------
def test_an_ensemble_never_draws_a_diverged_run():
    labels = np.arange(9) % 3
    preds = np.tile(labels, (5, 1))
    runs = pd.concat([_runs("LinearReLU_0", "LinearReLU_1"), _runs("Basic", seeds=(0, 1, 2))])
    tables = stop_runs(from_predictions(runs.reset_index(drop=True), preds[:, None, :], labels, 3),
                       [("Basic", 1), ("LinearReLU_1", 42)], at_epoch=1)
    ens = beyond.ensembles(tables, k_max=3)
    assert ens.attrs["left_out"] == 2
    assert ens[ens["kind"] == "basic"]["added"].tolist() == ["Basic (seed 0)", "Basic (seed 2)"]
    assert "LinearReLU_1 (seed 42)" not in ens["added"].tolist()


def test_the_best_network_and_the_pareto_front_are_never_a_run_that_diverged():
    zoo = make_zoo(per_cell=1)
    best = zoo.planted["best"]
    tables = stop_runs(zoo, [(best, 42)], at_epoch=4)
    assert exam.q9_best_percentiles(zoo).attrs["network"] == best
    assert exam.q9_best_percentiles(tables).attrs["network"] != best
    assert best not in set(beyond.pareto_fronts(tables)["network"])
    pop = population(tables)
    assert best not in set(pop["network"]) and pop.attrs["left_out"] == 1


def test_vote_table_counts_no_vote_for_a_missing_prediction():
    predictions = pd.DataFrame({"sample": [0, 0, 1, 1], "label": [0, 0, 1, 1],
                                "pred": pd.array([0, pd.NA, 1, pd.NA], dtype="Int64")})
    votes = vote_table(predictions, classes=2)
    assert votes[["votes_0", "votes_1"]].to_numpy().tolist() == [[1, 0], [0, 1]]
