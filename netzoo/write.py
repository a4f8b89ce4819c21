"""Results writing: one trained run becomes the rows of its key in every table, written as its part files.

``write_run`` builds a key's ``epochs``, ``predictions`` (``predictions_table``, the one builder of prediction
rows), ``layers`` and ``networks`` rows (and writes its weights, ``netzoo.weights``) from the run's EpochResults (``netzoo.train``) and what is known about
the run (``RunFacts``), and writes them with ``netzoo.results.write_part``: epochs, predictions and layers
first, the networks part last, so the key is whole only once every part is on disk. Row shapes come from
``netzoo.schema``; nothing here trains or decides what to train.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from netzoo import results as res
from netzoo.keys import Key
from netzoo.recipe import Recipe
from netzoo.schema import LAYERS, NETWORKS, PREDICTIONS, epochs_schema
from netzoo.weights import write_weights


@dataclass(frozen=True)
class RunFacts:
    """How a run went, beyond its epochs: the ``networks`` columns the trainer's caller knows."""

    status: str                      # done, diverged, stopped_early or failed
    error: str | None                # why it failed (None otherwise)
    batch_size_used: int             # the recipe's, or half of it after a CUDA out-of-memory
    oom_retries: int                 # 0 or 1
    wall_time_s: float               # loading, training, evaluating and writing this run (a group's share)
    peak_memory_bytes: int | None    # CUDA max_memory_allocated; None on CPU
    device: str                      # netzoo.devices.device_name
    threads: int                     # torch intra-op threads
    worker: str                      # host:pid
    fused_runs: int = 1              # runs trained together as one fused group (1: alone)


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """netzoo, torch and git versions, recorded with every network."""
    import torch

    from netzoo import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"netzoo_version": __version__, "torch_version": torch.__version__, "git_commit": commit}


def predictions_table(key_cols: dict, epochs: list, labels: np.ndarray) -> pa.Table:
    """The predictions rows of one key: every test sample at every epoch (``epochs``: objects with ``epoch``
    and ``log_probs`` (N, K) or None), ``pred`` the argmax and ``probs`` the K probabilities as float16.

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


def write_run(results_dir, key: Key, recipe: Recipe, dataset: str, manifest_row: dict, epochs: list,
              labels: np.ndarray, classes: int, facts: RunFacts, weights_dtype: str = "float32") -> dict:
    """Write the parts of ``key`` = (network, recipe hash, seed) in every table from its EpochResults
    ``epochs`` (of a run that may have failed: then possibly none); return its networks row.

    ``manifest_row``: the network's row of its zoo's manifest (netzoo.zoo.manifest_rows); ``labels``: the
    test split's labels (N,) in sample order; ``classes``: K, the width of ``probs`` and of the per-class
    accuracy columns. The state dicts the EpochResults carry (``state``: what ``--save-weights`` asked the
    trainer for) are written as the key's weights (``netzoo.weights.write_weights``, in ``weights_dtype``) after
    the other parts and before the networks part, which records them. Raises OSError when a part cannot be
    written (nothing half-written stays).
    """
    network, recipe_hash, seed = key
    key_cols = {"network": network, "recipe": recipe.name, "recipe_hash": recipe_hash, "seed": seed}
    epoch_rows = [{**key_cols, "epoch": r.epoch, "status": r.status, **r.metrics} for r in epochs]
    res.write_part(results_dir, "epochs", pa.Table.from_pylist(epoch_rows, schema=epochs_schema(classes)), key,
                   classes)
    res.write_part(results_dir, "predictions", predictions_table(key_cols, epochs, labels), key, classes)
    layer_rows = [{**row, **key_cols, "epoch": r.epoch} for r in epochs for row in r.layer_rows]
    res.write_part(results_dir, "layers", pa.Table.from_pylist(layer_rows, schema=LAYERS), key, classes)
    saved = write_weights(results_dir, key, {r.epoch: r.state for r in epochs if r.state is not None}, weights_dtype)
    manifest = dict(manifest_row)
    manifest["zoo_seed"] = manifest.pop("seed")
    network_row = {
        **manifest, **key_cols, **provenance(), "recipe_json": recipe.to_json(), "dataset": dataset,
        **asdict(facts), **saved, "epochs_done": len(epochs),
        "last_batch_merged": any(r.last_batch_merged for r in epochs),
        "train_time_s": sum(r.metrics["epoch_time_s"] for r in epochs),
        "eval_time_s": sum(r.metrics["eval_time_s"] for r in epochs),
        "finished_at": datetime.now(timezone.utc),
    }
    res.write_part(results_dir, "networks", pa.Table.from_pylist([network_row], schema=NETWORKS), key, classes)
    return network_row
