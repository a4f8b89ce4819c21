"""Merge each results table's part files into a few large files sorted by key, atomically.

Training writes one part file per (network, recipe, seed) per table: the MNIST study's 1001 networks make
4,004 files, a 100k-network zoo 400k. Readers pay per file (open, footer, schema), so ``netzoo compact``
merges a table's parts into ``compact-<token>-<i>.parquet`` files of at most ``MAX_ROWS`` rows, each sorted
by key (then epoch, sample or layer), in the same folder, where ``pd.read_parquet(DIR/table)`` and
``netzoo.results.load`` read them like any part.

A kill at any moment loses nothing, in this order:
1. the merged files are written under ``.tmp-compact-*`` names, which every reader ignores;
2. a journal (``.compact-journal.json``, also ignored) names those files and the parts they replace;
3. the temporary files are renamed into place (from here on a key may be in a part and a compact file:
   ``results.load`` keeps one copy of each row);
4. the merged parts are deleted, then the journal.
The next ``compact_results`` first rolls an interrupted journal forward (steps 3 and 4), and removes
``.tmp-compact-*`` files left by a kill before step 2, so duplicates never outlive the next compaction.
Run one compaction at a time per results folder; training may go on meanwhile (new parts are left for
the next compaction).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from netzoo.errors import ResultsError
from netzoo.results import completed_keys, key_of
from netzoo.schema import TABLES

MAX_ROWS = 4_000_000  # rows per compacted file: ~10 files for the MNIST study's 40M predictions
JOURNAL = ".compact-journal.json"
SORT_COLUMNS = ("network", "recipe_hash", "seed", "epoch", "sample", "layer")


def compact_results(results_dir: str | Path, max_rows: int = MAX_ROWS) -> str:
    """Merge every table's part files under ``results_dir`` into compact files; return a summary, one line per table."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"No results folder at {results_dir}. Pass --results to a folder written by netzoo train.")
    # Only complete keys are merged: a key still training (its networks part, written last, not there yet)
    # keeps its parts. networks goes first (TABLES order), so a key stays complete at every step.
    complete = completed_keys(results_dir)
    lines = []
    for table in TABLES:
        folder = results_dir / table
        if folder.is_dir():
            lines.append(f"{table}: {compact_table(folder, max_rows, complete)}")
    if not lines:
        raise ResultsError(f"{results_dir} holds none of the tables {', '.join(TABLES)}; is it a netzoo results folder?")
    return "\n".join(lines)


def compact_table(folder: Path, max_rows: int = MAX_ROWS, keys: set | None = None) -> str:
    """Compact one table folder (only the parts of ``keys``, when given); return what was done,
    e.g. '4004 parts -> 2 compact files (40,040,000 rows)'."""
    recovered = recover(folder)
    parts = sorted(p for p in folder.glob("*.parquet") if key_of(p) is not None and (keys is None or key_of(p) in keys))
    if not parts:
        kept = len(list(folder.glob("compact-*.parquet")))
        return f"nothing to merge ({kept} compact files{', recovered an interrupted compaction' if recovered else ''})"
    token = uuid.uuid4().hex[:8]
    written: list[tuple[str, str]] = []  # (temporary name, final name)
    rows = 0
    for i, chunk in enumerate(_chunks(parts, max_rows)):
        merged = _sorted(pa.concat_tables([pq.read_table(p) for p in chunk], promote_options="permissive"))
        tmp, final = f".tmp-compact-{token}-{i}.parquet", f"compact-{token}-{i}.parquet"
        pq.write_table(merged, folder / tmp, row_group_size=256_000)
        written.append((tmp, final))
        rows += merged.num_rows
    _write_journal(folder, {"files": written, "parts": [p.name for p in parts]})
    _roll_forward(folder)
    return f"{len(parts)} parts -> {len(written)} compact files ({rows:,} rows)"


def recover(folder: Path) -> bool:
    """Finish a compaction killed mid-way in ``folder`` (or clear its leftovers); True if there was one."""
    if (folder / JOURNAL).exists():
        _roll_forward(folder)
        return True
    # killed before the journal was in place: the parts are intact, the merged files are leftovers
    stray = list(folder.glob(".tmp-compact-*.parquet")) + list(folder.glob(".tmp-journal-*"))
    for path in stray:
        _delete(path)
    return bool(stray)


def _roll_forward(folder: Path) -> None:
    """Steps 3 and 4 of the journal: rename the merged files into place, delete the parts they replace."""
    journal = json.loads((folder / JOURNAL).read_text())
    for tmp, final in journal["files"]:
        if (folder / tmp).exists():
            _rename(folder / tmp, folder / final)
        elif not (folder / final).exists():
            raise ResultsError(f"{folder / JOURNAL} names {tmp}, which is gone; the parts it merged are kept. "
                               f"Delete {folder / JOURNAL} and the compact files it names, then compact again.")
    for name in journal["parts"]:
        if (folder / name).exists():
            _delete(folder / name)
    _delete(folder / JOURNAL)


def _chunks(parts: list[Path], max_rows: int) -> list[list[Path]]:
    """Consecutive groups of part files holding at most ``max_rows`` rows each (a part is never split)."""
    chunks: list[list[Path]] = [[]]
    rows = 0
    for part in parts:
        n = pq.ParquetFile(part).metadata.num_rows
        if chunks[-1] and rows + n > max_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(part)
        rows += n
    return chunks


def _sorted(table: pa.Table) -> pa.Table:
    """Rows sorted by key, then epoch, sample or layer where the table has them."""
    keys = [(c, "ascending") for c in SORT_COLUMNS if c in table.column_names]
    return table.sort_by(keys)


def _write_journal(folder: Path, journal: dict) -> None:
    """Write the journal atomically (temporary name, then rename)."""
    tmp = folder / f".tmp-journal-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(journal))
    _rename(tmp, folder / JOURNAL)


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _delete(path: Path) -> None:
    os.unlink(path)
