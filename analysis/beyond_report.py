"""Report sections for what the study asked but could not answer: Pareto fronts, ensembles, agreement."""

from __future__ import annotations

from functools import partial

from analysis import beyond, charts
from analysis.exam_report import collect, names, num, pct, picked_on, with_selection
from analysis.population import METRIC, label, left_out_note, population
from analysis.section import Section

GROUP = "Beyond the study"


def _pareto(tables, key, title, question, select_on=None):
    fronts = beyond.pareto_fronts(tables, select_on=select_on)
    pop = population(tables, select_on=select_on)
    value = f"{METRIC}_mean"
    figures, parts = [], []
    for cost, front in fronts.groupby("cost", sort=False):
        figures.append(charts.pareto(pop, front, cost, value, f"Accuracy against {label(cost)}: Pareto front"))
        cheapest_best = front.iloc[-1]
        parts.append(f"{cost}: {len(front)} networks, up to {cheapest_best['network']} "
                     f"({pct(cheapest_best[value])} at {num(cheapest_best['cost_value'])})")
    common = set.intersection(*(set(f["network"]) for _, f in fronts.groupby("cost")))
    finding = (f"Pareto fronts{picked_on(fronts)}, test accuracy shown — " + "; ".join(parts)
               + f". On every front: {names(sorted(common))}."
               + left_out_note(fronts.attrs["left_out"]))
    return [Section(key, title, question, finding, fronts, figures, group=GROUP)]


def _ensembles(tables, key, title, question, predictions=None, select_on=None):
    ens = beyond.ensembles(tables, predictions=predictions, select_on=select_on)
    best = ens[(ens["kind"] == "best") & (ens["k"] >= 2)]
    finding = f"The best single network{picked_on(ens)} scores {pct(ens['best_single'].iloc[0])} on the test split."
    if len(best):
        top = best.loc[best[METRIC].idxmax()]
        finding += (f" Ensembles of the k best networks (k = 2…{int(best['k'].max())}) score "
                    f"{pct(best[METRIC].min())} to {pct(best[METRIC].max())}; the best is k = {int(top['k'])} "
                    f"({top['gain'] * 100:+.1f} points over the best single network).")
    basic = ens[ens["kind"] == "basic"]
    if len(basic):
        last = basic.iloc[-1]
        finding += (f" {int(last['k'])} Basic runs with different seeds together score {pct(last[METRIC])} "
                    f"(one: {pct(basic.iloc[0][METRIC])}).")
    finding += left_out_note(ens.attrs["left_out"])
    figure = charts.ensemble_lines(ens, METRIC, "Ensembles (mean probabilities) against the best single network")
    return [Section(key, title, question, finding, ens, [figure], group=GROUP)]


def _agreement(tables, key, title, question):
    agr = beyond.agreement(tables)
    pairs = agr[agr["family_a"] < agr["family_b"]].dropna(subset=["jaccard"])
    finding = "Only one family: no pairs to compare."
    if len(pairs):
        most, least = pairs.loc[pairs["jaccard"].idxmax()], pairs.loc[pairs["jaccard"].idxmin()]
        finding = (f"Most alike in their mistakes: {most['family_a']} and {most['family_b']} (Jaccard "
                   f"{most['jaccard']:.2f}, {most['both_wrong']:.1f} samples wrong in common); least alike: "
                   f"{least['family_a']} and {least['family_b']} ({least['jaccard']:.2f}).")
    finding += left_out_note(agr.attrs["left_out"])
    figure = charts.agreement_heatmap(agr, "How often two networks get the same samples wrong, per family pair")
    return [Section(key, title, question, finding, agr, [figure], group=GROUP)]


BUILDERS = [
    ("pareto", "Pareto fronts", "Which networks does no other network beat on both accuracy and a cost?", _pareto),
    ("ensembles", "Ensembles", "Does averaging the k best networks (or k Basic runs with different seeds) beat "
                               "the best single network?", _ensembles),
    ("agreement", "Agreement between families", "How often do networks of two families get the same samples "
                                                "wrong?", _agreement),
]


def report_sections(tables, results_dir=None, select_on: str | None = None) -> list[Section]:
    """The report's sections for Pareto fronts, ensembles and agreement, networks picked on ``select_on``
    (analysis.population.selection_metric). With ``results_dir``, the ensembles read their runs' probabilities
    from it (``beyond.ensemble_predictions``) when the tables' predictions lack them."""
    predictions = None
    if results_dir is not None and "probs" not in tables.predictions.columns:
        predictions = beyond.ensemble_predictions(results_dir, tables, select_on=select_on)
    builders = [(key, title, question, partial(build, predictions=predictions) if key == "ensembles"
                 else build) for key, title, question, build in BUILDERS]
    sections = collect(with_selection(builders, select_on), tables)
    for section in sections:
        if section.group == "Exam":
            section.group = GROUP
    return sections
