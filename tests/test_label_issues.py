"""Label issues from a population of networks, beside cleanlab, on synthetic tables whose answer is planted."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis import label_issues as li
from netzoo.errors import LabelListError, ResultsError
from synthetic import from_predictions, write_results

K, N = 3, 60
MISLABELLED = 7      # every run gives class 2 0.98, the given label 0 0.01
SPREAD = 8           # every run is wrong, but the runs disagree on the class
COLUMNS = ["sample", "label", "suggested_label", "score", "rank", "wrong_share", "runs", "cleanlab_score",
           "cleanlab_rank"]


def planted(runs: int = 6, seed: int = 0):
    """R runs on N samples of K classes: ordinary samples right (p 0.8) except a few wrong at p 0.6;
    MISLABELLED confidently called another class by every run; SPREAD wrong, votes spread."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % K
    labels[MISLABELLED] = 0
    preds = np.tile(labels, (runs, 1))
    conf = np.full((runs, N), 0.8)
    for r in range(runs):                           # a few honest mistakes per run, never on the planted ones
        wrong = rng.choice([s for s in range(10, N)], 3, replace=False)
        preds[r, wrong] = (labels[wrong] + 1) % K
        conf[r, wrong] = 0.6
    preds[:, MISLABELLED] = 2
    conf[:, MISLABELLED] = 0.98
    preds[:, SPREAD] = [(labels[SPREAD] + 1 + r % 2) % K for r in range(runs)]
    conf[:, SPREAD] = 0.6
    probs = np.empty((runs, 1, N, K), dtype=np.float32)
    rest = (1 - conf) / (K - 1)
    probs[:, 0] = rest[..., None]
    np.put_along_axis(probs[:, 0], preds[..., None], conf[..., None], axis=-1)
    probs[:, 0, MISLABELLED] = [0.01, 0.01, 0.98]
    meta = pd.DataFrame({"network": [f"LinearReLU_{r}" for r in range(runs)], "seed": 42})
    return from_predictions(meta, preds[:, None, :], labels, K, probs=probs)


@pytest.fixture(scope="module")
def tables():
    return planted()


def test_planted_mislabelled_sample_ranks_first_in_the_population_ranking(tables):
    issues = li.label_issues(tables)
    assert list(issues.columns) == COLUMNS
    first = issues.iloc[0]
    assert (first["sample"], first["rank"], first["label"], first["suggested_label"]) == (MISLABELLED, 1, 0, 2)
    assert first["wrong_share"] == 1.0 and first["runs"] == 6
    assert first["score"] == pytest.approx(0.01 - 0.98, abs=1e-3)
    assert sorted(issues["rank"]) == list(range(1, N + 1))


def test_planted_mislabelled_sample_ranks_first_in_cleanlabs_ranking(tables):
    pytest.importorskip("cleanlab")
    issues = li.label_issues(tables)
    assert issues.loc[issues["cleanlab_rank"] == 1, "sample"].item() == MISLABELLED
    assert issues.attrs["cleanlab_issues"] >= 1 and issues.attrs["notes"] == []
    ensemble = li.cleanlab_ensemble_ranking(li.run_probs(tables))
    assert ensemble.loc[ensemble["ensemble_rank"] == 1, "sample"].item() == MISLABELLED


def test_an_agreed_rival_class_is_more_suspect_than_votes_spread_over_classes(tables):
    # both samples: every run wrong; only the first looks like a label error (one class the runs agree on)
    issues = li.label_issues(tables).set_index("sample")
    assert issues.loc[SPREAD, "wrong_share"] == issues.loc[MISLABELLED, "wrong_share"] == 1.0
    assert issues.loc[MISLABELLED, "rank"] < issues.loc[SPREAD, "rank"]


def test_cleanlab_columns_are_empty_with_a_note_when_cleanlab_is_missing(tables, monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab now raises ImportError
    issues = li.label_issues(tables)
    assert list(issues.columns) == COLUMNS
    assert issues["cleanlab_score"].isna().all() and issues["cleanlab_rank"].isna().all()
    assert issues.attrs["notes"] == [li.NO_CLEANLAB] and "netzoo[data]" in li.NO_CLEANLAB
    assert issues.iloc[0]["sample"] == MISLABELLED   # the population's ranking does not need cleanlab
    assert li.cleanlab_ensemble_ranking(li.run_probs(tables)) is None


def test_the_single_network_is_picked_by_training_accuracy_never_by_test_accuracy():
    tables = planted()
    tables.epochs["train_acc"] = [0.5, 0.9, 0.6, 0.6, 0.6, 0.6]      # LinearReLU_1 trains best
    tables.epochs.loc[tables.epochs["network"] == "LinearReLU_3", "test_acc"] = 1.0  # a better test score: ignored
    rp = li.run_probs(tables)
    row, why = li.single_network(rp)
    assert rp.runs.loc[row, "network"] == "LinearReLU_1" and "training accuracy" in why
    row, why = li.single_network(rp, "LinearReLU_4")
    assert rp.runs.loc[row, "network"] == "LinearReLU_4" and why == "named with --network"
    with pytest.raises(ResultsError, match="No answering run of network 'Nope'"):
        li.single_network(rp, "Nope")


def test_diverged_failed_and_probability_less_runs_are_left_out_and_counted():
    tables = planted(runs=8)
    nets, preds = tables.networks, tables.predictions
    nets.loc[nets["network"] == "LinearReLU_0", "status"] = "diverged"
    nets.loc[nets["network"] == "LinearReLU_1", "status"] = "failed"
    nets.loc[nets["network"] == "LinearReLU_2", "status"] = "stopped_early"   # answers: kept
    nulls = preds["network"] == "LinearReLU_3"                              # a diverged epoch: null pred/probs
    preds["pred"] = preds["pred"].astype("Int64")
    preds.loc[nulls, "pred"] = pd.NA
    preds["probs"] = preds["probs"].astype(object)
    preds.loc[nulls, "probs"] = None
    nan_run = preds.index[preds["network"] == "LinearReLU_4"]
    preds.loc[nan_run, "probs"] = pd.Series([np.full(K, np.nan, np.float16)] * len(nan_run), index=nan_run)
    issues = li.label_issues(tables)
    assert issues.attrs["left_out"] == 4 and issues.attrs["runs"] == 4
    assert (issues["runs"] == 4).all() and issues.iloc[0]["sample"] == MISLABELLED
    assert any("4 runs left out" in note for note in issues.attrs["notes"])


def test_results_without_null_probs_lose_no_run(tables):
    assert li.label_issues(tables).attrs["left_out"] == 0


def test_no_predictions_or_one_run_only_is_refused():
    empty = planted()
    empty.predictions = empty.predictions.iloc[:0]
    with pytest.raises(ResultsError, match="no predictions"):
        li.label_issues(empty)
    one = planted(runs=2)
    one.networks.loc[one.networks["network"] == "LinearReLU_1", "status"] = "diverged"
    with pytest.raises(ResultsError, match="Only 1 run answers"):
        li.label_issues(one)


def test_precision_at_k_counts_known_errors_in_each_rankings_top(tables):
    issues = li.label_issues(tables)
    precision = li.precision_at_k(issues, [MISLABELLED, 40], ks=(1, 10))
    population = precision[precision["ranking"] == "rank"].set_index("k")
    assert population.loc[1, "found"] == 1 and population.loc[1, "precision"] == 1.0
    assert population.loc[1, "recall"] == 0.5
    no_cleanlab = issues.assign(cleanlab_rank=pd.NA)
    empty = li.precision_at_k(no_cleanlab, [MISLABELLED], ks=(1,))
    assert empty.set_index("ranking").loc["cleanlab_rank", ["found", "precision"]].isna().all()


def test_known_label_errors_must_be_integers_inside_the_test_split():
    samples = range(N)
    assert li.parse_sample_list("# known\n7\n\n12\n7\n", samples) == [7, 12]
    with pytest.raises(LabelListError, match="line 2: 'seven' is not a test index"):
        li.parse_sample_list("1\nseven\n", samples, source="errs.txt")
    with pytest.raises(LabelListError, match="line 1: sample 60 is outside the test split"):
        li.parse_sample_list("60\n", samples)
    with pytest.raises(LabelListError, match="line 1: .* is not a test index"):
        li.parse_sample_list("3.5\n", samples)
    with pytest.raises(LabelListError, match="names no sample"):
        li.parse_sample_list("# nothing\n", samples)


def test_top_k_overlap_and_size_stability(tables):
    issues = li.label_issues(tables)
    same = li.top_k_overlap(issues, "rank", "rank", ks=(5, 10))
    assert same["overlap"].tolist() == [1.0, 1.0] and same["jaccard"].tolist() == [1.0, 1.0]
    shifted = issues.assign(other=issues["rank"].where(issues["rank"] != 1, N + 1))  # drop the first from top 5
    assert li.top_k_overlap(shifted, "rank", "other", ks=(5,)).iloc[0]["common"] == 4
    rp = li.run_probs(tables)
    stability = li.size_stability(rp, sizes=(2, 3, 100), k=1, repeats=4, seed=0)
    assert stability["runs"].tolist() == [2, 3, 6]               # 100 > the population: left out
    assert stability["overlap_mean"].tolist() == [1.0, 1.0, 1.0]  # every subset agrees on the planted sample
    again = li.size_stability(rp, sizes=(2, 3), k=5, repeats=4, seed=0)
    pd.testing.assert_frame_equal(again, li.size_stability(rp, sizes=(2, 3), k=5, repeats=4, seed=0))


def test_trivial_and_impossible_samples_are_counted_beside_easy_weird_and_confusing(tables):
    counts = li.difficulty(li.run_probs(tables)).set_index("kind")
    assert list(counts.index) == ["easy", "weird", "confusing", "trivial", "impossible"]
    # impossible: MISLABELLED and SPREAD (no run right); weird: MISLABELLED only (the wrong runs agree)
    assert counts.loc["impossible", "samples"] == 2 and counts.loc["weird", "samples"] == 1
    assert counts.loc["trivial", "samples"] == counts.loc["easy", "samples"] > 0
    assert counts.loc["impossible", "share"] == pytest.approx(2 / N)


# --- the command line ----------------------------------------------------------------------------
def _netzoo(*args):
    return subprocess.run([sys.executable, "-m", "netzoo.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return write_results(planted(), tmp_path_factory.mktemp("li") / "results")


def test_exam_label_issues_prints_the_contract_columns(results):
    proc = _netzoo("exam", "label-issues", "--results", str(results), "--csv")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == ",".join(COLUMNS) and lines[1].startswith(f"{MISLABELLED},0,2,")
    assert len(lines) == N + 1


def test_exam_label_issues_reports_precision_for_known_label_errors(results, tmp_path):
    known = tmp_path / "known.txt"
    known.write_text(f"{MISLABELLED}\n")
    proc = _netzoo("exam", "label-issues", "--results", str(results), "--csv", "--known-label-errors", str(known))
    assert proc.returncode == 0, proc.stderr
    assert "precision at k" in proc.stderr and "population: k=10 0.10" in proc.stderr
    assert proc.stdout.splitlines()[0] == ",".join(COLUMNS)


@pytest.mark.parametrize("text, message", [("7\nx\n", "is not a test index"), ("99999\n", "outside the test split"),
                                           ("-1\n", "outside the test split")])
def test_exam_label_issues_refuses_a_bad_known_errors_file_in_one_line(results, tmp_path, text, message):
    known = tmp_path / "known.txt"
    known.write_text(text)
    proc = _netzoo("exam", "label-issues", "--results", str(results), "--known-label-errors", str(known))
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_exam_label_issues_refuses_a_missing_known_errors_file_and_one_run_only(tmp_path, results):
    proc = _netzoo("exam", "label-issues", "--results", str(results), "--known-label-errors", str(tmp_path / "no"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "No file" in proc.stderr
    one = planted(runs=1)
    lone = write_results(one, tmp_path / "one")
    proc = _netzoo("exam", "label-issues", "--results", str(lone))
    assert proc.returncode == 2 and "Only 1 run answers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_known_label_errors_go_with_label_issues_only(results, tmp_path):
    known = tmp_path / "known.txt"
    known.write_text("7\n")
    proc = _netzoo("exam", "8", "--results", str(results), "--known-label-errors", str(known))
    assert proc.returncode == 2 and "label-issues" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_exam_label_issues_without_cleanlab_prints_empty_columns_and_one_note(results, monkeypatch):
    from click.testing import CliRunner

    from netzoo.cli import cli

    monkeypatch.setitem(sys.modules, "cleanlab", None)
    result = CliRunner().invoke(cli, ["exam", "label-issues", "--results", str(results), "--csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith(",,")           # cleanlab_score, cleanlab_rank empty
    assert result.stderr.strip() == li.NO_CLEANLAB                # one line saying why
