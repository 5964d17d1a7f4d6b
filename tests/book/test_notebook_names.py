"""Every chapter uses only public names of ddpm_lite that exist: its code and the names its prose quotes.

Each name a chapter takes from ddpm_lite (``import ddpm_lite as dl``, ``from ddpm_lite import book``,
``from ddpm_lite.training import train``) is followed through every attribute chain of the chapter's code
(``dl.GaussianDiffusion.from_config``, ``book.checks.check_q_sample``) and resolved against the real modules;
so are the dotted names quoted in its prose (`` `book.load_pretrained_digits()` ``). A private part (``_train``)
or a name that does not exist fails, with the chapter and the chain.
"""
import ast
import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
QUOTED = re.compile(r"`([A-Za-z_]\w*(?:\.\w+)+)")  # `dl.sample`, `book.checks.check_q_sample(...)`


def cells(path: Path, kind: str) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == kind]


def parse(source: str) -> ast.Module:
    """A code cell as Python: IPython's magics and shell lines (``%time``, ``!ls``) become blank lines."""
    return ast.parse("\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()))


def imported_names(trees) -> dict[str, tuple[object, str]]:
    """{local name: (object, its qualified name)} for every name a chapter imports from ddpm_lite."""
    names = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "ddpm_lite":
                        names[alias.asname or alias.name] = (importlib.import_module(alias.name), alias.name)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ddpm_lite":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    qualified = f"{node.module}.{alias.name}"
                    names[alias.asname or alias.name] = (resolve(module, [alias.name], node.module), qualified)
    return names


def resolve(obj, parts: list[str], where: str):
    """Follow ``parts`` from ``obj`` with getattr; raise AssertionError at a private or missing part."""
    for part in parts:
        if part.startswith("_"):
            raise AssertionError(f"{where}.{part}: a private name of ddpm_lite")
        if not hasattr(obj, part):
            try:  # a submodule not imported yet (ddpm_lite.reconstruction)
                obj = importlib.import_module(f"{obj.__name__}.{part}")
            except (AttributeError, ImportError):
                raise AssertionError(f"{where}.{part} does not exist") from None
        else:
            obj = getattr(obj, part)
        where = f"{where}.{part}"
    return obj


def chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> ("a", ["b", "c"]); None when the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return (node.id, parts[::-1]) if isinstance(node, ast.Name) else None


def code_problems(trees, names) -> list[str]:
    """The private or missing names in every attribute chain that starts at a name imported from ddpm_lite."""
    problems = []
    for tree in trees:
        for node in ast.walk(tree):  # inner links of a chain are walked too: prefixes of the same chain
            if isinstance(node, ast.Attribute) and (found := chain(node)) and found[0] in names:
                obj, qualified = names[found[0]]
                try:
                    resolve(obj, found[1], qualified)
                except AssertionError as exc:
                    problems.append(str(exc))
    return sorted(set(problems))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_uses_only_public_names_that_exist(path):
    trees = [parse(source) for source in cells(path, "code")]
    names = imported_names(trees)
    assert names, f"{path.name} imports nothing from ddpm_lite"
    problems = code_problems(trees, names)
    known = {**names, "ddpm_lite": (importlib.import_module("ddpm_lite"), "ddpm_lite")}
    for text in cells(path, "markdown"):
        for quoted in QUOTED.findall(text):
            root, *parts = quoted.split(".")
            if root in known and parts[-1] != "py":  # `training.py` is a file name
                try:
                    resolve(known[root][0], parts, known[root][1])
                except AssertionError as exc:
                    problems.append(f"prose: {exc}")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_the_walker_catches_private_and_missing_names():
    """The test above fails on the two mistakes it exists for (a chapter written with both)."""
    trees = [parse("import ddpm_lite as dl\nfrom ddpm_lite import training\ndl.no_such_name(1)\ntraining._train\n")]
    assert code_problems(trees, imported_names(trees)) == [
        "ddpm_lite.no_such_name does not exist", "ddpm_lite.training._train: a private name of ddpm_lite"]
