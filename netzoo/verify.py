"""``netzoo verify``: read every file of every key of a results folder and say which keys do not count.

The rule is ``netzoo.results.scan``, the one that ``netzoo status``, ``netzoo.results.load``, ``netzoo train``
and ``netzoo compact`` use, here with every byte read again (no per-process cache):

- damaged: a file whose bytes differ from the sha256 recorded when it was written (the networks part records
  its key's other parts; a compaction records its compact files), or a networks part (or a compact file
  written by another tool) that fails a full read with its Parquet page checksums verified;
- incomplete: a key with some parts but no networks part (a run stopped mid-key), or whose rows are missing
  from every compact file of a table; keys a live worker is training right now are left out;
- inconsistent: a networks row trained on another dataset than DIR/dataset.json records, or as another
  architecture than DIR/jobs/ records for its network name and recipe.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from netzoo.claims import held_keys
from netzoo.results import Problem, results_folder, scan

__all__ = ["Problem", "verify", "verify_report"]


def verify(results_dir) -> list[Problem]:
    """Every problem of ``results_dir`` (damaged, incomplete or inconsistent keys, and damaged files whose keys
    cannot be told), sorted by key; [] when every key is whole. Raises ResultsError for a missing folder."""
    return _verify(results_dir)[0]


def _verify(results_dir):
    """(problems, the scan they come from): one fresh scan."""
    results_dir = results_folder(results_dir)
    held = held_keys(results_dir)
    found = scan(results_dir, fresh=True)
    return [p for p in found.problems if not (p.kind == "incomplete" and p.key in held)], found


def verify_report(results_dir) -> tuple[str, bool]:
    """(text, ok): one line per problem, then a summary line; ok when every key is whole."""
    results_dir = Path(results_dir)
    problems, found = _verify(results_dir)
    bad_keys = {p.key for p in problems if p.key is not None}
    keys = len(found.complete) + len(bad_keys)
    if not problems:
        return f"{results_dir}: all {keys} keys whole", True
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(p.kind for p in problems).items()))
    files = sum(p.key is None for p in problems)
    summary = (f"{results_dir}: {len(bad_keys)} of {keys} keys do not count ({kinds})"
               + (f"; {files} damaged file(s) whose keys cannot be told" if files else "")
               + ". Rerun the netzoo train command that wrote them: it moves damaged files to "
               f"{results_dir / 'damaged'} and trains those keys again.")
    return "\n".join([p.line() for p in problems] + [summary]), False
