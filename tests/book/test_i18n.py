"""The Chinese edition's machinery (.ci/i18n.py, book/_ext/ddpm_lite_i18n.py) and its catalogs.

The catalogs themselves are checked by `make test` (`.ci/i18n.py check` against a fresh gettext extraction, and
`.ci/i18n.py notebooks --check`); here: the pieces those checks rely on, and the glossary's terms in the zh pages.
"""
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
babel = pytest.importorskip("babel")
from babel.messages.catalog import Catalog  # noqa: E402


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


i18n = _load("ddpm_lite_ci_i18n", ROOT / ".ci" / "i18n.py")
extension = _load("ddpm_lite_i18n_ext", ROOT / "book" / "_ext" / "ddpm_lite_i18n.py")


def catalog_of(pairs, fuzzy=()):
    catalog = Catalog(locale="zh_CN")
    for msgid, msgstr in pairs:
        catalog.add(msgid, msgstr, flags=("fuzzy",) if msgid in fuzzy else ())
    return catalog


def entries(pairs, fuzzy=()):
    return [m for m in catalog_of(pairs, fuzzy) if m.id]  # without the catalog's header entry


# ------------------------------------------------------------------------------------------ markup that survives


def test_markup_finds_math_roles_code_and_link_targets():
    text = (r"By {eq}`eq-closed-form`, $x_t = \sqrt{\bar\alpha_t} x_0$ ({cite}`ho2020denoising`); "
            r"`q_sample` gives {glue:text}`alpha_bar_T:.2e`, see [the docs](https://example.org/a).")
    assert i18n.markup(text) == sorted([
        "{eq}`eq-closed-form`", r"$x_t = \sqrt{\bar\alpha_t} x_0$", "{cite}`ho2020denoising`", "`q_sample`",
        "{glue:text}`alpha_bar_T:.2e`", "](https://example.org/a)"])


def test_a_titled_reference_may_translate_its_title_but_not_its_target():
    english = "See {doc}`the forward process <forward_process>`."
    assert i18n.markup(english) == i18n.markup("见 {doc}`前向过程 <forward_process>`。")
    assert i18n.markup(english) != i18n.markup("见 {doc}`前向过程 <reverse_process>`。")


def test_problems_of_a_message():
    good, = entries([("The value $x$ is {glue:text}`v:.1f`.", "值 $x$ 为 {glue:text}`v:.1f`。")])
    assert i18n.problems(good) == []
    lost, = entries([("The value $x$ is {glue:text}`v:.1f`.", "值 $x$ 为 v。")])
    assert any("markup differs" in p and "glue:text" in p for p in i18n.problems(lost))
    empty, = entries([("Summary", "")])
    assert i18n.problems(empty) == ["untranslated"]
    stale, = entries([("Summary", "小结")], fuzzy=["Summary"])
    assert i18n.problems(stale) == ["fuzzy"]


def test_an_equation_is_its_own_translation_and_prose_is_not():
    assert i18n.language_neutral("\n\\begin{gathered}\nq(x_t)\n\\end{gathered}\n")
    assert i18n.language_neutral("$x_0$")
    assert i18n.language_neutral("`GaussianDiffusion.q_sample`, `NoiseSchedule.betas`")
    assert not i18n.language_neutral("the noise")
    assert not i18n.language_neutral("$x_t$ after $t$ steps")


# ------------------------------------------------------------------------------------- an English edit goes fuzzy


def test_an_edited_english_paragraph_turns_its_translation_fuzzy_and_a_new_one_is_empty():
    translated = catalog_of([("The forward process adds noise at each step.", "前向过程在每一步加入噪声。"),
                             ("Summary", "小结")])
    template = catalog_of([("The forward process adds Gaussian noise at each step.", ""), ("Summary", ""),
                           ("A new paragraph about the schedule.", "")])
    merged = {m.id: m for m in i18n.merge(translated, template) if m.id}
    assert i18n.problems(merged["Summary"]) == []
    edited = merged["The forward process adds Gaussian noise at each step."]
    assert edited.fuzzy and i18n.problems(edited) == ["fuzzy"]  # the old translation is a hint, not a translation
    assert i18n.problems(merged["A new paragraph about the schedule."]) == ["untranslated"]
    assert "The forward process adds noise at each step." not in merged  # the old English is gone


# ----------------------------------------------------------------------------------------- the zh notebooks


def test_translate_markdown_replaces_whole_blocks_across_lines():
    source = ("## Summary\n\nThe forward process is fixed,\nGaussian and Markov.\n\n"
              "- a list item that\n  continues here\n\n| a | noise |\n|---|---|\n| $x$ | noise |\n\nnoise and more")
    catalog = catalog_of([("Summary", "小结"), ("The forward process is fixed, Gaussian and Markov.",
                                                "前向过程是固定的、高斯的、马尔可夫的。"),
                          ("a list item that continues here", "一个列表项"), ("noise", "噪声")])
    text, used = i18n.translate_markdown(source, catalog)
    assert text == ("## 小结\n\n前向过程是固定的、高斯的、马尔可夫的。\n\n- 一个列表项\n\n| a | 噪声 |\n|---|---|\n"
                    "| $x$ | 噪声 |\n\nnoise and more")  # a message inside a longer paragraph is not replaced
    assert used == {"Summary", "The forward process is fixed, Gaussian and Markov.",
                    "a list item that continues here", "noise"}


def test_a_zh_notebook_switches_the_setup_cell_to_chinese_and_keeps_the_code(tmp_path):
    notebook = {"cells": [
        {"cell_type": "markdown", "id": "cell-00", "metadata": {}, "source": ["# The forward process"]},
        {"cell_type": "code", "id": "cell-01", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["# Setup\n", 'device = book.setup_notebook(seed=0, chapter="forward_process")  # note']}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "forward_process.ipynb"
    path.write_text(json.dumps(notebook))
    text, used = i18n.zh_notebook(path, catalog_of([("The forward process", "前向过程")]))
    cells = json.loads(text)["cells"]
    assert "".join(cells[0]["source"]) == "# 前向过程"
    assert "".join(cells[1]["source"]) == ('# Setup\ndevice = book.setup_notebook(seed=0, chapter="forward_process", '
                                           'lang="zh_CN")  # note')
    assert used == {"The forward process"}


def test_every_english_chapter_has_its_zh_notebook_with_the_same_code():
    english = sorted(p.name for p in (ROOT / "book").glob("*.ipynb"))
    assert sorted(p.name for p in i18n.ZH_NOTEBOOKS.glob("*.ipynb")) == english
    for name in english:
        en = json.loads((ROOT / "book" / name).read_text())["cells"]
        zh = json.loads((i18n.ZH_NOTEBOOKS / name).read_text())["cells"]
        assert [c["cell_type"] for c in en] == [c["cell_type"] for c in zh]
        for a, b in zip(en, zh):
            if a["cell_type"] == "code":
                assert "".join(b["source"]) == i18n.SETUP_CALL.sub(
                    lambda m: f'book.setup_notebook(seed=0, chapter="{m["chapter"]}", lang="zh_CN")',
                    "".join(a["source"]))


# ------------------------------------------------------------------------------------------- the site's links


@pytest.mark.parametrize("pagename, language, url", [
    ("book/elbo", "en", "../zh/book/elbo.html"),
    ("book/elbo", "zh_CN", "../../book/elbo.html"),
    ("search", "en", "zh/search.html"),
    ("search", "zh_CN", "../search.html"),
])
def test_the_language_link_goes_to_the_same_page_of_the_other_edition(pagename, language, url):
    assert extension.other_edition(pagename, language)[0] == url


def test_zh_pages_open_the_zh_notebook_in_colab():
    class App:
        class config:
            language = "zh_CN"

    colab = "https://colab.research.google.com/github/o/r/blob/main/book/elbo.ipynb"
    context = {"header_buttons": [{"buttons": [{"url": colab}, {"url": "https://github.com/o/r"}]}]}
    extension.zh_colab_buttons(App, "book/elbo", "page.html", context, None)
    urls = [b["url"] for b in context["header_buttons"][0]["buttons"]]
    assert urls == ["https://colab.research.google.com/github/o/r/blob/main/book/zh/elbo.ipynb", "https://github.com/o/r"]


# ------------------------------------------------------------------------------------------- the glossary


def glossary() -> list[tuple[str, list[str]]]:
    """(Chinese term, its English forms) from the notation page's glossary: term lines `中文 (english, english)`."""
    text = (ROOT / "book" / "notation.md").read_text(encoding="utf-8")
    section = text.split("## Glossary", 1)[1]
    terms = []
    for line in section.splitlines():
        match = re.match(r"^(\S.*?) \(([^()]+)\)\s*$", line)
        if match and not line.startswith((":", " ")):
            terms.append((match.group(1).strip(), [e.strip() for e in match.group(2).split(",") if e.strip()]))
    return terms


def test_the_glossary_has_the_lectures_terms():
    terms = {zh for zh, _ in glossary()}
    for term in ["前向过程", "反向过程", "变分下界", "损失函数简化", "重参数化", "马尔可夫链", "时间步条件的注入方式",
                 "去噪得分匹配", "Langevin 动力学", "图像重建"]:
        assert term in terms, f"the glossary of book/notation.md lacks {term}"


def test_each_glossary_term_is_used_in_a_zh_page_wherever_its_english_is():
    missing = []
    for po in sorted(i18n.LOCALE.glob("book/*.po")):
        catalog = i18n.read_catalog(f"book/{po.stem}")
        english = " ".join(m.id for m in catalog if m.id)
        chinese = " ".join(m.string for m in catalog if m.id and m.string)
        for zh, forms in glossary():
            used = [f for f in forms if re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", english, re.I)]
            if used and zh not in chinese:
                missing.append(f"{po.stem}: uses {used[0]!r} but its translation never says {zh}")
    assert not missing, "\n".join(missing)


def test_chinese_figure_text_would_not_render_with_matplotlibs_default_font():
    """Why the figures keep their text in English in both editions: matplotlib's default font (DejaVu Sans, the one
    a Colab runtime uses too) has no Chinese glyphs, whatever fonts the system has; a zh label draws empty boxes."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt

    with matplotlib.rc_context(matplotlib.rcParamsDefault), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots()
        ax.set_title("前向过程")
        fig.canvas.draw()
        plt.close(fig)
    assert any("missing from font" in str(w.message) for w in caught)


def test_glued_numbers_show_in_a_translated_paragraph(tmp_path):
    """myst-nb reads glue only while it parses the notebook; a translated paragraph is parsed later, on its own."""
    from sphinx.application import Sphinx

    (tmp_path / "conf.py").write_text(
        f"import sys; sys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['myst_nb', 'ddpm_lite_i18n']\nnb_execution_mode = 'off'\nlocale_dirs = ['locale/']\n"
        "gettext_compact = False\n")
    glued = {"output_type": "display_data", "data": {"application/papermill.record/text/plain": "3.14159"},
             "metadata": {"scrapbook": {"mime_prefix": "application/papermill.record/", "name": "x"}}}
    notebook = {"cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {},
         "source": ["# Title\n", "\n", "Formatted {glue:text}`x:.2f`, plain {glue:text}`x`, any {glue:}`x`."]},
        {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": 1, "outputs": [glued], "source": ["glue"]}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "index.ipynb").write_text(json.dumps(notebook))
    po = tmp_path / "locale" / "zh_CN" / "LC_MESSAGES" / "index.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
                  'msgid "Formatted {glue:text}`x:.2f`, plain {glue:text}`x`, any {glue:}`x`."\n'
                  'msgstr "格式化 {glue:text}`x:.2f`，原样 {glue:text}`x`，任意 {glue:}`x`。"\n', encoding="utf-8")
    app = Sphinx(tmp_path, tmp_path, tmp_path / "_build", tmp_path / "_doctrees", "html",
                 confoverrides={"language": "zh_CN"}, status=None, warning=None, freshenv=True)
    app.build()
    page = (tmp_path / "_build" / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", page[page.index("格式化"):page.index("。")])
    assert text == "格式化 3.14，原样 3.14159，任意 3.14159"
    assert app.statuscode == 0


def test_english_blocks_are_those_without_chinese_and_with_enough_english_words():
    bc = _load("ddpm_lite_browser_check", ROOT / ".ci" / "browser_check.py")
    blocks = ["Show code cell content", "前向过程 (forward process) is fixed", "DPM-Solver++(2M)",
              "The forward process is a fixed Markov chain that adds noise."]
    assert bc.english_blocks(blocks) == ["The forward process is a fixed Markov chain that adds noise."]
    assert bc.colab_link("https://github.com/o/r", "book/elbo", "zh") == \
        "https://colab.research.google.com/github/o/r/blob/main/book/zh/elbo.ipynb"


def test_the_sidebars_part_captions_are_translated(tmp_path):
    """Jupyter Book's toctrees (sphinx-external-toc) are inserted after Sphinx translated the page."""
    pytest.importorskip("sphinx_external_toc")
    from sphinx.application import Sphinx

    (tmp_path / "conf.py").write_text(
        f"import sys; sys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['sphinx_external_toc', 'ddpm_lite_i18n']\nexternal_toc_path = '_toc.yml'\n"
        "locale_dirs = ['locale/']\ngettext_compact = False\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nparts:\n  - caption: Foundations\n"
                                       "    chapters:\n      - file: chapter\n")
    (tmp_path / "intro.rst").write_text("Intro\n=====\n")
    (tmp_path / "chapter.rst").write_text("Chapter\n=======\n")
    po = tmp_path / "locale" / "zh_CN" / "LC_MESSAGES" / "intro.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
                  'msgid "Foundations"\nmsgstr "基础"\n', encoding="utf-8")
    app = Sphinx(tmp_path, tmp_path, tmp_path / "_build", tmp_path / "_doctrees", "html",
                 confoverrides={"language": "zh_CN"}, status=None, warning=None, freshenv=True)
    app.build()
    assert '<span class="caption-text">基础</span>' in (tmp_path / "_build" / "chapter.html").read_text(encoding="utf-8")
