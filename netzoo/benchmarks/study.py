"""The study's way of training against netzoo's, on the same sample of the zoo: `netzoo bench`, `make bench`.

One invocation generates the default zoo for the dataset into a temporary folder, takes a fixed sample
(``SAMPLE_PER_FAMILY`` networks of every family at the k/(n+1) quantiles of training FLOPs: the median
network of each family by default, plus Basic), and trains it ``repeat`` times each way, every network with
``seeds`` seeds (8 by default), with the same recipe (the study's), data and device:

1. the reference, the study's way: one run at a time, a ``torch.utils.data.DataLoader`` over the dataset (batch
   25, shuffled, no workers), ``.item()`` on the loss every step, evaluation after each epoch through a
   DataLoader (batch 10) without ``no_grad``, torch's default threads;
2. netzoo as users run it: ``netzoo.runner.run_job`` into a temporary results folder, all its workers, a
   network's seeds trained as one fused group where it pays (``--fuse auto``, netzoo.grouping);
3. the same one run at a time (``--fuse off``): what fusion gains;
4. netzoo (fused) with ``--no-lenses``, for the lenses' overhead: netzoo's summed per-run time (training,
   evaluation, writing) with the lenses over that without them;

and a sweep of one network (``SWEEP_LRS``: 8 learning rates x 4 seeds = 32 runs, ``netzoo sweep``'s one job)
trained fused and one run at a time.

Each side of each repetition runs in a fresh Python process (``python -m netzoo.benchmarks.study``), so its peak
memory (``ru_maxrss`` of the process and of its largest child) is its own; its wall time covers loading
the data and training every run of the sample, not Python's start-up. Throughput is network-epochs (runs x
epochs) per second. The comparison is void when the sides' mean final test accuracy differ by more than
``ACC_TOLERANCE``. The floor is the sample's training FLOPs (manifest ``flops_train_step`` x train samples x
epochs x seeds) at the device's measured matrix-multiply rate.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from netzoo import files
from netzoo.devices import device_name, sync
from netzoo.errors import NetzooError
from netzoo.recipe import STUDY, Recipe

SAMPLE_PER_FAMILY = 1      # networks per family in the sample (plus Basic): keeps `make bench` to minutes
ACC_TOLERANCE = 0.05       # mean final test accuracies further apart than this void the comparison
REFERENCE_EVAL_BATCH = 10  # the study evaluated through a DataLoader of batch 10
SEED = 42                  # the study's training seed
SEEDS = 8                  # seeds per network of the sample: the runs a group may fuse (seeds 42, 43, …)
SWEEP_LRS = tuple(STUDY.lr * 2.0 ** k for k in range(-4, 4))  # the sweep's 8 learning rates around the study's
SWEEP_SEEDS = 4            # the sweep's seeds per learning rate: 32 runs of one network
SWEEP_FAMILY = "Conv2d"    # the sweep trains the sample's network of this family
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
NETZOO = "netzoo"               # netzoo as users run it: fused where it pays (--fuse auto)
NO_LENSES = "netzoo-no-lenses"  # netzoo (fused) with --no-lenses
SOLO = "netzoo-solo"            # netzoo with --fuse off: one run at a time
SWEEP_FUSED, SWEEP_SOLO = "sweep", "sweep-solo"  # the 32-run sweep, fused and one run at a time


# --- the reference: the study's way ----------------------------------------------------------------
def train_reference(model: nn.Module, data, recipe: Recipe, seed: int = SEED, device="cpu") -> list[float]:
    """Train ``model`` the study's way; return the test accuracy after each epoch.

    Deliberately as the study did it (do not "fix"): a DataLoader over the dataset (batch 25, shuffled,
    no workers), ``loss.item()`` every step (a host sync per step), and evaluation after each epoch through
    a DataLoader of batch 10 without ``torch.no_grad()`` (autograd records every test forward). The tensors
    are already decoded and normalised, which is kinder to the reference than the study's per-sample
    torchvision transforms.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    model.to(device)
    train_loader = DataLoader(TensorDataset(data.x_train.cpu(), data.y_train.cpu()),
                              batch_size=recipe.batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(data.x_test.cpu(), data.y_test.cpu()), batch_size=REFERENCE_EVAL_BATCH)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, amsgrad=recipe.amsgrad)
    accuracies = []
    for _ in range(recipe.epochs):
        model.train()
        running_loss = 0.0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        model.eval()
        correct, test_loss = 0, 0.0
        for x, y in test_loader:  # no torch.no_grad(): as the study did
            x, y = x.to(device), y.to(device)
            out = model(x)
            test_loss += F.nll_loss(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
        accuracies.append(correct / len(test_loader.dataset))
    return accuracies


# --- the sample and the floor ----------------------------------------------------------------------
def bench_sample(manifest, per_family: int = SAMPLE_PER_FAMILY) -> list[str]:
    """The fixed sample: Basic, plus per family the networks at the k/(per_family+1) quantiles of training FLOPs."""
    names = []
    for family, rows in manifest.groupby("family", sort=True):
        rows = rows.sort_values(["flops_train_step", "network"]).reset_index(drop=True)
        if family == "Basic":
            names += rows["network"].tolist()
            continue
        picks = sorted({int(len(rows) * k / (per_family + 1)) for k in range(1, per_family + 1)})
        names += rows["network"].iloc[picks].tolist()
    return names


def matmul_flops_per_s(device="cpu", size: int | None = None, repeats: int = 3) -> float:
    """The device's measured float32 matrix-multiply rate (FLOP/s): best of ``repeats`` square torch.mm."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


# --- one side of one repetition, in a fresh process ---------------------------------------------------
@dataclass
class SideRun:
    """One repetition of one side: wall time, peak memory, accuracy."""

    side: str                      # reference, netzoo, netzoo-solo, netzoo-no-lenses, sweep or sweep-solo
    wall_s: float                  # loading the data + training every run of the side
    network_epochs: int            # runs x epochs trained
    peak_rss_bytes: int            # max of the process's and its largest child's peak resident memory
    peak_device_bytes: int | None  # CUDA max_memory_allocated (None on CPU)
    mean_test_acc: float           # mean over the runs of the last epoch's test accuracy
    task_s: float | None = None    # netzoo: sum of the runs' wall_time_s (no start-up, no planning)

    @property
    def network_epochs_per_s(self) -> float:
        return self.network_epochs / self.wall_s


def sweep_recipes(epochs: int) -> list[Recipe]:
    """The benchmark's sweep: the study's recipe at each of SWEEP_LRS (named lr=…)."""
    return [STUDY.replace(name=f"lr={lr:g}", lr=lr, epochs=epochs) for lr in SWEEP_LRS]


def run_side(side: str, zoo: str, names: list[str], dataset: str, data_root, epochs: int, device: str,
             results: str | None = None, seeds: int = 1) -> SideRun:
    """Train the sample one way in this process, each network with ``seeds`` seeds from SEED (the sweep sides:
    ``names``' one network under ``sweep_recipes`` with SWEEP_SEEDS seeds); called by ``python -m
    netzoo.benchmarks.study`` (see _side_main)."""
    from netzoo.datasets import load_dataset
    from netzoo.zoo import load_network

    recipe = STUDY.replace(epochs=epochs)
    seed_list = tuple(range(SEED, SEED + seeds))
    dev = torch.device(device)
    start = time.perf_counter()
    if side == "reference":
        data = load_dataset(dataset, root=data_root, device="cpu")  # the study kept data on the host
        accs = [train_reference(load_network(zoo, name), data, recipe, seed, dev)[-1]
                for name in names for seed in seed_list]
        peak_device = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    elif side in (NETZOO, SOLO, NO_LENSES, SWEEP_FUSED, SWEEP_SOLO):
        from netzoo.devices import parse_devices
        from netzoo.jobs import TrainJob
        from netzoo.results import load
        from netzoo.runner import run_job

        sweep = side in (SWEEP_FUSED, SWEEP_SOLO)
        job = TrainJob(zoo=zoo, results=results, dataset=dataset, data_root=data_root, recipe=recipe,
                       sweep=tuple((r, Path(zoo)) for r in sweep_recipes(epochs)) if sweep else (),
                       seeds=tuple(range(SEED, SEED + SWEEP_SEEDS)) if sweep else seed_list,
                       networks=",".join(names), devices=parse_devices(device), lenses=side != NO_LENSES,
                       fuse="off" if side in (SOLO, SWEEP_SOLO) else "auto", quiet=True)
        summary = run_job(job)
        if summary.failed:
            raise NetzooError(f"netzoo bench: netzoo's run failed: {summary.line()}")
        tables = load(results, tables=["networks", "epochs"], epoch="last")
        accs = tables.epochs["test_acc"].dropna().tolist()  # a sweep's largest lr may diverge: no accuracy
        runs = len(tables.networks)
        task_s = float(tables.networks["wall_time_s"].sum())
        peak_device = (int(tables.networks["peak_memory_bytes"].max()) if dev.type == "cuda" else None)
    else:
        raise ValueError(f"side must be reference, {NETZOO}, {SOLO}, {NO_LENSES}, {SWEEP_FUSED} or {SWEEP_SOLO}, "
                         f"got {side!r}")
    wall = time.perf_counter() - start
    if side == "reference":
        runs = len(accs)
    expected = len(names) * (len(SWEEP_LRS) * SWEEP_SEEDS if side in (SWEEP_FUSED, SWEEP_SOLO) else seeds)
    if runs != expected:
        raise NetzooError(f"netzoo bench: {side} trained {runs} of the {expected} runs of the sample")
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux
    return SideRun(side, wall, runs * epochs, peak_kib * 1024, peak_device, sum(accs) / max(1, len(accs)),
                   task_s if side != "reference" else None)


def _side_in_subprocess(side: str, **kwargs) -> SideRun:
    """Run one side in a fresh Python process and read its SideRun back (its peak memory is its own)."""
    with tempfile.TemporaryDirectory(prefix="netzoo-bench-") as tmp:
        out = Path(tmp) / "side.json"
        config = {"side": side, **kwargs, "results": str(Path(tmp) / "results"), "out": str(out)}
        proc = subprocess.run([sys.executable, "-m", "netzoo.benchmarks.study", json.dumps(config)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise NetzooError(f"netzoo bench: the {side} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return SideRun(**json.loads(out.read_text()))


def _side_main(argv: list[str]) -> None:
    """Entry of a side's subprocess: run it and write its SideRun as JSON."""
    config = json.loads(argv[0])
    out = Path(config.pop("out"))
    run = run_side(**config)
    files.atomic_write_text(out, json.dumps(asdict(run)))


# --- the whole benchmark ---------------------------------------------------------------------------
def _paired(numerator: list[SideRun], denominator: list[SideRun]) -> list[float]:
    """Throughput ratios of two sides, repetition by repetition (paired in order)."""
    return [n.network_epochs_per_s / d.network_epochs_per_s for n, d in zip(numerator, denominator)]


def _ratio_line(label: str, ratios: list[float], target: float | None = None) -> str:
    """'fused / one at a time: 3.12x (min 2.90x, max 3.40x; target 3x)'."""
    aim = f"; target {target:g}x" if target else ""
    return (f"{label}: {statistics.median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x{aim})"
            if ratios else f"{label}: not measured")


@dataclass
class BenchResult:
    """Every repetition of every side plus the context, with the comparison's figures."""

    dataset: str
    epochs: int
    device: str
    device_name: str
    threads: int
    sample: list[str]
    families: dict[str, int]
    reference: list[SideRun]
    netzoo: list[SideRun]             # fused where it pays (--fuse auto), lenses on: netzoo as users run it
    matmul_flops_per_s: float
    train_flops: float
    torch_version: str = torch.__version__
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    load_before: str = ""          # the machine's load average when the benchmark started
    load_after: str = ""           # … and when it ended
    no_lenses: list[SideRun] = field(default_factory=list)  # netzoo with --no-lenses, for the lenses' overhead
    solo: list[SideRun] = field(default_factory=list)       # netzoo with --fuse off: one run at a time
    seeds: int = 1                 # seeds per network of the sample
    sweep_network: str | None = None  # the network of the 32-run sweep
    sweep: list[SideRun] = field(default_factory=list)       # the sweep, fused
    sweep_solo: list[SideRun] = field(default_factory=list)  # the sweep, one run at a time

    @staticmethod
    def _median_spread(values: list[float]) -> tuple[float, float, float]:
        return statistics.median(values), min(values), max(values)

    def ratios(self) -> list[float]:
        """netzoo's throughput over the reference's, per repetition (paired in order)."""
        return _paired(self.netzoo, self.reference)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios())

    @property
    def void(self) -> bool:
        """Whether the sides' accuracies differ too much for the comparison to mean anything."""
        ref = statistics.median(r.mean_test_acc for r in self.reference)
        return any(abs(ref - statistics.median(r.mean_test_acc for r in side)) > ACC_TOLERANCE
                   for side in (self.netzoo, self.solo) if side)

    def lenses_overhead(self) -> tuple[float, float] | None:
        """(per-run time, wall time) of netzoo with lenses over without, minus 1, medians over the
        repetitions; None when the no-lenses side was not run."""
        if not self.no_lenses:
            return None
        med = statistics.median
        task = med(r.task_s for r in self.netzoo) / med(r.task_s for r in self.no_lenses) - 1
        wall = med(r.wall_s for r in self.netzoo) / med(r.wall_s for r in self.no_lenses) - 1
        return task, wall

    @property
    def floor_s(self) -> float:
        """Seconds the sample's training FLOPs would take at the measured matmul rate: no trainer beats it."""
        return self.train_flops / self.matmul_flops_per_s

    def _sides(self) -> list[list[SideRun]]:
        return [self.reference, self.solo, self.netzoo] if self.solo else [self.reference, self.netzoo]

    def headers(self) -> list[str]:
        """The columns of ``rows``: the sides."""
        names = ["reference (the study's way)", "one run at a time (--fuse off)", "netzoo (fused)"]
        return names if self.solo else [names[0], "netzoo"]

    def rows(self) -> list[tuple[str, ...]]:
        """(measure, reference, [one at a time,] netzoo) rows: median (min-max) over the repetitions."""
        def fmt(runs: list[SideRun], get, spec: str) -> str:
            med, lo, hi = self._median_spread([get(r) for r in runs])
            return f"{med:{spec}} ({lo:{spec}}–{hi:{spec}})"

        def row(measure: str, get, spec: str) -> tuple[str, ...]:
            return (measure, *(fmt(side, get, spec) for side in self._sides()))

        rows = [row("network-epochs/s", lambda r: r.network_epochs_per_s, ".2f"),
                row("wall time (s)", lambda r: r.wall_s, ".1f"),
                row("peak memory (MiB)", lambda r: r.peak_rss_bytes / 2**20, ".0f"),
                row("mean final test accuracy", lambda r: r.mean_test_acc, ".3f")]
        if self.reference[0].peak_device_bytes is not None:
            rows.append(row("peak GPU memory (MiB)", lambda r: (r.peak_device_bytes or 0) / 2**20, ".0f"))
        return rows

    def sweep_rows(self) -> list[tuple[str, str, str]]:
        """(measure, one at a time, fused) rows of the sweep; [] when it was not run."""
        if not self.sweep:
            return []
        def fmt(runs: list[SideRun], get, spec: str) -> str:
            med, lo, hi = self._median_spread([get(r) for r in runs])
            return f"{med:{spec}} ({lo:{spec}}–{hi:{spec}})"

        return [(m, fmt(self.sweep_solo, get, spec), fmt(self.sweep, get, spec)) for m, get, spec in (
            ("network-epochs/s", lambda r: r.network_epochs_per_s, ".2f"), ("wall time (s)", lambda r: r.wall_s, ".1f"),
            ("mean final test accuracy", lambda r: r.mean_test_acc, ".3f"))]

    def summary_lines(self) -> list[str]:
        median_netzoo = statistics.median(r.wall_s for r in self.netzoo)
        verdict = "VOID: the accuracies differ by more than {:.2f}".format(ACC_TOLERANCE) if self.void else "comparable"
        lines = [_ratio_line("ratio (netzoo / reference throughput)", self.ratios(), 6 if self.solo else None)]
        if self.solo:
            lines += [_ratio_line("fused / one run at a time", _paired(self.netzoo, self.solo), 3),
                      _ratio_line("one run at a time / reference", _paired(self.solo, self.reference))]
        if self.sweep:
            lines.append(_ratio_line(f"sweep of {self.sweep_network} ({len(SWEEP_LRS)} lrs x {SWEEP_SEEDS} seeds): "
                                     f"fused / one run at a time", _paired(self.sweep, self.sweep_solo), 6))
        lines += [
            f"accuracy: {verdict}",
            f"floor: {self.train_flops / 1e9:.2f} GFLOP of training at {self.matmul_flops_per_s / 1e9:.1f} GFLOP/s "
            f"(measured torch.mm) = {self.floor_s:.3f} s; netzoo takes {median_netzoo / self.floor_s:.0f}x the floor",
        ]
        overhead = self.lenses_overhead()
        if overhead is not None:
            no_lenses = statistics.median(r.task_s for r in self.no_lenses)
            lines.append(f"lenses overhead: {overhead[0]:+.1%} of netzoo's summed per-network time "
                         f"({statistics.median(r.task_s for r in self.netzoo):.1f} s vs {no_lenses:.1f} s with "
                         f"--no-lenses), {overhead[1]:+.1%} of its wall time; on a sample this small it includes "
                         f"each worker's one-time scipy import (~1 s)")
        return lines

    def table(self) -> str:
        """The comparison as plain text for the terminal."""
        rows = self.rows() + [("", "", "")] + [(f"sweep: {m}", "", *v) for m, *v in self.sweep_rows()]
        width = max(len(r[0]) for r in rows)
        heads = self.headers()
        lines = [f"netzoo bench: {len(self.sample)} networks x {self.seeds} seeds x {self.epochs} epochs on "
                 f"{self.dataset}, {len(self.reference)} repetitions, device {self.device_name}",
                 f"{'':{width}}  " + "  ".join(f"{h:>32}" for h in heads)]
        lines += [f"{r[0]:{width}}  " + "  ".join(f"{v:>32}" for v in r[1:]) for r in rows]
        return "\n".join(lines + self.summary_lines())

    def markdown(self) -> str:
        """The section written between the bench markers of docs/benchmarks.md."""
        rows = "\n".join("| " + " | ".join(r) + " |" for r in self.rows())
        fams = ", ".join(f"{f} {n}" for f, n in self.families.items())
        sweep = ""
        if self.sweep:
            sweep_rows = "\n".join(f"| {m} | {a} | {b} |" for m, a, b in self.sweep_rows())
            sweep = (f"\nSweep: {self.sweep_network} under the study's recipe at {len(SWEEP_LRS)} learning rates "
                     f"({', '.join(f'{lr:g}' for lr in SWEEP_LRS)}) x {SWEEP_SEEDS} seeds = "
                     f"{len(SWEEP_LRS) * SWEEP_SEEDS} runs, one job (as `netzoo sweep` runs it):\n\n"
                     f"| sweep | one run at a time (--fuse off) | fused |\n|---|---|---|\n{sweep_rows}\n")
        return f"""{START}
## Training throughput: the study's way vs netzoo, one run at a time and fused

Written by `netzoo bench --dataset {self.dataset} --epochs {self.epochs} --repeat {len(self.reference)} --seeds {self.seeds}` on {self.date}.
Device: **{self.device_name}**, torch {self.torch_version}, {self.threads} torch threads by default;
load average when it started: {self.load_before}; when it ended: {self.load_after}. Median (min–max) over
{len(self.reference)} repetitions; throughput in network-epochs (runs x epochs) per second.

Sample ({len(self.sample)} networks x {self.seeds} seeds: {fams}): {", ".join(self.sample)}.

| measure | {" | ".join(self.headers())} |
|---|{"---|" * len(self.headers())}
{rows}
{sweep}
""" + "\n".join(f"- {line}" for line in self.summary_lines()) + f"\n\n{END}"


def run_benchmark(dataset: str = "digits", data_root=None, epochs: int = 4, repeat: int = 3, device=None,
                  doc: str | Path | None = "docs/benchmarks.md", per_family: int = SAMPLE_PER_FAMILY,
                  spec: str | Path = "default", seeds: int | None = None, sweep: bool = True) -> BenchResult:
    """Generate the zoo of ``spec``, time every side ``repeat`` times on its sample (each network with ``seeds``
    seeds; with ``sweep``, also the 32-run sweep of the sample's SWEEP_FAMILY network), write ``doc``'s
    section; return every figure."""
    from netzoo.generate import generate_zoo

    seeds = SEEDS if seeds is None else seeds
    if repeat < 1 or epochs < 1 or seeds < 1:
        raise NetzooError(f"netzoo bench: --repeat, --epochs and --seeds must be >= 1, got {repeat}, {epochs} "
                          f"and {seeds}.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="netzoo-bench-zoo-") as zoo:
        manifest = generate_zoo(spec, dataset=dataset, out=zoo, progress=False)
        names = bench_sample(manifest, per_family)
        picked = manifest.set_index("network").loc[names]
        swept = picked.index[picked["family"] == SWEEP_FAMILY].tolist()[:1] or names[-1:]
        from netzoo.datasets import dataset_info

        n_train = dataset_info(dataset).train_size
        common = dict(zoo=zoo, dataset=dataset, data_root=str(data_root) if data_root else None, epochs=epochs,
                      device=device)
        sides = {"reference": [], NETZOO: [], SOLO: [], NO_LENSES: [], SWEEP_FUSED: [], SWEEP_SOLO: []}
        for _ in range(repeat):  # interleaved, so slow drifts of the machine hit every side alike
            for side in (("reference", NETZOO, SOLO, NO_LENSES) + ((SWEEP_SOLO, SWEEP_FUSED) if sweep else ())):
                sample = swept if side in (SWEEP_FUSED, SWEEP_SOLO) else names
                sides[side].append(_side_in_subprocess(side, names=sample, seeds=seeds, **common))
    result = BenchResult(
        dataset=dataset, epochs=epochs, device=device, device_name=device_name(device, detail=True),
        threads=torch.get_num_threads(), sample=names,
        families=picked.groupby("family").size().to_dict(), reference=sides["reference"], netzoo=sides[NETZOO],
        matmul_flops_per_s=matmul_flops_per_s(device),
        train_flops=float(picked["flops_train_step"].sum()) * n_train * epochs * seeds, load_before=load_before,
        load_after=" ".join(f"{x:.2f}" for x in os.getloadavg()), no_lenses=sides[NO_LENSES], solo=sides[SOLO],
        seeds=seeds, sweep_network=swept[0] if sweep else None, sweep=sides[SWEEP_FUSED],
        sweep_solo=sides[SWEEP_SOLO])
    if doc is not None:
        write_section(doc, result.markdown())
    return result


def write_section(doc: str | Path, section: str) -> None:
    """Replace the bench section of ``doc`` (between the markers), appending it, or creating the file."""
    doc = Path(doc)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    files.atomic_write_text(doc, text)


def read_section(doc: str | Path) -> dict:
    """The figures of the bench section of ``doc``: {'rows': {measure: (reference, [one at a time,] netzoo)},
    'ratio': float, 'fused_vs_solo': float or None, 'sweep_ratio': float or None, 'device': str,
    'lenses_overhead': float or None}; raises NetzooError when the section is missing or malformed."""
    text = Path(doc).read_text()
    if START not in text or END not in text:
        raise NetzooError(f"{doc} has no bench section (markers {START} … {END}); run: netzoo bench")
    section = text[text.index(START):text.index(END)]
    main = section.split("\nSweep:")[0]
    rows = {cells[0]: tuple(cells[1:]) for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in main.splitlines()
             if line.startswith("| ") and not line.startswith("| measure"))}
    ratio = re.search(r"ratio \(netzoo / reference throughput\): ([\d.]+)x", section)
    device = re.search(r"Device: \*\*(.+?)\*\*", section)
    if not ratio or not device or "network-epochs/s" not in rows:
        raise NetzooError(f"{doc}: the bench section is malformed; rerun netzoo bench to rewrite it")
    overhead = re.search(r"lenses overhead: ([+-][\d.]+)% of netzoo's summed per-network time", section)
    fused = re.search(r"- fused / one run at a time: ([\d.]+)x", section)
    sweep = re.search(r"seeds\): fused / one run at a time: ([\d.]+)x", section)
    return {"rows": rows, "ratio": float(ratio.group(1)), "device": device.group(1),
            "lenses_overhead": float(overhead.group(1)) / 100 if overhead else None,
            "fused_vs_solo": float(fused.group(1)) if fused else None,
            "sweep_ratio": float(sweep.group(1)) if sweep else None}


if __name__ == "__main__":  # one side of one repetition, in its own process (_side_in_subprocess)
    _side_main(sys.argv[1:])
