"""The validation split: a recipe field, held out of the training split stratified by class with a fixed split
seed, the same for every network and training seed, and recorded per recipe beside the full dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from netzoo.datasets import VALIDATION_SEED, load_dataset
from netzoo.errors import DatasetError, RecipeError, ResultsError
from netzoo.identity import record_split
from netzoo.recipe import STUDY, Recipe, from_toml, load_recipe

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
needs_mnist = pytest.mark.skipif(not (SHARED / "MNIST" / "raw").is_dir(), reason=f"no real MNIST under {SHARED}")


# --- the recipe field ------------------------------------------------------------------------------
def test_the_study_recipe_keeps_the_hash_it_had_before_the_validation_field():
    # the hash every results folder written before this field records for the study's recipe
    assert STUDY.hash == Recipe().hash == "33f1eea09af28fd1"
    assert Recipe(validation=0).hash == STUDY.hash and from_toml("[recipe]\nvalidation = 0\n").hash == STUDY.hash


def test_a_validation_split_enters_the_hash():
    assert Recipe(validation=0.1).hash != STUDY.hash
    assert Recipe(validation=0.1).hash != Recipe(validation=0.2).hash


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_a_validation_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(RecipeError, match=r"validation must be a fraction of the training split in \[0, 1\)"):
        Recipe(validation=fraction)


def test_the_shipped_study_val_recipe_is_the_study_holding_out_one_twelfth():
    recipe = load_recipe("study+val")
    assert recipe.name == "study+val" and recipe.validation == 1 / 12
    assert recipe.replace(validation=0.0).hash == STUDY.hash  # nothing else differs from the study's
    assert math.ceil(recipe.validation * 60000) == 5000


# --- the split ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _class_shares_hold(full_labels: np.ndarray, val_labels: np.ndarray, fraction: float) -> None:
    full = np.bincount(full_labels, minlength=10)
    held = np.bincount(val_labels, minlength=10)
    assert held.sum() == math.ceil(fraction * len(full_labels))
    # each class's share of the held-out samples is its share of the full split, to within one sample
    assert np.all(np.abs(held - full * held.sum() / full.sum()) <= 1), (held, full)


@pytest.mark.parametrize("fraction", [1 / 12, 0.25, 0.5])
def test_the_validation_split_is_disjoint_from_training_and_together_they_are_the_training_split(digits, fraction):
    split = digits.with_validation(fraction)
    idx = split.validation.indices
    rest = np.setdiff1d(np.arange(len(digits.y_train)), idx)
    assert len(np.intersect1d(idx, rest)) == 0 and len(idx) + len(rest) == len(digits.y_train)
    assert torch.equal(split.x_val, digits.x_train[idx]) and torch.equal(split.y_val, digits.y_train[idx])
    assert torch.equal(split.x_train, digits.x_train[rest]) and torch.equal(split.y_train, digits.y_train[rest])
    # no held-out image is also a training image (the split is by position; digits has no duplicate rows here)
    train_rows = {row.numpy().tobytes() for row in split.x_train.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in split.x_val.flatten(1))
    assert torch.equal(split.x_test, digits.x_test) and (split.mean, split.std) == (digits.mean, digits.std)


@pytest.mark.parametrize("fraction", [1 / 12, 0.1, 0.3])
def test_the_validation_split_is_stratified_within_one_sample_of_each_class_share(digits, fraction):
    split = digits.with_validation(fraction)
    _class_shares_hold(digits.y_train.numpy(), split.y_val.numpy(), fraction)
    assert list(split.validation.class_counts) == np.bincount(split.y_val.numpy(), minlength=10).tolist()


def test_the_validation_split_is_the_same_for_every_training_seed_and_network(digits):
    # the split depends on the dataset, the fraction and the fixed split seed only: no global RNG, no training
    # seed, no network enters it, so every run of a zoo holds out the same samples
    draws = []
    for seed in (0, 42, 12345):
        torch.manual_seed(seed)
        np.random.seed(seed)
        draws.append(digits.with_validation(1 / 12).validation.indices)
    assert all(np.array_equal(draws[0], d) for d in draws[1:])
    assert digits.with_validation(1 / 12).validation.seed == VALIDATION_SEED
    other = digits.with_validation(1 / 12, split_seed=VALIDATION_SEED + 1).validation.indices
    assert not np.array_equal(draws[0], other)  # the split seed, and only it, draws another split


def test_recorded_indices_give_the_same_split_without_drawing_again(digits):
    drawn = digits.with_validation(1 / 12)
    given = digits.with_validation(1 / 12, indices=drawn.validation.indices[::-1].copy())
    assert torch.equal(given.x_val, drawn.x_val) and torch.equal(given.y_train, drawn.y_train)
    with pytest.raises(DatasetError, match="not distinct positions"):
        digits.with_validation(1 / 12, indices=[0, 0, 5])
    with pytest.raises(DatasetError, match="not distinct positions"):
        digits.with_validation(1 / 12, indices=[len(digits.y_train)])


def test_no_validation_is_the_dataset_itself(digits):
    assert digits.with_validation(0.0) is digits
    assert digits.x_val is None and digits.validation is None


def test_a_split_too_small_to_stratify_is_refused_with_the_fix(digits):
    with pytest.raises(DatasetError, match="cannot be stratified over 10 classes.*hold out at least 10 samples"):
        digits.with_validation(0.001)


def test_a_split_leaving_too_little_to_train_on_is_refused_with_a_fix_that_works(digits):
    with pytest.raises(DatasetError, match="leave at least 10 samples to train on, e.g. validation = 0.986") as exc:
        digits.with_validation(0.995)
    assert digits.with_validation(float(str(exc.value).rsplit(" = ", 1)[1].rstrip("."))).x_train.shape[0] >= 10


@pytest.mark.parametrize("fraction", ["0.001", "0.995"])
def test_a_refused_validation_fraction_leaves_no_results_folder(tmp_path, monkeypatch, capsys, fraction):
    from cli_helpers import one_line, run_main
    from zoo_fixture import make_zoo

    zoo = make_zoo(tmp_path / "zoo", names=("Basic",))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[recipe]\nname = "tiny-val"\nvalidation = {fraction}\nepochs = 1\n')
    code, _, err = run_main(monkeypatch, capsys, "train", "--zoo", zoo, "--dataset", "digits", "--results",
                            tmp_path / "results", "--recipe", recipe, "--workers", "1", "--device", "cpu", "--quiet")
    assert code == 2 and "validation" in one_line(err)
    assert not (tmp_path / "results").exists()


def test_a_missing_data_root_leaves_no_results_folder(tmp_path, monkeypatch, capsys):
    from cli_helpers import one_line, run_main
    from zoo_fixture import make_zoo

    zoo = make_zoo(tmp_path / "zoo", names=("Basic",))
    code, _, err = run_main(monkeypatch, capsys, "train", "--zoo", zoo, "--dataset", "mnist", "--results",
                            tmp_path / "results", "--data-root", tmp_path / "nothing", "--workers", "1",
                            "--device", "cpu", "--quiet")
    assert code == 2 and one_line(err)
    assert not (tmp_path / "results").exists()


def test_a_split_dataset_is_never_split_again_nor_described_as_the_full_one(digits):
    split = digits.with_validation(0.25)
    with pytest.raises(ValueError, match="already holds out"):
        split.with_validation(0.25)
    with pytest.raises(ValueError, match="describe the full dataset"):
        split.describe()  # dataset.json records the full dataset: its identity never depends on a recipe


def test_a_split_dataset_moves_its_validation_tensors_too(digits):
    moved = digits.with_validation(0.25).to("cpu")
    assert moved.x_val is not None and moved.y_val.device.type == "cpu"


@pytest.mark.mnist
@needs_mnist
def test_study_val_holds_out_5000_of_mnist_stratified():
    mnist = load_dataset("mnist", root=SHARED)
    split = mnist.with_validation(load_recipe("study+val").validation)
    assert (len(split.y_val), len(split.y_train)) == (5000, 55000)
    _class_shares_hold(mnist.y_train.numpy(), split.y_val.numpy(), 1 / 12)


# --- the record ---------------------------------------------------------------------------------------
def test_the_split_is_recorded_once_per_fraction_with_its_indices(tmp_path, digits):
    split = digits.with_validation(1 / 12).validation
    path = record_split(tmp_path, split)
    record = json.loads(path.read_text())
    assert path == tmp_path / "splits" / "validation-0.08333333333333333-seed0.json"
    assert record["train_size"] == 1437 and record["validation_size"] == 120 and record["train_size_after"] == 1317
    assert record["seed"] == VALIDATION_SEED and record["fraction"] == 1 / 12
    stored = np.load(tmp_path / record["indices"], allow_pickle=False)
    assert np.array_equal(stored, split.indices) and record["indices_sha256"] == split.sha256
    assert record_split(tmp_path, digits.with_validation(1 / 12).validation) == path  # again: the same record
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [path.name, path.with_suffix(".npy").name]


def test_another_split_under_a_recorded_name_is_refused_naming_both(tmp_path, digits):
    split = digits.with_validation(1 / 12).validation
    record_split(tmp_path, split)
    other = digits.with_validation(1 / 12, split_seed=VALIDATION_SEED + 1).validation
    forged = type(split)(split.dataset, split.fraction, split.seed, other.indices, split.train_size,
                         other.class_counts)  # what another scikit-learn could draw under the same name
    with pytest.raises(ResultsError, match=r"records another validation split of digits .*Pass a new --results"):
        record_split(tmp_path, forged)
    assert np.array_equal(np.load(tmp_path / "splits" / f"{split.name}.npy"), split.indices)  # left as it was


@pytest.mark.parametrize("damage", [b"", b"garbage", None])
def test_a_damaged_or_missing_indices_file_is_written_again(tmp_path, digits, damage):
    split = digits.with_validation(1 / 12).validation
    record_split(tmp_path, split)
    npy = tmp_path / "splits" / f"{split.name}.npy"
    if damage is None:
        npy.unlink()
    else:
        npy.write_bytes(damage)
    record_split(tmp_path, split)
    assert np.array_equal(np.load(npy), split.indices)
    assert not [p for p in (tmp_path / "splits").iterdir() if p.name.startswith(".tmp-")]


# --- parts written before the validation columns -----------------------------------------------------
def test_parts_written_before_the_validation_columns_still_count_read_as_null_and_compact(tmp_path):
    import pyarrow.parquet as pq

    from netzoo.compact import compact_results
    from netzoo.results import load, part_name, scan, write_part
    from netzoo.runner import run_job
    from netzoo.schema import ADDED_COLUMNS, epochs_schema
    from zoo_fixture import digits_job, make_zoo

    zoo = make_zoo(tmp_path / "zoo", names=("Basic", "LinearReLU_1"))
    results = tmp_path / "results"
    run_job(digits_job(zoo, results, epochs=1))
    before = load(results)
    # Basic's epochs part as a netzoo without the validation columns wrote it, and its networks part recording
    # that part's checksum (as that netzoo did); Basic sorts first, so its columns lead when parts are merged
    recipe_hash = STUDY.replace(epochs=1).hash
    old, new = ("Basic", recipe_hash, 42), ("LinearReLU_1", recipe_hash, 42)
    part = results / "epochs" / part_name(old)
    pq.write_table(pq.read_table(part).drop_columns(list(ADDED_COLUMNS["epochs"])), part, write_page_checksum=True)
    network_part = results / "networks" / part_name(old)
    write_part(results, "networks", pq.read_table(network_part).replace_schema_metadata(None), old, 10)
    assert set(scan(results, fresh=True).complete) == {old, new}
    after = load(results)
    assert len(after.epochs) == len(before.epochs) and after.epochs["val_balanced_acc"].isna().all()
    compact_results(results)  # an old part and a new one merge into one file in the schema's columns
    assert set(scan(results, fresh=True).complete) == {old, new}
    (merged,) = (results / "epochs").glob("compact-*.parquet")
    assert pq.read_schema(merged).names == epochs_schema(10).names
    compacted = load(results)
    assert list(compacted.epochs.columns) == list(before.epochs.columns)
    assert compacted.epochs.sort_values("network")["test_acc"].tolist() == \
        before.epochs.sort_values("network")["test_acc"].tolist()


# --- training with a validation split ----------------------------------------------------------------
@pytest.fixture(scope="module")
def val_results(tmp_path_factory):
    """Two fixture networks x two seeds under study+val (1 epoch) on digits."""
    from netzoo.runner import run_job
    from zoo_fixture import digits_job, make_zoo

    root = tmp_path_factory.mktemp("val")
    zoo = make_zoo(root / "zoo", names=("Basic", "LinearReLU_1"))
    recipe = load_recipe("study+val").replace(epochs=2)
    summary = run_job(digits_job(zoo, root / "results", recipe=recipe, seeds=(42, 1)))
    assert summary.failed == 0
    return root / "results"


def test_every_network_and_seed_is_evaluated_on_the_one_recorded_split(val_results):
    from netzoo.results import load

    splits = sorted(p.name for p in (val_results / "splits").iterdir())
    assert splits == ["validation-0.08333333333333333-seed0.json", "validation-0.08333333333333333-seed0.npy"]
    epochs = load(val_results).epochs
    assert len(epochs) == 8 and epochs[["val_loss", "val_acc", "val_balanced_acc"]].notna().all().all()
    # 120 held-out samples: every accuracy is a whole number of them
    assert np.allclose((epochs["val_acc"] * 120).round(), epochs["val_acc"] * 120, atol=1e-9)
    record = json.loads((val_results / "dataset.json").read_text())
    assert record["train_size"] == 1437  # dataset.json keeps the full dataset


def test_a_worker_trains_on_the_recorded_split_without_drawing_it_again(val_results, tmp_path):
    import subprocess
    import sys

    from netzoo.datasets import cached_dataset
    from netzoo.identity import check_split

    indices = check_split(val_results, cached_dataset("digits"), 1 / 12)
    assert np.array_equal(indices, np.load(val_results / "splits" / "validation-0.08333333333333333-seed0.npy"))
    code = ("import sys; from netzoo.datasets import load_dataset; from netzoo.identity import check_split; "
            f"check_split({str(val_results)!r}, load_dataset('digits'), 1 / 12); print('sklearn.model_selection' in "
            "sys.modules)")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "False"  # read, not drawn


def test_the_exam_and_the_report_pick_on_the_validation_split_by_default(val_results, tmp_path, monkeypatch, capsys):
    from cli_helpers import run_main

    code, _, err = run_main(monkeypatch, capsys, "exam", "9", "--results", val_results)
    assert code == 0 and "picked on the validation split (val_balanced_acc)" in err
    code, out, _ = run_main(monkeypatch, capsys, "report", "--results", val_results, "--out", tmp_path / "report")
    assert code == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "picked on the validation split (val_balanced_acc) and reported on the test split" in page


# --- early stopping watches the validation split -----------------------------------------------------
def test_early_stopping_without_a_validation_split_is_refused_saying_how_to_add_one(tmp_path, monkeypatch, capsys):
    from cli_helpers import one_line, run_main

    with pytest.raises(RecipeError, match=r"early stopping watches the validation loss.*validation = 0\.0833"):
        Recipe(early_stopping_patience=3)
    recipe = tmp_path / "es.toml"
    recipe.write_text("[recipe]\nname = \"es\"\nearly_stopping_patience = 3\n")
    code, _, err = run_main(monkeypatch, capsys, "train", "--zoo", tmp_path, "--dataset", "digits", "--results",
                            tmp_path / "r", "--recipe", recipe)
    line = one_line(err)
    assert code == 2 and "--recipe study+val" in line and "early_stopping_patience = 0" in line
    assert not (tmp_path / "r").exists()
    assert Recipe(early_stopping_patience=3, validation=1 / 12).validation == 1 / 12


def test_the_shipped_early_stopping_grid_holds_a_validation_split_out_for_both_recipes():
    from netzoo.recipe import load_grid

    grid = load_grid("early-stopping")
    assert {r.name: (r.validation, r.early_stopping_patience) for r in grid.recipes} == \
        {"fixed-budget": (1 / 12, 0), "early-stopping": (1 / 12, 5)}
