"""Around the hot loop: what to train (plan), where (workers, devices, shards), and what happened (Outcome).

``plan(job)`` checks the job against what the results folder holds (one dataset; one architecture per
network name and recipe) and lists the Tasks not yet whole, its shard's first; ``run_tasks(job, tasks, device)``
trains tasks in this process, claiming each key first (``netzoo.claims``) and writing its four part files
atomically (``netzoo.results``); ``run_job(job)`` does both, with local worker processes or Ray, and does not
end while a planned key is neither whole nor held by a live worker. A NaN loss is recorded as ``diverged``,
an exception as ``failed`` (the run goes on), a CUDA out-of-memory is retried once at half the batch size.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from netzoo import results as res
from netzoo.claims import HOST, Claims, held_keys
from netzoo.datasets import dataset_info
from netzoo.devices import device_name, parse_devices
from netzoo.errors import NetzooError, RecipeError, ShapeMismatchError, UnknownNetworkError
from netzoo.identity import check_dataset, check_folder, record_job
from netzoo.recipe import Recipe, load_recipe
from netzoo.schema import LAYERS, NETWORKS, PREDICTIONS, epochs_schema
from netzoo.shards import in_turn, own_share, parse_shard
from netzoo.zoo import load_network, manifest_rows, matching

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
    shard: tuple[int, int] | None = None  # (i, N), 1-based: the share this process starts with
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
                   seeds=check_seeds(seeds) if seeds else (42,), networks=networks, shard=parse_shard(shard),
                   workers=workers, devices=parse_devices(device), executor=executor, address=address,
                   gpus_per_task=gpus_per_task, lenses=lenses, quiet=quiet)


MAX_SEED = 2**63 - 1  # seeds are stored as int64; torch.manual_seed takes up to 2**64 - 1


def check_seeds(seeds) -> tuple[int, ...]:
    """The training seeds, each once, in order; a NetzooError for one outside 0 … 2**63 - 1."""
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise NetzooError(f"--seeds {seed}: a training seed is an integer from 0 to {MAX_SEED} (seeds are "
                              "stored as int64 and seed torch's generators); pick a smaller one.")
    return seeds


@dataclass(frozen=True)
class Task:
    """One training run: a network under the job's recipe with one seed."""

    network: str
    seed: int
    recipe_hash: str
    share: int = 0  # 0: this process's own shard; k: the k-th shard after it, helped once its own is done

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
    lost: int = 0       # keys one of this run's workers claimed and never finished (it died), still not whole
    elsewhere: int = 0  # keys another live worker (another process or machine) holds at the end: it trains them
    left: int = 0       # keys neither whole nor held by a live worker at the end: rerunning trains them

    def count(self, status: str) -> int:
        """Outcomes with this status."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        """Planned keys without an answer: failed runs, keys lost with a dead worker, keys left untrained."""
        return self.count("failed") + self.lost + self.left

    def line(self) -> str:
        """e.g. 'trained 1001 in 4m 12s: 990 done, 8 diverged, 0 stopped early, 3 failed; 0 already complete -> DIR'."""
        trained = sum(o.status != "skipped" for o in self.outcomes)
        minutes, seconds = divmod(self.wall_time_s, 60)
        lost = f", {self.lost} lost with a dead worker" if self.lost else ""
        left = f", {self.left} left untrained (rerun the command to train them)" if self.left else ""
        elsewhere = (f"; {self.elsewhere} being trained by {'another worker' if self.elsewhere == 1 else 'other workers'}"
                     if self.elsewhere else "")
        return (f"trained {trained} in {int(minutes)}m {seconds:.1f}s: {self.count('done')} done, "
                f"{self.count('diverged')} diverged, {self.count('stopped_early')} stopped early, "
                f"{self.count('failed')} failed{lost}{left}{elsewhere}; {self.already_complete} already complete "
                f"-> {self.results}")


# --- the zoo ---------------------------------------------------------------------------------------
def select_networks(zoo: Path, patterns: str | None) -> list[str]:
    """Names in the zoo matching GLOB[,GLOB…] (all when None), naturally sorted."""
    names = matching(manifest_rows(zoo), [])
    if not patterns:
        return names
    chosen = matching(names, patterns.split(","))
    if not chosen:
        raise UnknownNetworkError(f"--networks {patterns!r} matches no network of {zoo} "
                                  f"(e.g. {', '.join(names[:3])}); see: netzoo zoo list --zoo {zoo}")
    return chosen


def check_fits(job: TrainJob, names: list[str]) -> None:
    """Refuse a zoo whose input shape or classes do not fit the dataset, or a recipe the zoo was not built for."""
    info = dataset_info(job.dataset)
    rows = manifest_rows(job.zoo)
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


# --- planning --------------------------------------------------------------------------------------
def all_keys(job: TrainJob) -> list[tuple[str, str, int]]:
    """Every key of the job, all shards together, in a fixed order (network natural order, then seed)."""
    names = select_networks(job.zoo, job.networks)
    check_fits(job, names)
    return [(name, job.recipe.hash, seed) for name in names for seed in job.seeds]


def shard_keys(job: TrainJob) -> list[tuple[str, str, int]]:
    """The keys of this process's own share: every N-th key of the sorted plan for shard i/N (all without one)."""
    return own_share(all_keys(job), job.shard)


def plan(job: TrainJob) -> list[Task]:
    """The Tasks of ``job`` whose keys are not whole yet: this process's shard first, then the others'.

    Checks the zoo against the dataset and recipe, and against the folder (one dataset, recorded in
    DIR/dataset.json; one architecture per network name and recipe), records the job (DIR/jobs/,
    DIR/recipes/), and moves damaged files out of the way (DIR/damaged/; their keys are planned again).
    A shard i/N is where a process starts, not a fence: after every N-th key of the sorted plan from the
    i-th, it takes any key left, so whatever set of shards runs, the whole plan gets trained.
    """
    res.results_folder(job.results, create=True)
    keys = all_keys(job)
    rows = manifest_rows(job.zoo)
    architectures = {name: rows[name]["arch_id"] for name in dict.fromkeys(k[0] for k in keys)}
    found = res.scan(job.results)
    check_folder(job, architectures, found)
    check_dataset(job, _dataset(job.dataset, job.data_root, job.download, job.devices[0]))
    record_job(job, architectures)
    res.quarantine(job.results, found.problems, keep=held_keys(job.results))
    return [Task(network, seed, recipe_hash, share) for share, (network, recipe_hash, seed) in in_turn(keys, job.shard)
            if (network, recipe_hash, seed) not in found.complete]


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
    manifest = dict(manifest_rows(job.zoo)[task.network])
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
        "device": device_name(device), "threads": threads, "worker": f"{HOST}:{os.getpid()}",
        "finished_at": datetime.now(timezone.utc),
    }
    res.write_part(job.results, "networks", pa.Table.from_pylist([network_row], schema=NETWORKS), key, classes)
    return Outcome(task.network, task.seed, status, len(epochs), error, network_row["wall_time_s"])


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
    res.results_folder(job.results, create=True)
    check_dataset(job, _dataset(job.dataset, job.data_root, job.download, device))
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


def _worker_main(job: TrainJob, tasks: list[Task], device: str, threads: int, queue, parent: int, stop) -> None:
    """A worker process: train what it can claim, report each start and outcome on ``queue``; stop if the
    parent dies or sets ``stop``. An OSError (a full disk, a read-only folder) is reported to the parent,
    which raises it: one message, not one traceback per worker."""
    import dataclasses

    logging.basicConfig(level=logging.WARNING if job.quiet else logging.INFO, format="%(levelname)s %(message)s")
    job = dataclasses.replace(job, threads=threads)
    try:
        run_tasks(job, tasks, device, on_outcome=lambda o: queue.put(("outcome", asdict(o))),
                  stop=lambda: os.getppid() != parent or stop.is_set(),
                  on_start=lambda t: queue.put(("start", list(t.key))))
    except OSError as exc:
        queue.put(("fault", (exc.errno, exc.strerror or str(exc), exc.filename)))
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


def run_local(job: TrainJob, tasks: list[Task], on_outcome, on_start=None) -> tuple[list[Outcome], set]:
    """Run ``tasks`` in this process and, with several workers, in spawned worker processes too; return
    (outcomes, lost): the keys one of these workers started and never finished (it died).

    The first worker is this process: torch is loaded here already, so it trains at once while the others
    spawn (each spends ~2.5 s importing torch). A thread here gathers the other workers' starts and outcomes.
    A key skipped because a worker of another process holds it is not lost: ``run_job`` looks at it after.
    """
    import dataclasses
    import multiprocessing as mp
    import threading

    slots = worker_slots(job, len(tasks))
    if len(slots) == 1:
        device, threads = slots[0]
        return run_tasks(dataclasses.replace(job, threads=threads), tasks, device, on_outcome=on_outcome,
                         on_start=on_start), set()
    ctx = mp.get_context("spawn")  # fork after torch started threads can deadlock; spawn is safe everywhere
    queue, stop = ctx.Queue(), ctx.Event()
    # Costliest first (training FLOPs per sample from the manifest) within this process's own share, then
    # within the shares it helps with, every worker walking the same list and claiming the next free task:
    # the run ends on small networks, not on two workers finishing ResNets.
    rows = manifest_rows(Path(job.zoo))
    order = sorted(tasks, key=lambda t: (t.share, -(rows[t.network].get("flops_train_step") or 0)))
    procs = []
    for index, (device, threads) in enumerate(slots[1:], start=1):
        proc = ctx.Process(target=_worker_main, args=(job, order, device, threads, queue, os.getpid(), stop),
                           name=f"netzoo-worker-{index}", daemon=True)
        proc.start()
        procs.append(proc)
    outcomes, started, faults, lock = {}, set(), [], threading.Lock()

    def record(outcome: Outcome) -> None:
        if outcome.status == "skipped":  # every worker sees every task: keep the one that trained it
            return
        with lock:
            outcomes[(outcome.network, outcome.seed)] = outcome
            on_outcome(outcome)

    def begin(task: Task) -> None:
        with lock:
            started.add(task.key)
        if on_start is not None:
            on_start(task)

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
                begin(Task(value[0], int(value[2]), value[1]))
            elif kind == "fault":
                faults.append(value)
                stop.set()
            else:
                record(Outcome(**value))

    gatherer = threading.Thread(target=gather, name="netzoo-gather", daemon=True)
    gatherer.start()
    device, threads = slots[0]
    try:
        run_tasks(dataclasses.replace(job, threads=threads), order, device, on_outcome=record, on_start=begin,
                  stop=stop.is_set)
    except BaseException:
        stop.set()
        for proc in procs:  # a kill is safe at any moment: parts are atomic, a dead worker's claims stale
            proc.terminate()
        raise
    finally:
        gatherer.join()
        for proc in procs:
            proc.join()
    if faults:
        code, message, filename = faults[0]
        raise OSError(code, message, filename)
    lost = {key for key in started if (key[0], key[2]) not in outcomes}
    return list(outcomes.values()), lost


MAX_PASSES = 3  # a run looks again for planned keys nobody holds this many times before it reports them


def run_job(job: TrainJob) -> Summary:
    """Plan ``job``, train its tasks with the chosen executor, and summarise (done, diverged, failed, time).

    A run does not end while a planned key is neither whole nor held by a live worker: keys left so (a
    worker of another process held one and died, a claim was given up) are trained in another pass; keys
    another live worker holds at the end are reported as being trained elsewhere, not as failures.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    tasks = plan(job)
    total = len(all_keys(job)) - len(tasks)  # whole before this run
    log.info("%d task(s) to train, %d already complete, on %s", len(tasks), total, ",".join(job.devices))
    bar = tqdm(total=len(tasks), unit="net", disable=job.quiet or not tasks, dynamic_ncols=True,
               desc=f"train {job.zoo.name}")

    def on_start(task: Task) -> None:
        bar.set_postfix_str(task.network, refresh=False)

    def on_outcome(outcome: Outcome) -> None:
        if outcome.status != "skipped":
            bar.update(1)

    outcomes, lost, left, held = [], set(), [], set()
    try:
        for _ in range(MAX_PASSES):
            if not tasks:
                break
            if job.executor == "ray":
                try:
                    from netzoo.executors import ray as ray_executor
                except ImportError as exc:
                    raise NetzooError(f"--executor ray is unavailable ({exc}); install it: pip install 'netzoo[ray]'") from None
                got, dead = ray_executor.run(job, tasks, on_outcome), set()
            else:
                got, dead = run_local(job, tasks, on_outcome, on_start)
            outcomes += [o for o in got if o.status != "skipped"]
            lost |= dead
            whole = res.scan(job.results, keys=[t.key for t in tasks]).complete
            left = [t for t in tasks if t.key not in whole]
            held = held_keys(job.results) if left else set()
            tasks = [t for t in left if t.key not in held]
            if tasks:
                log.info("%d planned key(s) are neither whole nor held by a live worker: training them", len(tasks))
    finally:
        bar.close()
    orphans = {t.key for t in left if t.key not in held}
    return Summary(results=job.results, outcomes=outcomes, already_complete=total,
                   wall_time_s=time.perf_counter() - start, lost=len(orphans & lost), left=len(orphans - lost),
                   elsewhere=sum(t.key in held for t in left))


def steps_per_network(train_size: int, recipe: Recipe) -> int:
    """Optimizer steps of one network under ``recipe`` (ceil(train_size / batch) x epochs)."""
    return math.ceil(train_size / recipe.batch_size) * recipe.epochs
