"""The same zoo, recipe and seed give the same numbers as before issue 13's refactor, on CPU.

``tests/data/same_numbers.json`` was recorded from main at c250f93 (before the trainer, the runner and the zoo
front door were rewired) by running this file as a script: the four healthy networks of ``zoo_fixture``, two
epochs, seeds 42 and 1, on digits, lenses on, one worker, one thread, through the command line. The test trains
the same thing again and compares every deterministic column: ``epochs`` and ``layers`` values exactly (the
refactor kept the order of every float operation), each key's predictions (pred and float16 probs) by sha256.
Times (``*_time_s``) are measured, not computed, so they are left out.

Regenerate (only when a change of numbers is intended, and say so in the commit):
``.venv/bin/python tests/test_same_numbers.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from netzoo.schema import ADDED_COLUMNS

sys.path.insert(0, str(Path(__file__).parent))
from zoo_fixture import make_zoo  # noqa: E402

RECORD = Path(__file__).parent / "data" / "same_numbers.json"
TIMES = ("epoch_time_s", "train_time_s", "eval_time_s")
NETWORK_COLUMNS = ("status", "epochs_done", "batch_size_used", "last_batch_merged", "oom_retries", "device",
                   "threads", "recipe_hash", "arch_id")


def _plain(value):
    """A JSON-safe value: NaN and inf as strings, numpy scalars and arrays as Python ones."""
    if isinstance(value, (np.ndarray, list)):
        return [_plain(v) for v in value]
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def small_study(tmp: Path) -> dict:
    """Train the small study through ``netzoo train`` into ``tmp``; return its deterministic numbers."""
    from netzoo.cli import main
    from netzoo.results import load

    zoo = make_zoo(tmp / "zoo")
    results = tmp / "results"
    # --fuse off: one run at a time, whose numbers stay exactly these (issue 15's fused groups match them within
    # float rounding: tests/test_fusion_equivalence.py)
    main(["train", "--zoo", str(zoo), "--dataset", "digits", "--results", str(results), "--epochs", "2",
          "--seeds", "42,1", "--workers", "1", "--device", "cpu", "--fuse", "off", "--quiet"])
    tables = load(results)
    key = ["network", "seed"]
    networks = tables.networks.sort_values(key)
    epochs = tables.epochs.sort_values(key + ["epoch"])
    layers = tables.layers.sort_values(key + ["epoch", "layer"]).reset_index(drop=True)
    predictions = tables.predictions.sort_values(key + ["epoch", "sample"])
    out = {
        "networks": [{c: _plain(row[c]) for c in ("network", "seed") + NETWORK_COLUMNS}
                     for _, row in networks.iterrows()],
        "epochs": [{c: _plain(v) for c, v in row.items() if c not in TIMES} for _, row in epochs.iterrows()],
        "layers": [{c: _plain(v) for c, v in row.items()} for _, row in layers.iterrows()],
        "predictions": {},
    }
    for (network, seed), rows in predictions.groupby(key, sort=True):
        digest = hashlib.sha256()
        digest.update(rows[["epoch", "sample", "label"]].to_numpy(np.int64).tobytes())
        digest.update(rows["pred"].astype("float64").fillna(-1).to_numpy().tobytes())
        digest.update(np.concatenate(rows["probs"].to_numpy()).astype(np.float16).tobytes())
        out["predictions"][f"{network}/{seed}"] = {"rows": len(rows), "sha256": digest.hexdigest()}
    return out


def test_same_zoo_recipe_and_seed_give_the_numbers_recorded_before_the_refactor(tmp_path):
    expected = json.loads(RECORD.read_text())
    got = json.loads(json.dumps(small_study(tmp_path)))
    assert got["networks"] == expected["networks"]
    assert got["predictions"] == expected["predictions"]
    assert len(got["epochs"]) == len(expected["epochs"]) == 16
    for new, old in zip(got["epochs"], expected["epochs"]):
        # columns added since (issue 14's validation split) are null under the study's recipe, which has none
        added = {c: new.pop(c) for c in ADDED_COLUMNS["epochs"]}
        assert set(added.values()) == {"nan"}, added
        assert new == old, (new["network"], new["seed"], new["epoch"])
    assert len(got["layers"]) == len(expected["layers"]) > 0
    for new, old in zip(got["layers"], expected["layers"]):
        assert new == old, (new["network"], new["seed"], new["epoch"], new["layer"])


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        RECORD.write_text(json.dumps(small_study(Path(tmp)), indent=0, sort_keys=True) + "\n")
    print(f"wrote {RECORD} ({RECORD.stat().st_size:,} bytes)")
