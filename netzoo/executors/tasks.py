"""What every executor does with tasks: claim a key, train it (``netzoo.train``), write it (``netzoo.write``).

``run_tasks(job, tasks, device)`` is the loop the local executor's workers and each Ray task run: for every task,
claim its key (``netzoo.claims``; a key held by a live worker or already whole is skipped), train it, write its
parts, release the claim. ``train_task`` is one run with its one out-of-memory retry: a CUDA out-of-memory is
retried once at half the batch size; any other exception is recorded as ``failed`` (the run goes on).

A task's runs of one network that may share a group (``netzoo.grouping.group_key``: the seeds of a network, and
the recipes of a sweep that differ only in numbers) and that this worker can claim train with it as one fused
group (``train_group``, ``netzoo.train.train_runs``) when ``netzoo.grouping.fusion_pays`` for the job's ``--fuse``
and the device: at most ``MAX_GROUP_RUNS`` runs, ordered by recipe then seed (RunOptimizer steps equal adjacent
runs with one call). A group that cannot be fused, or fails as a group, trains its runs one at a time.
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
from netzoo.grouping import MAX_GROUP_RUNS, fusion_pays, group_key
from netzoo.identity import check_dataset, check_split
from netzoo.jobs import Outcome, Task, TrainJob
from netzoo.train import Run, train_runs
from netzoo.write import RunFacts, write_run
from netzoo.zoo import load_network, manifest_rows

log = logging.getLogger(__name__)


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
    its Outcome (``job``: the task's recipe)."""
    data = cached_dataset(job.dataset, job.data_root, job.download, device)
    write_run(job.results, task.key, job.recipe, job.dataset, manifest_rows(job.zoo)[task.network], epochs,
              data.y_test.cpu().numpy(), data.classes, facts, weights_dtype=job.weights_dtype)
    return Outcome(task.network, task.seed, facts.status, len(epochs), facts.error, facts.wall_time_s,
                   task.recipe_hash)


def _facts(status: str, error: str | None, batch_size: int, oom_retries: int, start: float, device: str,
           share: int = 1) -> RunFacts:
    """The RunFacts of a run (or of one of ``share`` runs trained as a group) that started at ``start``."""
    cuda = torch.device(device).type == "cuda"
    return RunFacts(status=status, error=error, batch_size_used=batch_size, oom_retries=oom_retries,
                    wall_time_s=(time.perf_counter() - start) / share,
                    peak_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if cuda else None,
                    device=device_name(device), threads=torch.get_num_threads(), worker=f"{HOST}:{os.getpid()}",
                    fused_runs=share)


def _build(job: TrainJob, task: Task):
    """What builds ``task``'s network (from its recipe's zoo)."""
    return functools.partial(load_network, job.part(task.recipe_hash).zoo, task.network)


def train_task(job: TrainJob, task: Task, device: str) -> Outcome:
    """Train one task and write its parts (epochs, predictions, layers, then networks: the key is whole).

    A CUDA out-of-memory is retried once at half the batch size; any other exception makes the run ``failed``
    (its error recorded) without stopping the caller."""
    start = time.perf_counter()
    job = job.part(task.recipe_hash)
    data = job_data(job, device)
    batch_size, oom_retries, error = job.recipe.batch_size, 0, None
    cuda = torch.device(device).type == "cuda"
    while True:
        epochs = []
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            for results in train_runs(_build(job, task), [Run(task.seed, job.recipe)], data, device,
                                      lenses=job.lenses, batch_size=batch_size, states=job.save_weights,
                                      graphs=job.cuda_graphs):
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
    """Train ``tasks`` (runs of one network of equal ``group_key``, their keys claimed) as one group and write
    each one's parts; a group that cannot be fused or fails trains its tasks one at a time (``train_task``)."""
    start = time.perf_counter()
    parts = [job.part(t.recipe_hash) for t in tasks]
    data = job_data(parts[0], device)  # one validation fraction in a group (group_key)
    trained: list[list] = [[] for _ in tasks]
    try:
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        builds = [_build(job, t) for t in tasks]
        for results in train_runs(builds, [Run(t.seed, p.recipe) for t, p in zip(tasks, parts)], data, device,
                                  lenses=job.lenses, states=job.save_weights, graphs=job.cuda_graphs):
            for i, result in results.items():
                trained[i].append(result)
    except FusionError as exc:
        log.info("%s: its runs cannot train as one group (%s); training them one at a time", tasks[0].network, exc)
        return [train_task(job, t, device) for t in tasks]
    except Exception as exc:  # out of memory, or a fault of the group: each run alone, with its own retry
        log.warning("%s: training its runs as one group failed (%s: %s); training them one at a time",
                    tasks[0].network, type(exc).__name__, exc)
        return [train_task(job, t, device) for t in tasks]
    return [_write(p, t, epochs, _facts(epochs[-1].status, None, p.recipe.batch_size, 0, start, device,
                                        share=len(tasks)), device)
            for t, p, epochs in zip(tasks, parts, trained)]


class Groups:
    """The tasks of a task list that may share a group with each other (``netzoo.grouping.group_key``), for
    ``claim_group``: keys computed once per list, not once per pair."""

    def __init__(self, job: TrainJob, tasks: list[Task]) -> None:
        self.job = job
        order = {recipe.hash: i for i, recipe in enumerate(p.recipe for p in job.parts())}
        rows = {p.recipe.hash: manifest_rows(p.zoo) for p in job.parts()}
        self.key, self.members, self.tasks = {}, {}, len(tasks)
        for task in sorted(tasks, key=lambda t: (order.get(t.recipe_hash, 0), t.seed)):
            part = job.part(task.recipe_hash)
            key = group_key(rows[task.recipe_hash][task.network], part.recipe)
            self.key[task.key] = key
            self.members.setdefault(key, []).append(task)
        self.rows = rows

    def candidates(self, task: Task) -> list[Task]:
        """The other tasks that may train in ``task``'s group, in recipe-then-seed order."""
        return [t for t in self.members[self.key[task.key]] if t.key != task.key]

    def row(self, task: Task) -> dict:
        return self.rows[task.recipe_hash][task.network]


def claim_group(job: TrainJob, task: Task, groups: Groups, claims: Claims, device: str,
                trained=frozenset()) -> list[Task]:
    """The other tasks that train in ``task``'s group, claimed (their claims are now held), when the job fuses
    and fusion pays on ``device`` (netzoo.grouping.fusion_pays); else []. A group holds at most MAX_GROUP_RUNS
    runs, and no more than the task list's share per worker (``job.workers``): a sweep of one network fills
    every worker, not one. Tasks whose keys are in ``trained`` (this worker trained them already) are left out."""
    others = [t for t in groups.candidates(task) if t.key not in trained]
    if not fusion_pays(groups.row(task), device, 1 + len(others), job.fuse):
        return []
    size = MAX_GROUP_RUNS if not job.workers else min(MAX_GROUP_RUNS, max(2, -(-groups.tasks // job.workers)))
    group = []
    for other in others:
        if len(group) == size - 1:
            break
        if claims.acquire(other.key):
            if res.key_complete(job.results, other.key):
                claims.release(other.key)
            else:
                group.append(other)
    return group


def run_tasks(job: TrainJob, tasks: list[Task], device: str = "cpu", on_outcome=None, stop=None,
              on_start=None) -> list[Outcome]:
    """Train ``tasks`` in this process on ``device``, one after another; return one Outcome per task.

    Each key is claimed first (DIR/claims/), so any number of processes on any machines may run this on
    the same task list: a key held by a live worker, or already complete, is skipped (status ``skipped``); a key
    trained in an earlier task's group has its outcome from that group, once.
    ``on_start(task)`` is called when a task starts training, ``on_outcome(outcome)`` after each task;
    ``stop()`` returning True ends the loop early (between tasks).
    """
    threads_before = torch.get_num_threads()  # restored at the end: run_job may run in a user's process
    if job.threads:
        torch.set_num_threads(job.threads)
    res.results_folder(job.results, create=True)
    check_dataset(job, cached_dataset(job.dataset, job.data_root, job.download, device))
    claims = Claims(job.results)
    groups = Groups(job, tasks)
    outcomes, trained_here = [], set()  # keys trained in an earlier task's group: their outcome is reported

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        for task in tasks:
            if stop is not None and stop():
                break
            if task.key in trained_here:
                continue
            if not claims.acquire(task.key):
                report(Outcome(task.network, task.seed, "skipped", error="claimed by another worker",
                               recipe_hash=task.recipe_hash))
                continue
            if res.key_complete(job.results, task.key):
                claims.release(task.key)
                report(Outcome(task.network, task.seed, "skipped", error="already complete",
                               recipe_hash=task.recipe_hash))
                continue
            group = []
            try:
                group = claim_group(job, task, groups, claims, device, trained_here)
                for member in [task] + group:
                    if on_start is not None:
                        on_start(member)
                trained = train_group(job, [task] + group, device) if group else [train_task(job, task, device)]
            finally:
                for member in [task] + group:
                    claims.release(member.key)
            trained_here.update(member.key for member in [task] + group)
            for outcome in trained:
                report(outcome)
    finally:
        claims.close()
        torch.set_num_threads(threads_before)
    return outcomes
