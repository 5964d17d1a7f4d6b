"""The book's Colab setup: one repository URL, the same setup cell in every chapter, and _config.yml in step."""
import json
import re
from pathlib import Path

import pytest

from ddpm_lite.book import INSTALL_REQUIREMENT, REPOSITORY_URL

ROOT = Path(__file__).resolve().parents[1]
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
    assert cell == setup_cell(CHAPTERS[0]), f"{path.name}: its setup cell differs from {CHAPTERS[0].name}'s"


def test_config_names_the_same_repository():
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    block = re.search(r"^repository:\n((?:[ \t]+.*\n)+)", config, re.M)
    assert block, "_config.yml has no repository: block"
    url = re.search(r"^\s+url:\s*(\S+)", block.group(1), re.M)
    assert url and url.group(1) == REPOSITORY_URL, f"_config.yml repository url {url and url.group(1)} != {REPOSITORY_URL}"
    assert len(CHAPTERS) >= 10
