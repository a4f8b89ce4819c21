"""The runner: plans, shards, claims, workers, resume after SIGKILL, failures recorded, refusals explained."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from netzoo import claims as claims_mod
from netzoo import runner
from netzoo.cli import cli
from netzoo.errors import NetzooError, RecipeError, ShapeMismatchError, UnknownNetworkError
from netzoo.results import completed_keys, load, part_name
from netzoo.runner import Task, parse_devices, parse_shard, plan, run_job, run_tasks
from netzoo.status import status_report
from zoo_fixture import HEALTHY, SOURCES, digits_job, make_zoo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"), names=tuple(SOURCES))


@pytest.fixture(scope="module")
def trained(zoo, tmp_path_factory):
    """The fixture zoo (4 healthy networks, one NaN, one broken) trained 2 epochs on digits."""
    results = tmp_path_factory.mktemp("results")
    summary = run_job(digits_job(zoo, results))
    return results, summary


def test_nan_network_is_diverged_and_broken_network_failed_and_the_run_goes_on(trained):
    results, summary = trained
    assert (summary.count("done"), summary.count("diverged"), summary.count("failed")) == (4, 1, 1)
    assert summary.failed == 1 and "4 done, 1 diverged, 0 stopped early, 1 failed" in summary.line()
    networks = load(results).networks.set_index("network")
    assert networks.loc["NaNNet_1", "status"] == "diverged" and networks.loc["NaNNet_1", "epochs_done"] == 1
    assert networks.loc["BrokenNet_1", "status"] == "failed"
    assert "planted failure" in networks.loc["BrokenNet_1", "error"]
    assert networks.loc["Basic", "status"] == "done" and pd.isna(networks.loc["Basic", "error"])


def test_results_record_job_recipe_and_dataset(trained):
    results, _ = trained
    (job_file,) = (results / "jobs").glob("*.json")
    record = json.loads(job_file.read_text())
    assert record["seeds"] == [42] and set(record["networks"]) == set(SOURCES)
    recipe = json.loads((results / "recipes" / f"{record['recipe_hash']}.json").read_text())
    assert recipe["epochs"] == 2 and recipe["optimizer"] == "adam" and recipe["batch_size"] == 25
    dataset = json.loads((results / "dataset.json").read_text())
    assert dataset["train_size"] == 1437 and dataset["test_size"] == 360 and "random_state=0" in dataset["split"]


def test_rerun_skips_complete_networks(trained, zoo):
    results, _ = trained
    summary = run_job(digits_job(zoo, results))
    assert summary.outcomes == [] and summary.already_complete == len(SOURCES)
    assert len(load(results).epochs) == 4 * 2 + 1


def test_two_shards_cover_the_zoo_exactly_once(zoo, tmp_path):
    job = digits_job(zoo, tmp_path, seeds=(0, 1, 2))
    everything = {t.key for t in plan(job)}
    shards = [{t.key for t in plan(dataclasses.replace(job, shard=(i, 2)))} for i in (1, 2)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == everything and len(everything) == len(SOURCES) * 3


def test_shard_auto_reads_the_slurm_array_variables(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "8")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    assert parse_shard("auto") == (4, 8)
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    assert parse_shard("auto") == (3, 8)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    with pytest.raises(NetzooError, match="SLURM_ARRAY_TASK_ID.*--shard i/N"):
        parse_shard("auto")
    with pytest.raises(NetzooError, match="1 <= i <= N"):
        parse_shard("9/8")


def test_networks_glob_selects_and_unknown_glob_is_refused(zoo, tmp_path):
    job = digits_job(zoo, tmp_path, networks="Linear*,Basic")
    assert [t.network for t in plan(job)] == ["Basic", "LinearReLU_1", "LinearTanh_1"]
    with pytest.raises(UnknownNetworkError, match="matches no network"):
        plan(dataclasses.replace(job, networks="Nope*"))


def test_wrong_shape_zoo_is_refused_naming_both_shapes(tmp_path):
    zoo = make_zoo(tmp_path / "zoo28", names=("Basic",), input_shape=(1, 28, 28))
    with pytest.raises(ShapeMismatchError) as err:
        plan(digits_job(zoo, tmp_path / "r"))
    message = str(err.value)
    assert "1x28x28" in message and "1x8x8" in message and "netzoo generate --dataset digits" in message


def test_recipe_with_dropout_the_zoo_lacks_is_refused_naming_the_fix(zoo, tmp_path):
    job = digits_job(zoo, tmp_path)
    with pytest.raises(RecipeError, match="template options.*netzoo generate"):
        plan(dataclasses.replace(job, recipe=job.recipe.replace(dropout=0.2)))


def test_corrupt_part_is_reported_and_retrained(zoo, tmp_path, caplog):
    job = digits_job(zoo, tmp_path, networks="Basic,LinearTanh_1", recipe=digits_job(zoo, tmp_path).recipe.replace(epochs=1))
    run_job(job)
    key = ("Basic", job.recipe.hash, 42)
    part = tmp_path / "epochs" / part_name(key)
    part.write_bytes(part.read_bytes()[:40])  # truncated mid-file
    assert key not in completed_keys(tmp_path)
    assert "corrupt" in caplog.text
    tables = load(tmp_path)
    assert list(tables.epochs["network"]) == ["LinearTanh_1"]  # the broken file is never read as data
    assert [t.network for t in plan(job)] == ["Basic"]
    run_job(job)
    epochs = load(tmp_path).epochs
    assert sorted(epochs["network"]) == ["Basic", "LinearTanh_1"]


def test_cuda_out_of_memory_is_retried_once_at_half_the_batch(zoo, tmp_path, monkeypatch):
    import torch

    from netzoo import train

    real = train.train_network
    calls = []

    def flaky(model, data, recipe, seed, device, lenses=None, batch_size=None):
        calls.append(batch_size)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        yield from real(model, data, recipe, seed, device, lenses=lenses, batch_size=batch_size)

    monkeypatch.setattr(train, "train_network", flaky)
    job = digits_job(zoo, tmp_path, networks="Basic", recipe=digits_job(zoo, tmp_path).recipe.replace(epochs=1))
    (outcome,) = run_tasks(job, plan(job))
    assert outcome.status == "done" and calls == [25, 12]
    row = load(tmp_path).networks.iloc[0]
    assert row["batch_size_used"] == 12 and row["oom_retries"] == 1


def test_stale_claims_are_taken_over_and_live_ones_respected(tmp_path):
    key = ("Basic", "abc", 1)
    path = claims_mod.claim_path(tmp_path, key)
    mine = claims_mod.Claims(tmp_path, heartbeat_s=3600)
    other = claims_mod.Claims(tmp_path, heartbeat_s=3600)
    try:
        assert mine.acquire(key) and not other.acquire(key)  # a live claim is respected
        mine.release(key)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        path.write_text(json.dumps({"host": claims_mod.HOST, "pid": dead.pid, "token": "x"}))
        assert other.acquire(key) and other.owns(key)  # a dead worker's claim is taken over at once
        other.release(key)
        path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "y"}))
        assert not mine.acquire(key)  # another host's fresh claim: alive until its heartbeat stops
        old = time.time() - claims_mod.STALE_S - 5
        os.utime(path, (old, old))
        assert mine.acquire(key) and mine.owns(key)
    finally:
        mine.close()
        other.close()
    assert not path.exists()


WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from zoo_fixture import digits_job
    from netzoo.runner import run_tasks, Task
    job = digits_job(Path({zoo!r}), Path({results!r}), seeds=(0, 1), networks="Basic,Linear*", epochs=1)
    tasks = [Task(**t) for t in json.loads(Path({tasks!r}).read_text())]
    outcomes = run_tasks(job, tasks)
    Path(sys.argv[1]).write_text(json.dumps([[o.network, o.seed] for o in outcomes if o.status != "skipped"]))
""")


def test_two_concurrent_workers_never_train_the_same_network(zoo, tmp_path):
    job = digits_job(zoo, tmp_path / "results", seeds=(0, 1), networks="Basic,Linear*", epochs=1)
    tasks = plan(job)
    (tmp_path / "tasks.json").write_text(json.dumps([dataclasses.asdict(t) for t in tasks]))
    script = WORKER.format(tests=str(REPO / "tests"), zoo=str(zoo), results=str(tmp_path / "results"),
                           tasks=str(tmp_path / "tasks.json"))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"w{i}.json")]) for i in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    trained = [{tuple(x) for x in json.loads((tmp_path / f"w{i}.json").read_text())} for i in range(2)]
    assert not trained[0] & trained[1]
    assert trained[0] | trained[1] == {(t.network, t.seed) for t in tasks}
    assert len(load(tmp_path / "results").networks) == len(tasks)


def test_two_local_workers_train_every_key_once_this_process_first(zoo, tmp_path):
    job = digits_job(zoo, tmp_path, epochs=1, seeds=(0, 1), networks=",".join(HEALTHY), workers=2)
    threads = torch.get_num_threads()
    summary = run_job(job)
    assert torch.get_num_threads() == threads  # the caller's thread count is given back
    keys = {(name, seed) for name in HEALTHY for seed in (0, 1)}
    assert summary.count("done") == len(keys) and summary.lost == 0
    assert {(o.network, o.seed) for o in summary.outcomes} == keys
    on_disk = pd.read_parquet(tmp_path / "networks", columns=["network", "seed", "worker"])
    assert len(on_disk) == len(keys) and set(zip(on_disk["network"], on_disk["seed"])) == keys
    pids = {int(w.rsplit(":", 1)[1]) for w in on_disk["worker"]}
    # this process is the first worker and starts at once; the spawned one joins when torch is loaded
    # (with networks this small it may find nothing left)
    assert os.getpid() in pids and len(pids) <= 2


def test_killed_run_resumes_without_duplicate_rows(zoo, tmp_path):
    results = tmp_path / "results"
    args = [sys.executable, "-m", "netzoo.cli", "train", "--zoo", str(zoo), "--dataset", "digits", "--results",
            str(results), "--epochs", "2", "--seeds", "0,1", "--networks", ",".join(HEALTHY),
            "--device", "cpu", "--workers", "1", "--no-lenses", "--quiet"]
    proc = subprocess.Popen(args, start_new_session=True, cwd=REPO)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((results / "networks").glob("*.parquet"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run, whatever it was writing
    proc.wait()
    partial = len(completed_keys(results))
    assert 3 <= partial < len(HEALTHY) * 2
    subprocess.run(args, check=True, cwd=REPO, timeout=600)
    tables = load(results)
    assert len(tables.networks) == len(HEALTHY) * 2
    epochs = tables.epochs.groupby(["network", "seed", "epoch"]).size()
    assert len(epochs) == len(HEALTHY) * 2 * 2 and (epochs == 1).all()
    on_disk = pd.read_parquet(results / "epochs")
    assert not on_disk.duplicated(["network", "recipe_hash", "seed", "epoch"]).any()
    assert len(on_disk) == len(HEALTHY) * 2 * 2
    predictions = pd.read_parquet(results / "predictions", columns=["network", "seed", "epoch", "sample"])
    assert not predictions.duplicated().any() and len(predictions) == len(HEALTHY) * 2 * 2 * 360


def test_key_compacted_after_the_plan_is_skipped_not_trained_again(zoo, tmp_path):
    """A worker walking a stale task list (planned before another worker trained a key and `netzoo
    compact` merged its parts) must see the key complete in the compact files, not train it twice."""
    from netzoo.compact import compact_results

    job = digits_job(zoo, tmp_path, epochs=1)
    tasks = plan(job)
    first = [t for t in tasks if t.network == "Basic"]
    assert [o.status for o in run_tasks(job, first)] == ["done"]
    compact_results(tmp_path)
    assert not list((tmp_path / "networks").glob("Basic--*.parquet"))  # only in a compact file now
    again = run_tasks(job, first)
    assert [(o.status, o.error) for o in again] == [("skipped", "already complete")]
    on_disk = pd.read_parquet(tmp_path / "epochs")
    assert len(on_disk) == 1 and not on_disk.duplicated(["network", "recipe_hash", "seed", "epoch"]).any()


def test_status_counts_done_failed_diverged_and_left_per_family(trained, zoo, tmp_path):
    results, _ = trained
    report = status_report(results)
    assert "Linear" in report and "Basic" in report
    lines = {line.split()[0]: line.split() for line in report.splitlines() if line and line.split()[0] in
             ("Linear", "Basic", "Conv2d", "total")}
    assert lines["total"][1:8] == ["4", "1", "1", "0", "0", "0", "6"]  # done diverged failed stopped running left planned
    # a bigger plan (a second seed) that is not trained yet shows as left
    plan(digits_job(zoo, results, seeds=(42, 7)))
    total = status_report(results).splitlines()[-1].split()
    assert total[1:8] == ["4", "1", "1", "0", "0", "6", "12"]


def test_cli_train_and_status(zoo, tmp_path):
    result = CliRunner().invoke(cli, ["train", "--zoo", str(zoo), "--dataset", "digits", "--results",
                                      str(tmp_path), "--epochs", "1", "--networks", "Basic", "--device", "cpu",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output
    result = CliRunner().invoke(cli, ["status", "--results", str(tmp_path)])
    assert result.exit_code == 0 and "Basic" in result.output


def test_status_of_an_empty_results_folder_shows_zero_totals(tmp_path):
    total = status_report(tmp_path).splitlines()[-1].split()
    assert total[0] == "total" and set(total[1:]) == {"0"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda is valid here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cpu,cuda:1"])
def test_device_cuda_without_a_gpu_is_refused_not_silently_cpu(device):
    with pytest.raises(NetzooError, match="no CUDA GPU is visible here; use --device cpu"):
        parse_devices(device)
