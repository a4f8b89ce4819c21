"""The HTML report: every analysis module's sections assembled into one self-contained index.html.

write_report() loads the results once, asks each module in REPORT_MODULES for its sections
(``report_sections(tables, results_dir=None, select_on=None) -> list[Section]``, the one signature of every
report module: the tables the report loaded, the results folder to read more from through ``netzoo.results``,
and the split networks are picked on, ``analysis.population.selection_metric``), saves every
chart as PNG and SVG (OUT/charts/) and every table as CSV (OUT/tables/), and writes OUT/index.html with the PNGs embedded as data URIs, so the file opens from
the file system with no server. A module that is not installed is skipped; one that fails shows its error
as a skipped section instead of breaking the report. Nothing here computes a number.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib
import importlib.util
import io
import logging
import time
import webbrowser
from pathlib import Path

import pandas as pd

from analysis.section import Section
from netzoo import files
from netzoo.errors import NetzooError, ResultsError

log = logging.getLogger(__name__)

# The integration point: modules whose report_sections(tables, results_dir=...) the report calls, in this order.
# A module listed here that does not exist yet is skipped (importlib.util.find_spec).
REPORT_MODULES = ("analysis.exam_report", "analysis.beyond_report", "analysis.verdicts_report", "analysis.lenses",
                  "analysis.recipes", "analysis.seeds")
MAX_ROWS = 40        # rows of a table shown in the page; the full table is in OUT/tables/<key>.csv
PNG_DPI = 110
_PREDICTION_COLUMNS = ["network", "recipe", "recipe_hash", "seed", "epoch", "sample", "label", "pred"]


# --- loading -------------------------------------------------------------------------------------
def load_tables(results_dir: Path):
    """networks, epochs and layers in full, and the predictions of each run's last epoch without probs
    (what every section needs; ensembles read their few runs' probabilities separately)."""
    from netzoo.results import load

    tables = load(results_dir, tables=["networks", "epochs", "layers"])
    tables.predictions = load(results_dir, tables=["predictions"], columns={"predictions": _PREDICTION_COLUMNS},
                              epoch="last").predictions
    return tables


# --- collecting sections -------------------------------------------------------------------------
def collect_sections(tables, results_dir: Path | None = None, modules=REPORT_MODULES,
                     select_on: str | None = None) -> list[Section]:
    """Every listed module's sections, in order, networks picked on ``select_on`` wherever a module picks.
    Missing modules are skipped; a module whose question the results cannot answer (NetzooError) becomes a
    "Not answered" section saying why, one that fails otherwise a "Skipped" section naming the error (logged with
    its traceback: a bug)."""
    sections: list[Section] = []
    for name in modules:
        if importlib.util.find_spec(name) is None:
            log.info("report: %s is not installed; its sections are left out", name)
            continue
        module = importlib.import_module(name)
        if not hasattr(module, "report_sections"):
            continue
        try:
            sections += module.report_sections(tables, results_dir=results_dir, select_on=select_on)
        except NetzooError as exc:  # a question these results cannot answer (e.g. every run diverged): said, no trace
            log.info("report: %s: not answered: %s", name, exc)
            sections.append(Section(name, name, f"Sections of {name}", f"Not answered: {exc}", group="Skipped"))
        except Exception as exc:  # one module's bug must not cost the whole report
            log.warning("report: %s.report_sections failed: %s", name, exc, exc_info=True)
            sections.append(Section(name, name, f"Sections of {name}", f"Not shown: {type(exc).__name__}: {exc}",
                                    group="Skipped"))
    return sections


# --- rendering -----------------------------------------------------------------------------------
def _display(table: pd.DataFrame) -> pd.DataFrame:
    """A table for the page: value ± ci95 where a ``*_ci95`` column holds numbers, 4 significant digits."""
    table = table.copy()
    for ci in [c for c in table.columns if str(c).endswith("_ci95")]:
        base = str(ci).removesuffix("_ci95")
        value = base + "_mean" if base + "_mean" in table.columns else base
        if value in table.columns and table[ci].notna().any():
            table[value] = [f"{_number(v)} ± {e:.2g}" if pd.notna(e) else _number(v)
                            for v, e in zip(table[value], table[ci])]
        table = table.drop(columns=ci)
    for column in table.columns:
        if pd.api.types.is_float_dtype(table[column]):
            table[column] = table[column].map(_number)
    return table


def _number(v: float) -> str:
    """4 significant digits; large numbers in full with separators (25,351 rather than 2.535e+04)."""
    return "" if pd.isna(v) else f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def _save_figure(fig, stem: Path) -> str:
    """Save ``fig`` as stem.png and stem.svg; return the PNG as a data URI."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    files.atomic_write(stem.with_suffix(".png"), lambda f: f.write(buffer.getvalue()))
    fig.set_layout_engine("none")  # keep the layout the PNG computed: laying out twice doubles the cost
    files.atomic_write(stem.with_suffix(".svg"), lambda f: fig.savefig(f, format="svg"))
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _render_section(section: Section, out: Path) -> str:
    """One section's HTML; writes its charts and its CSV."""
    parts = [f'<section id="{html.escape(section.key)}"><h2>{html.escape(section.title)}</h2>',
             f'<p class="question">{html.escape(section.question)}</p>',
             f'<p class="finding">{html.escape(section.finding)}</p>']
    for i, fig in enumerate(section.figures):
        stem = out / "charts" / f"{section.key}-{i + 1}"
        uri = _save_figure(fig, stem)
        title = fig.get_suptitle() or section.title
        parts.append(f'<figure><img src="{uri}" alt="{html.escape(title)}">'
                     f'<figcaption><a href="charts/{stem.name}.svg">SVG</a> · '
                     f'<a href="charts/{stem.name}.png">PNG</a></figcaption></figure>')
    if section.table is not None and len(section.table.columns):
        csv = out / "tables" / f"{section.key}.csv"
        files.atomic_write_text(csv, section.table.to_csv(index=False))
        shown = _display(section.table.head(MAX_ROWS))
        parts.append(shown.to_html(index=False, border=0, classes="table", na_rep=""))
        more = f"first {MAX_ROWS} of {len(section.table)} rows; " if len(section.table) > MAX_ROWS else ""
        parts.append(f'<p class="note">{more}full table: <a href="tables/{csv.name}">{csv.name}</a></p>')
    parts.append("</section>")
    return "\n".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.question{font-style:italic;color:#555}
.finding{background:#f3f7fb;border-left:4px solid #1f77b4;padding:.6em .9em}
figure{margin:1em 0} img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8em;color:#777}
table.table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
table.table th,table.table td{padding:.25em .6em;border-bottom:1px solid #e5e5e5;text-align:right}
table.table th{background:#fafafa;position:sticky;top:0}
.note{font-size:.8em;color:#777} nav ol{columns:2} .meta{color:#666;font-size:.9em}
"""


def _header(tables, results_dir: Path, select_on: str | None = None) -> str:
    """Title and what the report covers: dataset, networks, recipes, seeds, epochs, and which split picked the
    networks."""
    from analysis.population import for_recipe, selection_metric, selection_note

    networks, epochs = tables.networks, tables.epochs
    dataset = ", ".join(sorted(networks["dataset"].dropna().unique())) if "dataset" in networks else "?"
    facts = [f"dataset {dataset}", f"{networks['network'].nunique()} networks", f"{len(networks)} runs",
             f"recipes: {', '.join(sorted(networks['recipe'].unique()))}",
             f"seeds: {', '.join(map(str, sorted(networks['seed'].unique())))}",
             f"epochs: {int(epochs['epoch'].max()) if len(epochs) else 0}"]
    recipes = networks.groupby(["recipe", "recipe_hash"]).size().sort_values(ascending=False)
    if len(recipes) > 1:
        from analysis.population import recipe_hash

        chosen = recipe_hash(tables)
        name = next(r for r, h in recipes.index if h == chosen)
        facts.append(f"the exam answers recipe {name} ({chosen}), the one with the most runs")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<h1>netzoo report: {html.escape(str(results_dir))}</h1><p class=\"meta\">{html.escape(' · '.join(facts))}"
            f" · written {stamp}. Accuracy is the mean per-class recall on the test split (the study's); "
            f"with several seeds, numbers per network are the mean over seeds (± 95% CI). "
            f"{html.escape(selection_note(selection_metric(for_recipe(tables), select_on)))}</p>")


def render(sections: list[Section], tables, results_dir: Path, out: Path, select_on: str | None = None) -> Path:
    """Write OUT/index.html (and its charts and tables) from sections; return its path."""
    for folder in (out / "charts", out / "tables"):
        folder.mkdir(parents=True, exist_ok=True)
    shown = [s for s in sections if s.group != "Skipped"]
    skipped = [s for s in sections if s.group == "Skipped"]
    body, toc, group = [], [], None
    for section in shown:
        if section.group != group:
            group = section.group
            body.append(f"<h1 id=\"group-{html.escape(group)}\">{html.escape(group)}</h1>")
            toc.append(f"<li><b>{html.escape(group)}</b></li>")
        toc.append(f'<li><a href="#{html.escape(section.key)}">{html.escape(section.title)}</a></li>')
        body.append(_render_section(section, out))
    if skipped:
        items = "".join(f"<li><b>{html.escape(s.title)}</b>: {html.escape(s.finding)}</li>" for s in skipped)
        body.append(f'<h1 id="skipped">Not shown</h1><ul class="note">{items}</ul>')
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>netzoo report</title>"
            f"<style>{CSS}</style></head><body>{_header(tables, results_dir, select_on)}<nav><ol>{''.join(toc)}</ol></nav>"
            f"{''.join(body)}</body></html>")
    return files.atomic_write_text(out / "index.html", page)


def write_report(results, out=None, open_browser: bool = False, select_on: str | None = None) -> Path:
    """Write the report of results folder ``results`` to OUT/index.html (default RESULTS/report); return its path.
    ``select_on``: "val", "test" or None (val when the results hold a validation split): the split every section
    picks networks on (analysis.population.selection_metric); the header says which."""
    results_dir = Path(results)
    if not results_dir.is_dir():
        raise ResultsError(f"No results folder at {results_dir}. Train first: netzoo train --results {results_dir} ...")
    out = Path(out) if out is not None else results_dir / "report"
    started = time.perf_counter()
    tables = load_tables(results_dir)
    if tables.networks.empty:
        raise ResultsError(f"{results_dir} holds no complete networks yet: run netzoo train --results {results_dir} "
                           f"(netzoo status --results {results_dir} shows what is done).")
    from analysis.population import for_recipe, selection_metric

    selection_metric(for_recipe(tables), select_on)  # --select-on val without a validation split stops here
    sections = collect_sections(tables, results_dir, select_on=select_on)
    path = render(sections, tables, results_dir, out, select_on)
    log.info("report: %d sections in %.1f s -> %s", len(sections), time.perf_counter() - started, path)
    if open_browser:
        webbrowser.open(path.resolve().as_uri())
    return path
