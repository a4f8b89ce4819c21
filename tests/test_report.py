"""The HTML report: one self-contained index.html with every section, charts saved as SVG and PNG, opened in a
real browser (headless Chromium) where every image must load."""

import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from analysis import exam_report
from netzoo import report
from netzoo.cli import cli
from synthetic import make_zoo, write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXAM_KEYS = ["q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q8-weird", "q8-confusing", "q8-easy", "q9", "q10",
             "pareto", "ensembles", "agreement"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A report of a small synthetic zoo (41 networks, 4 epochs, 360 test samples)."""
    results = write_results(make_zoo(per_cell=1), tmp_path_factory.mktemp("zoo") / "results")
    return results, report.write_report(results)


def test_report_has_a_section_per_question_with_its_finding_and_table(written):
    results, path = written
    assert path == results / "report" / "index.html"
    page = path.read_text()
    for key in EXAM_KEYS:
        assert f'<section id="{key}">' in page, f"no section {key}"
    assert page.count('<p class="finding">') >= len(EXAM_KEYS)
    assert "3 weird samples: 0, 1, 2." in page  # the planted weird samples, stated in the finding
    assert (results / "report" / "tables" / "q8-weird.csv").is_file()


def test_charts_are_embedded_and_also_saved_as_svg_and_png(written):
    results, path = written
    page = path.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)  # no server, no files
    charts = results / "report" / "charts"
    pngs, svgs = sorted(charts.glob("*.png")), sorted(charts.glob("*.svg"))
    assert len(pngs) == len(svgs) == len(sources)
    assert all(p.stat().st_size > 1000 for p in pngs + svgs)


def test_a_missing_or_failing_module_does_not_break_the_report(tmp_path, monkeypatch, written):
    results, _ = written
    (tmp_path / "broken_sections.py").write_text(
        "def report_sections(tables, results_dir=None, select_on=None):\n    raise RuntimeError('boom')\n")
    (tmp_path / "extra_sections.py").write_text(
        "from analysis.section import Section\n"
        "def report_sections(tables, results_dir=None, select_on=None):\n"
        "    return [Section('extra', 'Extra', 'Is it there?', f'{len(tables.networks)} networks.')]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tables = report.load_tables(results)
    sections = report.collect_sections(tables, modules=["analysis.not_written_yet", "broken_sections",
                                                        "extra_sections"])
    assert [(s.key, s.group) for s in sections] == [("broken_sections", "Skipped"), ("extra", "Exam")]
    assert "RuntimeError: boom" in sections[0].finding and sections[1].finding == "41 networks."
    path = report.render(sections, tables, results, tmp_path / "out")
    page = path.read_text()
    assert '<section id="extra">' in page and "RuntimeError: boom" in page


def test_a_question_without_data_is_listed_as_not_shown(tmp_path):
    zoo = make_zoo(per_cell=1)
    zoo.networks = zoo.networks[zoo.networks["network"] != "Basic"]
    results = write_results(zoo, tmp_path / "results")
    tables = report.load_tables(results)
    sections = exam_report.collect([b for b in exam_report.BUILDERS if b[0] in ("q9", "q10")], tables)
    assert [(s.key, s.group) for s in sections] == [("q9", "Exam"), ("q10", "Skipped")]
    page = report.render(sections, tables, results, tmp_path / "out").read_text()
    assert '<section id="q10">' not in page and "no Basic network" in page
    assert '<section id="q9">' in page


def test_cli_report_writes_to_out(tmp_path, written, monkeypatch):
    results, _ = written
    monkeypatch.setattr(report, "collect_sections", lambda tables, results_dir=None, select_on=None: [])  # the wiring only
    result = CliRunner().invoke(cli, ["report", "--results", str(results), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "index.html").is_file() and "report:" in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_renders_in_headless_chromium_and_every_image_loads(written, tmp_path):
    _, path = written
    checked = path.with_name("checked.html")
    probe = ("<script>addEventListener('load', () => { const imgs = [...document.images];"
             " const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
             " document.body.setAttribute('data-images', ok + '/' + imgs.length); });</script>")
    checked.write_text(path.read_text().replace("</body>", probe + "</body>"))
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=20000", "--dump-dom", checked.as_uri()],
                          capture_output=True, text=True, timeout=180)
    found = re.search(r'data-images="(\d+)/(\d+)"', proc.stdout)
    assert found, f"the page did not finish loading in chromium: {proc.stderr[-2000:]}"
    loaded, total = map(int, found.groups())
    assert total == len(re.findall(r"<img ", path.read_text())) > 0
    assert loaded == total, f"{total - loaded} of {total} images failed to load"


def test_open_flag_opens_the_report_in_a_browser(written, monkeypatch, tmp_path):
    results, _ = written
    opened = []
    monkeypatch.setattr(report.webbrowser, "open", opened.append)
    monkeypatch.setattr(report, "collect_sections", lambda tables, results_dir=None, select_on=None: [])
    path = report.write_report(results, out=tmp_path / "o", open_browser=True)
    assert opened == [path.resolve().as_uri()]



def test_a_family_and_an_activation_keep_their_colour_in_every_chart():
    from analysis.charts import palette

    assert palette("family", ["Conv2d"])["Conv2d"] == palette("family", ["Linear", "Conv2d", "Basic"])["Conv2d"]
    assert palette("activation", ["Tanh"])["Tanh"] == palette("activation", ["None", "Tanh"])["Tanh"]
    colours = palette("family", ["Linear", "Conv2d", "MyNewFamily"])
    assert len(set(colours.values())) == 3  # an unknown family still gets a colour of its own


def test_a_stray_empty_parquet_in_predictions_does_not_drop_the_beyond_sections(written, tmp_path):
    """The ensembles read their runs' probabilities through netzoo.results.load, which reads whole keys only:
    a stray file in DIR/predictions (here an empty .parquet another tool left) costs no section."""
    results, _ = written
    copy = tmp_path / "results"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("report"))
    (copy / "predictions" / "stray.parquet").write_bytes(b"")
    sections = report.collect_sections(report.load_tables(copy), copy)
    shown = {s.key: s.group for s in sections}
    assert {"pareto", "ensembles", "agreement"} <= set(shown), sorted(shown)
    assert shown["ensembles"] != "Skipped" and "Skipped" not in shown.values(), sections
