"""analysis.lenses: the width study and the health table on planted results tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import lenses
from netzoo.results import ResultTables as Tables  # the one tables type
from netzoo.schema import LAYERS

WIDTHS = [1, 2, 4, 8, 16, 32, 64]
SEEDS = [0, 1]
NORMALITY_PEAK = {0: 16, 1: 8}   # planted width where Shapiro W peaks, per seed
ACCURACY_PEAK = 16                # planted width where accuracy peaks on every seed
RECIPE = dict(recipe="study", recipe_hash="a" * 16)


def _layer_row(network, seed, epoch, layer, kind, width, **values) -> dict:
    row = {name: None for name in LAYERS.names}
    row.update(network=network, seed=seed, epoch=epoch, layer=layer, kind=kind, width=width, **RECIPE)
    row.update(values)
    return row


def _activation(width: int, dead: int, var_sum: float, shapiro_w: float | None) -> dict:
    alive = width - dead
    variances = [0.0] * dead + [var_sum / alive] * alive if alive else [0.0] * width
    return dict(dead_fraction=dead / width, activation_rate=0.5, var_mean=var_sum / width, var_sum=var_sum,
                var_q05=0.0, var_q25=0.0, var_q50=float(np.median(variances)), var_q75=0.0, var_q95=0.0,
                variances=variances, shapiro_w=shapiro_w, shapiro_p=0.5 if shapiro_w is not None else None)


def _planted_tables() -> Tables:
    """One-hidden-layer ReLU MLPs (width axis) for two seeds and two epochs, plus three sick Conv2d networks."""
    networks, epochs, layers = [], [], []
    for width in WIDTHS:
        name = f"LinearReLU_{width}"
        for seed in SEEDS:
            networks.append(dict(network=name, family="Linear", activation="ReLU", layer_types=["Linear", "Linear"],
                                 widths=[width, 10], seed=seed, **RECIPE))
            accuracy = 0.9 - 0.05 * abs(math.log2(width) - math.log2(ACCURACY_PEAK))
            w = 0.95 - 0.02 * abs(math.log2(width) - math.log2(NORMALITY_PEAK[seed])) if width >= 4 else None
            for epoch in (1, 2):  # epoch 1 holds nonsense: every answer must read the last epoch
                last = epoch == 2
                epochs.append(dict(network=name, seed=seed, epoch=epoch, test_balanced_acc=accuracy if last else 0.1,
                                   **RECIPE))
                layers.append(_layer_row(name, seed, epoch, "fc1", "Linear", width, grad_norm_mean=0.5,
                                         grad_norm_max=1.0, dead_grad_fraction=0.0))
                layers.append(_layer_row(name, seed, epoch, "act1", "ReLU", width, **_activation(
                    width, dead=width // 4 if last else 0, var_sum=2.0 + 3.0 * math.log(width) if last else 99.0,
                    shapiro_w=w if last else 0.1)))
    sick = {"Conv2dReLU_1": dict(dead=0.6, grad_mean=0.1, grad_max=1.0),
            "Conv2dTanh_2": dict(dead=0.0, grad_mean=1e-8, grad_max=1e-7),
            "Conv2dSELU_3": dict(dead=0.0, grad_mean=50.0, grad_max=5e3),
            "Conv2dReLU_4": dict(dead=0.5, grad_mean=1e-6, grad_max=1e3)}  # exactly at each threshold: healthy
    for name, planted in sick.items():
        networks.append(dict(network=name, family="Conv2d", activation=name[6:-2], layer_types=["Conv2d", "Linear"],
                             widths=[8, 10], seed=0, **RECIPE))
        epochs.append(dict(network=name, seed=0, epoch=2, test_balanced_acc=0.5, **RECIPE))
        layers.append(_layer_row(name, 0, 2, "conv1", "Conv2d", 8, grad_norm_mean=planted["grad_mean"],
                                 grad_norm_max=planted["grad_max"], dead_grad_fraction=0.0))
        layers.append(_layer_row(name, 0, 2, "act1", name[6:-2], 8, **_activation(
            8, dead=round(planted["dead"] * 8), var_sum=1.0, shapiro_w=0.9)))
    return Tables(networks=pd.DataFrame(networks), epochs=pd.DataFrame(epochs), predictions=pd.DataFrame(),
                  layers=pd.DataFrame(layers))


@pytest.fixture(scope="module")
def tables() -> Tables:
    return _planted_tables()


def test_width_runs_read_the_hidden_layer_at_the_last_epoch(tables):
    runs = lenses.width_runs(tables)
    assert len(runs) == len(WIDTHS) * len(SEEDS)  # the Conv2d networks have no width axis
    row = runs[(runs["width"] == 64) & (runs["seed"] == 1)].iloc[0]
    assert row["dead_neurons"] == 16 and row["dead_fraction"] == 0.25
    assert row["var_sum"] == pytest.approx(2 + 3 * math.log(64))
    assert row["test_balanced_acc"] == pytest.approx(0.9 - 0.05 * 2)


def test_width_summary_gives_mean_and_spread_over_seeds(tables):
    summary = lenses.width_summary(lenses.width_runs(tables))
    assert list(summary["width"]) == WIDTHS and (summary["n_seeds"] == 2).all()
    at8 = summary[summary["width"] == 8].iloc[0]
    w0, w1 = 0.95 - 0.02 * 1, 0.95  # seed 0 peaks at 16, seed 1 at 8
    assert at8["shapiro_w_mean"] == pytest.approx((w0 + w1) / 2)
    assert at8["shapiro_w_std"] == pytest.approx(np.std([w0, w1], ddof=1))
    assert at8["dead_neurons_std"] == 0.0


def test_total_variance_log_fit_recovers_the_planted_law(tables):
    fit = lenses.log_fit(lenses.width_runs(tables), "var_sum")
    assert fit["slope"] == pytest.approx(3.0) and fit["intercept"] == pytest.approx(2.0)
    assert fit["r2"] == pytest.approx(1.0) and fit["n"] == len(WIDTHS) * len(SEEDS)


def test_dead_neurons_grow_linearly_with_width(tables):
    fit = lenses.linear_fit(lenses.width_runs(tables), "dead_neurons")
    assert fit["slope"] == pytest.approx(0.25, abs=0.01) and fit["r2"] > 0.99


def test_peak_widths_are_found_per_seed_and_summarised_with_their_spread(tables):
    peaks = lenses.peak_widths(lenses.width_runs(tables))
    assert dict(zip(peaks["seed"], peaks["normality_peak_width"])) == NORMALITY_PEAK
    assert set(peaks["accuracy_peak_width"]) == {ACCURACY_PEAK}
    spread = lenses.peak_summary(peaks).set_index("peak")
    assert spread.loc["normality", "mean"] == 12 and spread.loc["normality", "std"] == pytest.approx(np.std([8, 16], ddof=1))
    assert spread.loc["accuracy", "std"] == 0


def test_normality_peak_ignores_layers_too_narrow_for_a_meaningful_shapiro_test(tables):
    runs = lenses.width_runs(tables)
    runs.loc[runs["width"] == 4, "shapiro_w"] = 0.99999  # W of 4 values: near 1 by chance
    peaks = lenses.peak_widths(runs)
    assert dict(zip(peaks["seed"], peaks["normality_peak_width"])) == NORMALITY_PEAK
    assert set(lenses.peak_widths(runs, min_width=1)["normality_peak_width"]) == {4}


def test_variance_by_width_lists_every_hidden_neuron(tables):
    variances = lenses.variance_by_width(tables)
    assert len(variances) == sum(WIDTHS) * len(SEEDS)
    at4 = variances[(variances["width"] == 4) & (variances["seed"] == 0)]["variance"]
    assert (at4 == 0).sum() == 1 and at4.sum() == pytest.approx(2 + 3 * math.log(4))


def test_rank_correlation_is_spearman_over_runs():
    frame = pd.DataFrame({"shapiro_w": [0.1, 0.2, 0.3, 0.4, None], lenses.METRIC: [1.0, 4.0, 9.0, 16.0, 0.0]})
    result = lenses.rank_correlation(frame)
    assert result == {"rho": pytest.approx(1.0), "p": pytest.approx(0.0, abs=1e-6), "n": 4}


def test_health_flags_dead_vanishing_and_exploding_layers_strictly_beyond_the_thresholds(tables):
    sick = lenses.health(tables).set_index("network")
    assert set(sick.index) == {"Conv2dReLU_1", "Conv2dTanh_2", "Conv2dSELU_3"}
    assert sick.loc["Conv2dReLU_1", "problems"] == "dead" and sick.loc["Conv2dReLU_1", "dead_layer"] == "act1"
    assert sick.loc["Conv2dTanh_2", "problems"] == "vanishing" and sick.loc["Conv2dTanh_2", "vanishing_layer"] == "conv1"
    assert sick.loc["Conv2dSELU_3", "problems"] == "exploding" and sick.loc["Conv2dSELU_3", "family"] == "Conv2d"
    counts = lenses.health_counts(lenses.health(tables), tables).set_index(["family", "activation"])
    assert counts.loc[("Conv2d", "ReLU")].to_dict() == {"runs": 2, "dead": 1, "vanishing": 0, "exploding": 0}
    assert counts.loc[("Linear", "ReLU"), "runs"] == len(WIDTHS) * len(SEEDS)


def test_report_sections_state_findings_from_the_numbers(tables):
    sections = {s.key: s for s in lenses.report_sections(tables)}
    assert list(sections) == ["lenses-variance", "lenses-dead", "lenses-total-variance", "lenses-normality",
                              "lenses-health"]
    assert all(s.group == "Inside the networks" and s.figures and isinstance(s.figures[0], Figure)
               for s in sections.values())
    assert "R² = 1.00" in sections["lenses-total-variance"].finding
    assert "At width 64, 16.0 neurons (25.0%) are dead" in sections["lenses-dead"].finding
    assert "peaks at width 12 (median; range 8–16 over 2 seeds)" in sections["lenses-normality"].finding
    assert "test accuracy peaks at width 16 on all 2 seeds" in sections["lenses-normality"].finding
    assert "Of 18 runs at the last epoch: 1 with a layer over 50% dead, 1 with a layer whose mean gradient norm " \
        "is under 1e-06 (vanishing), 1 with one over 1000 (exploding)." in sections["lenses-health"].finding


def test_report_sections_are_empty_without_layers(tables):
    empty = Tables(networks=tables.networks, epochs=tables.epochs, predictions=pd.DataFrame(),
                   layers=pd.DataFrame(columns=LAYERS.names))
    assert lenses.report_sections(empty) == []


def test_a_zoo_without_a_width_axis_gets_population_normality_and_the_health_table(tables):
    conv = tables.networks["family"] == "Conv2d"
    only_conv = Tables(networks=tables.networks[conv], epochs=tables.epochs, predictions=pd.DataFrame(),
                       layers=tables.layers[tables.layers["network"].str.startswith("Conv2d")])
    sections = lenses.report_sections(only_conv)
    assert [s.key for s in sections] == ["lenses-normality", "lenses-health"]
    assert "Across 4 runs" in sections[0].finding
