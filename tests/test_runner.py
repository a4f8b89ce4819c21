"""The runner: plans, shards, claims, workers, resume after SIGKILL, failures recorded, refusals explained."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
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
from netzoo import jobs
from netzoo.cli import cli
from netzoo.errors import NetzooError, RecipeError, ShapeMismatchError, UnknownNetworkError
from netzoo.results import completed_keys, load, part_name
from netzoo.devices import parse_devices
from netzoo.executors.tasks import run_tasks
from netzoo.jobs import Task, plan
from netzoo.runner import run_job
from netzoo.shards import parse_shard
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


def test_two_shards_split_the_zoo_and_each_plans_its_own_share_first(zoo, tmp_path):
    job = digits_job(zoo, tmp_path, seeds=(0, 1, 2))
    everything = [t.key for t in plan(job)]
    shards = [set(jobs.shard_keys(dataclasses.replace(job, shard=(i, 2)))) for i in (1, 2)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(everything) and len(everything) == len(SOURCES) * 3
    for i, own in zip((1, 2), shards):
        tasks = plan(dataclasses.replace(job, shard=(i, 2)))
        assert {t.key for t in tasks[:len(own)]} == own and {t.share for t in tasks[:len(own)]} == {0}
        assert sorted(t.key for t in tasks) == sorted(everything)  # then it helps with the rest


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
    tables = load(tmp_path)
    assert "damaged" in caplog.text and "netzoo verify" in caplog.text
    assert list(tables.epochs["network"]) == ["LinearTanh_1"]  # the broken file is never read as data
    assert [t.network for t in plan(job)] == ["Basic"]
    run_job(job)
    epochs = load(tmp_path).epochs
    assert sorted(epochs["network"]) == ["Basic", "LinearTanh_1"]


def test_cuda_out_of_memory_is_retried_once_at_half_the_batch(zoo, tmp_path, monkeypatch):
    import torch

    from netzoo.executors import tasks

    real = tasks.train_runs
    calls = []

    def flaky(build, runs, data, device, lenses=False, batch_size=None, **options):
        calls.append(batch_size)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        yield from real(build, runs, data, device, lenses=lenses, batch_size=batch_size, **options)

    monkeypatch.setattr(tasks, "train_runs", flaky)
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
    from netzoo.executors.tasks import run_tasks
    from netzoo.jobs import Task
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


DIES_IN_A_WORKER = ("Linear", "None", 1, '''
import os
import time
from pathlib import Path


class DiesNet_1(nn.Module):
    """Trains in the process that runs the job; kills any spawned worker that trains it (as the OOM killer would)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({features}, {classes})

    def forward(self, x):
        marker = Path(os.environ["NETZOO_TEST_MARKER"])
        if os.getpid() != int(os.environ["NETZOO_TEST_PARENT"]):
            marker.touch()
            os._exit(9)
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline:  # this process waits until a worker died
            time.sleep(0.05)
        return F.log_softmax(self.fc1(torch.flatten(x, 1)), dim=1)
''')


def test_a_worker_that_dies_mid_task_costs_no_key(tmp_path, monkeypatch):
    """The local executor's pool breaks when a worker dies (BrokenProcessPool); this process trains on, takes the
    dead worker's stale claim over, and the run ends with every key whole, none lost or failed."""
    import zoo_fixture

    monkeypatch.setitem(zoo_fixture.SOURCES, "DiesNet_1", DIES_IN_A_WORKER)
    zoo = make_zoo(tmp_path / "zoo", names=("DiesNet_1",))
    marker = tmp_path / "a-worker-died"
    monkeypatch.setenv("NETZOO_TEST_MARKER", str(marker))
    monkeypatch.setenv("NETZOO_TEST_PARENT", str(os.getpid()))
    # --fuse off: each seed a task of its own, so that the spawned worker gets one (fused, this process takes both)
    summary = run_job(digits_job(zoo, tmp_path / "results", epochs=1, seeds=(0, 1), workers=2, fuse="off"))
    assert marker.exists()  # a spawned worker took a key and died training it
    assert summary.count("done") == 2 and summary.failed == 0 and summary.lost == 0, summary.line()
    assert len(completed_keys(tmp_path / "results")) == 2


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


# --- issue 12 B: a results folder holds one dataset, and a name one architecture per recipe -----------
def _with_arch(zoo, out, changed: dict):
    """A copy of ``zoo`` whose manifest gives the networks in ``changed`` other architecture ids."""
    import pyarrow.parquet as pq

    shutil.copytree(zoo, out)
    manifest = pq.read_table(out / "manifest.parquet").to_pandas()
    manifest["arch_id"] = [changed.get(n, a) for n, a in zip(manifest["network"], manifest["arch_id"])]
    from netzoo.schema import MANIFEST, conform

    pq.write_table(conform(manifest, MANIFEST), out / "manifest.parquet")
    return out


def test_a_zoo_whose_network_is_another_architecture_is_refused_naming_it(zoo, tmp_path, capsys, monkeypatch):
    from cli_helpers import one_line, run_main

    results = tmp_path / "results"
    run_job(digits_job(zoo, results, epochs=1, networks="Basic,LinearTanh_1"))
    other = _with_arch(zoo, tmp_path / "other", {"LinearTanh_1": "something-else"})
    with pytest.raises(NetzooError, match="LinearTanh_1.*--results"):
        plan(digits_job(other, results, epochs=1, networks="Basic,LinearTanh_1"))
    code, _, err = run_main(monkeypatch, capsys, "train", "--zoo", other, "--dataset", "digits", "--results",
                            results, "--epochs", "1", "--networks", "Basic,LinearTanh_1", "--device", "cpu",
                            "--workers", "1", "--quiet")
    assert code == 2 and "LinearTanh_1" in one_line(err) and "--results" in err
    # the same names under another recipe are another key: a sweep's variant zoo is welcome
    job = digits_job(other, results, epochs=1, networks="LinearTanh_1")
    assert [t.network for t in plan(dataclasses.replace(job, recipe=job.recipe.replace(lr=0.01)))] == ["LinearTanh_1"]


def test_a_zoo_planned_but_not_trained_yet_is_remembered(zoo, tmp_path):
    results = tmp_path / "results"
    plan(digits_job(zoo, results, epochs=1, networks="Basic,LinearTanh_1"))  # e.g. a run killed at once
    other = _with_arch(zoo, tmp_path / "other", {"Basic": "another-basic"})
    with pytest.raises(NetzooError, match="Basic"):
        plan(digits_job(other, results, epochs=1, networks="Basic"))


def _with_file(zoo, out, network: str, keep=None):
    """A copy of ``zoo`` where ``network``'s file holds one more comment (its manifest sha256 updated: a zoo
    regenerated with the same architecture but other code), holding only the networks in ``keep`` if given."""
    import hashlib

    import pyarrow.parquet as pq

    from netzoo.schema import MANIFEST, conform

    shutil.copytree(zoo, out)
    manifest = pq.read_table(out / "manifest.parquet").to_pandas()
    if keep is not None:
        manifest = manifest[manifest["network"].isin(keep)]
    if network:
        path = out / manifest.loc[manifest["network"] == network, "file"].item()
        path.write_text(path.read_text() + "# regenerated\n")
        manifest.loc[manifest["network"] == network, "file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    pq.write_table(conform(manifest.reset_index(drop=True), MANIFEST), out / "manifest.parquet")
    return out


@pytest.mark.parametrize("change", ["another file for a trained network", "a trained network missing"])
def test_a_zoo_without_the_trained_networks_files_is_refused_even_when_nothing_is_left_to_train(
        zoo, tmp_path, capsys, monkeypatch, change):
    """Training another zoo into a folder would switch the folder's record of the code its networks came from:
    load_network and export would break for every network trained from the first zoo."""
    from cli_helpers import one_line, run_main

    from netzoo.results import load_network

    results = tmp_path / "results"
    run_job(digits_job(zoo, results, epochs=1, networks="Basic,LinearTanh_1"))
    if change == "another file for a trained network":
        other, named = _with_file(zoo, tmp_path / "other", "LinearTanh_1"), "LinearTanh_1"
    else:
        other, named = _with_file(zoo, tmp_path / "other", "", keep=["Basic"]), "lacks LinearTanh_1"
    code, out, err = run_main(monkeypatch, capsys, "train", "--zoo", other, "--dataset", "digits", "--results",
                              results, "--epochs", "1", "--networks", "Basic", "--device", "cpu", "--workers", "1",
                              "--quiet")
    assert code == 2 and named in one_line(err) and "--results" in err, err
    assert load_network(results, "LinearTanh_1").__class__.__name__ == "LinearTanh_1"
    # the same files in another folder (a moved or copied zoo) are the same zoo
    copy = _with_file(zoo, tmp_path / "copy", "")
    assert run_job(digits_job(copy, results, epochs=1, networks="Basic,LinearTanh_1")).count("done") == 0
    assert load_network(results, "LinearTanh_1").__class__.__name__ == "LinearTanh_1"


@pytest.mark.slow
def test_a_zoo_generated_with_another_seed_is_refused(tmp_path, capsys, monkeypatch):
    from cli_helpers import one_line, run_main

    from netzoo.generate import generate_zoo

    spec = REPO / "tests" / "data" / "tiny.toml"
    first = generate_zoo(spec=str(spec), dataset="digits", out=tmp_path / "zoo0", progress=False)
    second = generate_zoo(spec=str(spec), dataset="digits", seed=1, out=tmp_path / "zoo1", progress=False)
    differ = sorted(set(first.merge(second, on="network").query("arch_id_x != arch_id_y")["network"]))
    assert differ, "seed 1 should change some architecture"
    args = ["--dataset", "digits", "--results", tmp_path / "r", "--epochs", "1", "--device", "cpu", "--workers",
            "1", "--quiet", "--networks", differ[0]]
    assert run_main(monkeypatch, capsys, "train", "--zoo", tmp_path / "zoo0", *args)[0] == 0
    code, out, err = run_main(monkeypatch, capsys, "train", "--zoo", tmp_path / "zoo1", *args)
    assert code == 2 and differ[0] in one_line(err) and "already complete" not in out


def _mnist_root(tmp_path):
    """A copy of the shared MNIST files (never written to)."""
    shared = REPO.parent / "shared" / "datasets" / "MNIST"
    if not shared.is_dir():
        pytest.skip("no MNIST under ../shared/datasets")
    root = tmp_path / "data"
    shutil.copytree(shared, root / "MNIST")
    return root


@pytest.mark.slow
def test_a_second_dataset_into_one_results_folder_is_refused_naming_both(zoo, tmp_path, capsys, monkeypatch):
    from cli_helpers import one_line, run_main

    results = tmp_path / "results"
    run_job(digits_job(zoo, results, epochs=1, networks="Basic"))
    mnist_zoo = make_zoo(tmp_path / "zoo28", names=("Basic",), input_shape=(1, 28, 28))
    code, out, err = run_main(monkeypatch, capsys, "train", "--zoo", mnist_zoo, "--dataset", "mnist", "--data-root",
                              _mnist_root(tmp_path), "--results", results, "--epochs", "1", "--device", "cpu",
                              "--workers", "1", "--quiet")
    line = one_line(err)
    assert code == 2 and "digits" in line and "mnist" in line and "--results" in line
    assert "already complete" not in out
    assert set(pd.read_parquet(results / "predictions").groupby("network").size()) == {360}


def test_the_same_dataset_name_with_another_split_is_refused(zoo, tmp_path):
    results = tmp_path / "results"
    run_job(digits_job(zoo, results, epochs=1, networks="Basic"))
    record = json.loads((results / "dataset.json").read_text())
    record["test_size"] = 359
    record.pop("fingerprint", None)
    (results / "dataset.json").write_text(json.dumps(record))
    with pytest.raises(NetzooError, match="digits.*--results"):
        plan(digits_job(zoo, results, epochs=1, networks="Basic"))


# --- issue 12 C7/C8: claims and the end of a run ---------------------------------------------------
def test_an_empty_claim_left_by_a_crash_is_stale_at_once(zoo, tmp_path):
    job = digits_job(zoo, tmp_path, epochs=1, networks="Basic")
    key = ("Basic", job.recipe.hash, 42)
    path = claims_mod.claim_path(tmp_path, key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # the disk filled while the claim was created
    summary = run_job(job)
    assert summary.count("done") == 1 and key in completed_keys(tmp_path)
    path.write_bytes(b'{"host": "')  # half written: unreadable
    assert claims_mod.is_stale(path)


def test_a_claim_is_never_seen_half_written(tmp_path, monkeypatch):
    from cli_helpers import disk_full, leftovers

    claims = claims_mod.Claims(tmp_path, heartbeat_s=3600)
    try:
        disk_full(monkeypatch, tmp_path / "claims")
        with pytest.raises(OSError, match="No space"):
            claims.acquire(("Basic", "abc", 1))
        monkeypatch.undo()
        assert list((tmp_path / "claims").iterdir()) == [] and leftovers(tmp_path) == []
    finally:
        claims.close()


def test_a_run_never_ends_while_a_planned_key_is_untrained_and_unheld(zoo, tmp_path, monkeypatch):
    """A key skipped because another worker held it, whose worker then gave it up untrained, is trained
    before the run ends (or the run says it is left and fails): never '0 failed' with a network missing."""
    job = digits_job(zoo, tmp_path, epochs=1, networks="Basic,LinearTanh_1")
    real = claims_mod.Claims.acquire
    refused = []

    def busy_once(self, key):
        if key[0] == "Basic" and not refused:
            refused.append(key)
            return False  # as if another worker held it, then died before training it
        return real(self, key)

    monkeypatch.setattr(claims_mod.Claims, "acquire", busy_once)
    summary = run_job(job)
    assert refused and (summary.failed > 0 or ("Basic", job.recipe.hash, 42) in completed_keys(tmp_path))
    assert summary.failed == 0 and len(completed_keys(tmp_path)) == 2


def _live_claim(results, key):
    """A claim held by a live process of this host (a sleeping child) that never finishes the key."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    path = claims_mod.claim_path(results, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"worker": f"{claims_mod.HOST}:{sleeper.pid}", "host": claims_mod.HOST,
                                "pid": sleeper.pid, "token": "theirs", "since": time.time()}))
    return sleeper


@pytest.mark.parametrize("workers", [1, 2])
def test_a_key_another_live_process_trains_is_not_lost(zoo, tmp_path, workers):
    job = digits_job(zoo, tmp_path, epochs=1, networks="Basic,LinearTanh_1,LinearReLU_1", workers=workers)
    held = ("Basic", job.recipe.hash, 42)
    sleeper = _live_claim(tmp_path, held)
    try:
        summary = run_job(job)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert summary.lost == 0 and summary.failed == 0, summary.line()
    assert summary.count("done") == 2 and "1 being trained by another worker" in summary.line()
    assert run_job(job).count("done") == 1  # its worker died: the next run trains it


@pytest.mark.slow
def test_two_train_processes_started_together_both_end_well(zoo, tmp_path):
    results = tmp_path / "results"
    args = [sys.executable, "-m", "netzoo.cli", "train", "--zoo", str(zoo), "--dataset", "digits", "--results",
            str(results), "--epochs", "1", "--seeds", "0,1", "--networks", ",".join(HEALTHY), "--device", "cpu",
            "--workers", "2", "--no-lenses", "--quiet"]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not any("lost" in out for out, _ in outputs), outputs
    assert len(completed_keys(results)) == len(HEALTHY) * 2


# --- issue 12 F14: Slurm arrays: the shard is where a task starts, not a fence -----------------------
def _slurm(monkeypatch, task, first, last, count, step=1):
    for name, value in {"ID": task, "MIN": first, "MAX": last, "COUNT": count, "STEP": step}.items():
        monkeypatch.setenv(f"SLURM_ARRAY_TASK_{name}", str(value))


def test_resubmitted_array_tasks_train_what_the_preempted_ones_left(zoo, tmp_path, monkeypatch):
    results = tmp_path / "results"
    job = digits_job(zoo, results, epochs=1, seeds=(0, 1), networks=",".join(HEALTHY))
    for task in (0, 2):  # --array=0-3: tasks 1 and 3 were preempted before they started
        _slurm(monkeypatch, task, 0, 3, 4)
        run_job(dataclasses.replace(job, shard=parse_shard("auto")))
    for task in (1, 3):  # resubmitted as --array=1,3
        _slurm(monkeypatch, task, 1, 3, 2)
        run_job(dataclasses.replace(job, shard=parse_shard("auto")))
    assert len(completed_keys(results)) == len(HEALTHY) * 2


def test_one_array_task_alone_trains_the_whole_plan(zoo, tmp_path):
    job = digits_job(zoo, tmp_path, epochs=1, seeds=(0, 1), networks="Basic,LinearTanh_1", shard=(3, 4))
    tasks = plan(job)
    assert len(tasks) == 4 and tasks[0].key == jobs.shard_keys(job)[0]  # its own share first
    run_job(job)
    assert len(completed_keys(tmp_path)) == 4


@pytest.mark.parametrize("env, shard", [
    ((4, 0, 6, 4, 2), (3, 4)),     # --array=0-6:2: ids 0, 2, 4, 6
    ((7, 5, 8, 4, 1), (3, 4)),     # --array=5-8
    ((3, 1, 3, 2, 1), (3, 3)),     # --array=1,3 (a list): a start position within 1..3
    ((3, 1, 3, 2, 2), (2, 2)),     # --array=1,3 reported with step 2
])
def test_shard_auto_works_out_its_start_from_every_slurm_array_shape(monkeypatch, env, shard):
    _slurm(monkeypatch, *env)
    assert parse_shard("auto") == shard


@pytest.mark.parametrize("env", [(9, 0, 3, 4, 1), ("x", 0, 3, 4, 1), (2, 0, 3, 4, 0), (1, 3, 0, 4, 1)])
def test_shard_auto_refuses_what_it_cannot_work_out(monkeypatch, env, capsys, tmp_path, zoo):
    from cli_helpers import one_line, run_main

    _slurm(monkeypatch, *env)
    with pytest.raises(NetzooError, match="SLURM_ARRAY_TASK"):
        parse_shard("auto")
    code, _, err = run_main(monkeypatch, capsys, "train", "--zoo", zoo, "--dataset", "digits", "--results",
                            tmp_path, "--shard", "auto", "--device", "cpu", "--quiet")
    assert code == 2 and "SLURM_ARRAY_TASK" in one_line(err)


def test_an_edited_network_file_is_refused_before_anything_trains(tmp_path, capsys, monkeypatch):
    """Issue 12 A2: a zoo file edited after generation never runs, and no run of the zoo is recorded as an answer
    (before: the edited network became a `failed` row that counted as complete, so regenerating did not retrain it)."""
    from cli_helpers import one_line, run_main

    from netzoo.generate import generate_zoo

    zoo = tmp_path / "zoo"
    generate_zoo(spec=str(REPO / "tests" / "data" / "tiny.toml"), dataset="digits", out=zoo, progress=False)
    (zoo / "Basic.py").write_text((zoo / "Basic.py").read_text() + "\nraise SystemExit('edited code ran')\n")
    args = ["--zoo", zoo, "--dataset", "digits", "--results", tmp_path / "r", "--epochs", "1", "--device", "cpu",
            "--workers", "1", "--quiet"]
    code, out, err = run_main(monkeypatch, capsys, "train", *args)
    assert code == 2 and "Basic.py" in one_line(err) and "netzoo generate" in err
    assert not (tmp_path / "r" / "networks").exists() or not list((tmp_path / "r" / "networks").glob("*.parquet"))
