"""The exam's front door for label issues and cascades: load what they need from a results folder, answer,
and put what a reader must know beside the table in ``attrs["notes"]`` (the CLI prints them on stderr)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.cascades import cascades
from analysis.label_issues import label_issues, parse_sample_list, precision_at_k, run_probs
from analysis.population import METRIC
from netzoo.errors import LabelListError, NetzooError

RANKING_NAMES = {"rank": "population", "cleanlab_rank": "cleanlab"}


def precision_line(precision: pd.DataFrame, network: str | None = None) -> str:
    """One line: 'precision at k (15 known label errors): population: k=10 0.30, …; cleanlab (NET): …'."""
    parts = []
    for ranking, rows in precision.groupby("ranking", sort=False):
        name = RANKING_NAMES.get(ranking, ranking) + (f" ({network})" if ranking == "cleanlab_rank" and network else "")
        values = ", ".join(f"k={int(r.k)} {r.precision:.2f}" if pd.notna(r.precision) else f"k={int(r.k)} -"
                           for r in rows.itertuples())
        parts.append(f"{name}: {values}")
    return f"precision at k ({precision.attrs.get('known', '?')} known label errors): " + "; ".join(parts)


def read_known_label_errors(path, samples) -> list[int]:
    """The test indices listed in file ``path`` (see label_issues.parse_sample_list)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelListError(f"No file at {path}: --known-label-errors takes a text file with one test index "
                             f"per line.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelListError(f"Cannot read {path} ({type(exc).__name__}): --known-label-errors takes a text file "
                             f"with one test index per line.") from None
    return parse_sample_list(text, samples, source=str(path))


def answer_verdict(question: str, results_dir, epoch: int | None = None, recipe: str | None = None,
                   metric: str = METRIC, known_label_errors=None, network: str | None = None,
                   select_on: str | None = None) -> pd.DataFrame:
    """``netzoo exam label-issues`` or ``netzoo exam cascades``: the frame, with attrs["notes"]."""
    from netzoo.results import load

    if question != "label-issues" and (known_label_errors is not None or network is not None):
        raise NetzooError("--known-label-errors and --network go with label-issues only: netzoo exam label-issues "
                          "--results DIR --known-label-errors FILE.")
    # every epoch of the epochs table ("good" means good at every epoch), predictions of one epoch only
    tables = load(results_dir, tables=["networks", "epochs"])
    tables.predictions = load(results_dir, tables=["predictions"],
                              epoch=epoch if epoch is not None else "last").predictions
    if question == "cascades":
        frame = cascades(tables, metric=metric, epoch=epoch, recipe=recipe, select_on=select_on)
        notes = [f"{frame.attrs['left_out']} runs left out (diverged, failed or without probabilities)."] \
            if frame.attrs["left_out"] else []
        frame.attrs["notes"] = notes + ["Pairs and thresholds are evaluated on the test split: a description of it, "
                                        "not a recommendation (pick τ on held-out data)."]
        return frame
    rp = run_probs(tables, epoch, recipe)
    known = read_known_label_errors(known_label_errors, rp.samples) if known_label_errors is not None else None
    issues = label_issues(tables, recipe=recipe, network=network, rp=rp, select_on=select_on)
    if known is not None:
        precision = precision_at_k(issues, known)
        issues.attrs["notes"].append(precision_line(precision, issues.attrs["cleanlab_network"]))
    return issues
