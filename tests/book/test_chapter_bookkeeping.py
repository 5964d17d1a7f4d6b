"""The teaching cells of a chapter hold the ddpm_lite call and its assert; bookkeeping stands apart.

Glued numbers (`book.glue`) and source-line look-ups (`book.source_line`) are how a chapter's prose quotes what the
code computed; they are not what the reader should study. They live in their own code cells, tagged
`remove-input`, so the book shows nothing of them (book.glue prints nothing under the book build) and the teaching
cell above reads as the computation and its check.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
BOOKKEEPING = re.compile(r"\bbook\.(glue|source_line)\(")


def code_cells(path):
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_glue_and_source_lines_live_in_hidden_bookkeeping_cells(path):
    for cell in code_cells(path):
        source = "".join(cell["source"])
        tags = cell.get("metadata", {}).get("tags", [])
        if BOOKKEEPING.search(source):
            assert "remove-input" in tags or "remove-cell" in tags, (
                f"{path.name} {cell.get('id')}: a cell that glues or looks up source lines is shown to the reader; "
                f"move those calls to a cell of their own tagged remove-input:\n{source[:300]}")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_hidden_bookkeeping_cell_checks_nothing_the_reader_should_see(path):
    for cell in code_cells(path):
        source = "".join(cell["source"])
        if "remove-input" in cell.get("metadata", {}).get("tags", []) and BOOKKEEPING.search(source):
            assert not re.search(r"^\s*assert\b", source, re.M), (
                f"{path.name} {cell.get('id')}: an assert in a hidden cell; the reader's check belongs in the "
                f"visible teaching cell:\n{source[:300]}")
