"""Shards: which keys a process starts with when several share one plan (``--shard i/N``, Slurm arrays).

A shard is where a process starts, not a fence: it takes every N-th key of the sorted plan from the i-th
(balanced across families), then the other shares in turn, so whatever set of shards runs (resubmitted array
tasks, another task count) the whole plan gets trained, and claims (``netzoo.claims``) keep two processes
from training one key at once.
"""

from __future__ import annotations

import os
import re

from netzoo.errors import NetzooError


def parse_shard(text) -> tuple[int, int] | None:
    """'3/8' -> (3, 8); 'auto' works it out from a Slurm array's variables (``slurm_shard``); None stays None."""
    if text is None or isinstance(text, tuple):
        return text
    if text == "auto":
        return slurm_shard(os.environ)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise NetzooError(f"--shard {text!r}: expected i/N with 1 <= i <= N (e.g. 3/8), or 'auto' under Slurm.")
    return int(match[1]), int(match[2])


def slurm_shard(env) -> tuple[int, int]:
    """The share (i, N) a Slurm array task starts with, from SLURM_ARRAY_TASK_ID/_MIN/_MAX/_STEP/_COUNT.

    A regular array (ids MIN, MIN+STEP, …, MAX: ``--array=0-63`` or ``0-6:2``) gives the id's position among
    them; an irregular one (``--array=1,3``, a resubmission of preempted tasks) gives the id's position in
    MIN..MAX. Any start is safe: a task trains the rest of the plan after its share (``plan``). Variables that
    are missing, not integers or contradictory are refused: a task never guesses and trains nothing.
    """
    names = ("ID", "MIN", "MAX", "STEP", "COUNT")
    raw = {n: env.get(f"SLURM_ARRAY_TASK_{n}") for n in names}
    shown = ", ".join(f"SLURM_ARRAY_TASK_{n}={v}" for n, v in raw.items() if v is not None)
    if raw["ID"] is None or (raw["COUNT"] is None and raw["MAX"] is None):
        raise NetzooError("--shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (or _MAX), which are "
                          "not set: run it inside an sbatch --array job, or pass --shard i/N.")
    try:
        values = {n: int(v) for n, v in raw.items() if v is not None}
    except ValueError:
        raise NetzooError(f"--shard auto: the Slurm array variables are not integers ({shown}); pass --shard i/N."
                          ) from None
    task, first, step, count = values["ID"], values.get("MIN", 0), values.get("STEP", 1), values.get("COUNT")
    last = values.get("MAX", first + ((count or 1) - 1) * step)
    if step < 1 or (count is not None and count < 1) or not first <= task <= last:
        raise NetzooError(f"--shard auto cannot place this task in its array ({shown}): pass --shard i/N.")
    span = (last - first) // step + 1
    if (last - first) % step == 0 and (task - first) % step == 0 and count in (None, span):
        return (task - first) // step + 1, span
    return task - first + 1, last - first + 1


def own_share(keys: list, shard: tuple[int, int] | None) -> list:
    """The keys of shard i/N: every N-th key from the i-th (all of them without a shard)."""
    if not shard:
        return list(keys)
    i, n = shard
    return keys[i - 1::n]


def in_turn(keys: list, shard: tuple[int, int] | None) -> list[tuple[int, tuple]]:
    """(share, key) for every key: shard i's own share first (share 0), then the shares after it in turn
    (i+1, i+2, … wrapping: share k), so that processes that finish early help the others from different ends."""
    if not shard:
        return [(0, k) for k in keys]
    i, n = shard
    return [(k, key) for k in range(n) for key in keys[(i - 1 + k) % n::n]]
