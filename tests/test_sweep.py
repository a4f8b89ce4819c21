"""netzoo sweep: every recipe of a grid trains the selected networks into one results folder, never colliding."""

from __future__ import annotations

import pandas as pd
import pytest

from netzoo.errors import RecipeError
from netzoo.recipe import Recipe, Selection, grid_from_toml
from netzoo.results import load
from netzoo.sweep import check_selection, run_sweep, variant_name, zoo_for

# One network of the 16-network depth-width zoo (batch norm on), one epoch, under a baseline and with dropout:
# the dropout recipe needs a variant zoo whose generated file holds the Dropout layers.
TINY = """
[grid]
name = "tiny"
spec = "depth-width"
networks = { name = ["LinearReLU_1"] }
[base]
epochs = 1
batch_norm = true
[[recipes]]
name = "baseline"
[[recipes]]
name = "dropout"
dropout = 0.2
"""


@pytest.mark.slow
def test_two_recipes_never_overwrite_each_others_rows_and_a_rerun_adds_nothing(tmp_path):
    grid = grid_from_toml(TINY, where="tiny.toml")
    results = tmp_path / "results"
    summary = run_sweep(grid, zoo=None, dataset="digits", results=results, seeds=[0], workers=1, quiet=True)
    assert summary.failed == 0 and "2 recipes x 1 networks x 1 seed" in summary.line()
    tables = load(results)
    assert sorted(tables.networks["recipe"]) == ["baseline", "dropout"]
    assert tables.networks["recipe_hash"].nunique() == 2 and set(tables.networks["network"]) == {"LinearReLU_1"}
    assert len(tables.epochs) == 2 and tables.epochs.groupby("recipe").size().to_dict() == {"baseline": 1, "dropout": 1}
    assert tables.predictions.groupby("recipe_hash").size().nunique() == 1  # every test sample, once per recipe
    # dropout is a template option: the dropout recipe trained a generated variant that shows it
    variant = results / "zoos" / "depth-width-dropout0.2-bn"
    assert "Dropout(p=0.2)" in (variant / "LinearReLU_1.py").read_text()
    assert "Dropout" not in (results / "zoos" / "depth-width" / "LinearReLU_1.py").read_text()
    again = run_sweep(grid, zoo=None, dataset="digits", results=results, seeds=[0], workers=1, quiet=True)
    assert all(r.summary.already_complete == 1 and not r.summary.outcomes for r in again.runs)
    assert len(load(results).networks) == 2


def test_a_recipe_matching_the_zoo_trains_the_zoo_itself(tmp_path):
    manifest = pd.DataFrame({"dropout": [0.0], "batch_norm": [False], "spec": ["default"], "seed": [0],
                             "input_shape": ["1x8x8"], "classes": [10]})
    assert zoo_for(Recipe(), tmp_path, manifest, tmp_path / "results", quiet=True) == tmp_path
    assert variant_name(Recipe(dropout=0.3)) == "dropout0.3" and variant_name(Recipe(batch_norm=True)) == "bn"


def test_a_variant_zoo_renders_only_the_selected_networks_and_grows_when_a_sweep_needs_more(tmp_path):
    from netzoo.generate import generate_zoo

    whole = generate_zoo("depth-width", dataset="digits", out=tmp_path / "zoo", progress=False)
    dropout = Recipe(dropout=0.2, batch_norm=True)  # the depth-width spec has batch norm on
    variant = zoo_for(dropout, tmp_path / "zoo", whole, tmp_path / "results", quiet=True, names=["LinearReLU_3"])
    assert variant != tmp_path / "zoo" and sorted(p.name for p in variant.glob("*.py")) == ["LinearReLU_3.py"]
    rendered = (variant / "LinearReLU_3.py").read_text()
    assert "Dropout(p=0.2)" in rendered
    # same architecture as in the whole zoo: only the dropout layers differ
    again = pd.read_parquet(variant / "manifest.parquet").set_index("network").loc["LinearReLU_3"]
    original = whole.set_index("network").loc["LinearReLU_3"]
    assert again["params"] == original["params"] and list(again["widths"]) == list(original["widths"])
    zoo_for(dropout, tmp_path / "zoo", whole, tmp_path / "results", quiet=True, names=["LinearReLU_1"])
    assert sorted(pd.read_parquet(variant / "manifest.parquet")["network"]) == ["LinearReLU_1", "LinearReLU_3"]
    assert (variant / "LinearReLU_3.py").read_text() == rendered


def test_generating_a_network_the_spec_does_not_make_names_it(tmp_path):
    from netzoo.errors import SpecError
    from netzoo.generate import generate_zoo

    with pytest.raises(SpecError, match="makes no network named LinearReLU_99"):
        generate_zoo("depth-width", dataset="digits", out=tmp_path, progress=False, networks=["LinearReLU_99"])


def test_a_selection_that_matches_nothing_names_the_zoos_families():
    manifest = pd.DataFrame({"network": ["Conv2dReLU_1"], "family": ["Conv2d"], "activation": ["ReLU"]})
    with pytest.raises(RecipeError, match="matches no network of the zoo; its families: Conv2d"):
        check_selection(manifest, Selection(family=("Linear",)), "grid 'x'")


DROPOUTS = """
[grid]
name = "dropouts"
spec = "depth-width"
networks = { name = ["LinearReLU_1"] }
[base]
epochs = 2
batch_norm = true
[axes]
dropout = [0.1, 0.3]
lr = [0.002, 0.01]
"""


@pytest.mark.slow
def test_a_sweeps_dropout_variants_of_a_network_train_as_one_group_with_the_rows_of_each_alone(tmp_path,
                                                                                               monkeypatch):
    """Dropout is a template option: each probability is a zoo variant, the same network but for Dropout(p). Their
    runs (and the lrs') train as one fused group, each run drawing its own masks with its own p."""
    import numpy as np

    from netzoo.executors import tasks

    groups, real = [], tasks.train_runs
    monkeypatch.setattr(tasks, "train_runs", lambda build, runs, *a, **k: (
        groups.append(sorted((r.recipe.dropout, r.recipe.lr) for r in runs)), real(build, runs, *a, **k))[1])
    grid = grid_from_toml(DROPOUTS, where="dropouts.toml")
    fused = run_sweep(grid, zoo=None, dataset="digits", results=tmp_path / "fused", seeds=[0], workers=1, quiet=True)
    assert groups == [[(0.1, 0.002), (0.1, 0.01), (0.3, 0.002), (0.3, 0.01)]]
    alone = run_sweep(grid, zoo=None, dataset="digits", results=tmp_path / "alone", seeds=[0], workers=1, quiet=True,
                      fuse="off")
    assert fused.failed == alone.failed == 0 and len(groups) == 5
    key = ["recipe", "epoch"]
    a, b = (load(tmp_path / side, tables=["epochs"]).epochs.sort_values(key).reset_index(drop=True)
            for side in ("alone", "fused"))
    pd.testing.assert_frame_equal(a[key], b[key])
    np.testing.assert_allclose(a[["train_loss", "test_loss", "test_acc"]], b[["train_loss", "test_loss", "test_acc"]],
                               rtol=1e-4, atol=1e-4)
