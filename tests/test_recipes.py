"""Recipes and recipe grids: TOML round trips, clear refusals, shipped grids, network selection."""

from __future__ import annotations

import pandas as pd
import pytest

from netzoo.errors import RecipeError
from netzoo.recipe import (STUDY, Grid, Recipe, Selection, from_toml, grid_from_toml, load_grid, load_recipe,
                           shipped_grids, to_toml)

SHIPPED = ["batch-norm", "batch-size", "deep-mlp", "depth-width", "early-stopping", "lr", "optimizers",
           "regularisation"]


def test_recipe_round_trips_through_toml_with_the_same_hash(tmp_path):
    recipe = Recipe(name="sgd-cosine", optimizer="nesterov", lr=1e-5, momentum=0.9, weight_decay=5e-4,
                    batch_size=16, epochs=7, schedule="cosine", init="kaiming-uniform", dropout=0.25,
                    batch_norm=True, early_stopping_patience=5, early_stopping_min_delta=1e-3, validation=0.1)
    path = tmp_path / "mine.toml"
    path.write_text(to_toml(recipe))
    again = load_recipe(path)
    assert again == recipe and again.hash == recipe.hash


def test_integer_lr_in_toml_hashes_like_the_float():
    assert from_toml("[recipe]\nlr = 1\n").hash == from_toml("[recipe]\nlr = 1.0\n").hash


def test_unknown_recipe_key_is_refused_naming_file_key_and_allowed_keys(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('[recipe]\nname = "x"\noptimiser = "adam"\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "typo.toml" in message and "optimiser" in message and "allowed:" in message and "optimizer" in message


def test_a_table_beside_recipe_is_refused_not_ignored():
    with pytest.raises(RecipeError, match=r"x.toml: a recipe file holds one \[recipe\] table and nothing else; "
                                          r"found unknown key\(s\) extra"):
        from_toml('[recipe]\nlr = 0.1\n[extra]\nepochs = 3\n', where="x.toml")


def test_wrongly_typed_value_is_refused_with_its_key():
    with pytest.raises(RecipeError, match="batch_size must be int"):
        from_toml('[recipe]\nbatch_size = "16"\n', where="bad.toml")


def test_unknown_grid_keys_are_refused_per_table():
    with pytest.raises(RecipeError, match=r"g.toml: \[grid.networks\]: unknown key\(s\) families; allowed: family"):
        grid_from_toml('[grid]\nnetworks = { families = ["Linear"] }\n[[recipes]]\nname = "a"\n', where="g.toml")
    with pytest.raises(RecipeError, match=r"g.toml: \[axes\]: unknown key\(s\) learning_rate"):
        grid_from_toml("[axes]\nlearning_rate = [0.1]\n", where="g.toml")
    with pytest.raises(RecipeError, match=r"g.toml: unknown key\(s\) recipe; allowed: grid, base, axes, recipes"):
        grid_from_toml('[recipe]\nlr = 0.1\n', where="g.toml")


def test_grid_axes_make_the_product_with_readable_names():
    grid = grid_from_toml("""
        [base]
        epochs = 2
        [axes]
        optimizer = [{ optimizer = "sgd-momentum", lr = 0.01 }, "adam"]
        lr = [0.1, 1e-5]
    """, where="g.toml")
    assert [r.name for r in grid.recipes] == ["sgd-momentum+lr=0.1", "sgd-momentum+lr=1e-05", "adam+lr=0.1",
                                              "adam+lr=1e-05"]
    assert all(r.epochs == 2 for r in grid.recipes)


def test_identical_recipes_in_one_grid_are_refused():
    with pytest.raises(RecipeError, match="identical"):
        grid_from_toml('[[recipes]]\nname = "a"\n[[recipes]]\nname = "b"\n', where="g.toml")


def test_grid_round_trips_through_toml():
    grid = load_grid("optimizers")
    again = grid_from_toml(grid.to_toml(), where="again.toml")
    assert again == grid
    assert [r.hash for r in again.recipes] == [r.hash for r in grid.recipes]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_grid_loads_with_distinct_recipes(name):
    grid = load_grid(name)
    assert grid.name == name and len(grid.recipes) >= 1
    assert len({r.hash for r in grid.recipes}) == len(grid.recipes)


def test_every_grid_the_issue_names_is_shipped():
    assert shipped_grids() == SHIPPED


def test_optimizers_grid_is_three_optimizers_by_four_inits_on_an_mlp():
    grid = load_grid("optimizers")
    assert {r.optimizer for r in grid.recipes} == {"sgd-momentum", "rmsprop", "adam"}
    assert {r.init for r in grid.recipes} == {"xavier-normal", "kaiming-normal", "default", "randn"}
    assert grid.networks.family == ("Linear",)


def test_unknown_grid_name_lists_the_shipped_ones():
    with pytest.raises(RecipeError, match="shipped grids: batch-norm, batch-size"):
        load_grid("optimisers")


def test_load_recipe_takes_study_grid_slash_recipe_and_recipe_objects():
    assert load_recipe(None) is STUDY and load_recipe("study") is STUDY
    assert load_recipe("lr/lr=0.01").lr == pytest.approx(0.01)
    assert load_recipe(STUDY) is STUDY
    with pytest.raises(RecipeError, match="has no recipe 'nope'"):
        load_recipe("lr/nope")


def test_selection_filters_by_family_activation_and_name_then_keeps_n_per_cell():
    manifest = pd.DataFrame({
        "network": ["LinearReLU_10", "LinearReLU_2", "LinearReLU_1", "LinearTanh_1", "Conv2dReLU_1"],
        "family": ["Linear", "Linear", "Linear", "Linear", "Conv2d"],
        "activation": ["ReLU", "ReLU", "ReLU", "Tanh", "ReLU"],
    })
    assert Selection(family=("Linear",), per_cell=2).select(manifest) == ["LinearReLU_1", "LinearReLU_2",
                                                                          "LinearTanh_1"]
    assert Selection(activation=("ReLU",), name=("*_1*",)).select(manifest) == ["Conv2dReLU_1", "LinearReLU_1",
                                                                                 "LinearReLU_10"]
    # natural order: _2 before _10
    assert Selection().select(manifest) == ["Conv2dReLU_1", "LinearReLU_1", "LinearReLU_2", "LinearReLU_10",
                                            "LinearTanh_1"]
    assert Grid(name="g", recipes=(STUDY,)).networks == Selection()  # no selection: the whole zoo


# --- analysis.recipes: recipe comparison, depth x width, gradients per layer -----------------------------
def _two_recipes():
    """Two networks under 'adam' (good, batch 16) and 'sgd' (poor, batch 1), as one results table."""
    import json
    from types import SimpleNamespace

    from synthetic import from_curves

    parts = []
    for recipe, batch, curve in (("adam", 16, [0.5, 0.8, 0.9]), ("sgd", 1, [0.2, 0.3, 0.4])):
        part = from_curves({("LinearReLU_1", 0): curve, ("Conv2dReLU_1", 0): [c + 0.05 for c in curve]},
                           recipe=recipe, recipe_hash=recipe[0] * 16)
        part.networks["recipe_json"] = json.dumps({"batch_size": batch, "optimizer": recipe})
        parts.append(part)
    return SimpleNamespace(**{t: pd.concat([getattr(p, t) for p in parts], ignore_index=True)
                              for t in ("networks", "epochs", "layers")})


def test_recipe_comparison_states_the_best_recipe_and_steps_per_epoch():
    from analysis.recipes import recipe_comparison, report_sections

    tables = _two_recipes()
    table = recipe_comparison(tables.epochs, tables.networks, by_family=False, train_size=1437)
    assert list(table["recipe"]) == ["sgd", "adam"]  # in the grid's axis order: batch 1, then 16
    assert table.set_index("recipe").loc["adam", "test_balanced_acc"] == pytest.approx(0.925)
    assert list(table["steps_per_epoch"]) == [1437, 90]
    sections = {s.key: s for s in report_sections(tables)}
    assert {"recipes-comparison", "recipes-curves", "recipes-gap"} <= set(sections)
    assert sections["recipes-comparison"].finding.startswith("adam gives the best mean balanced accuracy (0.925")


def test_recipe_comparison_leaves_a_diverged_run_out_of_the_means_and_counts_it():
    from analysis.recipes import learning_curves, recipe_comparison

    tables = _two_recipes()
    run = lambda frame: (frame["recipe"] == "adam") & (frame["network"] == "Conv2dReLU_1")  # noqa: E731
    tables.networks.loc[run(tables.networks), "status"] = "diverged"
    # as a results folder written before diverged epochs were null stored it: argmax of NaN, ~0.1
    tables.epochs.loc[run(tables.epochs) & (tables.epochs["epoch"] == 3), ["status", "test_balanced_acc"]] = \
        ["diverged", 0.1]
    table = recipe_comparison(tables.epochs, tables.networks, by_family=False).set_index("recipe")
    assert table.loc["adam", ["runs", "left_out"]].tolist() == [1, 1]
    assert table.loc["adam", "test_balanced_acc"] == pytest.approx(0.9)  # LinearReLU_1 alone
    assert table.loc["adam", "diverged"] == 0.5 and table.loc["sgd", "left_out"] == 0
    curves = learning_curves(tables.epochs, networks=tables.networks)
    assert curves.attrs["left_out"] == 1 and curves.query("recipe == 'adam'")["runs"].tolist() == [1, 1, 1]


def test_depth_width_heatmap_and_vanishing_gradient_sections():
    from types import SimpleNamespace

    from analysis.recipes import depth_width, gradient_by_depth, report_sections
    from synthetic import from_curves

    nets = {f"LinearReLU_{d}{w:02d}": (d, w) for d in (1, 2, 6) for w in (8, 32)}  # LinearReLU_632: 6 x 32
    tables = from_curves({(n, 0): [0.5 + 0.01 * d + 0.001 * w] for n, (d, w) in nets.items()},
                         costs={n: {"depth": d} for n, (d, w) in nets.items()}, recipe="batch-norm")
    tables.networks["widths"] = [[nets[n][1]] * nets[n][0] + [10] for n in tables.networks["network"]]
    grid = depth_width(tables.epochs, tables.networks).set_index(["depth", "width"])
    assert grid.loc[(6, 32), "test_balanced_acc"] == pytest.approx(0.592)
    # gradient norms halve at each layer towards the input of the deepest network
    deep = "LinearReLU_632"
    layers = pd.DataFrame({"network": deep, "recipe": "batch-norm", "recipe_hash": "h", "seed": 0, "epoch": 1,
                           "layer": [f"fc{i}" for i in range(1, 8)] + ["act1"],
                           "grad_norm_mean": [2.0 ** (i - 7) for i in range(1, 8)] + [None]})
    grads = gradient_by_depth(layers, tables.networks)
    assert list(grads["layer"]) == [f"fc{i}" for i in range(1, 8)] and grads["layer_index"].iloc[-1] == 7
    sections = {s.key: s for s in report_sections(SimpleNamespace(networks=tables.networks, epochs=tables.epochs,
                                                                   layers=layers))}
    assert "depth 6 x width 32 (0.592)" in sections["recipes-depth-width"].finding
    assert "first/last layer 0.016" in sections["recipes-gradients"].finding


@pytest.mark.parametrize("grid, axes", [("optimizers", ["optimizer", "init"]),
                                        ("regularisation", ["weight_decay", "dropout"]),
                                        ("early-stopping", ["early_stopping_patience"])])
def test_recipe_axes_are_read_back_from_the_recipes_without_dependent_fields(grid, axes):
    from analysis.recipes import recipe_axes

    recipes = load_grid(grid).recipes
    networks = pd.DataFrame({"network": "LinearReLU_1", "recipe": [r.name for r in recipes],
                             "recipe_hash": [r.hash for r in recipes], "recipe_json": [r.to_json() for r in recipes]})
    # lr and momentum come with the optimizer; adamw comes with weight decay; min delta with patience
    assert list(recipe_axes(networks).columns) == ["recipe"] + axes


def test_recipe_hashes_stay_those_of_existing_results():
    """Issue 13 kept Recipe.dropout and Recipe.batch_norm (template options the trainer never reads) in the hash:
    a recipe names the zoo variant it trains (a sweep's dropout/bn variant zoo), and every results folder made
    before keeps its keys. These hashes were recorded from main before the refactor."""
    assert STUDY.hash == "33f1eea09af28fd1"
    assert STUDY.replace(epochs=2).hash == "c246d447850f0964"  # tests/data/same_numbers.json's recipe
    assert STUDY.replace(dropout=0.3, batch_norm=True).hash == "57328ff6077b8327"
