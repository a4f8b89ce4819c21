"""What every executor does with tasks: claim a key, train it (``netzoo.train``), write it (``netzoo.write``).

``run_tasks(job, tasks, device)`` is the loop the local executor's workers and each Ray task run: for every task,
claim its key (``netzoo.claims``; a key held by a live worker or already whole is skipped), train it, write its
parts, release the claim. ``train_task`` is one run with its one out-of-memory retry: a CUDA out-of-memory is
retried once at half the batch size; any other exception is recorded as ``failed`` (the run goes on).

On a GPU, the other seeds of a task's network that this worker can claim train with it as one group (one fused
module, ``netzoo.train.train_runs``): the zoo's small networks are launch-bound there. On the CPU each run trains
alone (measured mixed on 2 cores; issue 15 decides with ``--fuse``). A group that cannot be fused (a network
with ``nn.Dropout``), or fails as a group, trains its runs one at a time.
"""

from __future__ import annotations

import functools
import logging
import os
import time

import torch

from netzoo import results as res
from netzoo.claims import HOST, Claims
from netzoo.datasets import cached_dataset
from netzoo.devices import device_name
from netzoo.errors import FusionError
from netzoo.identity import check_dataset, check_split
from netzoo.jobs import Outcome, Task, TrainJob
from netzoo.train import Run, train_runs
from netzoo.write import RunFacts, write_run
from netzoo.zoo import load_network, manifest_rows

log = logging.getLogger(__name__)

# Device types on which seeds of one network train as one fused group. On a GPU the zoo's small networks are
# launch-bound and fusing pays; on 2 CPU cores batching seeds was measured mixed (1 epoch on digits, 4 seeds,
# 1 thread: Linear 1.7x and Conv1d 1.9x faster, Conv2d 0.54x under vmap), so the CPU trains runs one at a time.
GROUP_DEVICE_TYPES = ("cuda",)


def job_data(job: TrainJob, device: str):
    """The job's dataset on ``device`` with its recipe's validation split held out (the positions DIR/splits/
    records: every worker and network trains on the same samples), decoded and split once per process."""
    return _split_data(job.results, job.dataset, job.data_root, job.download, device, job.recipe.validation)


@functools.lru_cache(maxsize=4)
def _split_data(results, dataset: str, root, download: bool, device: str, fraction: float):
    data = cached_dataset(dataset, root, download, device)
    return data.with_validation(fraction, indices=check_split(results, data, fraction)) if fraction else data


def _write(job: TrainJob, task: Task, epochs: list, facts: RunFacts, device: str) -> Outcome:
    """Write ``task``'s parts (and the weights its EpochResults carry) from its EpochResults and facts; return
    its Outcome."""
    data = cached_dataset(job.dataset, job.data_root, job.download, device)
    write_run(job.results, task.key, job.recipe, job.dataset, manifest_rows(job.zoo)[task.network], epochs,
              data.y_test.cpu().numpy(), data.classes, facts, weights_dtype=job.weights_dtype)
    return Outcome(task.network, task.seed, facts.status, len(epochs), facts.error, facts.wall_time_s)


def _facts(status: str, error: str | None, batch_size: int, oom_retries: int, start: float, device: str,
           share: int = 1) -> RunFacts:
    """The RunFacts of a run (or of one of ``share`` runs trained as a group) that started at ``start``."""
    cuda = torch.device(device).type == "cuda"
    return RunFacts(status=status, error=error, batch_size_used=batch_size, oom_retries=oom_retries,
                    wall_time_s=(time.perf_counter() - start) / share,
                    peak_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if cuda else None,
                    device=device_name(device), threads=torch.get_num_threads(), worker=f"{HOST}:{os.getpid()}")


def train_task(job: TrainJob, task: Task, device: str) -> Outcome:
    """Train one task and write its parts (epochs, predictions, layers, then networks: the key is whole).

    A CUDA out-of-memory is retried once at half the batch size; any other exception makes the run ``failed``
    (its error recorded) without stopping the caller."""
    start = time.perf_counter()
    data = job_data(job, device)
    batch_size, oom_retries, error = job.recipe.batch_size, 0, None
    cuda = torch.device(device).type == "cuda"
    while True:
        epochs = []
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            build = functools.partial(load_network, job.zoo, task.network)
            for results in train_runs(build, [Run(task.seed, job.recipe)], data, device, lenses=job.lenses,
                                      batch_size=batch_size, states=job.save_weights):
                epochs.append(results[0])
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
    return _write(job, task, epochs, _facts(status, error, batch_size, oom_retries, start, device), device)


def train_group(job: TrainJob, tasks: list[Task], device: str) -> list[Outcome]:
    """Train ``tasks`` (seeds of one network, their keys claimed) as one group and write each one's parts; a
    group that cannot be fused or fails trains its tasks one at a time (``train_task``)."""
    start = time.perf_counter()
    data = job_data(job, device)
    trained: list[list] = [[] for _ in tasks]
    try:
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        build = functools.partial(load_network, job.zoo, tasks[0].network)
        for results in train_runs(build, [Run(t.seed, job.recipe) for t in tasks], data, device, lenses=job.lenses,
                                  states=job.save_weights):
            for i, result in results.items():
                trained[i].append(result)
    except FusionError as exc:
        log.info("%s: its seeds cannot train as one group (%s); training them one at a time", tasks[0].network, exc)
        return [train_task(job, t, device) for t in tasks]
    except Exception as exc:  # out of memory, or a fault of the group: each run alone, with its own retry
        log.warning("%s: training its seeds as one group failed (%s: %s); training them one at a time",
                    tasks[0].network, type(exc).__name__, exc)
        return [train_task(job, t, device) for t in tasks]
    return [_write(job, t, epochs, _facts(epochs[-1].status, None, job.recipe.batch_size, 0, start, device,
                                          share=len(tasks)), device)
            for t, epochs in zip(tasks, trained)]


def claim_group(job: TrainJob, task: Task, tasks: list[Task], claims: Claims, device: str) -> list[Task]:
    """The other seeds of ``task``'s network among ``tasks`` that this worker could claim (their claims are now
    held) when runs train as groups on ``device`` (GROUP_DEVICE_TYPES); else []."""
    if torch.device(device).type not in GROUP_DEVICE_TYPES:
        return []
    group = []
    for other in tasks:
        if other.network == task.network and other.key != task.key and claims.acquire(other.key):
            if res.key_complete(job.results, other.key):
                claims.release(other.key)
            else:
                group.append(other)
    return group


def run_tasks(job: TrainJob, tasks: list[Task], device: str = "cpu", on_outcome=None, stop=None,
              on_start=None) -> list[Outcome]:
    """Train ``tasks`` in this process on ``device``, one after another; return one Outcome per task.

    Each key is claimed first (DIR/claims/), so any number of processes on any machines may run this on
    the same task list: a key held by a live worker, or already complete, is skipped (status ``skipped``).
    ``on_start(task)`` is called when a task starts training, ``on_outcome(outcome)`` after each task;
    ``stop()`` returning True ends the loop early (between tasks).
    """
    threads_before = torch.get_num_threads()  # restored at the end: run_job may run in a user's process
    if job.threads:
        torch.set_num_threads(job.threads)
    res.results_folder(job.results, create=True)
    check_dataset(job, cached_dataset(job.dataset, job.data_root, job.download, device))
    claims = Claims(job.results)
    outcomes = []

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        for task in tasks:
            if stop is not None and stop():
                break
            if not claims.acquire(task.key):
                report(Outcome(task.network, task.seed, "skipped", error="claimed by another worker"))
                continue
            if res.key_complete(job.results, task.key):
                claims.release(task.key)
                report(Outcome(task.network, task.seed, "skipped", error="already complete"))
                continue
            group = []
            try:
                group = claim_group(job, task, tasks, claims, device)
                for member in [task] + group:
                    if on_start is not None:
                        on_start(member)
                trained = train_group(job, [task] + group, device) if group else [train_task(job, task, device)]
            finally:
                for member in [task] + group:
                    claims.release(member.key)
            for outcome in trained:
                report(outcome)
    finally:
        claims.close()
        torch.set_num_threads(threads_before)
    return outcomes
