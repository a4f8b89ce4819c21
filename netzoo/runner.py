"""Around the hot loop: what to train (plan), where (workers, devices, shards), and what happened (Outcome).

``plan(job)`` lists the Tasks of a TrainJob not yet complete in its shard; ``run_tasks(job, tasks, device)``
trains tasks in this process, claiming each key first (``netzoo.claims``) and writing its four part files
atomically (``netzoo.results``); ``run_job(job)`` does both, with local worker processes or Ray. A NaN loss
is recorded as ``diverged``, an exception as ``failed`` (the run goes on), a CUDA out-of-memory is retried
once at half the batch size.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netzoo import results as res
from netzoo.claims import HOST, Claims
from netzoo.datasets import dataset_info
from netzoo.errors import NetzooError, RecipeError, ResultsError, ShapeMismatchError, UnknownNetworkError
from netzoo.recipe import Recipe, load_recipe
from netzoo.schema import LAYERS, NETWORKS, PREDICTIONS, epochs_schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """Everything ``netzoo train`` was asked to do (picklable: executors ship it to other processes)."""

    zoo: Path                           # folder written by netzoo generate
    results: Path                       # results folder
    dataset: str = "digits"             # digits, mnist, fashion-mnist, kmnist
    data_root: Path | None = None       # folder holding torchvision's dataset folders
    download: bool = False
    recipe: Recipe = field(default_factory=Recipe)
    seeds: tuple[int, ...] = (42,)      # each network trains once per seed
    networks: str | None = None         # GLOB[,GLOB…]; None = all
    shard: tuple[int, int] | None = None  # (i, N), 1-based: this process's fixed share
    workers: int | None = None          # worker processes; None = one per GPU, or the fastest CPU split
    devices: tuple[str, ...] = ("cpu",)
    threads: int | None = None          # torch intra-op threads per worker; None = cores / workers
    executor: str = "local"             # local or ray
    address: str | None = None          # Ray cluster address
    gpus_per_task: float | None = None  # Ray: GPU share per task
    lenses: bool = True                 # record the layers table (netzoo.lenses)
    quiet: bool = False

    @classmethod
    def from_cli(cls, zoo, dataset, results, data_root=None, download=False, epochs=None, networks=None,
                 seeds=None, shard=None, workers=None, device=None, recipe=None, executor="local",
                 address=None, gpus_per_task=None, lenses=True, quiet=False) -> "TrainJob":
        """A TrainJob from the CLI's raw values: resolves the recipe, seeds, shard ('i/N' or 'auto') and devices."""
        resolved = load_recipe(recipe)
        if epochs is not None:
            resolved = resolved.replace(epochs=epochs)
        if workers is not None and workers < 1:
            raise NetzooError(f"--workers must be >= 1, got {workers}.")
        dataset_info(dataset)  # unknown names stop here, with the known ones listed
        return cls(zoo=Path(zoo), results=Path(results), dataset=dataset,
                   data_root=Path(data_root) if data_root else None, download=download, recipe=resolved,
                   seeds=tuple(seeds) if seeds else (42,), networks=networks, shard=parse_shard(shard),
                   workers=workers, devices=parse_devices(device), executor=executor, address=address,
                   gpus_per_task=gpus_per_task, lenses=lenses, quiet=quiet)


@dataclass(frozen=True)
class Task:
    """One training run: a network under the job's recipe with one seed."""

    network: str
    seed: int
    recipe_hash: str

    @property
    def key(self) -> tuple[str, str, int]:
        """(network, recipe_hash, seed), the key of every results row."""
        return (self.network, self.recipe_hash, self.seed)


@dataclass
class Outcome:
    """What became of one Task: status done/diverged/failed/stopped_early, or skipped (complete or claimed)."""

    network: str
    seed: int
    status: str
    epochs_done: int = 0
    error: str | None = None
    wall_time_s: float = 0.0


@dataclass
class Summary:
    """What a run did; ``line()`` is the one line the CLI prints."""

    results: Path
    outcomes: list[Outcome]
    already_complete: int
    wall_time_s: float
    lost: int = 0  # tasks a worker claimed but never reported (it died)

    def count(self, status: str) -> int:
        """Outcomes with this status."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        """Networks that failed (an exception, or a worker that died)."""
        return self.count("failed") + self.lost

    def line(self) -> str:
        """e.g. 'trained 1001 in 4m 12s: 990 done, 8 diverged, 0 stopped early, 3 failed; 0 already complete -> DIR'."""
        trained = sum(o.status != "skipped" for o in self.outcomes)
        minutes, seconds = divmod(self.wall_time_s, 60)
        lost = f", {self.lost} lost with a dead worker" if self.lost else ""
        return (f"trained {trained} in {int(minutes)}m {seconds:.1f}s: {self.count('done')} done, "
                f"{self.count('diverged')} diverged, {self.count('stopped_early')} stopped early, "
                f"{self.count('failed')} failed{lost}; {self.already_complete} already complete -> {self.results}")


def parse_shard(text) -> tuple[int, int] | None:
    """'3/8' -> (3, 8); 'auto' reads a Slurm array's SLURM_ARRAY_TASK_ID/_COUNT (and _MIN); None stays None."""
    if text is None or isinstance(text, tuple):
        return text
    if text == "auto":
        task_id, count = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_ARRAY_TASK_COUNT")
        if task_id is None or count is None:
            raise NetzooError("--shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT, which are not "
                              "set: run it inside an sbatch --array job, or pass --shard i/N.")
        index = int(task_id) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        return index + 1, int(count)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise NetzooError(f"--shard {text!r}: expected i/N with 1 <= i <= N (e.g. 3/8), or 'auto' under Slurm.")
    return int(match[1]), int(match[2])


def parse_devices(text) -> tuple[str, ...]:
    """'cpu', 'cuda' (every visible GPU) or 'cuda:0,cuda:1'; None = cuda if present, else cpu."""
    import torch

    if isinstance(text, (tuple, list)):
        return tuple(text)
    if text is None:
        text = "cuda" if torch.cuda.is_available() else "cpu"
    devices = [d.strip() for d in str(text).split(",") if d.strip()]
    if devices == ["cuda"] and torch.cuda.is_available():  # with no GPU, "cuda" is refused just below
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for d in devices:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", d):
            raise NetzooError(f"--device {text!r}: allowed cpu, cuda, or cuda:0,cuda:1,…")
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise NetzooError(f"--device {text}: no CUDA GPU is visible here; use --device cpu.")
    return tuple(devices) or ("cpu",)


# --- the zoo ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _manifest_rows(zoo: Path) -> dict[str, dict]:
    """network -> its manifest row as plain Python values (read once per process)."""
    path = Path(zoo) / "manifest.parquet"
    if not path.is_file():
        raise ResultsError(f"No zoo at {zoo} (no manifest.parquet). Run: netzoo generate --out {zoo}")
    return {row["network"]: row for row in pq.read_table(path).to_pylist()}


def _natural_key(name: str) -> list:
    """'Conv2dReLU_10' sorts after 'Conv2dReLU_2'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def select_networks(zoo: Path, patterns: str | None) -> list[str]:
    """Names in the zoo matching GLOB[,GLOB…] (all when None), naturally sorted."""
    names = sorted(_manifest_rows(Path(zoo)), key=_natural_key)
    if not patterns:
        return names
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise UnknownNetworkError(f"--networks {patterns!r} matches no network of {zoo} "
                                  f"(e.g. {', '.join(names[:3])}); see: netzoo zoo list --zoo {zoo}")
    return chosen


def check_fits(job: TrainJob, names: list[str]) -> None:
    """Refuse a zoo whose input shape or classes do not fit the dataset, or a recipe the zoo was not built for."""
    info = dataset_info(job.dataset)
    rows = _manifest_rows(job.zoo)
    want = "x".join(map(str, info.input_shape))
    for name in names:
        row = rows[name]
        if row["input_shape"] != want or row["classes"] != info.classes:
            raise ShapeMismatchError(
                f"Zoo {job.zoo} expects {row['input_shape']} inputs with {row['classes']} classes ({name}); "
                f"{job.dataset} gives {want} with {info.classes} classes. "
                f"Run: netzoo generate --dataset {job.dataset} --out zoo/{job.dataset}")
        if (row["dropout"] or 0.0) != job.recipe.dropout or bool(row["batch_norm"]) != job.recipe.batch_norm:
            raise RecipeError(
                f"Recipe {job.recipe.name!r} asks for dropout={job.recipe.dropout}, batch_norm={job.recipe.batch_norm} "
                f"but zoo {job.zoo} was generated with dropout={row['dropout']}, batch_norm={row['batch_norm']} "
                f"({name}): dropout and batch norm are template options. Run: netzoo generate --out DIR "
                f"--dataset {job.dataset} with the same dropout/batch_norm (generate_zoo(dropout=…, batch_norm=…)), "
                f"or train with a recipe that matches the zoo.")


def load_network(zoo: Path, name: str):
    """Build network ``name`` of the zoo (netzoo.zoo.import_network on its file, the manifest read once)."""
    from netzoo.zoo import import_network

    return import_network(Path(zoo) / _manifest_rows(Path(zoo))[name]["file"], name)()


# --- planning --------------------------------------------------------------------------------------
def all_keys(job: TrainJob) -> list[tuple[str, str, int]]:
    """Every key of the job, all shards together, in a fixed order (network natural order, then seed)."""
    names = select_networks(job.zoo, job.networks)
    check_fits(job, names)
    return [(name, job.recipe.hash, seed) for name in names for seed in job.seeds]


def record_job(job: TrainJob, keys: list) -> None:
    """Write DIR/recipes/<hash>.json and DIR/jobs/<hash>.json (zoo, dataset, planned networks and seeds),
    which ``netzoo status`` reads to count what is left."""
    recipe = job.recipe
    res.atomic_write_text(job.results / "recipes" / f"{recipe.hash}.json", recipe.to_json())
    record = {"zoo": str(Path(job.zoo).resolve()), "dataset": job.dataset, "recipe": recipe.name,
              "recipe_hash": recipe.hash, "seeds": list(job.seeds),
              "networks": list(dict.fromkeys(k[0] for k in keys))}
    path = job.results / "jobs" / f"{recipe.hash}.json"
    try:  # a sweep or another --networks selection under the same recipe adds to the record
        old = json.loads(path.read_text())
        record["networks"] = list(dict.fromkeys(old.get("networks", []) + record["networks"]))
        record["seeds"] = sorted(set(old.get("seeds", [])) | set(record["seeds"]))
    except (OSError, ValueError):
        pass
    res.atomic_write_text(path, json.dumps(record, indent=1))


def shard_keys(job: TrainJob) -> list[tuple[str, str, int]]:
    """The keys of this process's shard: every N-th key of the sorted plan for shard i/N (all without a shard)."""
    keys = all_keys(job)
    if job.shard:
        i, n = job.shard
        keys = keys[i - 1::n]
    return keys


def plan(job: TrainJob) -> list[Task]:
    """The Tasks of ``job`` in its shard that are not complete yet, in a fixed order.

    Checks the zoo against the dataset and recipe, records the job (DIR/jobs/, DIR/recipes/) and reports
    corrupt part files (their keys are planned again). A shard i/N takes every N-th key of the sorted plan.
    """
    job.results.mkdir(parents=True, exist_ok=True)
    record_job(job, all_keys(job))
    done = res.completed_keys(job.results)
    return [Task(network, seed, recipe_hash) for network, recipe_hash, seed in shard_keys(job)
            if (network, recipe_hash, seed) not in done]


# --- training one task -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _dataset(name: str, root, download: bool, device: str):
    """The dataset on ``device``, decoded once per process."""
    from netzoo.datasets import load_dataset

    return load_dataset(name, root=root, download=download, device=device)


@functools.lru_cache(maxsize=1)
def _provenance() -> dict:
    """netzoo, torch and git versions, recorded with every network."""
    import torch

    from netzoo import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"netzoo_version": __version__, "torch_version": torch.__version__, "git_commit": commit}


def _device_name(device) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _predictions_table(key_cols: dict, epochs: list, labels: np.ndarray) -> pa.Table:
    """The predictions rows of one key: every test sample at every epoch, probs as K float16.

    A diverged epoch (no log-probabilities: NaN outputs predict nothing) keeps its rows with sample and
    label, and null ``pred`` and ``probs``."""
    n, parts = len(labels), []
    for result in epochs:
        if result.log_probs is None:
            pred, probs = pa.nulls(n, pa.int64()), pa.nulls(n, PREDICTIONS.field("probs").type)
        else:
            k = result.log_probs.shape[1]
            pred = pa.array(result.log_probs.argmax(1).astype(np.int64))
            probs = pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)),
                                             pa.array(np.exp(result.log_probs).astype(np.float16).reshape(-1)))
        parts.append(pa.table({
            **{c: pa.array([v] * n, PREDICTIONS.field(c).type) for c, v in key_cols.items()},
            "epoch": pa.array(np.full(n, result.epoch, np.int64)),
            "sample": pa.array(np.arange(n, dtype=np.int64)),
            "label": pa.array(labels),
            "pred": pred,
            "probs": probs,
        }, schema=PREDICTIONS))
    return pa.concat_tables(parts) if parts else PREDICTIONS.empty_table()


def train_task(job: TrainJob, task: Task, device: str, trained: list | None = None) -> Outcome:
    """Train one task and write its parts (epochs, predictions, layers, then networks: the key is complete).

    ``trained``: its EpochResults when already trained (netzoo.batched trains several seeds at once)."""
    import torch

    from netzoo.train import seed_everything, train_network

    start = time.perf_counter()
    data = _dataset(job.dataset, job.data_root, job.download, device)
    recipe, key = job.recipe, task.key
    key_cols = {"network": task.network, "recipe": recipe.name, "recipe_hash": recipe.hash, "seed": task.seed}
    batch_size, oom_retries, epochs, error, status = recipe.batch_size, 0, [], None, "done"
    cuda = torch.device(device).type == "cuda"
    while True:
        epochs, lenses = [], None
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            seed_everything(task.seed)
            model = load_network(job.zoo, task.network)
            if job.lenses:
                from netzoo.lenses import Lenses

                lenses = Lenses(model)
            # netzoo.batched: seeds trained together as one vmapped model arrive as ``trained``
            run = trained if trained is not None else train_network(model, data, recipe, task.seed, device,
                                                                    lenses=lenses, batch_size=batch_size)
            for result in run:
                epochs.append(result)
            status = epochs[-1].status
            break
        except torch.OutOfMemoryError as exc:
            del exc
            if cuda:
                torch.cuda.empty_cache()
            if oom_retries == 0 and batch_size > 1:
                oom_retries, batch_size = 1, max(1, batch_size // 2)
                log.warning("%s: CUDA out of memory; retrying once at batch size %d", task.network, batch_size)
                continue
            status, error = "failed", f"CUDA out of memory at batch size {batch_size} (after {oom_retries} retry)"
            break
        except Exception as exc:  # recorded, and the run goes on
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("%s seed %d failed: %s", task.network, task.seed, error)
            break
        finally:
            if lenses is not None:
                lenses.close()

    classes = data.classes
    epoch_rows = [{**key_cols, "epoch": r.epoch, "status": r.status, **r.metrics} for r in epochs]
    res.write_part(job.results, "epochs", pa.Table.from_pylist(epoch_rows, schema=epochs_schema(classes)), key, classes)
    labels = data.y_test.cpu().numpy()
    res.write_part(job.results, "predictions", _predictions_table(key_cols, epochs, labels), key, classes)
    layer_rows = [{**row, **key_cols, "epoch": r.epoch} for r in epochs for row in r.layer_rows]
    res.write_part(job.results, "layers", pa.Table.from_pylist(layer_rows, schema=LAYERS), key, classes)
    manifest = dict(_manifest_rows(job.zoo)[task.network])
    manifest["zoo_seed"] = manifest.pop("seed")
    threads = torch.get_num_threads()
    network_row = {
        **manifest, **key_cols, **_provenance(), "recipe_json": recipe.to_json(), "dataset": job.dataset,
        "status": status, "error": error, "epochs_done": len(epochs), "batch_size_used": batch_size,
        "last_batch_merged": any(r.last_batch_merged for r in epochs), "oom_retries": oom_retries,
        "train_time_s": sum(r.metrics["epoch_time_s"] for r in epochs),
        "eval_time_s": sum(r.metrics["eval_time_s"] for r in epochs),
        "wall_time_s": time.perf_counter() - start,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if cuda else None,
        "device": _device_name(device), "threads": threads, "worker": f"{HOST}:{os.getpid()}",
        "finished_at": datetime.now(timezone.utc),
    }
    res.write_part(job.results, "networks", pa.Table.from_pylist([network_row], schema=NETWORKS), key, classes)
    return Outcome(task.network, task.seed, status, len(epochs), error, network_row["wall_time_s"])


def write_dataset_record(job: TrainJob, device: str) -> None:
    """DIR/dataset.json: the dataset's split, normalisation and sizes (written once)."""
    path = job.results / "dataset.json"
    if not path.exists():
        data = _dataset(job.dataset, job.data_root, job.download, device)
        res.atomic_write_text(path, json.dumps(data.describe(), indent=1))


def run_tasks(job: TrainJob, tasks: list[Task], device: str = "cpu", on_outcome=None, stop=None,
              on_start=None) -> list[Outcome]:
    """Train ``tasks`` in this process on ``device``, one after another; return one Outcome per task.

    Each key is claimed first (DIR/claims/), so any number of processes on any machines may run this on
    the same task list: a key held by a live worker, or already complete, is skipped (status ``skipped``).
    ``on_start(task)`` is called when a task starts training, ``on_outcome(outcome)`` after each task;
    ``stop()`` returning True ends the loop early (between tasks).
    """
    import torch

    from netzoo.batched import claim_seed_group, train_group

    threads_before = torch.get_num_threads()  # restored at the end: run_job may run in a user's process
    if job.threads:
        torch.set_num_threads(job.threads)
    job.results.mkdir(parents=True, exist_ok=True)
    write_dataset_record(job, device)
    claims = Claims(job.results)
    outcomes = []
    try:
        for task in tasks:
            if stop is not None and stop():
                break
            if not claims.acquire(task.key):
                outcome = Outcome(task.network, task.seed, "skipped", error="claimed by another worker")
            elif res.key_complete(job.results, task.key):
                claims.release(task.key)
                outcome = Outcome(task.network, task.seed, "skipped", error="already complete")
            else:
                if on_start is not None:
                    on_start(task)
                group = []  # netzoo.batched: other seeds of this network, trained with it as one vmapped model
                try:
                    group = claim_seed_group(job, task, tasks, claims, device)
                    trained = train_group(job, [task] + group, device) if group else [train_task(job, task, device)]
                finally:
                    for t in [task] + group:
                        claims.release(t.key)
                outcome, *siblings = trained
                for done in siblings:
                    outcomes.append(done)
                    if on_outcome is not None:
                        on_outcome(done)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        claims.close()
        torch.set_num_threads(threads_before)
    return outcomes


# --- running a job ---------------------------------------------------------------------------------
def worker_slots(job: TrainJob, n_tasks: int) -> list[tuple[str, int]]:
    """(device, intra-op threads) of each worker: the first is this process (``run_local``), the others spawn.

    GPUs: one worker per device (``--workers K`` spreads K over them). CPU: one single-threaded worker per
    core, the fastest split measured on 2 cores (docs/benchmarks.md: 2 workers x 1 thread beats 1 x 2).
    """
    cores = os.cpu_count() or 1
    gpus = [d for d in job.devices if d.startswith("cuda")]
    if gpus:
        count = job.workers or len(gpus)
        devices = [gpus[i % len(gpus)] for i in range(count)]
    else:
        count = job.workers or cores
        devices = ["cpu"] * count
    count = max(1, min(count, n_tasks))
    # CPU: one intra-op thread per worker. Small networks gain nothing from a second thread, and two
    # busy-waiting OpenMP threads per worker on a shared machine made steps ~40x slower (measured).
    threads = job.threads or (max(1, cores // count) if gpus else 1)
    return [(d, threads) for d in devices[:count]]


def _worker_main(job: TrainJob, tasks: list[Task], device: str, threads: int, queue, parent: int) -> None:
    """A worker process: train what it can claim, report each outcome on ``queue``; stop if the parent dies."""
    import dataclasses

    logging.basicConfig(level=logging.WARNING if job.quiet else logging.INFO, format="%(levelname)s %(message)s")
    job = dataclasses.replace(job, threads=threads)
    try:
        run_tasks(job, tasks, device, on_outcome=lambda o: queue.put(("outcome", asdict(o))),
                  stop=lambda: os.getppid() != parent, on_start=lambda t: queue.put(("start", t.network)))
    finally:
        queue.put(("exit", os.getpid()))
    # A normal end skips the interpreter's teardown, which torch makes ~0.6 s long (measured) and the parent
    # waits for: every part is on disk already, the claims are released; only the queue needs flushing.
    queue.close()
    queue.join_thread()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_local(job: TrainJob, tasks: list[Task], on_outcome, on_start=None) -> tuple[list[Outcome], int]:
    """Run ``tasks`` in this process and, with several workers, in spawned worker processes too; return
    (outcomes, lost).

    The first worker is this process: torch is loaded here already, so it trains at once while the others
    spawn (each spends ~2.5 s importing torch). A thread here gathers the other workers' outcomes.
    """
    import dataclasses
    import multiprocessing as mp
    import threading

    slots = worker_slots(job, len(tasks))
    if len(slots) == 1:
        device, threads = slots[0]
        return run_tasks(dataclasses.replace(job, threads=threads), tasks, device, on_outcome=on_outcome,
                         on_start=on_start), 0
    ctx = mp.get_context("spawn")  # fork after torch started threads can deadlock; spawn is safe everywhere
    queue = ctx.Queue()
    # Costliest first (training FLOPs per sample from the manifest), every worker walking the same list and
    # claiming the next free task: the run ends on small networks, not on two workers finishing ResNets.
    rows = _manifest_rows(Path(job.zoo))
    order = sorted(tasks, key=lambda t: -(rows[t.network].get("flops_train_step") or 0))
    procs = []
    for index, (device, threads) in enumerate(slots[1:], start=1):
        proc = ctx.Process(target=_worker_main, args=(job, order, device, threads, queue, os.getpid()),
                           name=f"netzoo-worker-{index}", daemon=True)
        proc.start()
        procs.append(proc)
    outcomes, lock = {}, threading.Lock()

    def record(outcome: Outcome) -> None:
        if outcome.status == "skipped":  # every worker sees every task: keep the one that trained it
            return
        with lock:
            outcomes[(outcome.network, outcome.seed)] = outcome
            on_outcome(outcome)

    def gather() -> None:
        running = len(procs)
        while running:
            try:
                kind, value = queue.get(timeout=5)
            except Exception:  # queue.Empty: check the workers are alive
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if kind == "exit":
                running -= 1
            elif kind == "start":
                if on_start is not None:
                    on_start(Task(value, 0, ""))
            else:
                record(Outcome(**value))

    gatherer = threading.Thread(target=gather, name="netzoo-gather", daemon=True)
    gatherer.start()
    device, threads = slots[0]
    run_tasks(dataclasses.replace(job, threads=threads), order, device, on_outcome=record, on_start=on_start)
    gatherer.join()
    for proc in procs:
        proc.join()
    trained = list(outcomes.values())
    lost = sum(1 for t in tasks if (t.network, t.seed) not in outcomes and not res.key_complete(job.results, t.key))
    return trained, lost


def run_job(job: TrainJob) -> Summary:
    """Plan ``job``, train its tasks with the chosen executor, and summarise (done, diverged, failed, time)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    tasks = plan(job)
    total = len(shard_keys(job)) - len(tasks)  # complete before this run, in this shard
    log.info("%d task(s) to train, %d already complete, on %s", len(tasks), total, ",".join(job.devices))
    bar = tqdm(total=len(tasks), unit="net", disable=job.quiet or not tasks, dynamic_ncols=True,
               desc=f"train {job.zoo.name}")

    def on_start(task: Task) -> None:
        bar.set_postfix_str(task.network, refresh=False)

    def on_outcome(outcome: Outcome) -> None:
        if outcome.status != "skipped":
            bar.update(1)

    try:
        if job.executor == "ray":
            try:
                from netzoo.executors import ray as ray_executor
            except ImportError as exc:
                raise NetzooError(f"--executor ray is unavailable ({exc}); install it: pip install 'netzoo[ray]'") from None
            outcomes, lost = ray_executor.run(job, tasks, on_outcome), 0
        else:
            outcomes, lost = run_local(job, tasks, on_outcome, on_start)
    finally:
        bar.close()
    outcomes = [o for o in outcomes if o.status != "skipped"]
    return Summary(results=job.results, outcomes=outcomes, already_complete=total,
                   wall_time_s=time.perf_counter() - start, lost=lost)


def steps_per_network(train_size: int, recipe: Recipe) -> int:
    """Optimizer steps of one network under ``recipe`` (ceil(train_size / batch) x epochs)."""
    return math.ceil(train_size / recipe.batch_size) * recipe.epochs
