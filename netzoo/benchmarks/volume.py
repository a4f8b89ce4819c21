"""Result volume: exam question 8 on a results folder of the full MNIST study's size, before and after compaction.

``measure_volume(DIR)`` writes a synthetic study (1001 networks x 4 epochs x 10,000 test samples: 40M prediction
rows by default) the way the trainer writes it (``netzoo.write.write_run``: one part per key per table), times
question 8 on its part files in a fresh process, compacts it (``netzoo.compact``), times it again, and returns a
markdown report of bytes per row and seconds (docs/scaling.md, "Result volume per table", quotes it). Run it
by hand, never in tests at full size::

    python -c "from netzoo.benchmarks.volume import measure_volume; print(measure_volume('/tmp/volume'))"
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from netzoo import files
from netzoo.errors import NetzooError
from netzoo.recipe import STUDY
from netzoo.schema import MANIFEST, TABLES
from netzoo.train import EpochResult
from netzoo.write import RunFacts, write_run

FAMILIES = ["Linear", "Conv1d", "Conv2d", "Conv3d", "ResNetStyle"]
_DEFAULTS = {pa.string(): "synthetic", pa.int64(): 0, pa.float64(): 0.0, pa.bool_(): False}


def write_synthetic_results(results_dir: str | Path, networks: int = 1001, epochs: int = 4, samples: int = 10_000,
                            classes: int = 10, seed: int = 0) -> dict[str, int]:
    """A results folder of the MNIST study's size (1001 x 4 x 10,000 prediction rows by default), written as
    the trainer writes it, with plausible predictions: each network is right on a share of samples that grows
    by epoch, a few samples are hard for everyone. Returns rows per table."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    hard = rng.random(samples) < 0.02  # 2% of samples most networks get wrong
    template = {f.name: _DEFAULTS.get(f.type) for f in MANIFEST}
    facts = RunFacts(status="done", error=None, batch_size_used=STUDY.batch_size, oom_retries=0, wall_time_s=0.0,
                     peak_memory_bytes=None, device="cpu", threads=1, worker="synthetic")
    rows = {"networks": 0, "epochs": 0, "predictions": 0}
    for n in range(networks):
        family = FAMILIES[n % len(FAMILIES)]
        name = f"{family}ReLU_{n}"
        skill = rng.uniform(0.5, 0.99)
        trained = []
        for epoch in range(1, epochs + 1):
            right = rng.random(samples) < skill * (0.85 + 0.05 * epoch) * np.where(hard, 0.1, 1.0)
            pred = np.where(right, labels, rng.integers(0, classes, samples))
            logits = rng.normal(0, 1, (samples, classes)).astype(np.float32)
            logits[np.arange(samples), pred] += 4.0
            log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
            acc = float(right.mean())
            metrics = {"train_loss": 1 - acc, "train_acc": acc, "test_loss": 1 - acc, "test_acc": acc,
                       "test_balanced_acc": acc, "epoch_time_s": 1.0, "train_time_s": float(epoch),
                       "eval_time_s": 0.1, "lr": STUDY.lr, **{f"test_acc_class_{k}": acc for k in range(classes)}}
            trained.append(EpochResult(epoch=epoch, status="done", metrics=metrics, log_probs=log_probs))
        row = {**template, "network": name, "family": family, "activation": "ReLU", "classes": classes,
               "layer_types": [], "widths": [], "kernel_sizes": [], "biases": [], "activations_after": []}
        write_run(results_dir, (name, STUDY.hash, 42), STUDY, "synthetic", row, trained, labels, classes, facts)
        rows["networks"] += 1
        rows["epochs"] += epochs
        rows["predictions"] += epochs * samples
    files.atomic_write_text(Path(results_dir) / "dataset.json", json.dumps({"name": "synthetic", "classes": classes}))
    return rows


def table_bytes(results_dir: str | Path) -> dict[str, int]:
    """Bytes on disk of each table folder of a results folder."""
    return {t: sum(f.stat().st_size for f in (Path(results_dir) / t).glob("*.parquet")) for t in TABLES
            if (Path(results_dir) / t).is_dir()}


def time_question_8(results_dir: str | Path) -> dict[str, float]:
    """Answer exam question 8 on ``results_dir`` in a fresh process: {'seconds', 'cpu_seconds' (of the whole
    process, imports included), 'peak_rss_bytes', 'rows'}."""
    code = ("import json, resource, time; from analysis.exam import answer; t = time.perf_counter(); "
            f"out = answer('8', {str(results_dir)!r}); s = time.perf_counter() - t; "
            "u = resource.getrusage(resource.RUSAGE_SELF); "
            "print(json.dumps({'seconds': s, 'cpu_seconds': u.ru_utime + u.ru_stime, "
            "'peak_rss_bytes': u.ru_maxrss * 1024, 'rows': len(out)}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetzooError(f"question 8 failed on {results_dir}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_volume(results_dir: str | Path, networks: int = 1001, epochs: int = 4, samples: int = 10_000) -> str:
    """Write the synthetic study, time question 8 on its part files, compact, time it again; a report in markdown."""
    from netzoo.compact import compact_results

    results_dir = Path(results_dir)
    start = time.perf_counter()
    rows = write_synthetic_results(results_dir, networks, epochs, samples)
    write_s = time.perf_counter() - start
    parts_bytes = table_bytes(results_dir)
    q8_parts = time_question_8(results_dir)
    start = time.perf_counter()
    compact_results(results_dir)
    compact_s = time.perf_counter() - start
    compact_bytes = table_bytes(results_dir)
    q8_compact = time_question_8(results_dir)
    lines = [f"Synthetic study: {networks} networks x {epochs} epochs x {samples:,} test samples "
             f"({rows['predictions']:,} prediction rows), written in {write_s:.0f} s.", "",
             "| table | rows | bytes on disk (parts) | bytes per row | bytes on disk (compacted) |", "|---|---|---|---|---|"]
    for table in ("networks", "epochs", "predictions"):
        lines.append(f"| {table} | {rows[table]:,} | {parts_bytes[table]:,} | {parts_bytes[table] / rows[table]:.1f} "
                     f"| {compact_bytes[table]:,} |")
    lines += ["", f"- compaction: {compact_s:.0f} s",
              f"- question 8 on the part files: {q8_parts['seconds']:.1f} s wall ({q8_parts['cpu_seconds']:.1f} s CPU), "
              f"peak memory {q8_parts['peak_rss_bytes'] / 2**30:.2f} GiB",
              f"- question 8 after compaction: {q8_compact['seconds']:.1f} s wall ({q8_compact['cpu_seconds']:.1f} s CPU), "
              f"peak memory {q8_compact['peak_rss_bytes'] / 2**30:.2f} GiB"]
    return "\n".join(lines)
