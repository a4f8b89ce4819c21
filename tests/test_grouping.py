"""Which runs train as one fused group (netzoo.grouping, the one rule) and how the executor groups them: seeds of a
network and recipes of a sweep that differ only in numbers, on the CPU where it pays, with the rows of training
each run alone (--fuse off)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netzoo.grouping import fusion_pays, group_key, optimizer_family
from netzoo.jobs import TrainJob
from netzoo.recipe import STUDY, Recipe
from zoo_fixture import digits_job, make_zoo

ROW = {"network": "LinearReLU_1", "family": "Linear", "spec_hash": "0" * 64, "seed": 0, "input_shape": "1x8x8",
       "classes": 10, "batch_norm": False, "dropout": 0.0}


@pytest.mark.parametrize("change", [
    {"lr": 0.01}, {"weight_decay": 0.1}, {"amsgrad": False}, {"init": "xavier-normal"}, {"optimizer": "adamw"},
    {"early_stopping_min_delta": 0.5}, {"name": "other"},
])
def test_recipes_that_differ_only_in_numbers_share_a_group(change):
    assert group_key(ROW, STUDY.replace(**change)) == group_key(ROW, STUDY)
    held_out = STUDY.replace(validation=0.1)  # early stopping watches a validation split
    assert group_key(ROW, held_out.replace(early_stopping_patience=2)) == group_key(ROW, held_out)


@pytest.mark.parametrize("change", [
    {"batch_size": 16}, {"eval_batch_size": 500}, {"epochs": 5}, {"schedule": "cosine"}, {"optimizer": "sgd"},
    {"optimizer": "rmsprop"}, {"allow_tf32": False}, {"validation": 0.2},
])
def test_recipes_that_change_the_loop_or_the_update_rule_do_not(change):
    assert group_key(ROW, STUDY.replace(**change)) != group_key(ROW, STUDY)


def test_sgd_flavours_are_one_optimizer_family():
    assert {optimizer_family(Recipe(optimizer=o)) for o in ("sgd", "sgd-momentum", "nesterov")} == {"sgd"}
    assert optimizer_family(Recipe(optimizer="adamw")) == optimizer_family(STUDY) == "adam"


def test_dropout_probabilities_share_a_group_but_not_dropout_with_none():
    key = group_key({**ROW, "dropout": 0.3}, STUDY)
    assert group_key({**ROW, "dropout": 0.1}, STUDY) == key != group_key(ROW, STUDY)
    assert group_key({**ROW, "network": "LinearReLU_2"}, STUDY) != group_key(ROW, STUDY)
    assert group_key({**ROW, "batch_norm": True}, STUDY) != group_key(ROW, STUDY)


def test_fusion_pays_on_cuda_always_and_on_the_cpu_below_the_measured_flops():
    assert fusion_pays(ROW, "cpu", 8) and fusion_pays(ROW, "cuda:0", 2)
    for family, flops, cpu in (("Linear", 35_000, True), ("ResNetStyle", 6_166_554, True),
                               ("ResNetStyle", 22_312_350, False), ("Conv3d", 377_040, True),
                               ("Conv3d", 1_560_358, False)):  # networks measured in docs/benchmarks.md
        row = {**ROW, "family": family, "flops_train_step": flops}
        assert fusion_pays(row, "cpu", 8) == cpu, (family, flops)
        assert fusion_pays(row, "cuda", 8)
    assert not fusion_pays(ROW, "cpu", 1) and not fusion_pays(ROW, "cuda", 8, mode="off")


def test_fuse_mode_is_checked_where_a_job_is_made(tmp_path):
    from netzoo.errors import NetzooError

    with pytest.raises(NetzooError, match="--fuse 'on': allowed auto, off"):
        TrainJob(zoo=tmp_path, results=tmp_path, fuse="on")


def _spy(monkeypatch) -> list:
    """The (seed, lr) of every group the executor trains."""
    from netzoo.executors import tasks

    groups, real = [], tasks.train_runs
    monkeypatch.setattr(tasks, "train_runs", lambda build, runs, *a, **k: (
        groups.append([(r.seed, r.recipe.lr) for r in runs]), real(build, runs, *a, **k))[1])
    return groups


def test_a_sweeps_recipes_and_seeds_of_a_network_train_as_one_group_with_each_runs_rows_alone(tmp_path,
                                                                                             monkeypatch):
    from netzoo.results import load
    from netzoo.runner import run_job

    zoo = make_zoo(tmp_path / "zoo", names=("LinearReLU_1", "Conv2dReLU_1"))
    recipes = [STUDY.replace(name=f"lr{lr}", lr=lr, epochs=2) for lr in (0.001, 0.004)] + \
              [STUDY.replace(name="sgd", optimizer="sgd", lr=0.05, epochs=2)]  # another family: a group of its own
    sweep = tuple((r, zoo) for r in recipes)
    groups = _spy(monkeypatch)
    alone = run_job(digits_job(zoo, tmp_path / "alone", sweep=sweep, seeds=(1, 2), fuse="off", lenses=True))
    assert all(len(g) == 1 for g in groups) and len(groups) == 12
    groups.clear()
    fused = run_job(digits_job(zoo, tmp_path / "fused", sweep=sweep, seeds=(1, 2), lenses=True))
    assert groups == [[(1, 0.001), (2, 0.001), (1, 0.004), (2, 0.004)], [(1, 0.05), (2, 0.05)]] * 2
    assert fused.count("done") == alone.count("done") == 12
    assert {h: s.count("done") for h, s in fused.recipes.items()} == {r.hash: 4 for r in recipes}
    key = ["network", "recipe_hash", "seed", "epoch"]
    a, b = (load(tmp_path / side) for side in ("alone", "fused"))
    assert sorted(b.networks["fused_runs"]) == [2] * 4 + [4] * 8
    ea, eb = (t.epochs.sort_values(key).reset_index(drop=True) for t in (a, b))
    pd.testing.assert_frame_equal(ea[key], eb[key])
    np.testing.assert_allclose(ea[["train_loss", "test_loss", "test_acc"]], eb[["train_loss", "test_loss", "test_acc"]],
                               rtol=1e-4, atol=1e-4)
    la, lb = (t.layers.sort_values(key + ["layer"]).reset_index(drop=True) for t in (a, b))
    np.testing.assert_allclose(la["grad_norm_mean"].astype(float), lb["grad_norm_mean"].astype(float), rtol=1e-3)
    # a group's time is shared among its runs
    rows = b.networks.set_index(["network", "recipe", "seed"])["train_time_s"]
    assert rows.loc[("LinearReLU_1", "lr0.001", 1)] == rows.loc[("LinearReLU_1", "lr0.004", 2)] > 0


def test_a_group_holds_at_most_max_group_runs_and_fuse_off_holds_one(tmp_path, monkeypatch):
    from netzoo.executors import tasks
    from netzoo.runner import run_job

    zoo = make_zoo(tmp_path / "zoo", names=("LinearReLU_1",))
    monkeypatch.setattr(tasks, "MAX_GROUP_RUNS", 2)
    groups = _spy(monkeypatch)
    run_job(digits_job(zoo, tmp_path / "a", epochs=1, seeds=(1, 2, 3)))
    assert [len(g) for g in groups] == [2, 1]
    groups.clear()
    run_job(digits_job(zoo, tmp_path / "b", epochs=1, seeds=(1, 2, 3), fuse="off"))
    assert [len(g) for g in groups] == [1, 1, 1]


def test_more_workers_than_gpus_share_one_gpu(tmp_path):
    from netzoo.executors.local import worker_slots

    job = TrainJob(zoo=tmp_path, results=tmp_path, devices=("cuda:0",), workers=3)
    assert [device for device, _ in worker_slots(job, n_tasks=10)] == ["cuda:0"] * 3
    job = TrainJob(zoo=tmp_path, results=tmp_path, devices=("cuda:0", "cuda:1"), workers=5)
    assert [device for device, _ in worker_slots(job, n_tasks=10)] == ["cuda:0", "cuda:1"] * 2 + ["cuda:0"]


def test_a_group_holds_no_more_than_each_workers_share_of_the_tasks(tmp_path, monkeypatch):
    """A sweep of one network on two workers: two groups of half the runs each, one per worker, not one group
    that leaves the other worker idle."""
    from netzoo.executors import tasks
    from netzoo.jobs import plan

    zoo = make_zoo(tmp_path / "zoo", names=("LinearReLU_1",))
    groups = _spy(monkeypatch)
    job = digits_job(zoo, tmp_path / "r", epochs=1, seeds=(1, 2, 3, 4, 5), workers=2)
    tasks.run_tasks(job, plan(job))  # this process as one of the two workers: it trains every key
    assert [len(g) for g in groups] == [3, 2]


def test_each_task_has_one_outcome_when_runs_train_in_groups(tmp_path):
    """Tasks trained in an earlier task's group are not claimed, scanned and reported again ('already complete'),
    which the Ray executor would count as a second run."""
    from netzoo.executors import tasks
    from netzoo.jobs import plan

    zoo = make_zoo(tmp_path / "zoo", names=("LinearReLU_1",))
    job = digits_job(zoo, tmp_path / "r", epochs=1, seeds=(1, 2, 3, 4, 5), workers=2)
    outcomes = tasks.run_tasks(job, plan(job))
    assert sorted(o.seed for o in outcomes) == [1, 2, 3, 4, 5]
    assert {o.status for o in outcomes} == {"done"}
