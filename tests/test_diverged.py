"""Runs that diverged or failed are not answers (issue 12, section D), and a last batch of one sample does not
fail a BatchNorm network (case 17): trained with the real runner on digits, read back as a user would."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from analysis import exam
from analysis.population import population
from analysis.seeds import per_network
from netzoo import report
from netzoo.cli import cli
from netzoo.results import load
from netzoo.runner import run_job
from synthetic import make_zoo as synthetic_zoo
from synthetic import stop_runs, write_results
from zoo_fixture import BATCH_NORM, HEALTHY, digits_job, make_zoo

DIVERGING = "NaNNet_1"  # its outputs are NaN: every run of it diverges at epoch 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The four healthy fixture networks and the NaN one, seeds 0 and 1, 2 epochs on digits: 8 runs answer, 2 do not."""
    root = tmp_path_factory.mktemp("diverged")
    zoo = make_zoo(root / "zoo", names=HEALTHY + (DIVERGING,))
    summary = run_job(digits_job(zoo, root / "results", seeds=(0, 1)))
    assert (summary.count("done"), summary.count("diverged")) == (8, 2)
    return root / "results"


# --- case 9: what a diverged run stores -----------------------------------------------------------
def test_a_diverged_run_stores_null_predictions_and_null_accuracies(trained):
    tables = load(trained)
    preds = tables.predictions
    assert str(preds["pred"].dtype) == "Int64"
    nan_rows = preds[preds["network"] == DIVERGING]
    # the rows stay (sample and label), the answers are absent: not class 0 for every sample
    assert len(nan_rows) == 2 * 360 and nan_rows["pred"].isna().all() and nan_rows["probs"].isna().all()
    assert nan_rows["label"].notna().all() and sorted(nan_rows["sample"].unique()) == list(range(360))
    healthy = preds[preds["network"] != DIVERGING]
    assert healthy["pred"].notna().all() and healthy["probs"].notna().all()
    epochs = tables.epochs.set_index(["network", "seed"]).loc[DIVERGING]
    for column in ["train_acc", "test_acc", "test_balanced_acc", "test_acc_class_0", "test_acc_class_9"]:
        assert epochs[column].isna().all(), column
    assert (epochs["status"] == "diverged").all()


def test_question_8_votes_sum_to_the_runs_that_did_not_diverge(trained):
    result = CliRunner().invoke(cli, ["exam", "8", "--results", str(trained), "--csv"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    votes = frame.filter(like="votes_").sum(axis=1)
    assert (votes == 8).all(), votes.value_counts()
    answer = exam.answer("8", trained)
    assert answer.attrs["left_out"] == 2 and answer.attrs["voters"] == 8


def test_an_older_results_folder_with_class_0_for_diverged_runs_still_leaves_them_out():
    """Results written before diverged epochs were stored as null: pred 0 for every sample, accuracy ~0.1."""
    zoo = synthetic_zoo(per_cell=1)
    runs = [("Conv2dReLU_0", 42), ("LinearTanh_0", 42), ("Conv3dSELU_0", 42)]
    old = stop_runs(zoo, runs, at_epoch=4)
    hit = old.predictions["pred"].isna()
    old.predictions["pred"] = old.predictions["pred"].fillna(0).astype("int64")  # what argmax of NaN gave
    old.predictions.loc[hit, "probs"] = pd.Series([np.full(10, np.nan, np.float16)] * int(hit.sum()),
                                                  index=old.predictions.index[hit])
    answer = exam.q8_samples(old)
    assert answer.attrs["voters"] == 41 - 3 and answer.attrs["left_out"] == 3
    easy = answer[answer["kind"] == "easy"]
    assert sorted(easy["sample"]) == zoo.planted["easy"]  # no sample of label 0 is easy for the runs' sake


def test_every_question_leaves_diverged_and_failed_runs_out_and_says_how_many(tmp_path):
    zoo = synthetic_zoo(per_cell=1)
    tables = stop_runs(stop_runs(zoo, [("Conv2dReLU_0", 42), ("LinearTanh_0", 42)], at_epoch=2),
                       [("Conv1dSELU_0", 42)], status="failed", at_epoch=3)
    results = write_results(tables, tmp_path / "results")
    gone = {"Conv2dReLU_0", "LinearTanh_0", "Conv1dSELU_0"}
    for question in exam.QUESTIONS:
        frame = exam.answer(question, results)
        assert frame.attrs.get("left_out") == 3, question
        for column in ("network", "added"):
            if column in frame.columns:
                named = {str(v).split(" (seed")[0] for v in frame[column]}
                assert not named & gone, (question, named & gone)
    q1 = exam.answer("1", results)
    assert (q1["networks"] == 41 - 3).all()  # a run that diverged at epoch 2 does not count at epoch 1 either
    agreement = exam.answer("agreement", results).set_index(["family_a", "family_b"])
    assert agreement.loc[("Conv2d", "Linear"), ["networks_a", "networks_b"]].tolist() == [4, 4]


def test_the_exam_of_a_recipe_under_which_every_run_diverged_says_so_in_one_line(tmp_path):
    zoo = make_zoo(tmp_path / "zoo", names=(DIVERGING,))
    run_job(digits_job(zoo, tmp_path / "results", epochs=1))
    for question in ("2", "8"):
        proc = subprocess.run([sys.executable, "-m", "netzoo.cli", "exam", question, "--results",
                               str(tmp_path / "results")], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: No run answers: all 1 runs of this recipe diverged or failed")
        assert len(proc.stderr.strip().splitlines()) == 1 and not proc.stdout
    made = subprocess.run([sys.executable, "-m", "netzoo.cli", "report", "--results", str(tmp_path / "results")],
                          capture_output=True, text=True)
    assert made.returncode == 0 and "Traceback" not in made.stderr, made.stderr
    page = (tmp_path / "results" / "report" / "index.html").read_text()
    assert "Not answered: No run answers" in page and "Not shown: " not in page  # no section failed


# --- case 10: one rule for means over seeds ---------------------------------------------------------
def test_exam_and_seed_report_agree_on_seeds_of_a_network_that_diverged_in_two(tmp_path):
    zoo = synthetic_zoo(per_cell=1, seeds=(0, 1, 2))
    tables = stop_runs(zoo, [("Conv2dReLU_0", 0), ("Conv2dReLU_0", 1)], at_epoch=2)
    pop = population(tables).set_index("network")
    assert pop.loc["Conv2dReLU_0", ["n_seeds", "seeds_dropped"]].tolist() == [1, 2]
    assert np.isnan(pop.loc["Conv2dReLU_0", "test_balanced_acc_ci95"])
    assert pop.loc["Conv1dReLU_0", ["n_seeds", "seeds_dropped"]].tolist() == [3, 0]
    seeds = per_network(tables.epochs, networks=tables.networks).set_index("network")
    assert seeds.loc["Conv2dReLU_0", ["n_seeds", "seeds_dropped"]].tolist() == [1, 2]
    assert seeds.loc["Conv2dReLU_0", "mean"] == pytest.approx(pop.loc["Conv2dReLU_0", "test_balanced_acc_mean"])

    written = report.write_report(write_results(tables, tmp_path / "results"), tmp_path / "report")
    table = pd.read_csv(written.parent / "tables" / "seeds-ci.csv").set_index("network")
    assert table.loc["Conv2dReLU_0", ["n_seeds", "seeds_dropped"]].tolist() == [1, 2]
    page = written.read_text()
    assert "2 runs left out (diverged or failed)" in page


def test_a_run_stopped_early_counts_with_its_last_epoch_in_the_exam_and_the_seed_report():
    zoo = synthetic_zoo(per_cell=1, seeds=(0, 1))
    tables = stop_runs(zoo, [("Conv2dReLU_0", 1)], status="stopped_early", at_epoch=3)
    pop = population(tables).set_index("network")
    seeds = per_network(tables.epochs, networks=tables.networks).set_index("network")
    assert pop.loc["Conv2dReLU_0", "n_seeds"] == seeds.loc["Conv2dReLU_0", "n_seeds"] == 2
    assert pop.attrs["left_out"] == 0


# --- the whole flow, as a user runs it ---------------------------------------------------------------
@pytest.mark.parametrize("lenses", [["--no-lenses"], []], ids=["no-lenses", "lenses"])
def test_a_diverging_sgd_recipe_then_exam_and_report_say_what_was_left_out(tmp_path, lenses):
    zoo = make_zoo(tmp_path / "zoo", names=HEALTHY)
    recipe = tmp_path / "sgd-huge.toml"
    recipe.write_text('[recipe]\nname = "sgd-huge"\noptimizer = "sgd"\nlr = 1e6\nepochs = 2\n')
    results = tmp_path / "results"
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", "--zoo", str(zoo), "--dataset", "digits", "--results", str(results),
                                  "--recipe", str(recipe), "--seeds", "0,1,2", "--workers", "1", "--device", "cpu",
                                  *lenses, "--quiet"])
    assert trained.exit_code == 0, trained.output
    networks = load(results).networks
    diverged = int((networks["status"] == "diverged").sum())
    assert diverged >= 1, networks[["network", "seed", "status"]]
    assert load(results).epochs.query("status == 'diverged'")["test_acc"].isna().all()
    answering = len(networks) - diverged
    if answering:
        csv = runner.invoke(cli, ["exam", "8", "--results", str(results), "--csv"])
        assert csv.exit_code == 0, csv.output
        votes = pd.read_csv(io.StringIO(csv.stdout)).filter(like="votes_").sum(axis=1)
        assert (votes == answering).all()
    for question in [str(q) for q in range(1, 11)]:
        answered = runner.invoke(cli, ["exam", question, "--results", str(results)])
        assert answered.exit_code in (0, 2), answered.output  # 2: nothing left to answer, said in one line
        assert "Traceback" not in answered.output
        if answered.exit_code == 0:
            assert answered.output.rstrip().endswith(f"left out (diverged or failed)."), (question, answered.output)
    made = runner.invoke(cli, ["report", "--results", str(results), "--out", str(tmp_path / "report")])
    assert made.exit_code == 0, made.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert re.search(rf"{diverged} runs? left out \(diverged or failed\)", page)
    text = re.sub(r"<[^>]+>", " ", re.sub(r"(data:[^\"']+|<script.*?</script>|<style.*?</style>)", " ", page, flags=re.S))
    if not lenses:  # the health table keeps diverged runs (their gradients), says how many, counts them exploding
        found = re.search(rf"Of \d+ runs at the last epoch \({diverged} of them diverged[^)]*\):.*? (\d+) with one over "
                          r"[\d.e+]+ \(exploding\)", text, flags=re.S)
        assert found and int(found.group(1)) >= diverged, text[:3000]
    shown = re.findall(r"\b(?:nan|NaN|inf)\b", text)
    assert not shown, [text[max(0, m.start() - 80):m.end() + 20] for m in re.finditer(r"\b(?:nan|NaN|inf)\b", text)][:3]


# --- case 17: BatchNorm and a last batch of one sample ----------------------------------------------
def test_a_batch_norm_zoo_trains_at_batch_size_4_on_digits_and_records_the_merged_batch(tmp_path):
    zoo = make_zoo(tmp_path / "zoo", names=tuple(BATCH_NORM), batch_norm=True)
    job = digits_job(zoo, tmp_path / "results", epochs=1)
    job = dataclasses.replace(job, recipe=job.recipe.replace(batch_norm=True, batch_size=4))
    summary = run_job(job)  # 1437 training samples: 359 batches of 4 and one of 1
    assert summary.count("done") == 1, summary.outcomes
    networks = load(tmp_path / "results").networks
    assert networks["last_batch_merged"].tolist() == [True]


def test_generate_batch_norm_then_train_at_batch_size_4_from_the_cli(tmp_path):
    runner = CliRunner()
    made = runner.invoke(cli, ["generate", "--spec", "tests/data/tiny.toml", "--dataset", "digits", "--batch-norm",
                               "--out", str(tmp_path / "zoo"), "--quiet"])
    assert made.exit_code == 0, made.output
    recipe = tmp_path / "bn4.toml"
    recipe.write_text('[recipe]\nname = "bn4"\nbatch_norm = true\nbatch_size = 4\nepochs = 1\n')
    trained = runner.invoke(cli, ["train", "--zoo", str(tmp_path / "zoo"), "--dataset", "digits", "--results",
                                  str(tmp_path / "results"), "--recipe", str(recipe), "--networks", "Linear*,Basic",
                                  "--workers", "1", "--device", "cpu", "--no-lenses", "--quiet"])
    assert trained.exit_code == 0, trained.output
    assert "failed" in trained.output and " 0 failed" in trained.output, trained.output
    networks = load(tmp_path / "results").networks.set_index("network")
    with_bn = networks[networks["depth"] > 1]
    assert len(with_bn) and with_bn["last_batch_merged"].all()
    assert not networks.loc["Basic", "last_batch_merged"]  # no hidden layer, no BatchNorm: nothing to merge


def test_the_runs_left_out_are_said_on_stderr_with_csv_or_without(trained):
    """The note must reach a user who pipes the CSV (stdout stays clean CSV) and one who reads the table."""
    for flags in (["--csv"], []):
        proc = subprocess.run([sys.executable, "-m", "netzoo.cli", "exam", "8", "--results", str(trained), *flags],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "2 runs left out (diverged or failed)." in proc.stderr, (flags, proc.stderr)
        assert "left out" not in proc.stdout
    frame = pd.read_csv(io.StringIO(subprocess.run(
        [sys.executable, "-m", "netzoo.cli", "exam", "8", "--results", str(trained), "--csv"],
        capture_output=True, text=True).stdout))
    assert (frame.filter(like="votes_").sum(axis=1) == 8).all()


@pytest.mark.parametrize("question", ["1", "8", "label-issues"])
@pytest.mark.parametrize("epoch", ["9", "0"])
def test_an_epoch_no_run_reached_is_named_in_one_line(trained, question, epoch):
    proc = subprocess.run([sys.executable, "-m", "netzoo.cli", "exam", question, "--results", str(trained),
                           "--epoch", epoch], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: No run in {trained} has an epoch {epoch}: its runs hold epochs 1 to 2.")
    assert len(proc.stderr.strip().splitlines()) == 1 and not proc.stdout
