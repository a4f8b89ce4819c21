"""netzoo bench runs end to end on a tiny zoo and writes a section of docs/benchmarks.md that parses.

A timed test is not a benchmark: nothing here checks a speed, only that the benchmark runs and reports.
"""

from pathlib import Path

import pandas as pd
import pytest
import torch

from netzoo.benchmarks.study import (END, START, bench_sample, matmul_flops_per_s, read_section, train_reference,
                          write_section)
from netzoo.datasets import load_dataset
from netzoo.errors import NetzooError
from netzoo.recipe import STUDY

TINY = Path(__file__).parent / "data" / "tiny.toml"


@pytest.mark.slow
def test_benchmark_runs_and_its_section_parses(tmp_path):
    """Every side runs on a tiny zoo (2 seeds a network, the 32-run sweep, 1 epoch): the study's way, one run at a
    time, fused, fused without lenses; the section records their throughputs and ratios (no speed is checked)."""
    from netzoo.benchmarks.study import run_benchmark

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Another helper's section\n\nkept as it is\n")
    result = run_benchmark(dataset="digits", epochs=1, repeat=1, device="cpu", doc=doc, per_family=1, spec=TINY,
                           seeds=2)
    assert len(result.reference) == len(result.netzoo) == len(result.solo) == len(result.sweep) == 1
    assert set(result.families) >= {"Basic", "ResNetStyle"}  # every family of the spec, ResNetStyle included
    assert result.floor_s > 0 and result.ratio > 0
    runs = 2 * len(result.sample)
    assert result.reference[0].network_epochs == result.netzoo[0].network_epochs == result.solo[0].network_epochs \
        == runs
    assert result.sweep[0].network_epochs == result.sweep_solo[0].network_epochs == 32
    assert result.sweep_network in result.sample
    text = doc.read_text()
    assert "kept as it is" in text and text.count(START) == 1
    section = read_section(doc)
    assert section["device"].startswith("cpu") and section["ratio"] == pytest.approx(result.ratio, abs=0.01)
    assert section["fused_vs_solo"] > 0 and section["sweep_ratio"] > 0
    assert {"network-epochs/s", "wall time (s)", "peak memory (MiB)", "mean final test accuracy"} <= set(section["rows"])
    assert all(len(cells) == 3 for cells in section["rows"].values())  # the study's way, one at a time, fused
    table = result.table()
    assert "ratio (netzoo / reference throughput)" in table and "fused / one run at a time" in table
    # the third side, netzoo with --no-lenses, gives the lenses' overhead
    assert len(result.no_lenses) == 1 and result.no_lenses[0].task_s > 0 and result.netzoo[0].task_s > 0
    task_overhead, _ = result.lenses_overhead()
    assert section["lenses_overhead"] == pytest.approx(task_overhead, abs=0.001)
    # rewriting replaces the section in place
    write_section(doc, result.markdown())
    assert doc.read_text().count(START) == 1 and doc.read_text().count(END) == 1


def test_reference_trainer_learns_digits():
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.LogSoftmax(dim=1))
    accuracies = train_reference(model, data, STUDY.replace(epochs=2), seed=42)
    assert len(accuracies) == 2 and accuracies[-1] > 0.85


def test_sample_covers_every_family_at_fixed_quantiles():
    """Two per family at the 1/3 and 2/3 quantiles of training FLOPs; one per family is the median."""
    manifest = pd.DataFrame({
        "network": [f"{f}ReLU_{i}" for f in ("Linear", "ResNetStyle") for i in range(6)] + ["Basic"],
        "family": ["Linear"] * 6 + ["ResNetStyle"] * 6 + ["Basic"],
        "flops_train_step": list(range(6)) + list(range(60, 0, -10)) + [5],
    })
    assert bench_sample(manifest, per_family=2) == ["Basic", "LinearReLU_2", "LinearReLU_4", "ResNetStyleReLU_3", "ResNetStyleReLU_1"]
    assert bench_sample(manifest, per_family=1) == ["Basic", "LinearReLU_3", "ResNetStyleReLU_2"]


def test_matmul_rate_is_measured():
    assert matmul_flops_per_s("cpu", size=256, repeats=2) > 1e6


def test_missing_section_is_reported(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    with pytest.raises(NetzooError, match="no bench section"):
        read_section(doc)


def test_volume_benchmark_writes_a_synthetic_study_as_the_trainer_does_and_times_question_8(tmp_path):
    """netzoo.benchmarks.volume at a tiny size: the rows it reports are the rows netzoo.results.load returns,
    and question 8 answers on the part files and after compaction (no speed is checked)."""
    from netzoo.benchmarks.volume import measure_volume
    from netzoo.results import load

    text = measure_volume(tmp_path, networks=3, epochs=2, samples=40)
    assert "| predictions | 240 |" in text and "question 8 after compaction" in text
    tables = load(tmp_path)
    assert (len(tables.networks), len(tables.epochs), len(tables.predictions)) == (3, 6, 240)
    assert set(tables.networks["status"]) == {"done"} and tables.predictions["pred"].notna().all()
