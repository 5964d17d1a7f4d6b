"""book/api.md documents every module of the library once, and each public name in one place only.

A name that ``import ddpm_lite`` exposes is documented at the top level (target ``ddpm_lite.sample``); its module's
section excludes it (``:exclude-members:``), so no object is described twice. Adding a name to ``ddpm_lite.__all__``
or a module to the package makes this test name the line of book/api.md to change.
"""
import importlib
import inspect
import re
from pathlib import Path

import ddpm_lite

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "book" / "api.md").read_text(encoding="utf-8")
BLOCKS = {m.group(1): m.group(2) for m in re.finditer(
    r"^\.\. automodule:: (\S+)\n((?:   :[\w-]+:.*\n)*)", PAGE, re.M)}
LIBRARY = sorted(p.stem for p in (ROOT / "ddpm_lite").glob("*.py") if not p.stem.startswith("_"))


def excluded(options: str) -> set[str]:
    found = re.search(r":exclude-members:(.*)", options)
    return {name.strip() for name in found.group(1).split(",")} if found else set()


def defined_here(module) -> set[str]:
    """The public functions and classes a module defines (not those it imports)."""
    return {name for name, obj in vars(module).items() if not name.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__}


def test_every_module_has_a_section():
    expected = {"ddpm_lite", "ddpm_lite.book", "ddpm_lite.book.checks", *(f"ddpm_lite.{m}" for m in LIBRARY)}
    assert set(BLOCKS) == expected, f"book/api.md: add or remove automodule for {set(BLOCKS) ^ expected}"
    assert all(":members:" in options for options in BLOCKS.values())


def test_top_level_names_are_excluded_from_their_modules_sections():
    for name in LIBRARY:
        module = importlib.import_module(f"ddpm_lite.{name}")
        expected = defined_here(module) & set(ddpm_lite.__all__)
        assert excluded(BLOCKS[f"ddpm_lite.{name}"]) == expected, (
            f"book/api.md, ddpm_lite.{name}: use ':exclude-members: {', '.join(sorted(expected))}'")
