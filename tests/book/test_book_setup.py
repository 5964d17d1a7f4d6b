"""The book's Colab setup: one repository URL, the same setup cell in every chapter, and _config.yml in step."""
import json
import re
from pathlib import Path

import pytest

from ddpm_lite.book import INSTALL_REQUIREMENT, REPOSITORY_URL

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def setup_cell(path: Path) -> str:
    """The source of a chapter's first code cell."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def test_the_url_is_a_repository_url():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY_URL)
    assert INSTALL_REQUIREMENT == f"ddpm_lite[plot] @ git+{REPOSITORY_URL}@main"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_setup_cell_installs_from_the_one_url(path):
    cell = setup_cell(path)
    assert f'"{INSTALL_REQUIREMENT}"' in cell, f"{path.name}: its setup cell does not install {INSTALL_REQUIREMENT}"
    first = setup_cell(CHAPTERS[0]).replace(f'chapter="{CHAPTERS[0].stem}"', f'chapter="{path.stem}"')
    assert cell == first, f"{path.name}: its setup cell differs from {CHAPTERS[0].name}'s (up to the chapter's name)"
    assert f'book.setup_notebook(seed=0, chapter="{path.stem}")' in cell  # the Colab note links this chapter's page


def cells(path: Path, kind: str = "code") -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == kind]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_colab_opens_the_chapter_on_a_gpu_with_solutions_folded(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["metadata"].get("accelerator") == "GPU", f"{path.name}: metadata does not ask Colab for a GPU"
    assert notebook["metadata"].get("colab", {}).get("gpuType"), f"{path.name}: no colab.gpuType in its metadata"
    for cell in notebook["cells"]:
        if "hide-cell" in cell["metadata"].get("tags", []):  # folded in the book: a Colab form, folded there too
            assert cell["metadata"].get("cellView") == "form" and cell["source"][0].startswith("# @title "), path.name


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapters_show_figures_and_listings_through_the_book_helpers(path):
    """Figures go through book.show() (checked legible on the page), listings through book.show_source() (folded
    when long), the shared model goes to the chapter's device, and no cell ends on a glued number (an echo)."""
    import ast

    for source in cells(path):
        assert not re.search(r"^\s*plt\.show\(", source, re.M), f"{path.name}: plt.show() instead of book.show()"
        assert "inspect.getsource" not in source, f"{path.name}: print(inspect.getsource(...)) instead of book.show_source"
        for call in re.findall(r"load_pretrained_digits\(([^)]*)\)", source):
            assert "device=device" in call, f"{path.name}: load_pretrained_digits({call}) without device=device"
        body = ast.parse(source).body
        last = body[-1] if body else None
        echoed = isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and \
            ast.unparse(last.value.func).endswith("glue")
        assert not echoed, f"{path.name}: a cell ends with {ast.unparse(last)}, which echoes the value in the book"


def test_config_names_the_same_repository():
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    block = re.search(r"^repository:\n((?:[ \t]+.*\n)+)", config, re.M)
    assert block, "_config.yml has no repository: block"
    url = re.search(r"^\s+url:\s*(\S+)", block.group(1), re.M)
    assert url and url.group(1) == REPOSITORY_URL, f"_config.yml repository url {url and url.group(1)} != {REPOSITORY_URL}"
    assert len(CHAPTERS) >= 10
