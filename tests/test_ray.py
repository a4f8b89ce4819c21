"""--executor ray: the same rows as the local executor, GPU shares, and a killed Ray worker retried without duplicates."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from netzoo.errors import NetzooError
from netzoo.executors import ray as ray_executor
from netzoo.results import load
from netzoo.jobs import Task
from netzoo.runner import run_job
from zoo_fixture import HEALTHY, digits_job, make_zoo

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'netzoo[ray]')")

ROW_KEY = ["network", "recipe_hash", "seed", "epoch"]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module: 2 CPUs and one fake GPU (num_gpus=1 on a machine without CUDA)."""
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"), names=HEALTHY)


@pytest.mark.slow
def test_ray_executor_writes_the_rows_the_local_executor_writes(cluster, zoo, tmp_path):
    local = run_job(digits_job(zoo, tmp_path / "local"))
    # 0.5 GPU per task: two tasks share the fake GPU; without CUDA each trains on the CPU
    summary = run_job(digits_job(zoo, tmp_path / "ray", executor="ray", gpus_per_task=0.5))
    assert summary.count("done") == local.count("done") == len(HEALTHY) and not summary.failed
    a, b = load(tmp_path / "local"), load(tmp_path / "ray")
    for table, key in (("networks", ["network", "seed"]), ("epochs", ROW_KEY), ("predictions", ROW_KEY + ["sample"])):
        left = getattr(a, table).sort_values(key).reset_index(drop=True)
        right = getattr(b, table).sort_values(key).reset_index(drop=True)
        assert len(left) == len(right) > 0, table
        pd.testing.assert_frame_equal(left[key], right[key])
    pd.testing.assert_frame_equal(a.predictions.sort_values(ROW_KEY + ["sample"])[["label", "pred"]].reset_index(drop=True),
                                  b.predictions.sort_values(ROW_KEY + ["sample"])[["label", "pred"]].reset_index(drop=True))
    metrics = ["train_loss", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(a.epochs.sort_values(ROW_KEY)[metrics].reset_index(drop=True),
                                  b.epochs.sort_values(ROW_KEY)[metrics].reset_index(drop=True), rtol=1e-5)
    assert set(b.networks["device"]) == {"cpu"}


@pytest.mark.slow
def test_killed_ray_worker_is_retried_without_duplicate_rows(cluster, zoo, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_executor, "CHUNKS_PER_SLOT", 1)  # 4 networks, 2 CPU slots: 2 chunks of 2 networks
    results = tmp_path / "results"
    job = digits_job(zoo, results, executor="ray", gpus_per_task=0.0, recipe=digits_job(zoo, results).recipe.replace(epochs=4))
    run = {}
    thread = threading.Thread(target=lambda: run.update(summary=run_job(job)))
    thread.start()
    deadline, first = time.monotonic() + 120, None
    while first is None and time.monotonic() < deadline:
        parts = [p for p in (results / "networks").glob("*.parquet")] if (results / "networks").is_dir() else []
        first = parts[0] if parts else None
        time.sleep(0.01)
    assert first is not None, "no network finished within 120 s"
    killed_network, worker = pq.read_table(first, columns=["network", "worker"]).to_pylist()[0].values()
    pid = int(worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)  # the Ray worker dies in the middle of its chunk's second network
    thread.join(timeout=300)
    summary = run["summary"]

    assert not summary.failed and summary.count("done") == len(HEALTHY), summary.line()
    tables = load(results)
    assert sorted(tables.networks["network"]) == sorted(HEALTHY)
    raw = {t: pd.read_parquet(results / t) for t in ("networks", "epochs", "predictions")}
    assert not raw["networks"].duplicated(["network", "seed"]).any()
    assert not raw["epochs"].duplicated(ROW_KEY).any() and len(raw["epochs"]) == 4 * len(HEALTHY)
    assert not raw["predictions"].duplicated(ROW_KEY + ["sample"]).any()
    # the killed chunk's other network was trained again by another worker
    chunk = next(c for c in ray_executor.chunk_tasks([Task(n, 42, job.recipe.hash) for n in sorted(HEALTHY, key=str)], 2)
                 if killed_network in [t.network for t in c])
    partner = next(t.network for t in chunk if t.network != killed_network)
    partner_worker = tables.networks.set_index("network").loc[partner, "worker"]
    assert partner_worker != worker


def test_gpu_share_caps_the_task_memory_and_a_fake_gpu_trains_on_cpu():
    class FakeCuda:
        def __init__(self, available):
            self.available, self.fractions = available, []

        def is_available(self):
            return self.available

        def set_per_process_memory_fraction(self, fraction, device):
            self.fractions.append((fraction, device))

    cuda = FakeCuda(True)
    assert ray_executor.claim_gpu_share([3], 0.25, cuda) == "cuda:0" and cuda.fractions == [(0.25, 0)]
    assert ray_executor.claim_gpu_share([3], 1.0, FakeCuda(True)) == "cuda:0"
    assert ray_executor.claim_gpu_share([3], 0.5, FakeCuda(False)) == "cpu"
    assert ray_executor.claim_gpu_share([], 0.0, FakeCuda(True)) == "cpu"


def test_chunks_deal_tasks_round_robin():
    tasks = [Task(f"N_{i}", 42, "h") for i in range(5)]
    chunks = ray_executor.chunk_tasks(tasks, 2)
    assert [[t.network for t in c] for c in chunks] == [["N_0", "N_2", "N_4"], ["N_1", "N_3"]]
    assert len(ray_executor.chunk_tasks(tasks, 99)) == 5


def test_without_ray_the_option_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(NetzooError, match=r"pip install 'netzoo\[ray\]'"):
        ray_executor.import_ray()
