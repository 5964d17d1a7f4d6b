"""The Colab simulation's own checks (.ci/colab_sim.py), on made-up notebooks: fast, no kernel, no environment.

The simulation itself (minutes: it builds an environment and runs chapters) is `make colab`.
"""

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[2]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


sim = load("colab_sim", ROOT / ".ci" / "colab_sim.py")


@pytest.mark.parametrize("number, digits", [
    ("0.1235", 4), ("0.000123", 3), ("4.036e-05", 4), ("1,234.5", 5), ("-12.5", 3), ("100.0", 4), (".5", 1),
    ("0.123456789", 9), ("1e-05", 1),
])
def test_significant_digits(number, digits):
    assert sim.significant_digits(number) == digits


def test_too_precise_flags_only_long_decimals():
    assert sim.too_precise("0.1235") == []
    assert sim.too_precise("1,437") == []  # integers are exact: no precision to round
    assert sim.too_precise("12.34%") == []
    assert sim.too_precise("(0.5, 0.123456789)") == ["0.123456789"]
    assert sim.too_precise("91.66666865348816") == ["91.66666865348816"]
    assert sim.too_precise("tensor(0.0312)") == []


def chapter(*cells):
    return new_notebook(cells=list(cells))


def printed(source: str, text: str):
    cell = new_code_cell(source)
    cell.outputs = [new_output("stream", name="stdout", text=text)]
    return cell


def test_glue_names_roles_and_directives():
    nb = chapter(new_markdown_cell("It is {glue:text}`alpha_bar_T:.2e` and {glue}`n` and {glue:}`n`."),
                 new_markdown_cell("```{glue:figure} fig_one\n:name: f\n```"))
    assert sim.glue_names(nb) == ["alpha_bar_T", "n", "fig_one"]


def test_glue_check_passes_formatted_numbers_and_fails_raw_floats():
    good = chapter(new_markdown_cell("{glue:text}`ema_memory` over {glue:text}`n`"),
                   printed("dl.glue(...)", "ema_memory = 100\nn = 1,437\n"))
    result = sim.Chapter("good.ipynb")
    sim.check_glue(result, good)
    assert result.failures == [] and result.glued == [("ema_memory", "100"), ("n", "1,437")]

    raw = chapter(new_markdown_cell("{glue:text}`ema_memory`"), printed("x", "ema_memory = 99.99999999999991\n"))
    result = sim.Chapter("raw.ipynb")
    sim.check_glue(result, raw)
    assert len(result.failures) == 1 and "99.99999999999991" in result.failures[0]

    silent = chapter(new_markdown_cell("{glue:text}`ema_memory`"), printed("x", "something else\n"))
    result = sim.Chapter("silent.ipynb")
    sim.check_glue(result, silent)
    assert len(result.failures) == 1 and "none of the 1 glued numbers" in result.failures[0]


def test_glued_lines_read_display_data_and_markdown_emphasis():
    cell = new_code_cell("x")
    cell.outputs = [new_output("display_data", data={"text/plain": "<Markdown>", "text/markdown": "**fd** = 12.5"})]
    assert sim.glued_lines(sim.output_lines(cell), ["fd"]) == [("fd", "12.5")]


def test_setup_cell_and_install_source():
    setup = ('if "google.colab" in sys.modules:\n    print("Installing")\n'
             '    subprocess.run([sys.executable, "-m", "pip", "install", "-q",\n'
             '                    "ddpm_lite[plot] @ git+https://github.com/someone/ddpm_lite@v0.2.0"], check=True)')
    nb = chapter(new_markdown_cell("# pip install in prose does not count"), new_code_cell("import sys"),
                 new_code_cell(setup))
    assert sim.setup_cell_index(nb) == 2
    assert sim.install_source(setup) == ("https://github.com/someone/ddpm_lite", "v0.2.0")
    assert sim.install_source(setup.replace("ddpm_lite@v0.2.0", "ddpm_lite.git@main")) == (
        "https://github.com/someone/ddpm_lite", "main")
    assert sim.setup_cell_index(chapter(new_code_cell("import ddpm_lite"))) is None


def test_config_repository_url_matches_the_chapters():
    config = (ROOT / "_config.yml").read_text()
    url = sim.config_repository_url(config)
    assert url and url.startswith("https://")
    for path in [ROOT / "book" / "forward_process.ipynb", ROOT / "book" / "sampling.ipynb"]:
        nb = nbformat.read(path, as_version=4)
        assert sim.install_source(nb.cells[sim.setup_cell_index(nb)].source)[0] == url, path.name
    assert sim.config_repository_url("repository:\n  path_to_book: ''\n  url: https://x.org/a/b # c\n") == (
        "https://x.org/a/b")


def test_after_setup_check_names_what_is_wrong(tmp_path):
    site = tmp_path / "venv" / "lib" / "site-packages"
    result = sim.Chapter("c.ipynb")
    sim.check_after_setup(result, {"ddpm_lite": str(ROOT / "ddpm_lite" / "__init__.py"), "einops": None,
                                   "myst_nb": "/somewhere/myst_nb/__init__.py"}, site)
    assert [f.split(": ", 2)[2][:30] for f in result.failures] == [
        "after the setup cell ddpm_lite", "after the setup cell einops is", "myst_nb is importable in the C"]


def test_leak_check_ignores_the_environment_inside_the_repository(tmp_path):
    venv = tmp_path / "repo" / "_build" / "venv"
    facts = {"files": [str(venv / "torch" / "__init__.py"), "_ops.py"], "path": ["", str(venv)]}
    result = sim.Chapter("c.ipynb")
    sim.check_no_leaks(result, facts, {"repository": tmp_path / "repo"}, venv)
    assert result.failures == []
    facts["files"].append(str(tmp_path / "repo" / "ddpm_lite" / "__init__.py"))
    sim.check_no_leaks(result, facts, {"repository": tmp_path / "repo"}, venv)
    assert len(result.failures) == 1 and "ddpm_lite" in result.failures[0]


def test_gitconfig_sends_both_url_spellings_to_the_clone(tmp_path):
    sim.write_gitconfig(tmp_path / "gitconfig", "https://github.com/a/b", tmp_path / "clone")
    text = (tmp_path / "gitconfig").read_text()
    assert f'[url "file://{tmp_path / "clone"}"]' in text
    assert "insteadOf = https://github.com/a/b\n" in text and "insteadOf = https://github.com/a/b.git\n" in text


def test_the_stub_drive_refuses_to_mount_unattended():
    drive = load("colab_stub_drive", ROOT / ".ci" / "colab_stub" / "google" / "colab" / "drive.py")
    with pytest.raises(RuntimeError, match="mount Drive only when the reader asks"):
        drive.mount("/content/drive")
    drive.flush_and_unmount()
