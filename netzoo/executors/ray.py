"""`netzoo train --executor ray`: the job's tasks as Ray tasks on an existing Ray cluster (or a local one).

Each Ray task trains a chunk of networks by calling ``netzoo.executors.tasks.run_tasks`` on the node that runs it,
so the rows are the ones the local executor writes: each key's four part files, written atomically, the
``networks`` part last. That is what makes retries safe:

- a worker that dies mid-chunk (node lost, OOM-killed) makes Ray rerun the chunk (``max_retries``);
  the rerun skips the keys already complete and retrains the rest, replacing any part file of a key
  whose ``networks`` part was never written, so no row is ever duplicated;
- a claim held by the dead worker is stale (its pid is gone, or its heartbeat stops), so the rerun takes it;
- an interrupted run resumes: run the same command again, and only incomplete keys are planned.

GPUs: each Ray task asks for ``num_gpus=--gpus-per-task`` (0.25 packs four tasks on one GPU) and caps its
own CUDA memory at that share with ``torch.cuda.set_per_process_memory_fraction``, so one greedy network
cannot starve the three beside it. Ray is an optional extra: ``pip install 'netzoo[ray]'``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from netzoo.errors import NetzooError
from netzoo.results import part_name
from netzoo.executors.tasks import run_tasks
from netzoo.jobs import Outcome, Task, TrainJob

log = logging.getLogger(__name__)

MAX_RETRIES = 3        # Ray reruns a chunk whose worker died this many times
CHUNKS_PER_SLOT = 4    # chunks per concurrent Ray task: small enough to balance, big enough to amortise start-up


def import_ray():
    """The ray module, or a NetzooError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise NetzooError("--executor ray needs Ray, which is not installed here. "
                          "Install the extra: pip install 'netzoo[ray]' (or run with --executor local).") from None
    return ray


def chunk_tasks(tasks: list[Task], chunks: int) -> list[list[Task]]:
    """Split ``tasks`` into at most ``chunks`` lists, dealt round-robin so large networks spread over chunks."""
    chunks = max(1, min(chunks, len(tasks)))
    return [tasks[i::chunks] for i in range(chunks) if tasks[i::chunks]]


def claim_gpu_share(gpu_ids: list, share: float, cuda=None) -> str:
    """The device a Ray task trains on: 'cuda:0' when Ray gave it a GPU (Ray sets CUDA_VISIBLE_DEVICES, so
    its GPU is device 0) and capped at ``share`` of that GPU's memory; 'cpu' without one, or when the
    GPU is a fake (a test cluster started with num_gpus but no CUDA device)."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not gpu_ids or not cuda.is_available():
        return "cpu"
    if 0 < share < 1:
        cuda.set_per_process_memory_fraction(share, 0)
    return "cuda:0"


def train_chunk(job: TrainJob, tasks: list[Task], gpus_per_task: float) -> list[dict]:
    """Body of one Ray task: train ``tasks`` with run_tasks on this node; return the outcomes as dicts."""
    import ray

    context = ray.get_runtime_context()
    device = claim_gpu_share(ray.get_gpu_ids(), gpus_per_task)
    cpus = context.get_assigned_resources().get("CPU", 1)
    job = dataclasses.replace(job, devices=(device,), threads=job.threads or max(1, int(cpus)))
    return [dataclasses.asdict(o) for o in run_tasks(job, tasks, device)]


def _completed_meanwhile(job: TrainJob, outcome: Outcome) -> Outcome:
    """A chunk rerun after its worker died skips the keys the dead worker finished ('already complete'):
    report them with the status their networks part records, so the summary counts every network once."""
    if outcome.status != "skipped" or outcome.error != "already complete":
        return outcome
    path = job.results / "networks" / part_name((outcome.network, outcome.recipe_hash or job.recipe.hash, outcome.seed))
    try:
        row = pq.read_table(path, columns=["status", "epochs_done", "error", "wall_time_s"]).to_pylist()[0]
    except (OSError, IndexError, pa.ArrowException):
        return outcome
    return Outcome(outcome.network, outcome.seed, row["status"], row["epochs_done"], row["error"], row["wall_time_s"],
                   outcome.recipe_hash)


def run(job: TrainJob, tasks: list[Task], on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Train ``tasks`` as Ray tasks on the cluster at ``job.address`` (a new local one when None); return
    one Outcome per task (``failed`` for a chunk that still failed after its retries)."""
    ray = import_ray()
    if not tasks:
        return []
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=job.address, include_dashboard=False, log_to_driver=not job.quiet)
    try:
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        share = job.gpus_per_task if job.gpus_per_task is not None else (1.0 if gpus else 0.0)
        if share < 0 or (share > 0 and not gpus):
            raise NetzooError(f"--gpus-per-task {share}: the Ray cluster at {job.address or 'local'} has "
                              f"{gpus:g} GPUs; pass --gpus-per-task 0 (CPU) or start Ray with GPUs.")
        slots = int(gpus / share) if share else int(resources.get("CPU", 1))
        chunks = chunk_tasks(tasks, max(1, slots) * CHUNKS_PER_SLOT)
        remote = ray.remote(train_chunk).options(num_cpus=1, num_gpus=share, max_retries=MAX_RETRIES,
                                                 retry_exceptions=False, name="netzoo-train-chunk")
        pending = {remote.remote(job, chunk, share): chunk for chunk in chunks}
        log.info("%d task(s) in %d Ray tasks, %g GPU each, on %s", len(tasks), len(chunks), share, resources)
        outcomes = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(ready[0])
            try:
                got = [Outcome(**o) for o in ray.get(ready[0])]
            except ray.exceptions.RayError as exc:  # still failing after MAX_RETRIES reruns
                error = f"Ray task failed after {MAX_RETRIES} retries: {type(exc).__name__}: {str(exc)[:300]}"
                log.warning("%s; %d network(s) left untrained (rerun the command to resume)", error, len(chunk))
                got = [Outcome(t.network, t.seed, "failed", error=error, recipe_hash=t.recipe_hash) for t in chunk]
            for outcome in got:
                outcome = _completed_meanwhile(job, outcome)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        return outcomes
    finally:
        if started_here:
            ray.shutdown()


