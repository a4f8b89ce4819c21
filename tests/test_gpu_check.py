"""`make gpu-check` runs on a machine without a GPU: it measures the CPU briefly and says that no GPU was found.

A tiny configuration (the tiny spec, 2 seeds, one epoch, 200 MNIST-shaped images) runs every phase on the CPU,
the MNIST ones included, so that the script a GPU machine runs once is known to work end to end. No speed is
checked here.
"""

import json
from pathlib import Path

import pytest

from netzoo.benchmarks.gpu_check import Sizes, markdown, run_check

TINY = Path(__file__).parent / "data" / "tiny.toml"


@pytest.mark.slow
def test_gpu_check_runs_every_phase_on_the_cpu_and_says_no_gpu_was_found(tmp_path):
    sizes = Sizes(seeds=2, epochs=1, equivalence=2, per_family=1, workers=2, spec=str(TINY), sweep=False,
                  mnist_train=200)
    report = run_check(out=tmp_path, sizes=sizes, device="cpu")
    assert not report["gpu"] and report["device"].startswith("cpu")
    assert report["throughput"]["ratio"] > 0 and report["throughput"]["netzoo"]["network_epochs"] == \
        2 * len(report["sample"])
    assert len(report["equivalence"]) == 3 and all(r["within_one_point"] for r in report["equivalence"])
    assert report["graphs"]["max_train_loss_diff"] == 0  # on the CPU nothing is captured: the same steps
    assert report["projection"]["projected_s"] > 0 and not report["projection"]["real_mnist"]
    text = (tmp_path / "gpu-check.md").read_text()
    assert "**No GPU was found**" in text and "## Equivalence" in text and "projected" in text
    assert json.loads((tmp_path / "gpu-check.json").read_text())["sizes"]["seeds"] == 2
    assert markdown(report) == text
