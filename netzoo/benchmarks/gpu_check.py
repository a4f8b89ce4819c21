"""`make gpu-check`: what issue 15 asks of a GPU, measured in one run of under 8 minutes and written to a file.

One command on a GPU machine (nothing installed beyond `make venv`) measures, on the first CUDA device:

1. **fused vs one run at a time, 32 runs**: the bench sample of the default digits zoo
   (``netzoo.benchmarks.study.bench_sample``), every network with 32 seeds, through ``run_job`` with ``--fuse
   auto`` and ``--fuse off`` (target: 15x), and the 32-run sweep of one network (8 lrs x 4 seeds); throughput
   in network-epochs per second;
2. **equivalence**: a few networks (one per family, and a BatchNorm + Dropout variant) trained as a fused group
   and each run alone on the GPU: the largest difference in first-epoch training loss and last-epoch accuracy;
3. **CUDA graphs on and off**: a sample of the default MNIST zoo (1x28x28; 2,400 steps an epoch, where
   ``netzoo.graphs`` captures) trained one epoch each way, time and numbers;
4. **the MNIST study's projected time**: the whole default MNIST zoo (1001 networks x 4 epochs, one seed) from a
   timed sample (``PER_FAMILY`` networks of every family at quantiles of training FLOPs) trained by ``workers``
   processes sharing the GPU; each family's mean time per network-epoch x its networks x 4 epochs / workers
   (target: under 15 minutes).

MNIST comes from ``--data-root`` when it holds it; otherwise the MNIST-shaped phases train on random images of
MNIST's shape and size (the same steps and time; their accuracies mean nothing, and the file says so). Without a
GPU, phases 1 and 2 run briefly on the CPU, 3 and 4 are skipped, and the file says that no GPU was found.

Writes ``OUT/gpu-check.json`` (every figure) and ``OUT/gpu-check.md`` (the tables); prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from netzoo import files
from netzoo.devices import device_name

PER_FAMILY = 2  # networks per family of the MNIST zoo in the projection's timed sample (plus Basic)
MNIST_EPOCHS = 4  # the MNIST study's epochs
TARGET_RATIO = 15.0  # fused over one run at a time, 32 runs, on a GPU
TARGET_PROJECTED_S = 15 * 60  # the MNIST study on one GPU


@dataclass
class Sizes:
    """How much each phase trains (GPU: the real check; CPU: brief; tests: tiny)."""

    seeds: int          # runs per network in phase 1
    epochs: int         # epochs of phases 1 and 2
    equivalence: int    # networks of phase 2 (from the bench sample), plus one regularised
    per_family: int     # phase 4's networks per family
    workers: int        # processes sharing the GPU in phase 4
    spec: str = "default"
    sweep: bool = True
    mnist_train: int = 60000  # training images of the MNIST-shaped noise (when no MNIST is at --data-root)


GPU = Sizes(seeds=32, epochs=2, equivalence=5, per_family=PER_FAMILY, workers=8)
CPU = Sizes(seeds=4, epochs=1, equivalence=2, per_family=0, workers=1)


def _log(text: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- 1. fused vs one run at a time ------------------------------------------------------------------------
def throughput(zoo: str, names: list[str], sweep_network: str, sizes: Sizes, device: str) -> dict:
    """Phase 1: network-epochs per second of the sample's ``sizes.seeds`` runs per network and of the 32-run
    sweep, fused and one at a time (each side in a fresh process, as ``netzoo bench`` runs them)."""
    from netzoo.benchmarks.study import NETZOO, SOLO, SWEEP_FUSED, SWEEP_SOLO, _side_in_subprocess

    common = dict(zoo=zoo, dataset="digits", data_root=None, epochs=sizes.epochs, device=device)
    out = {}
    for side in (SOLO, NETZOO) + ((SWEEP_SOLO, SWEEP_FUSED) if sizes.sweep else ()):
        sample = [sweep_network] if side in (SWEEP_SOLO, SWEEP_FUSED) else names
        _log(f"phase 1: {side} ({len(sample)} networks)")
        run = _side_in_subprocess(side, names=sample, seeds=sizes.seeds, **common)
        out[side] = {"network_epochs": run.network_epochs, "wall_s": run.wall_s,
                     "network_epochs_per_s": run.network_epochs_per_s, "mean_test_acc": run.mean_test_acc}
    out["ratio"] = out[NETZOO]["network_epochs_per_s"] / out[SOLO]["network_epochs_per_s"]
    if sizes.sweep:
        out["sweep_ratio"] = out[SWEEP_FUSED]["network_epochs_per_s"] / out[SWEEP_SOLO]["network_epochs_per_s"]
    return out


# --- 2. equivalence ---------------------------------------------------------------------------------------
def equivalence(zoo: str, regularised: str, names: list[str], device: str, runs: int = 4) -> list[dict]:
    """Phase 2: each network's ``runs`` seeds trained as one fused group and each alone, 2 epochs on digits: the
    largest differences between a run's numbers in the two (first-epoch training loss, last-epoch accuracy)."""
    from netzoo.datasets import load_dataset
    from netzoo.recipe import STUDY
    from netzoo.train import Run, train_runs
    from netzoo.zoo import load_network

    data = load_dataset("digits", device=device)
    recipe = STUDY.replace(epochs=2)
    rows = []
    for folder, name in [(zoo, n) for n in names] + [(regularised, names[-1])]:
        seeds = list(range(runs))
        build = lambda folder=folder, name=name: load_network(folder, name)  # noqa: E731
        fused = list(train_runs(build, [Run(s, recipe) for s in seeds], data, device))
        alone = [list(train_runs(build, [Run(s, recipe)], data, device)) for s in seeds]
        loss = max(abs(fused[0][i].metrics["train_loss"] - alone[i][0][0].metrics["train_loss"]) for i in seeds)
        acc = max(abs((fused[-1][i].metrics["test_acc"] or 0) - (alone[i][-1][0].metrics["test_acc"] or 0))
                  for i in seeds)
        rows.append({"network": name, "zoo": "batch norm + dropout 0.2" if folder == regularised else "default",
                     "runs": runs, "first_epoch_train_loss_diff": loss, "last_epoch_test_acc_diff": acc,
                     "within_one_point": acc <= 0.01})
    return rows


# --- 3 and 4: MNIST-shaped training in worker processes ---------------------------------------------------
def _mnist(device: str, data_root: str | None, train: int = 60000):
    """MNIST on ``device`` when ``data_root`` holds it, else ``train`` + 10,000 random images of its shape:
    (dataset, whether it is MNIST)."""
    from netzoo.datasets import Dataset, load_dataset
    from netzoo.errors import NetzooError

    if data_root:
        try:
            return load_dataset("mnist", root=data_root, device=device), True
        except (NetzooError, OSError) as exc:
            _log(f"MNIST not loadable from {data_root} ({exc}); random images of its shape instead")
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(train + 10000, 1, 28, 28, generator=gen, device=device)
    y = torch.randint(0, 10, (train + 10000,), generator=gen, device=device)
    return Dataset(name="mnist-shaped", x_train=x[:train], y_train=y[:train], x_test=x[train:], y_test=y[train:],
                   classes=10, input_shape=(1, 28, 28), mean=0.0, std=1.0, split=f"{train}/10000",
                   source="torch.randn"), False


def _train_share(args: tuple) -> list[dict]:
    """One worker's share of an MNIST-shaped sample: each network trained alone, ``epochs`` epochs; its wall time
    (building, training, evaluating), training and evaluation time, and its numbers."""
    zoo, names, epochs, device, graphs, data_root, threads, train = args
    from netzoo.devices import sync
    from netzoo.recipe import STUDY
    from netzoo.train import Run, train_runs
    from netzoo.zoo import load_network

    torch.set_num_threads(threads)
    data, real = _mnist(device, data_root, train)
    out = []
    for name in names:
        sync(device)
        start = time.perf_counter()
        epochs_done = list(train_runs(lambda: load_network(zoo, name), [Run(0, STUDY.replace(epochs=epochs))], data,
                                      device, graphs=graphs))
        last = epochs_done[-1][0].metrics
        out.append({"network": name, "wall_s": time.perf_counter() - start, "train_s": last["train_time_s"],
                    "eval_s": sum(e[0].metrics["eval_time_s"] for e in epochs_done),
                    "train_loss": epochs_done[0][0].metrics["train_loss"], "test_acc": last["test_acc"],
                    "real_mnist": real})
    return out


def train_sample(zoo: str, names: list[str], device: str, workers: int, graphs: bool, data_root: str | None,
                 epochs: int = 1, train: int = 60000) -> tuple[list[dict], float]:
    """``names`` trained by ``workers`` spawned processes sharing ``device`` (costliest first, dealt in turn):
    (per-network rows, wall seconds of the whole sample)."""
    shares = [names[i::workers] for i in range(workers) if names[i::workers]]
    threads = max(1, (os.cpu_count() or 1) // len(shares))
    ctx = mp.get_context("spawn")
    start = time.perf_counter()
    with ctx.Pool(len(shares)) as pool:
        rows = pool.map(_train_share, [(zoo, share, epochs, device, graphs, data_root, threads, train)
                                       for share in shares])
    return [row for share in rows for row in share], time.perf_counter() - start


def projection(manifest, rows: list[dict], workers: int, epochs: int = 1) -> dict:
    """Phase 4's estimate: per family, the sample's mean wall seconds per network-epoch (measured with
    ``workers`` processes sharing the GPU) x the family's networks x MNIST_EPOCHS, summed, / ``workers``."""
    timed = {row["network"]: row["wall_s"] / epochs for row in rows}
    families = manifest.set_index("network")["family"]
    per_family = {}
    for family, count in manifest["family"].value_counts().items():
        times = [t for name, t in timed.items() if families[name] == family]
        per_family[family] = {"networks": int(count), "timed": len(times),
                              "mean_s_per_network_epoch": statistics.mean(times) if times else math.nan}
    total = sum(f["networks"] * f["mean_s_per_network_epoch"] * MNIST_EPOCHS for f in per_family.values()) / workers
    return {"per_family": per_family, "projected_s": total, "workers": workers}


# --- the whole check --------------------------------------------------------------------------------------
def run_check(out: str | Path = "results/gpu-check", data_root: str | None = None, sizes: Sizes | None = None,
              device: str | None = None) -> dict:
    """Every phase on ``device`` (default: the first CUDA device, else the CPU, briefly); writes
    OUT/gpu-check.json and OUT/gpu-check.md and returns the figures."""
    from netzoo.benchmarks.study import SWEEP_FAMILY, bench_sample
    from netzoo.generate import generate_zoo

    started = time.perf_counter()
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    device = device or ("cuda:0" if cuda else "cpu")
    sizes = sizes or (GPU if cuda else CPU)
    report = {"device": device_name(device, detail=True), "gpu": cuda, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sizes": asdict(sizes),
              "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="netzoo-gpu-check-") as tmp:
        _log(f"device {report['device']}; generating the digits zoo")
        manifest = generate_zoo(sizes.spec, dataset="digits", out=Path(tmp) / "digits", progress=False)
        names = bench_sample(manifest)
        picked = manifest.set_index("network").loc[names]
        swept = picked.index[picked["family"] == SWEEP_FAMILY].tolist()[:1] or names[-1:]
        report["sample"] = names
        report["throughput"] = throughput(str(Path(tmp) / "digits"), names, swept[0], sizes, device)
        regularised = Path(tmp) / "digits-regularised"
        few = names[:: max(1, len(names) // sizes.equivalence)][: sizes.equivalence]
        generate_zoo(sizes.spec, dataset="digits", out=regularised, networks=few[-1:], batch_norm=True, dropout=0.2,
                     progress=False)
        _log(f"phase 2: equivalence of {len(few) + 1} networks")
        report["equivalence"] = equivalence(str(Path(tmp) / "digits"), str(regularised), few, device)
        if sizes.per_family:  # GPU sizes; the tests' tiny sizes run it on the CPU
            _log("phases 3-4: generating the MNIST zoo")
            mnist = generate_zoo(sizes.spec, dataset="mnist", out=Path(tmp) / "mnist", progress=False)
            sample = bench_sample(mnist, sizes.per_family)
            order = mnist.set_index("network").loc[sample].sort_values("flops_train_step", ascending=False).index
            zoo = str(Path(tmp) / "mnist")
            graphs = {}
            for on in (False, True):
                _log(f"phase 3: {len(sample)} MNIST networks, 1 epoch, one worker, CUDA graphs {'on' if on else 'off'}")
                rows, wall = train_sample(zoo, list(order), device, 1, on, data_root, train=sizes.mnist_train)
                graphs["on" if on else "off"] = {"wall_s": wall, "rows": rows}
            on, off = ({r["network"]: r for r in graphs[k]["rows"]} for k in ("on", "off"))
            for side, rows in (("on", on), ("off", off)):  # in the worker: no process start, no import
                graphs[side]["networks_s"] = sum(r["wall_s"] for r in rows.values())
            graphs["speedup"] = graphs["off"]["networks_s"] / graphs["on"]["networks_s"]
            graphs["max_train_loss_diff"] = max(abs(on[n]["train_loss"] - off[n]["train_loss"]) for n in on)
            report["graphs"] = graphs
            _log(f"phase 4: {len(sample)} MNIST networks, 1 epoch, {sizes.workers} workers on one GPU")
            rows, wall = train_sample(zoo, list(order), device, sizes.workers, True, data_root,
                                      train=sizes.mnist_train)
            report["projection"] = {**projection(mnist, rows, sizes.workers), "sample_wall_s": wall, "rows": rows,
                                    "real_mnist": all(r["real_mnist"] for r in rows),
                                    "mnist_train": sizes.mnist_train}
    report["elapsed_s"] = time.perf_counter() - started
    report["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = Path(out)
    files.atomic_write_text(out / "gpu-check.json", json.dumps(report, indent=1, default=str))
    files.atomic_write_text(out / "gpu-check.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    """The check's figures as markdown tables."""
    from netzoo.benchmarks.study import NETZOO, SOLO, SWEEP_FUSED, SWEEP_SOLO

    lines = ["# gpu-check", "", f"Device: **{report['device']}**, torch {report['torch']}, {report['date']}; "
             f"load average {report['load_before']} -> {report['load_after']}; {report['elapsed_s']:.0f} s in all.", ""]
    if not report["gpu"]:
        lines += ["**No GPU was found**: the CPU figures below are brief (fewer seeds, one epoch); " +
                  ("the MNIST phases ran at the tests' tiny sizes, where CUDA graphs cannot capture: their figures "
                   "mean nothing." if "graphs" in report else
                   "the MNIST phases (CUDA graphs, projected study time) need a GPU and were skipped."), ""]
    t = report["throughput"]
    lines += ["## Fused vs one run at a time", "",
              f"Sample ({len(report['sample'])} networks x {report['sizes']['seeds']} seeds, "
              f"{report['sizes']['epochs']} epoch(s), digits): {', '.join(report['sample'])}.", "",
              "| side | network-epochs | wall (s) | network-epochs/s | mean final test accuracy |", "|---|---|---|---|---|"]
    for side in (SOLO, NETZOO, SWEEP_SOLO, SWEEP_FUSED):
        if side in t:
            s = t[side]
            lines.append(f"| {side} | {s['network_epochs']} | {s['wall_s']:.1f} | {s['network_epochs_per_s']:.2f} | "
                         f"{s['mean_test_acc']:.3f} |")
    lines += ["", f"- fused / one run at a time: **{t['ratio']:.2f}x** (target on a GPU at 32 runs: "
              f"{TARGET_RATIO:g}x)"]
    if "sweep_ratio" in t:
        lines.append(f"- sweep (8 lrs x 4 seeds) fused / one run at a time: **{t['sweep_ratio']:.2f}x**")
    lines += ["", "## Equivalence: a fused group against each run alone", "",
              "| network | zoo | runs | first-epoch train loss, max diff | last-epoch test accuracy, max diff | "
              "within one point |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['network']} | {r['zoo']} | {r['runs']} | {r['first_epoch_train_loss_diff']:.2e} | "
              f"{r['last_epoch_test_acc_diff']:.4f} | {'yes' if r['within_one_point'] else '**no**'} |"
              for r in report["equivalence"]]
    if "graphs" in report:
        g = report["graphs"]
        lines += ["", "## CUDA graphs on and off (MNIST sample, 1 epoch, one worker)", "",
                  f"- the networks' time in the worker: {g['on']['networks_s']:.1f} s with graphs, "
                  f"{g['off']['networks_s']:.1f} s without: **{g['speedup']:.2f}x** (whole pools: "
                  f"{g['on']['wall_s']:.1f} s and {g['off']['wall_s']:.1f} s); largest first-epoch training loss "
                  f"difference {g['max_train_loss_diff']:.2e}"]
    if "projection" in report:
        p = report["projection"]
        data = "real MNIST" if p["real_mnist"] else "random images of MNIST's shape (no --data-root with MNIST)"
        lines += ["", f"## The MNIST study projected: 1001 networks x {MNIST_EPOCHS} epochs on one GPU", "",
                  f"Timed sample: {len(p['rows'])} networks, 1 epoch of {p['mnist_train']} images, {p['workers']} "
                  f"worker processes sharing the GPU, CUDA graphs on, {data}; sample wall {p['sample_wall_s']:.1f} s.",
                  "",
                  "| family | networks | timed | s per network-epoch (with sharing) |", "|---|---|---|---|"]
        lines += [f"| {f} | {v['networks']} | {v['timed']} | {v['mean_s_per_network_epoch']:.2f} |"
                  for f, v in sorted(p["per_family"].items())]
        minutes = p["projected_s"] / 60
        lines += ["", f"- projected: **{minutes:.1f} min** (target: under {TARGET_PROJECTED_S // 60} min)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m netzoo.benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/gpu-check", help="folder for gpu-check.json and gpu-check.md")
    parser.add_argument("--data-root", default=None, help="a folder holding MNIST/raw (else MNIST-shaped noise)")
    args = parser.parse_args(argv)
    report = run_check(out=args.out, data_root=args.data_root)
    print(markdown(report))


if __name__ == "__main__":
    main()
