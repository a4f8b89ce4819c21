"""analysis.seeds: mean and 95% interval over seeds, and findings that change sign across seeds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis.seeds import final_epochs, per_network, report_sections, sign_changes


def _runs(accs: dict[tuple[str, int], list[float]], recipe: str = "default") -> pd.DataFrame:
    """Epoch rows: (network, seed) -> balanced accuracy per epoch."""
    rows = []
    for (network, seed), per_epoch in accs.items():
        for epoch, acc in enumerate(per_epoch, start=1):
            rows.append({"network": network, "recipe": recipe, "recipe_hash": f"h-{recipe}", "seed": seed,
                         "epoch": epoch, "test_balanced_acc": acc, "test_acc": acc})
    return pd.DataFrame(rows)


def _networks(families: dict[str, tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"network": n, "family": f, "activation": a, "params": 10} for n, (f, a) in families.items()])


def test_per_network_mean_and_ci_match_student_t():
    epochs = _runs({("A", 0): [0.1, 0.80], ("A", 1): [0.1, 0.90], ("A", 2): [0.2, 0.70], ("B", 0): [0.5, 0.5]})
    out = per_network(epochs).set_index("network")
    # A's last-epoch values 0.8, 0.9, 0.7: mean 0.8, std 0.1, t(0.975, 2) = 4.302653 -> half-width 0.248414
    assert out.loc["A", "n_seeds"] == 3
    assert out.loc["A", "mean"] == pytest.approx(0.8)
    assert out.loc["A", "std"] == pytest.approx(0.1)
    assert out.loc["A", "ci95_low"] == pytest.approx(0.8 - 0.248414, abs=1e-6)
    assert out.loc["A", "ci95_high"] == pytest.approx(0.8 + 0.248414, abs=1e-6)
    # one seed: a mean, but no interval rather than a fake zero-width one
    assert out.loc["B", "n_seeds"] == 1 and out.loc["B", "mean"] == pytest.approx(0.5)
    assert np.isnan(out.loc["B", "ci95_low"]) and np.isnan(out.loc["B", "std"])
    assert list(per_network(epochs).columns[:2]) == ["network", "recipe"]


def test_per_network_uses_each_runs_last_epoch_unless_an_epoch_is_given():
    # seed 1 stopped early at epoch 2: its last epoch counts, not a missing epoch 3
    epochs = _runs({("A", 0): [0.1, 0.2, 0.9], ("A", 1): [0.1, 0.7]})
    assert per_network(epochs).loc[0, "mean"] == pytest.approx(0.8)
    assert per_network(epochs, epoch=1).loc[0, "mean"] == pytest.approx(0.1)
    assert len(final_epochs(epochs)) == 2


def test_per_network_keeps_recipes_apart():
    epochs = pd.concat([_runs({("A", 0): [0.9], ("A", 1): [0.9]}, "adam"),
                        _runs({("A", 0): [0.3], ("A", 1): [0.3]}, "sgd")])
    out = per_network(epochs).set_index("recipe")
    assert out.loc["adam", "mean"] == pytest.approx(0.9) and out.loc["sgd", "mean"] == pytest.approx(0.3)


def test_a_finding_that_flips_between_seeds_is_flagged_and_a_stable_one_is_not():
    networks = _networks({"L1": ("Linear", "ReLU"), "L2": ("Linear", "Tanh"), "C1": ("Conv2d", "ReLU")})
    epochs = _runs({
        ("L1", 0): [0.6], ("L1", 1): [0.4], ("L1", 2): [0.6],   # Linear ReLU vs Tanh flips with the seed
        ("L2", 0): [0.5], ("L2", 1): [0.5], ("L2", 2): [0.5],
        ("C1", 0): [0.9], ("C1", 1): [0.95], ("C1", 2): [0.9],  # Conv2d beats Linear on every seed
    })
    out = sign_changes(epochs, networks).set_index("finding")
    assert bool(out.loc["activation ReLU vs Tanh in Linear", "changes_sign"])
    assert out.loc["activation ReLU vs Tanh in Linear", "n_positive"] == 2
    assert not bool(out.loc["family Conv2d vs Linear", "changes_sign"])
    assert out.loc["family Conv2d vs Linear", "n_positive"] == 3


def test_report_sections_state_the_interval_and_the_flips():
    networks = _networks({"L1": ("Linear", "ReLU"), "L2": ("Linear", "Tanh")})
    epochs = _runs({("L1", 0): [0.6], ("L1", 1): [0.4], ("L2", 0): [0.5], ("L2", 1): [0.5]})
    sections = report_sections(SimpleNamespace(epochs=epochs, networks=networks))
    assert [s.key for s in sections] == ["seeds-ci", "seeds-sign"]
    assert "1 of 1 pairwise findings change sign" in sections[1].finding
    assert sections[0].figures and "±" in sections[0].table["mean ± ci95"].iloc[0]
    one_seed = epochs[epochs["seed"] == 0]
    assert report_sections(SimpleNamespace(epochs=one_seed, networks=networks)) == []


def test_report_sections_open_with_completeness_when_the_networks_table_is_there():
    from synthetic import from_curves

    tables = from_curves({("A", 0): [0.5], ("A", 1): [0.6], ("B", 0): [0.4]})
    keys = [s.key for s in report_sections(tables)]
    assert keys[0] == "completeness" and "seeds-ci" in keys


def test_completeness_flags_a_planted_missing_seed_and_a_failed_run():
    from netzoo.completeness import completeness, completeness_text, missing
    from synthetic import from_curves

    tables = from_curves({("A", 0): [0.5], ("A", 1): [0.5], ("A", 2): [0.5], ("B", 0): [0.4], ("B", 2): [0.4]})
    tables.networks.loc[(tables.networks["network"] == "A") & (tables.networks["seed"] == 2), "status"] = "failed"
    gaps = missing(tables.networks)
    assert sorted(zip(gaps["network"], gaps["seed"], gaps["state"])) == [("A", 2, "failed"), ("B", 1, "missing")]
    counts = completeness(tables.networks).set_index("seed")
    assert counts.loc[1, "missing"] == 1 and counts.loc[2, "failed"] == 1 and counts.loc[0, "done"] == 2
    text = completeness_text(tables.networks, expected_networks=["A", "B", "C"])
    assert "B default seed 1 (missing)" in text and "C default seed 0 (missing)" in text


def test_completeness_of_a_full_table_says_every_run_is_present():
    from analysis.completeness import report_sections
    from netzoo.completeness import completeness_text
    from synthetic import from_curves

    tables = from_curves({("A", 0): [0.5], ("A", 1): [0.5]})
    assert "all 2 expected runs are present" in completeness_text(tables.networks)
    assert report_sections(tables)[0].finding.startswith("All 2 expected runs")


def test_completeness_counts_planned_runs_per_recipe_not_across_recipes():
    import pandas as pd

    from netzoo.completeness import missing
    from synthetic import from_curves

    main = from_curves({("A", 0): [0.5], ("B", 0): [0.5]}, recipe="study", recipe_hash="s" * 16)
    sweep = from_curves({("A", 42): [0.5]}, recipe="lr=0.01", recipe_hash="l" * 16)
    networks = pd.concat([main.networks, sweep.networks], ignore_index=True)
    assert missing(networks).empty  # B was never meant to train under lr=0.01, nor A with seed 42 under study
    planned = pd.DataFrame({"network": ["A", "C"], "recipe_hash": ["l" * 16] * 2, "seed": [42, 42]})
    gaps = missing(networks, planned=planned)
    assert list(zip(gaps["network"], gaps["recipe"], gaps["state"])) == [("C", "lr=0.01", "missing")]


# --- one rule for a mean over seeds (issue 12, case 10) ---------------------------------------------
def test_per_network_leaves_out_a_diverged_seed_and_says_so():
    epochs = _runs({("A", 0): [0.5, 0.8], ("A", 1): [0.5, 0.9], ("A", 2): [0.5, 0.1]})
    epochs["status"] = "done"
    last = (epochs["seed"] == 2) & (epochs["epoch"] == 2)
    epochs.loc[last, "status"] = "diverged"  # an older results folder: its accuracy was stored as ~0.1
    out = per_network(epochs).set_index("network")
    assert out.loc["A", ["n_seeds", "seeds_dropped"]].tolist() == [2, 1]
    assert out.loc["A", "mean"] == pytest.approx(0.85)
    assert out.attrs["left_out"] == 1


def test_per_network_counts_a_failed_run_from_the_networks_table_as_dropped():
    epochs = _runs({("A", 0): [0.8], ("A", 1): [0.6]})
    networks = pd.DataFrame({"network": ["A", "A"], "recipe_hash": ["h-default"] * 2, "seed": [0, 1],
                             "status": ["done", "failed"]})
    out = per_network(epochs, networks=networks).set_index("network")
    assert out.loc["A", ["n_seeds", "seeds_dropped", "mean"]].tolist() == [1, 1, pytest.approx(0.8)]


def test_the_exam_and_the_seed_report_give_one_mean_and_interval_over_the_same_seeds():
    from analysis.population import population
    from synthetic import from_curves

    tables = from_curves({("A", 0): [0.5, 0.8], ("A", 1): [0.5, 0.9], ("A", 2): [0.7], ("A", 3): [0.1]})
    for frame in (tables.networks, tables.epochs):  # seed 2 stopped early at epoch 1, seed 3 diverged there
        frame.loc[frame["seed"] == 2, "status"] = "stopped_early"
        frame.loc[frame["seed"] == 3, "status"] = "diverged"
    exam_row = population(tables).set_index("network").loc["A"]
    seeds_row = per_network(tables.epochs, networks=tables.networks).set_index("network").loc["A"]
    assert exam_row["n_seeds"] == seeds_row["n_seeds"] == 3
    assert exam_row["seeds_dropped"] == seeds_row["seeds_dropped"] == 1
    assert exam_row["test_balanced_acc_mean"] == pytest.approx(seeds_row["mean"]) == pytest.approx(0.8)
    assert exam_row["test_balanced_acc_ci95"] == pytest.approx(seeds_row["ci95_high"] - seeds_row["mean"])
