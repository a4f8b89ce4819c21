"""Running a job: plan it, train its tasks with an executor, and say what happened (``netzoo train``).

``run_job(job)`` plans the job (``netzoo.jobs.plan``), hands the tasks to the local executor
(``netzoo.executors.local``: this process and a pool of spawned workers) or to Ray (``netzoo.executors.ray``),
shows progress, and does not end while a planned key is neither whole nor held by a live worker. Each task is
claimed, trained (``netzoo.train``) and written (``netzoo.write``) by ``netzoo.executors.tasks``; a NaN loss is
recorded as ``diverged``, an exception as ``failed`` (the run goes on), a CUDA out-of-memory is retried once at
half the batch size. The path of ``netzoo train`` from the command line to the part files only goes down:
cli -> runner -> executors -> tasks -> train, write -> results.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from netzoo import results as res
from netzoo.claims import held_keys
from netzoo.errors import NetzooError
from netzoo.jobs import Outcome, Task, TrainJob, all_keys, plan

log = logging.getLogger(__name__)


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
    recipes: dict = field(default_factory=dict)  # a job of several recipes (a sweep): recipe hash -> its Summary

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
    keys = all_keys(job)
    planned = [t.key for t in tasks]
    total = len(keys) - len(tasks)  # whole before this run
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
                from netzoo.executors.local import run_local

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
    elsewhere = {t.key for t in left if t.key in held}
    wall = time.perf_counter() - start

    def summary(mine=lambda key: True) -> Summary:
        return Summary(results=job.results, outcomes=[o for o in outcomes if mine(o.key)],
                       already_complete=sum(map(mine, keys)) - sum(map(mine, planned)), wall_time_s=wall,
                       lost=sum(map(mine, orphans & lost)), left=sum(map(mine, orphans - lost)),
                       elsewhere=sum(map(mine, elsewhere)))

    whole = summary()
    if job.sweep:
        whole.recipes = {part.recipe.hash: summary(lambda key, h=part.recipe.hash: key[1] == h)
                         for part in job.parts()}
    return whole
