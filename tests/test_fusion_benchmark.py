"""The fusion benchmark (netzoo/benchmarks/fusion.py) runs every side and reports ratios; it is never timed here."""

import math

from netzoo.benchmarks.fusion import fusion_step_ratios
from netzoo.generate import generate_zoo


def test_fusion_step_ratios_measure_every_side(tmp_path):
    names = ["LinearReLU_1", "ResNetStyleReLU_1"]
    generate_zoo("default", dataset="digits", out=tmp_path, networks=names, progress=False)
    table = fusion_step_ratios(tmp_path, names, runs=(2, 3), rounds=1, steps=1, batch_size=4)
    assert list(table["network"]) == [n for n in names for _ in (2, 3)] and list(table["runs"]) == [2, 3, 2, 3]
    for side in ("solo_ms", "fused_ms", "fused_torch_ms", "vmap_ms", "fused_speedup", "vmap_speedup"):
        assert (table[side] > 0).all(), side
    assert (table["vmap_error"] == "").all()


def test_a_side_that_cannot_run_is_nan_with_its_reason(tmp_path):
    generate_zoo("default", dataset="digits", out=tmp_path, networks=["LinearReLU_2"], dropout=0.2, progress=False)
    row = fusion_step_ratios(tmp_path, ["LinearReLU_2"], runs=(2,), rounds=1, steps=1, batch_size=4).iloc[0]
    assert row["fused_ms"] > 0 and row["solo_ms"] > 0  # dropout from each run's own generator fuses
    assert math.isnan(row["vmap_ms"]) and math.isnan(row["vmap_speedup"]) and row["vmap_error"]
