"""Merge each results table's part files into a few large files sorted by key, atomically.

Training writes one part file per (network, recipe, seed) per table: the MNIST study's 1001 networks make
4,004 files, a 100k-network zoo 400k. Readers pay per file (open, footer, schema), so ``netzoo compact``
merges the parts of every whole key (``netzoo.results.scan``) into ``compact-<token>-<i>.parquet`` files of
at most ``MAX_ROWS`` rows, each sorted by key (then epoch, sample or layer), in the same folder, where
``pd.read_parquet(DIR/table)`` and ``netzoo.results.load`` read them like any part. Each compaction records
in ``DIR/<table>/.compact-<token>.json`` (ignored by readers) the sha256, size and keys of every file it
wrote, so a damaged compact file is found and only its keys are trained again.

One compaction merges the same keys in every table, the ``networks`` table last (a key's networks part
records its other parts' checksums until they are merged). A kill at any moment loses nothing, table by table:
1. the merged files are written under ``.tmp-compact-*`` names, which every reader ignores;
2. a journal (``.compact-journal.json``, also ignored) names those files, their checksums and keys, and the
   parts they replace;
3. the temporary files are renamed into place (from here on a key's rows may be in a part and a compact
   file: ``results.load`` reads each row once, from the source the rule picks);
4. the merged parts are deleted, then the journal becomes the compaction's index.
The next ``compact_results`` first rolls an interrupted journal forward (steps 3 and 4), and removes
``.tmp-compact-*`` files left by a kill before step 2, so duplicates never outlive the next compaction.
Run one compaction at a time per results folder; training may go on meanwhile (new parts are left for
the next compaction).

A compacted key that must be trained again (one of its files damaged) first leaves every compact file
(``drop_keys``, called by ``netzoo.jobs.plan``), so that its new parts are the only rows of it anyone reads.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from netzoo import files
from netzoo.errors import ResultsError
from netzoo.results import (INDEX_PREFIX, SIBLINGS, classes_of, file_sha256, key_of, key_string, key_strings,
                            results_folder, scan)
from netzoo.schema import TABLES, table_schema

MAX_ROWS = 4_000_000  # rows per compacted file: ~10 files for the MNIST study's 40M predictions
JOURNAL = ".compact-journal.json"
SORT_COLUMNS = ("network", "recipe_hash", "seed", "epoch", "sample", "layer")
ORDER = SIBLINGS + ("networks",)  # networks last: its parts carry the others' checksums until then


def compact_results(results_dir: str | Path, max_rows: int = MAX_ROWS) -> str:
    """Merge the parts of every whole key under ``results_dir`` into compact files; return a summary, one
    line per table."""
    results_dir = results_folder(results_dir)
    folders = {t: results_dir / t for t in TABLES if (results_dir / t).is_dir()}
    if not folders:
        raise ResultsError(f"{results_dir} holds none of the tables {', '.join(TABLES)}; is it a netzoo results folder?")
    recovered = {t: recover(folder) for t, folder in folders.items()}
    # Only the parts of whole keys are merged (a key still training keeps its parts), table by table: a key
    # whose epochs a killed compaction merged already has its other tables merged now.
    found = scan(results_dir)
    token = uuid.uuid4().hex[:8]
    lines = {}
    for table in ORDER:
        if table in folders:
            parts = sorted(sources[table][0].path for sources in found.complete.values()
                           if len(sources[table]) == 1 and not sources[table][0].compact)
            lines[table] = compact_table(folders[table], parts, token, max_rows, recovered[table])
    return "\n".join(f"{t}: {lines[t]}" for t in TABLES if t in lines)


def compact_table(folder: Path, parts: list[Path], token: str, max_rows: int = MAX_ROWS,
                  recovered: bool = False) -> str:
    """Merge ``parts`` (one key each) of one table folder into compact files named by ``token``; return
    what was done, e.g. '4004 parts -> 2 compact files (40,040,000 rows)'."""
    if not parts:
        kept = len(list(folder.glob("compact-*.parquet")))
        return f"nothing to merge ({kept} compact files{', recovered an interrupted compaction' if recovered else ''})"
    written, rows = [], 0
    try:
        for i, chunk in enumerate(_chunks(parts, max_rows)):
            merged = sort_rows(pa.concat_tables([pq.read_table(p).replace_schema_metadata(None) for p in chunk],
                                              promote_options="permissive"))
            # parts written before and after a column was added (schema.ADDED_COLUMNS): the schema's order
            schema = table_schema(folder.name, classes_of(folder.parent))
            if set(merged.column_names) == set(schema.names):
                merged = merged.select(schema.names)
            name = f"compact-{token}-{i}.parquet"
            tmp = files.write_temp(folder / name, lambda f: pq.write_table(
                merged, f, row_group_size=256_000, write_page_checksum=True))
            written.append({"tmp": tmp.name, "name": name, "sha256": file_sha256(tmp), "bytes": tmp.stat().st_size,
                            "keys": [list(key_of(p)) for p in chunk]})
            rows += merged.num_rows
        _write_journal(folder, {"token": token, "created": time.time(), "files": written,
                                "parts": [p.name for p in parts]})
    except BaseException:
        for entry in written:
            (folder / entry["tmp"]).unlink(missing_ok=True)
        raise
    _roll_forward(folder)
    return f"{len(parts)} parts -> {len(written)} compact files ({rows:,} rows)"


def drop_keys(results_dir: str | Path, keys) -> int:
    """Take the rows of ``keys`` ((network, recipe_hash, seed) triples) out of every compact file of every
    table that holds them; return the number of rows removed.

    Called before such keys are trained again: once their new parts are written, no reader (plain pandas
    included) may see a key's old rows beside its new ones. A file is rewritten under a temporary name and
    renamed over the old one, then its compaction's index is rewritten (a file left with no rows is
    deleted). A kill between the two renames leaves a file whose sha256 differs from its index: ``scan``
    then finds it damaged, and its keys are trained again; no row is ever read twice. Files whose bytes
    already differ from their index are left to ``netzoo.results.quarantine``.
    """
    wanted = {(n, h, int(s)) for n, h, s in keys}
    removed = 0
    for table in TABLES:
        folder = Path(results_dir) / table
        for index in sorted(folder.glob(f"{INDEX_PREFIX}*.json")) if wanted and folder.is_dir() else []:
            try:
                record = json.loads(index.read_text())
            except (OSError, ValueError):
                continue  # an unreadable index: scan reads its files in full and reports them
            entries, changed = [], False
            for entry in record.get("files", []):
                held = {(k[0], k[1], int(k[2])) for k in entry["keys"]}
                if not held & wanted:
                    entries.append(entry)
                    continue
                dropped, rest = _drop_from_file(folder / entry["name"], entry, held & wanted)
                if rest is None:  # damaged: quarantine's business
                    entries.append(entry)
                    continue
                changed, removed = True, removed + dropped
                if rest:
                    entries.append(rest)
            if changed and entries:
                files.atomic_write_text(index, json.dumps({**record, "files": entries}))
            elif changed:  # no file of that compaction holds a row any more
                index.unlink()
    return removed


def _drop_from_file(path: Path, entry: dict, keys: set) -> tuple[int, dict | None]:
    """(rows removed, the index entry of what is left: {} when nothing is) for one compact file; (0, None)
    when the file's bytes differ from ``entry``. A missing file keeps an entry only for its other keys."""
    rest = sorted(tuple(k) for k in entry["keys"] if (k[0], k[1], int(k[2])) not in keys)
    if not path.exists():
        return 0, ({**entry, "keys": [list(k) for k in rest]} if rest else {})
    if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
        return 0, None
    data = pq.read_table(path)
    kept = data.filter(pc.invert(pc.is_in(key_strings(data), pa.array(sorted(map(key_string, keys))))))
    if not rest:
        path.unlink()
        return data.num_rows, {}
    tmp = files.write_temp(path, lambda f: pq.write_table(kept, f, row_group_size=256_000, write_page_checksum=True))
    new = {**entry, "sha256": file_sha256(tmp), "bytes": tmp.stat().st_size, "keys": [list(k) for k in rest]}
    os.replace(tmp, path)
    return data.num_rows - kept.num_rows, new


def recover(folder: Path) -> bool:
    """Finish a compaction killed mid-way in ``folder`` (or clear its leftovers); True if there was one."""
    if (folder / JOURNAL).exists():
        _roll_forward(folder)
        return True
    # killed before the journal was in place: the parts are intact, the merged files are leftovers
    stray = list(folder.glob(f"{files.TMP_PREFIX}compact-*")) + list(folder.glob(f"{files.TMP_PREFIX}{JOURNAL}-*"))
    for path in stray:
        path.unlink(missing_ok=True)
    return bool(stray)


def _roll_forward(folder: Path) -> None:
    """Steps 3 and 4 of the journal: rename the merged files into place, delete the parts they replace, and
    keep the journal as the compaction's index."""
    journal = json.loads((folder / JOURNAL).read_text())
    for entry in journal["files"]:
        if (folder / entry["tmp"]).exists():
            _rename(folder / entry["tmp"], folder / entry["name"])
        elif not (folder / entry["name"]).exists():
            raise ResultsError(f"{folder / JOURNAL} names {entry['tmp']}, which is gone; the parts it merged are "
                               f"kept. Delete {folder / JOURNAL} and the compact files it names, then compact again.")
    for name in journal["parts"]:
        if (folder / name).exists():
            _delete(folder / name)
    _rename(folder / JOURNAL, folder / f"{INDEX_PREFIX}{journal['token']}.json")


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


def sort_rows(table: pa.Table) -> pa.Table:
    """Rows sorted by key, then epoch, sample or layer where the table has them."""
    keys = [(c, "ascending") for c in SORT_COLUMNS if c in table.column_names]
    return table.sort_by(keys)


def _write_journal(folder: Path, journal: dict) -> None:
    """Write the journal atomically (temporary name, then rename)."""
    files.atomic_write_text(folder / JOURNAL, json.dumps(journal))


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _delete(path: Path) -> None:
    os.unlink(path)
