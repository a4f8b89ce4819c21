"""docs/results.md documents every column of every table exactly as netzoo/schema.py declares it."""

from __future__ import annotations

from pathlib import Path

import pytest

from netzoo.schema import schema_markdown
from netzoo.schema import TABLES, describe, table_schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "results.md"


def test_results_doc_holds_the_tables_rendered_from_the_schema():
    text = DOC.read_text()
    missing = [line for line in schema_markdown().splitlines() if line and line not in text]
    assert not missing, ("docs/results.md is out of step with netzoo/schema.py; regenerate its tables with "
                         "netzoo.schema.schema_markdown(). Missing lines:\n" + "\n".join(missing[:10]))


@pytest.mark.parametrize("table", ("manifest",) + TABLES)
def test_every_column_has_a_description(table):
    docs = describe(table_schema(table, 10))
    assert all(docs.values()), [name for name, doc in docs.items() if not doc]
