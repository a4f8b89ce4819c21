"""The report's sections on label issues, trivial/impossible samples, population size and cascades."""

import html
import re

import pytest

from analysis import verdicts_report
from netzoo import report
from synthetic import WEIRD, make_zoo, write_results

KEYS = ["label-issues", "trivial-impossible", "label-issues-size", "cascades"]


def _finding(page: str, key: str) -> str:
    found = re.search(f'<section id="{key}">.*?<p class="finding">(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)) if found else ""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return write_results(make_zoo(per_cell=1), tmp_path_factory.mktemp("verdicts") / "results")


def test_report_shows_label_issues_difficulty_size_and_cascades(results, tmp_path):
    (results / verdicts_report.KNOWN_FILE).write_text("\n".join(map(str, WEIRD)) + "\n")
    try:  # the report's own wiring: collect_sections hands this module the results folder
        tables = report.load_tables(results)
        sections = report.collect_sections(tables, results, modules=["analysis.verdicts_report"])
        page = report.render(sections, tables, results, tmp_path / "r").read_text()
    finally:
        (results / verdicts_report.KNOWN_FILE).unlink()
    for key in KEYS + ["label-issues-known"]:
        assert f'<section id="{key}">' in page, f"no section {key}"
    # the planted weird samples (every run answers label + 1) are the population's top suspects
    assert "The most suspect is #0: labelled 0, 100.0% of the runs call it 1" in _finding(page, "label-issues")
    assert "Known label errors among the top 20: population 3" in _finding(page, "label-issues-known")
    assert "3 impossible" in _finding(page, "trivial-impossible") and "5 are trivial" in _finding(page, "trivial-impossible")
    assert "10 runs:" in _finding(page, "label-issues-size")
    assert "read off the test split" in _finding(page, "cascades")
    for chart in ("label-issues-1", "label-issues-size-1", "cascades-1"):
        assert (tmp_path / "r" / "charts" / f"{chart}.png").is_file()


def test_without_probabilities_the_sections_say_why(results):
    tables = report.load_tables(results)          # predictions without probs, and no folder to read them from
    sections = verdicts_report.report_sections(tables)
    assert [s.group for s in sections] == ["Skipped"] * len(KEYS)
    assert all("probabilities" in s.finding or "probs" in s.finding for s in sections)


def test_a_bad_known_errors_file_is_named_in_the_report(results, tmp_path):
    (results / verdicts_report.KNOWN_FILE).write_text("12\nnot a number\n")
    try:
        sections = verdicts_report.report_sections(report.load_tables(results), results_dir=results)
    finally:
        (results / verdicts_report.KNOWN_FILE).unlink()
    label = [s for s in sections if s.key == "label-issues"][0]
    assert label.group == "Skipped" and "line 2: 'not a number' is not a test index" in label.finding
    assert [s for s in sections if s.key == "cascades"][0].group != "Skipped"


def test_runs_left_out_are_counted_in_the_findings(tmp_path):
    zoo = make_zoo(per_cell=1)
    diverged = zoo.networks["network"].isin(["LinearTanh_0", "Conv2dSELU_0"])
    zoo.networks.loc[diverged, "status"] = "diverged"
    results = write_results(zoo, tmp_path / "results")
    sections = {s.key: s for s in verdicts_report.report_sections(report.load_tables(results), results_dir=results)}
    assert "(2 runs left out: diverged, failed or without probabilities)" in sections["label-issues"].finding
    assert "(2 runs left out: diverged, failed or without probabilities)" in sections["cascades"].finding
    assert "every one of 39 runs right" in sections["trivial-impossible"].finding
