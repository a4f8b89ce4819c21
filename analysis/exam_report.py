"""The exam's report sections: each question's answer (from analysis.exam), its charts and its finding in words.

Every number shown or written here comes from an analysis function; this module only picks and phrases. Each
finding ends by saying how many runs the answer left out (diverged or failed: ``left_out_note``).
A question that cannot be answered from these tables (no predictions, no Basic network) becomes a section of
the group "Skipped" whose finding says why; the report lists those at the end.
"""

from __future__ import annotations

import inspect
import logging
from functools import partial
from typing import Callable

import numpy as np
import pandas as pd

from analysis import charts, exam
from analysis.population import (BASIC, GOLD, GOOD, METRIC, SPLIT_NAMES, as_tables, basic_row, label, left_out_note,
                                 population)
from analysis.samples import q8_counts
from analysis.section import Section
from netzoo.errors import DatasetError, NetzooError

log = logging.getLogger(__name__)
SHOW_NAMES = 8      # names listed in a finding before "and N more"
GRID_SAMPLES = 36   # images per Q8 grid


def pct(x: float) -> str:
    """0.9731 -> '97.3%'."""
    return f"{100 * x:.1f}%"


def num(x: float) -> str:
    """A cost for prose: 3 significant digits, thousands separated."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def names(items, limit: int = SHOW_NAMES) -> str:
    """'a, b, c and 4 more'."""
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "") if items else "none"


def collect(builders: list[tuple[str, str, str, Callable]], tables) -> list[Section]:
    """Run each (key, title, question, builder); a NetzooError (missing data) becomes a "Skipped" section."""
    sections = []
    for key, title, question, build in builders:
        try:
            sections.extend(build(tables, key, title, question))
        except NetzooError as exc:
            log.info("report: %s skipped: %s", title, exc)
            sections.append(Section(key, title, question, f"Not answered: {exc}", group="Skipped"))
    return sections


def with_selection(builders: list[tuple[str, str, str, Callable]], select_on: str | None) -> list:
    """The builders, each that picks networks (a ``select_on`` parameter) bound to ``select_on``."""
    return [(key, title, question, partial(build, select_on=select_on)
             if "select_on" in inspect.signature(build).parameters else build)
            for key, title, question, build in builders]


def picked_on(frame: pd.DataFrame) -> str:
    """' (picked on the validation split)' or ' (picked on the test split)': which split chose a network."""
    return f" (picked on the {SPLIT_NAMES[frame.attrs.get('select_on', 'test')]} split)"


# --- 1 -------------------------------------------------------------------------------------------
def _q1(tables, key, title, question, select_on=None):
    q1 = exam.q1_attempts(tables, select_on=select_on)
    pop = population(tables, select_on=select_on)
    last = q1.iloc[-1]
    stars = pop[pop["gold_star"]]["network"]
    finding = (f"At epoch {int(last['epoch'])}, {int(last['reached_80'])} of {int(last['networks'])} networks "
               f"reached ≥80% and {int(last['reached_99'])} reached ≥99%; {int(pop['good'].sum())} are good "
               f"(≥{pct(GOOD)} at every epoch) and {len(stars)} are gold stars (good and ≥{pct(GOLD)} at the last "
               f"epoch, on the {SPLIT_NAMES[pop.attrs['select_on']]} split): {names(stars)}."
               + left_out_note(q1.attrs["left_out"]))
    return [Section(key, title, question, finding, q1, [charts.attempts(q1, "Networks at or above each accuracy, per epoch")])]


# --- 2-6 -----------------------------------------------------------------------------------------
def _top(summary: pd.DataFrame, group: str, highest: bool) -> pd.Series:
    rows = summary[summary["group"] == group]
    return rows.loc[rows["median"].idxmax() if highest else rows["median"].idxmin()]


def _cell_name(row: pd.Series) -> str:
    return f"{row['family']} {row['activation']}"


def _q2(tables, key, title, question, select_on=None):
    pop = population(tables, select_on=select_on)
    value = f"{METRIC}_mean"
    summary = exam.by_group(pop, value)
    basic = basic_row(pop)
    fam, act, cell = (_top(summary, g, True) for g in ("family", "activation", "cell"))
    finding = (f"Highest median accuracy: family {fam['family']} ({pct(fam['median'])}), activation "
               f"{act['activation']} ({pct(act['median'])}), cell {_cell_name(cell)} ({pct(cell['median'])}).")
    if basic is not None:
        beaten = float((pop[value] > basic[value]).mean())
        finding += f" {BASIC} scores {pct(basic[value])}; {pct(beaten)} of networks beat it."
    finding += left_out_note(pop.attrs["left_out"])
    ref = None if basic is None else float(basic[value])
    figures = [charts.distribution(pop, value, "Test accuracy per family and per activation (gold stars: ★)", reference=ref),
               charts.cell_grid(summary, "Median test accuracy per cell (family × activation)", fmt=".3f")]
    return [Section(key, title, question, finding, summary, figures)]


def _cost_builder(cost: str):
    def build(tables, key, title, question, select_on=None):
        pop = population(tables, select_on=select_on)
        value = f"{cost}_mean" if f"{cost}_mean" in pop.columns else cost
        summary = exam.cost_by_group(tables, cost, select_on=select_on)
        basic = basic_row(pop)
        low, high = _top(summary, "family", False), _top(summary, "family", True)
        if low["family"] == high["family"]:
            finding = f"All networks are {low['family']}: median {label(cost)} {num(low['median'])}."
        else:
            finding = (f"Median {label(cost)}: lowest for {low['family']} ({num(low['median'])}), highest for "
                       f"{high['family']} ({num(high['median'])}), {num(high['median'] / low['median'])}× apart.")
        stars = pop[pop["gold_star"]]
        if len(stars):
            finding += (f" The {len(stars)} gold stars' median is {num(stars[value].median())} against "
                        f"{num(pop[value].median())} for all networks.")
        if basic is not None:
            finding += f" {BASIC}: {num(basic[value])}."
        if cost == "train_time_s" and (note := exam.amortised_note(tables)):
            finding += f" {note}"
        finding += left_out_note(pop.attrs["left_out"])
        ref = None if basic is None else float(basic[value])
        name = label(cost)
        figures = [charts.distribution(pop, value, f"{name[0].upper()}{name[1:]} per family and per activation "
                                                  f"(log scale; gold stars: ★)", log=True, reference=ref),
                   charts.cell_grid(summary, f"Median {name} per cell (family × activation)", fmt=".3g", log=True)]
        return [Section(key, title, question, finding, summary, figures)]
    return build


# --- 7 -------------------------------------------------------------------------------------------
def _q7(tables, key, title, question):
    curves = exam.q7_curves(tables)
    bloomers = exam.q7_late_bloomers(tables)
    stability = exam.q7_rank_stability(tables)
    settled = exam.settled_epoch(stability)
    epochs = sorted(curves["epoch"].unique())
    consecutive = stability[stability["epoch_b"] == stability["epoch_a"] + 1]
    steps = ", ".join(f"{int(r.epoch_a)}→{int(r.epoch_b)}: "
                      + (f"{r.spearman:.2f}" if pd.notna(r.spearman) else "undefined (the networks tie, or under 2)")
                      for r in consecutive.itertuples())
    finding = (f"{len(bloomers)} late bloomers (below the median in epochs 1-2, top quartile at epoch {epochs[-1]})"
               f"{': ' + names(bloomers['network']) if len(bloomers) else ''}. Rank correlation between consecutive "
               f"epochs: {steps or 'one epoch only'}. ")
    if len(epochs) < 2:
        finding += "With one epoch there is no change to measure."
    elif settled is not None and settled < epochs[-1]:
        finding += (f"From epoch {settled} on the ranking correlates ≥0.90 with the final one: it barely changes "
                    f"after epoch {settled}.")
    else:
        finding += "The ranking still moves at the last epoch (Spearman with the final ranking < 0.90 before it)."
    finding += left_out_note(curves.attrs["left_out"])
    figures = [charts.curves(curves, f"{METRIC}_mean", "Test accuracy per epoch: one line per network"),
               charts.rank_heatmap(stability, "Rank correlation of networks between epochs")]
    return [Section(key, title, question, finding, bloomers, figures)]


# --- 8 -------------------------------------------------------------------------------------------
def test_images(tables) -> tuple[np.ndarray | None, str]:
    """The dataset's test images (N, C, H, W) as numpy, and a note saying why when they cannot be loaded."""
    networks = as_tables(tables).networks
    if "dataset" not in networks.columns or networks.empty:
        return None, "the networks table names no dataset"
    name = str(networks["dataset"].mode().iloc[0])
    from netzoo.datasets import load_dataset

    try:
        return load_dataset(name).x_test.cpu().numpy(), ""
    except (DatasetError, OSError) as exc:  # unknown or missing files, no download: the grid is optional
        return None, f"the {name} test images could not be loaded ({exc})"


def _q8(tables, key, title, question):
    samples = exam.q8_samples(tables)
    counts = q8_counts(samples)
    n = samples.attrs["samples"]
    by_kind = dict(zip(counts["kind"], counts["samples"]))
    finding = (f"Of {n} test samples answered by {samples.attrs['voters']} runs: {by_kind['easy']} easy (every "
               f"run right), {by_kind['weird']} weird (>{pct(samples.attrs['wrong_share'])} wrong, agreeing "
               f"≥{pct(samples.attrs['agree_share'])} on one wrong class), {by_kind['confusing']} confusing (no "
               f"class has a majority). Thresholds: wrong share {samples.attrs['wrong_share']}, agreement "
               f"{samples.attrs['agree_share']}." + left_out_note(samples.attrs["left_out"]))
    images, why = test_images(tables)
    sections = [Section(key, title, question, finding, counts)]
    for kind in ("weird", "confusing", "easy"):  # the long list of easy samples last
        rows = samples[samples["kind"] == kind].drop(columns="kind")
        if rows.empty:
            continue
        figures, note = [], ""
        if kind != "easy":
            if images is not None:
                shown = rows.head(GRID_SAMPLES)
                figures.append(charts.sample_grid(images, shown, f"{kind.capitalize()} test samples "
                                                  f"({len(shown)} of {len(rows)}), titled #index: label→majority"))
            else:
                note = f" The image grid is omitted: {why}."
        text = f"{len(rows)} {kind} samples: {names(rows['sample'].astype(str), 20)}." + note
        sections.append(Section(f"{key}-{kind}", f"{title}: {kind}", f"Which test samples are {kind}?", text, rows,
                                figures))
    return sections


# --- 9, 10 ---------------------------------------------------------------------------------------
def _q9(tables, key, title, question, select_on=None):
    q9 = exam.q9_best_percentiles(tables, select_on=select_on)
    weakest = q9.loc[q9["percentile"].idxmin()]
    top = int((q9["percentile"] >= 90).sum())
    finding = (f"The best network{picked_on(q9)} is {q9.attrs['network']} ({pct(q9.attrs['value'])} on the test "
               f"split). It is at or above the 90th "
               f"percentile in {top} of {len(q9)} classes; its weakest standing is class {int(weakest['class'])} "
               f"(recall {pct(weakest['accuracy'])}, percentile {weakest['percentile']:.0f}, "
               f"{int(weakest['networks_better'])} networks better)." + left_out_note(q9.attrs["left_out"]))
    figure = charts.percentiles(q9, f"{q9.attrs['network']}: percentile among all networks per class")
    return [Section(key, title, question, finding, q9, [figure])]


def _q10(tables, key, title, question, select_on=None):
    q10 = exam.q10_best_vs_basic(tables, select_on=select_on)
    by = q10.set_index("measure")
    parts = [f"{m} ×{by.loc[m, 'ratio']:.3g}" for m in ("params", "memory", "ops", "train_time_s")
             if m in by.index and np.isfinite(by.loc[m, "ratio"])]  # a cost Basic does not record: no ratio
    finding = (f"{q10.attrs['best']}{picked_on(q10)} scores {pct(by.loc[METRIC, 'best'])} against {q10.attrs['basic']}'s "
               f"{pct(by.loc[METRIC, 'basic'])} (×{by.loc[METRIC, 'ratio']:.3f})"
               + (f", at {', '.join(parts)} of Basic's cost." if parts else ".") + left_out_note(q10.attrs["left_out"]))
    figure = charts.ratios(q10, f"{q10.attrs['best']} / {q10.attrs['basic']}")
    return [Section(key, title, question, finding, q10, [figure])]


BUILDERS = [
    ("q1", "1. Attempts", "How many networks reach each accuracy at each epoch, and which are good or gold stars?", _q1),
    ("q2", "2. Strategy", "How is test accuracy distributed per family, per activation and per cell?", _q2),
    ("q3", "3. Training time", "How long does training take, per family and per activation?", _cost_builder("train_time_s")),
    ("q4", "4. Parameters", "How many parameters do the networks have, per family and per activation?", _cost_builder("params")),
    ("q5", "5. Memory", "How much memory does a forward pass use, per family and per activation?", _cost_builder("memory")),
    ("q6", "6. Ops", "How many ops does a forward pass take, per family and per activation?", _cost_builder("ops")),
    ("q7", "7. Change over attempts", "How does accuracy change over epochs: who blooms late, and when does the "
                                      "ranking settle?", _q7),
    ("q8", "8. Easy, weird and confusing questions", "Which test samples does every network get right, which do "
                                                     "nearly all get wrong the same way, and which split the vote?", _q8),
    ("q9", "9. The best network", "Where does the best network stand among all networks on each class?", _q9),
    ("q10", "10. Best vs Basic", "What does the best network cost and score next to the Basic network?", _q10),
]


def report_sections(tables, results_dir=None, select_on: str | None = None) -> list[Section]:
    """The report's sections for questions 1-10, in order (Q8 adds one per kind of sample), networks picked on
    ``select_on`` (analysis.population.selection_metric); ``results_dir``: unused (the report modules' one
    signature)."""
    return collect(with_selection(BUILDERS, select_on), tables)
