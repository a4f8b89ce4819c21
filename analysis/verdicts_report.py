"""Report sections for what the population says about the data and about picking: label issues, trivial and
impossible samples, how the ranking depends on the population's size, and cascades.

The probabilities of every run are read here (the report's shared tables carry predictions without probs),
once for all these sections; the test images come from the dataset's test split (analysis.exam_report's
test_images). A list of known label errors is read from RESULTS/known-label-errors.txt when it exists (one
test index per line, as for ``netzoo exam label-issues --known-label-errors FILE``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import cascades as cascade_module
from analysis import charts
from analysis import label_issues as li
from analysis.beyond import front_mask
from analysis.exam_report import collect, num, pct, test_images
from analysis.population import as_tables, label
from analysis.section import Section
from analysis.verdicts import read_known_label_errors
from netzoo.errors import NetzooError

GROUP = "Beyond the study"
GRID = 50                   # suspected samples shown as images
KNOWN_FILE = "known-label-errors.txt"


# --- charts --------------------------------------------------------------------------------------
def suspect_grid(images: np.ndarray, suspects: pd.DataFrame, title: str) -> Figure:
    """Test images (N, C, H, W) of the rows of ``suspects`` (sample, label, suggested_label, agreeing_share),
    titled '#index: label→suggested (share of runs agreeing)'."""
    fig = charts.sample_grid(images, suspects.rename(columns={"suggested_label": "majority"}), title, columns=10)
    for ax, row in zip(fig.axes, suspects.itertuples()):  # two lines: five-digit indices fit over 28x28 images
        ax.set_title(f"#{row.sample}\n{row.label}→{row.suggested_label} ({row.agreeing_share:.0%})", fontsize=7,
                     linespacing=1.1)
    fig.subplots_adjust(hspace=0.55)
    return fig


def cascade_front(singles: pd.DataFrame, cascades: pd.DataFrame, metric: str, title: str) -> Figure:
    """Single networks (grey points, their front as a step line) and cascades (points coloured by τ, their
    own front as a step line) by FLOPs per sample (log axis) and metric."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    value = f"{metric}_mean"
    ax.scatter(singles["flops_forward"], singles[value], s=10, color="grey", alpha=0.5, label="single network")
    single_front = singles[singles["on_front"]].sort_values("flops_forward")
    ax.step(single_front["flops_forward"], single_front[value], where="post", color="black", linewidth=1.5,
            label="single networks' front")
    points = ax.scatter(cascades["flops_per_sample"], cascades[metric], s=6, c=cascades["threshold"],
                        cmap="viridis", alpha=0.35, label="cascade (colour: τ)")
    own = cascades[cascades["own_front"]].sort_values("flops_per_sample")
    ax.step(own["flops_per_sample"], own[metric], where="post", color="tab:red", linewidth=1.5,
            label="cascades' front")
    best = cascades[cascades["on_front"]]
    ax.scatter(best["flops_per_sample"], best[metric], s=28, facecolor="none", edgecolor="tab:red",
               linewidth=1, label="cascade beating every network of its cost")
    fig.colorbar(points, ax=ax, label="threshold τ on the cheap network's top probability")
    ax.set_xscale("log")
    low = min(single_front[value].min(), own[metric].min()) if len(own) else single_front[value].min()
    ax.set(title=title, xlabel="FLOPs per test sample (log scale)", ylabel=label(metric), ylim=(max(low - 0.05, 0), None))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def size_lines(stability: pd.DataFrame, title: str) -> Figure:
    """Overlap of a smaller population's top k with the whole population's, against its size."""
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    ax.fill_between(stability["runs"], stability["overlap_min"], stability["overlap_max"], alpha=0.2)
    ax.plot(stability["runs"], stability["overlap_mean"], marker="o")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set(title=title, xlabel="runs in the population (log scale)",
           ylabel=f"share of the top {stability.attrs['k']} in common", ylim=(0, 1.05))
    return fig


# --- sections ------------------------------------------------------------------------------------
def _probs_tables(tables, results_dir):
    """The tables with every run's predictions, probs included, at each run's last epoch."""
    tables = as_tables(tables)
    if "probs" in tables.predictions.columns or results_dir is None:
        return tables
    from netzoo.results import load

    predictions = load(results_dir, tables=["predictions"], epoch="last").predictions
    return dataclasses.replace(tables, predictions=predictions)


def _known(results_dir, samples) -> list[int] | None:
    path = Path(results_dir) / KNOWN_FILE if results_dir is not None else None
    if path is None or not path.is_file():
        return None
    return read_known_label_errors(path, samples)


def _label_sections(tables, rp, known, key, title, question, select_on=None):
    issues = li.label_issues(tables, rp=rp, select_on=select_on)
    overlap = li.top_k_overlap(issues)
    ensemble = li.cleanlab_ensemble_ranking(rp)
    top = issues.head(GRID).assign(agreeing_share=lambda f: li.agreeing_share(rp, f))
    suspects = int((issues["score"] < 0).sum())
    first = top.iloc[0]
    finding = (f"{len(rp.runs)} runs answer {len(issues)} test samples"
               f"{f' ({rp.left_out} runs left out: diverged, failed or without probabilities)' if rp.left_out else ''}. "
               f"The population prefers another class than the given label for {suspects} samples (score < 0). "
               f"The most suspect is #{int(first['sample'])}: labelled {int(first['label'])}, "
               f"{pct(first['agreeing_share'])} of the runs call it {int(first['suggested_label'])} "
               f"(score {first['score']:.2f}).")
    if issues["cleanlab_rank"].notna().any():
        at50 = overlap[overlap["k"] == min(50, len(issues))].iloc[0]
        finding += (f" cleanlab on one network, {issues.attrs['cleanlab_network']} (picked by "
                    f"{issues.attrs['cleanlab_why']}), flags {issues.attrs['cleanlab_issues']} samples "
                    f"(find_label_issues); its top {int(at50['k'])} shares {int(at50['common'])} samples with the "
                    f"population's.")
    else:
        finding += " " + li.NO_CLEANLAB
    if ensemble is not None:
        both = issues.merge(ensemble, on="sample")
        common = li.top_k_overlap(both, "rank", "ensemble_rank", ks=(50,)).iloc[0]
        finding += (f" cleanlab's ensemble score over all {len(rp.runs)} runs shares {int(common['common'])} of "
                    f"its top {int(common['k'])}.")
    figures, note = [], ""
    images, why = test_images(tables)
    if images is not None:
        figures.append(suspect_grid(images, top, f"The {len(top)} most suspect test samples, titled "
                                                 f"#index: given label→population's label (share of runs agreeing)"))
    else:
        note = f" The image grid is omitted: {why}."
    sections = [Section(key, title, question, finding + note, issues, figures, group=GROUP)]
    if known is not None:
        ranked = issues if ensemble is None else issues.merge(ensemble, on="sample")
        rankings = ("rank", "cleanlab_rank") + (("ensemble_rank",) if ensemble is not None else ())
        precision = li.precision_at_k(ranked, known, rankings=rankings)
        precision["ranking"] = precision["ranking"].map({"rank": "population", "cleanlab_rank": "cleanlab (one network)",
                                                         "ensemble_rank": "cleanlab ensemble"})
        at = precision[precision["k"] == min(20, len(issues))].set_index("ranking")["found"]
        parts = ", ".join(f"{name} {int(v)}" for name, v in at.items() if pd.notna(v))
        sections.append(Section(f"{key}-known", f"{title}: known label errors",
                                f"How many of {len(known)} known label errors does each ranking put at its top?",
                                f"Known label errors among the top {min(20, len(issues))}: {parts}.", precision,
                                group=GROUP))
    return sections


def _difficulty_section(rp, key, title, question):
    counts = li.difficulty(rp).set_index("kind")
    finding = (f"Of {len(rp.samples)} test samples, {int(counts.loc['trivial', 'samples'])} are trivial "
               f"({pct(counts.loc['trivial', 'share'])}: every one of {len(rp.runs)} runs right) and "
               f"{int(counts.loc['impossible', 'samples'])} impossible ({pct(counts.loc['impossible', 'share'])}: "
               f"no run right), beside question 8's {int(counts.loc['weird', 'samples'])} weird and "
               f"{int(counts.loc['confusing', 'samples'])} confusing (easy = trivial by definition).")
    return [Section(key, title, question, finding, counts.reset_index(), group=GROUP)]


def _size_section(rp, key, title, question):
    stability = li.size_stability(rp)
    parts = ", ".join(f"{int(r.runs)} runs: {pct(r.overlap_mean)}" for r in stability.iloc[:-1].itertuples())
    finding = (f"Share of the whole population's ({len(rp.runs)} runs) top {stability.attrs['k']} suspects that a "
               f"random smaller population also ranks in its top {stability.attrs['k']} (mean of "
               f"{int(stability['repeats'].iloc[0])} draws, seed {stability.attrs['seed']}): {parts or 'none smaller'}.")
    figure = size_lines(stability, "How the top suspects depend on the population's size")
    return [Section(key, title, question, finding, stability, [figure], group=GROUP)]


def _cascade_section(tables, key, title, question, select_on=None):
    frame = cascade_module.cascades(tables, select_on=select_on)
    metric = frame.attrs["metric"]
    singles = cascade_module.single_networks(tables, metric)
    value = f"{metric}_mean"
    plotted = frame.assign(own_front=front_mask(frame["flops_per_sample"].to_numpy(float),
                                                frame[metric].to_numpy(float)))
    best = singles.loc[singles[value].idxmax()]
    winners = frame[frame["on_front"]]
    left_out = frame.attrs["left_out"]
    finding = (f"{len(frame)} cascades of {len(frame.attrs['candidates'])} candidate networks (the single-network "
               f"front and the cheapest good networks, picked on {frame.attrs['selected_by']}) at τ in "
               f"{sorted(set(frame['threshold']))}"
               f"{f' ({left_out} runs left out: diverged, failed or without probabilities)' if left_out else ''}. ")
    if len(winners):
        top = winners.loc[winners[metric].idxmax()]
        cheapest_single = singles[singles[value] >= top[metric]].sort_values("flops_forward")
        finding += (f"{len(winners)} beat every single network of the same cost. {top['cheap']} then "
                    f"{top['expensive']} at τ={top['threshold']:g} reaches {pct(top[metric])} ({label(metric)}), "
                    f"deferring {pct(top['deferred_share'])} of the samples, at {num(top['flops_per_sample'])} FLOPs "
                    f"per sample: {pct(top['flops_per_sample'] / best['flops_forward'])} of the best single "
                    f"network's ({best['network']}, {pct(best[value])}, {num(best['flops_forward'])} FLOPs)")
        if len(cheapest_single):
            match = cheapest_single.iloc[0]
            finding += (f"; the cheapest single network as good, {match['network']}, needs "
                        f"{num(match['flops_forward'])}.")
        else:
            finding += "; no single network is as good."
    else:
        finding += "No cascade beats every single network of its cost."
    finding += (" Pairs and τ are read off the test split: a description of it, not a recommendation (pick τ on "
                "held-out data).")
    figure = cascade_front(singles, plotted, metric, "Cascades (cheap network, then an expensive one when unsure) "
                                                     "beside single networks")
    table = pd.concat([winners, frame[~frame["on_front"]]], ignore_index=True)
    return [Section(key, title, question, finding, table, [figure], group=GROUP)]


def report_sections(tables, results_dir: Path | None = None, select_on: str | None = None) -> list[Section]:
    """Label issues (with known label errors when RESULTS/known-label-errors.txt exists), trivial and
    impossible samples, the ranking against population size, and cascades. ``results_dir``: where to read
    the runs' probabilities when ``tables`` has none; ``select_on``: the split cleanlab's single network and the
    cascade candidates are picked on (analysis.population.selection_metric). A section that cannot be answered
    says why."""
    try:
        full = _probs_tables(tables, results_dir)
        rp = li.run_probs(full)
    except NetzooError as exc:  # every section below needs the probabilities: each says why it is missing
        full, rp = tables, exc

    def with_rp(build):
        def run(_tables, key, title, question):
            if isinstance(rp, Exception):
                raise rp
            return build(rp, key, title, question)
        return run

    def label_sections(rp, key, title, question):
        return _label_sections(full, rp, _known(results_dir, rp.samples), key, title, question, select_on)

    builders = [
        ("label-issues", "Label issues", "If many networks are wrong on a test sample, is its label wrong?",
         with_rp(label_sections)),
        ("trivial-impossible", "Trivial and impossible samples",
         "Which test samples does every run get right, and which does none?", with_rp(_difficulty_section)),
        ("label-issues-size", "Label issues and population size",
         "How many networks does it take to find the same suspects?", with_rp(_size_section)),
        ("cascades", "Cascades", "Does a cheap network that hands its unsure samples to an expensive one beat "
                                 "single networks of the same cost?",
         lambda _tables, *a: _cascade_section(full, *a, select_on=select_on)),
    ]
    return collect(builders, tables)
