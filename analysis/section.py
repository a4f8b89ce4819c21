"""One section of the HTML report: a question, its answer as a table, a chart, and the finding in words."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure


@dataclass
class Section:
    """What the report shows for one question. Every number in it comes from an analysis function."""

    key: str                      # stable id, also the anchor and chart file name: "q1", "pareto", "lenses-dead"
    title: str                    # short heading: "1. Attempts"
    question: str                 # the one-line question
    finding: str                  # a sentence stating the finding from the numbers
    table: pd.DataFrame | None = None
    figures: list[Figure] = field(default_factory=list)
    group: str = "Exam"           # the report part it belongs to: Exam, Beyond the study, Inside the networks, Recipes
