"""`netzoo train --executor local` (the default): the job's tasks on this machine, in this process and in a
``concurrent.futures.ProcessPoolExecutor`` of spawned workers.

Every worker, this process included, runs ``netzoo.executors.tasks.run_tasks`` over the same ordered task list,
claiming the next free key, so the pool needs no scheduling of its own: one long call per worker. This process
is the first worker: torch is loaded here already, so it trains at once while the others spawn (each spends
~2.5 s importing torch; docs/benchmarks.md, "Notes on the throughput benchmark"). Workers report each start and
outcome on a queue as it happens (a thread here turns them into progress); an exception in a worker (a full
disk) comes back through its future and is raised here, one message for the run. A worker that dies breaks the
pool (``BrokenProcessPool``: the pool stops its other workers too); this process trains on, and ``run_job``'s
next pass trains what the dead workers left. A worker skips the interpreter's teardown at exit (``os._exit``
from an ``atexit`` hook, after its queues are flushed): torch makes that teardown ~0.6 s long, and the pool
waits for it (measured, one spawned worker that imported torch: ``shutdown()`` 0.56 s without the hook, 0.05 s
with it, load average 2.5).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import multiprocessing as mp
import os
import queue as queue_module
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict

from netzoo.executors.tasks import run_tasks
from netzoo.jobs import Outcome, Task, TrainJob
from netzoo.zoo import manifest_rows

log = logging.getLogger(__name__)


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


# --- a worker of the pool -------------------------------------------------------------------------------
_worker: dict = {}  # this worker's events queue, stop event, parent pid and (device, threads) slot


def _start_worker(events, slots, stop, quiet: bool) -> None:
    """The pool's initializer (queues and events reach a spawned worker only this way, at its start): take this
    worker's (device, threads) slot; end the process with ``os._exit`` once multiprocessing has flushed its
    queues at exit (its finalizers run before Python's exit handlers, and those run last-registered first)."""
    _worker.update(events=events, stop=stop, parent=os.getppid(), slot=slots.get())
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(message)s")
    atexit.register(os._exit, 0)


def _work(job: TrainJob, tasks: list[Task]) -> None:
    """One worker's whole share: ``run_tasks`` over the ordered list, each start and outcome put on the events
    queue as it happens; stops when the parent dies or sets ``stop``."""
    (device, threads), events, stop, parent = _worker["slot"], _worker["events"], _worker["stop"], _worker["parent"]
    run_tasks(dataclasses.replace(job, threads=threads), tasks, device,
              on_outcome=lambda o: events.put(("outcome", asdict(o))),
              stop=lambda: os.getppid() != parent or stop.is_set(),
              on_start=lambda t: events.put(("start", list(t.key))))


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now (a kill is safe at any moment: parts are atomic, a dead worker's claims
    stale). Python 3.14's ``terminate_workers``; before it, the pool's process table."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()


# --- this process ---------------------------------------------------------------------------------------
def run_local(job: TrainJob, tasks: list[Task], on_outcome, on_start=None) -> tuple[list[Outcome], set]:
    """Run ``tasks`` in this process and, with several workers, in a pool of spawned workers too; return
    (outcomes, lost): the keys a worker started and never finished (it died).

    A key skipped because a worker of another process holds it is not lost: ``run_job`` looks at it after.
    """
    slots = worker_slots(job, len(tasks))
    if len(slots) == 1:
        device, threads = slots[0]
        return run_tasks(dataclasses.replace(job, threads=threads, workers=1), tasks, device, on_outcome=on_outcome,
                         on_start=on_start), set()
    # Costliest first (training FLOPs per sample from the manifest) within this process's own share, then
    # within the shares it helps with, every worker walking the same list and claiming the next free task:
    # the run ends on small networks, not on two workers finishing ResNets.
    rows = manifest_rows(job.zoo)
    order = sorted(tasks, key=lambda t: (t.share, -(rows.get(t.network, {}).get("flops_train_step") or 0)))
    ctx = mp.get_context("spawn")  # fork after torch started threads can deadlock; spawn is safe everywhere
    events, slot_queue, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    for slot in slots[1:]:
        slot_queue.put(slot)
    job = dataclasses.replace(job, workers=len(slots))  # every worker's share of the tasks caps its groups
    outcomes, started, lock = {}, set(), threading.Lock()

    def record(outcome: Outcome) -> None:
        if outcome.status == "skipped":  # every worker sees every task: keep the one that trained it
            return
        with lock:
            outcomes[outcome.key] = outcome
            on_outcome(outcome)

    def begin(task: Task) -> None:
        with lock:
            started.add(task.key)
        if on_start is not None:
            on_start(task)

    done = threading.Event()

    def relay() -> None:  # the workers' starts and outcomes, as they happen
        while not (done.is_set() and events.empty()):
            try:
                kind, value = events.get(timeout=0.2)
            except queue_module.Empty:
                continue
            if kind == "start":
                begin(Task(value[0], int(value[2]), value[1]))
            else:
                record(Outcome(**value))

    relay_thread = threading.Thread(target=relay, name="netzoo-relay", daemon=True)
    relay_thread.start()
    device, threads = slots[0]
    pool = ProcessPoolExecutor(max_workers=len(slots) - 1, mp_context=ctx, initializer=_start_worker,
                               initargs=(events, slot_queue, stop, job.quiet))
    try:
        futures = [pool.submit(_work, job, order) for _ in slots[1:]]
        run_tasks(dataclasses.replace(job, threads=threads), order, device, on_outcome=record, on_start=begin,
                  stop=stop.is_set)
        for future in futures:
            try:
                future.result()
            except BrokenProcessPool as exc:
                log.warning("a worker process died (%s); its unfinished keys are trained again", exc)
            except BaseException:
                stop.set()  # an OSError in a worker (a full disk): the others stop, the run reports it once
                raise
    except BaseException:
        stop.set()
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        done.set()
        relay_thread.join()
    lost = {key for key in started if key not in outcomes}
    return list(outcomes.values()), lost
