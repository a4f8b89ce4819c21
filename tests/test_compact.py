"""netzoo compact: part files merged into a few sorted files; a kill at any moment loses nothing (netzoo/compact.py)."""

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from netzoo import compact
from netzoo.compact import compact_results
from netzoo.results import write_part
from netzoo.schema import LAYERS, NETWORKS, PREDICTIONS, epochs_schema

ROW_KEY = ["network", "recipe_hash", "seed", "epoch", "sample"]


def _network_row(key) -> dict:
    """A networks row for ``key`` with a plain value in every column."""
    defaults = {pa.types.is_string: "x", pa.types.is_integer: 0, pa.types.is_floating: 0.0,
                pa.types.is_boolean: False, pa.types.is_list: [], pa.types.is_timestamp: pd.Timestamp(0, tz="UTC")}
    row = {f.name: next(v for test, v in defaults.items() if test(f.type)) for f in NETWORKS}
    return {**row, "network": key[0], "recipe_hash": key[1], "seed": key[2], "dataset": "digits", "classes": 10}


def _write_parts(results, networks=12, seeds=2, epochs=2, samples=50, incomplete=()):
    """A predictions table of one part file per (network, seed), written as netzoo.results writes them, with
    one epochs row per epoch, no layers rows and a networks row, so each key is whole (except networks in
    ``incomplete``, whose networks part, written last, is missing)."""
    folder = results / "predictions"
    rng = np.random.default_rng(0)
    for n in range(networks):
        for seed in range(seeds):
            key = (f"Conv2dReLU_{n}", "abcd", seed)
            write_part(results, "epochs", pd.DataFrame([{
                **{c: 0.5 for c in epochs_schema(10).names}, "network": key[0], "recipe": "default",
                "recipe_hash": "abcd", "seed": seed, "epoch": e, "status": "done"} for e in range(1, epochs + 1)]),
                key)
            write_part(results, "layers", LAYERS.empty_table(), key)
            frame = pd.DataFrame({
                "network": f"Conv2dReLU_{n}", "recipe": "default", "recipe_hash": "abcd", "seed": seed,
                "epoch": np.repeat(np.arange(1, epochs + 1), samples),
                "sample": np.tile(np.arange(samples), epochs)[::-1].copy(),  # unsorted on purpose
                "label": rng.integers(0, 10, epochs * samples),
                "pred": rng.integers(0, 10, epochs * samples),
                "probs": list(rng.random((epochs * samples, 10)).astype(np.float16)),
            })
            write_part(results, "predictions", pa.Table.from_pandas(frame, schema=PREDICTIONS, preserve_index=False),
                       key)
            if n not in incomplete:
                write_part(results, "networks", pa.Table.from_pylist([_network_row(key)], schema=NETWORKS), key)
    return folder


def _visible(folder):
    """The files a reader sees (pyarrow and pandas skip names starting with '.': temporaries, journal, index)."""
    return sorted(f for f in folder.iterdir() if not f.name.startswith("."))


def _rows(folder):
    """Every row a plain reader sees (pd.read_parquet ignores .tmp-* and the journal), sorted."""
    frame = pd.read_parquet(folder)[ROW_KEY + ["label", "pred"]]
    return frame.sort_values(ROW_KEY).reset_index(drop=True)


def test_compaction_merges_parts_into_few_sorted_files_with_the_same_rows(tmp_path):
    folder = _write_parts(tmp_path)
    before = _rows(folder)
    summary = compact_results(tmp_path, max_rows=1000)
    assert "predictions: 24 parts -> 3 compact files (2,400 rows)" in summary
    files = _visible(folder)
    assert all(f.name.startswith("compact-") for f in files) and len(files) == 3
    pd.testing.assert_frame_equal(_rows(folder), before)
    first = pq.read_table(files[0]).to_pandas()
    assert first[ROW_KEY].equals(first.sort_values(ROW_KEY)[ROW_KEY])  # sorted within the file
    assert "nothing to merge" in compact_results(tmp_path)  # a second run has nothing left to do


def test_parts_of_a_key_still_training_are_left_alone(tmp_path):
    folder = _write_parts(tmp_path, networks=3, incomplete=(1,))
    compact_results(tmp_path)
    left = sorted(f.name for f in _visible(folder) if not f.name.startswith("compact-"))
    assert left == ["Conv2dReLU_1--abcd--0.parquet", "Conv2dReLU_1--abcd--1.parquet"]


def _count_calls(monkeypatch, tmp_path):
    """How many renames and deletes one compaction makes (the crash points to try)."""
    calls = []
    real_rename, real_delete = compact._rename, compact._delete
    monkeypatch.setattr(compact, "_rename", lambda *a: (calls.append(1), real_rename(*a)))
    monkeypatch.setattr(compact, "_delete", lambda *a: (calls.append(1), real_delete(*a)))
    _write_parts(tmp_path / "count", networks=3)
    compact_results(tmp_path / "count", max_rows=250)
    monkeypatch.undo()
    return len(calls)


def kill_compaction_at(monkeypatch, crash_at: int) -> list:
    """Make a compaction's ``crash_at``-th rename or delete raise KeyboardInterrupt, as a kill there would;
    return the list that counts the calls made before it."""
    calls = []

    def dying(real):
        def call(*args):
            if len(calls) == crash_at:
                raise KeyboardInterrupt("killed")
            calls.append(1)
            return real(*args)
        return call

    monkeypatch.setattr(compact, "_rename", dying(compact.os.replace))
    monkeypatch.setattr(compact, "_delete", dying(compact.os.unlink))
    return calls


def test_killed_compaction_loses_no_row_and_leaves_no_duplicate_after_the_next_run(tmp_path, monkeypatch):
    points = _count_calls(monkeypatch, tmp_path)
    assert points >= 5
    for crash_at in range(points):
        results = tmp_path / f"crash{crash_at}"
        folder = _write_parts(results, networks=3)
        before = _rows(folder)
        kill_compaction_at(monkeypatch, crash_at)
        with pytest.raises(KeyboardInterrupt):
            compact_results(results, max_rows=250)
        monkeypatch.undo()
        # mid-way: every row is still there (a key may be in a part and a compact file at once: dedupe)
        seen = _rows(folder).drop_duplicates().reset_index(drop=True)
        pd.testing.assert_frame_equal(seen, before)
        # the next compaction finishes the job: no duplicates, no leftovers
        compact_results(results, max_rows=250)
        pd.testing.assert_frame_equal(_rows(folder), before)
        assert all(f.name.startswith("compact-") for f in _visible(folder)), crash_at


@pytest.mark.parametrize("stage", [".tmp-compact-", "compact-"])
def test_sigkilled_compaction_process_loses_nothing(tmp_path, stage):
    folder = _write_parts(tmp_path, networks=60)
    before = _rows(folder)
    code = f"from netzoo.compact import compact_results; compact_results({str(tmp_path)!r}, max_rows=200)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not any(f.name.startswith(stage) for f in folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.002)  # kill as soon as the first merged file appears under this name
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(f.name.startswith("Conv2dReLU_") for f in folder.iterdir()), "the kill came after the compaction"
    assert len(list(folder.glob("*.parquet"))) > 0
    pd.testing.assert_frame_equal(_rows(folder).drop_duplicates().reset_index(drop=True), before)
    compact_results(tmp_path)
    pd.testing.assert_frame_equal(_rows(folder), before)
