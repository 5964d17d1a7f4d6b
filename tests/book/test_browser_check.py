""".ci/browser_check.py: each problem a reader could meet is reported on a tiny site, and a clean site passes.

The sites are written here by hand (a _toc.yml, the chapter sources the checker reads for math and labels, and
their "built" HTML); Chromium opens them as it opens the real book.
"""
import base64
import importlib.util
import json
import struct
import sysconfig
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "browser_check", Path(__file__).resolve().parents[2] / ".ci" / "browser_check.py")
browser_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser_check)

needs_chromium = pytest.mark.skipif(
    browser_check.chromium() is None or importlib.util.find_spec("playwright") is None,
    reason="needs Chromium (apt-get install chromium, or make chromium) and playwright (the test extra)")

REPOSITORY = "https://github.com/someone/book"
VERSION = "9.9.9"
COLAB = "https://colab.research.google.com/github/someone/book/blob/main/book/{}.ipynb"
PNG = base64.b64decode(  # a 1 x 1 transparent PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
MATHJAX = Path(sysconfig.get_paths()["purelib"]) / "sphinx-mathjax-offline" / "static" / "mathjax"


def site(root: Path, pages: dict[str, tuple[str, str, str]]) -> Path:
    """Write a book: pages maps a chapter name to (source suffix, source text, HTML body); returns the HTML root.

    The first page is the toc's root. Every page gets the version footer unless its body says NO-FOOTER.
    """
    names = list(pages)
    toc = "format: jb-book\nroot: book/" + names[0] + "\nchapters:\n"
    toc += "".join(f"- file: book/{name}\n" for name in names[1:])
    (root / "_toc.yml").write_text(toc)
    html = root / "_build" / "html"
    (root / "book").mkdir()
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text(f'<meta http-equiv="refresh" content="0; url=book/{names[0]}.html">')
    (html / "book" / "pixel.png").write_bytes(PNG)
    for name, (suffix, source, body) in pages.items():
        if suffix == ".ipynb":
            source = json.dumps({"cells": [{"cell_type": "markdown", "source": [source], "metadata": {}}],
                                 "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
        (root / "book" / f"{name}{suffix}").write_text(source)
        footer = "" if "NO-FOOTER" in body else f'<footer><p>Built with ddpm_lite {VERSION}</p></footer>'
        (html / "book" / f"{name}.html").write_text(
            f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}{footer}</body></html>')
    return html


def mathjax(html: Path) -> str:
    """The book's offline MathJax, linked into the site; the script tags that load it."""
    (html / "_static").mkdir(exist_ok=True)
    (html / "_static" / "mathjax").symlink_to(MATHJAX, target_is_directory=True)
    return '<script defer src="../_static/mathjax/tex-chtml.js"></script>'


def run(html: Path, **kwargs) -> list[str]:
    return browser_check.check(html, html.parent.parent, repository_url=REPOSITORY, version=VERSION, **kwargs)


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("broken")
    html = site(root, {
        "intro": (".md", "# Intro", '<h1 id="top">Intro</h1>'),
        "raw_tex": (".md", "The variance $x$.", r'<p>The variance <span class="math">\(x\)</span>.</p>'),
        "missing_image": (".md", "![](nope.png)", '<img src="nope.png"><img src="pixel.png">'),
        "wrong_colab": (".ipynb", "# A", '<a href="https://colab.research.google.com/github/other/repo/blob/main/'
                                         'book/wrong_colab.ipynb">Colab</a>'),
        "no_colab": (".ipynb", "# B", "<p>no launch button</p>"),
        "broken_anchor": (".md", "# C", '<a href="intro.html#nowhere">x</a> <a href="gone.html">y</a> '
                                        '<a href="intro.html#top">fine</a> <a href="#here">fine</a><p id="here"></p>'),
        "raw_role": (".md", "# D", "<p>as in {eq}`eq-x` and {cite}`ho2020`</p><pre>{eq}`in code is fine`</pre>"),
        "label_text": (".md", "$$ a = b $$ (eq-te-dot)\n\n$$ c $$ (eq-snr)",
                       "<p>The SNR, snr and log(snr) are words.</p><pre># as in eq. (te-dot)</pre>"
                       '<p>see eq. (snr)</p><span class="xref std std-ref">missing-target</span>'),
        "network": (".md", "# E", '<img src="https://example.com/figure.png">'),
        "no_version": (".md", "# F", "<p>NO-FOOTER</p>"),
    })
    return "\n".join(run(html, screenshots=None))


@needs_chromium
@pytest.mark.parametrize("line", [
    "book/raw_tex.html: untypeset TeX '\\\\(': ",
    "book/raw_tex.html: the source has math but MathJax did not load",
    "book/missing_image.html: missing image nope.png",
    "book/missing_image.html: missing file book/nope.png",
    "book/wrong_colab.html: no Colab launch link to " + COLAB.format("wrong_colab"),
    "book/wrong_colab.html: Colab link https://colab.research.google.com/github/other/repo/blob/main/book/"
    "wrong_colab.ipynb is not this chapter's notebook on main",
    "book/no_colab.html: no Colab launch link to " + COLAB.format("no_colab"),
    "book/broken_anchor.html: broken link intro.html#nowhere: no id 'nowhere' in book/intro.html",
    "book/broken_anchor.html: broken link gone.html: no file book/gone.html",
    "book/raw_role.html: untranslated MyST role '{eq}`eq-x`'",
    "book/raw_role.html: untranslated MyST role '{cite}`ho2020`'",
    "book/label_text.html: label eq-te-dot shown as text: ",
    "book/label_text.html: label eq-snr shown as text: ",
    "book/label_text.html: unresolved reference 'missing-target'",
    "book/network.html: tried the network: https://example.com/figure.png",
    "book/no_version.html: no 'Built with ddpm_lite 9.9.9' on the page",
])
def test_each_problem_is_reported(problems, line):
    assert line in problems, problems


@needs_chromium
def test_only_those_problems(problems):
    """Nothing is reported on the clean pages, in code, or for a label's stem used as a word (snr)."""
    assert "book/intro.html:" not in problems
    assert "in code is fine" not in problems
    assert problems.count("label eq-snr") == 1, problems
    assert "broken link intro.html#top" not in problems and "broken link #here" not in problems


@needs_chromium
@pytest.mark.skipif(not MATHJAX.is_dir(), reason="needs sphinx-mathjax-offline (the book extra)")
def test_a_clean_book_passes_and_is_photographed(tmp_path):
    html = site(tmp_path, {
        "intro": (".md", "# Intro", '<h1 id="top">Intro</h1><a href="chapter.html#eq">the chapter</a>'),
        "chapter": (".ipynb", "The variance $x^2$, and\n\n$$ y $$ (eq-y)",
                    r'<p>The variance <span class="math">\(x^2\)</span>, and</p>'
                    r'<div class="math" id="eq">\[y\]</div><img src="pixel.png">'
                    f'<a href="{COLAB.format("chapter")}">Colab</a><a href="intro.html#top">back</a>'),
    })
    script = mathjax(html)
    page = html / "book" / "chapter.html"
    page.write_text(page.read_text().replace("<head>", "<head>" + script))
    shots = tmp_path / "shots"
    assert run(html, screenshots=shots, shots=("chapter",)) == []
    width, = struct.unpack(">I", (shots / "chapter.png").read_bytes()[16:20])  # the PNG header's IHDR width
    assert width == browser_check.SCREENSHOT_WIDTH


def test_labels_are_found_whole_and_without_their_prefix(tmp_path):
    (tmp_path / "a.md").write_text("(sec-intro)=\n# A\n\n$$ x $$ (eq-elbo-gauss-kl)\n\n$$ y $$ (eq-snr)\n")
    patterns = browser_check.label_patterns([tmp_path / "a.md"])
    assert sorted(patterns) == ["eq-elbo-gauss-kl", "eq-snr", "sec-intro"]
    assert patterns["eq-elbo-gauss-kl"].search("# eq. (elbo-gauss-kl)")
    assert patterns["eq-elbo-gauss-kl"].search("see eq-elbo-gauss-kl")
    assert not patterns["eq-elbo-gauss-kl"].search("the elbo-gauss-kl phrase, unbracketed")
    assert not patterns["eq-elbo-gauss-kl"].search("eq-elbo-gauss-kl-2 is another label")
    assert patterns["eq-snr"].search("Eq. (snr)") and not patterns["eq-snr"].search("log(snr) of the SNR")
    assert patterns["sec-intro"].search("(sec-intro)") and not patterns["sec-intro"].search("intro")


def test_colab_link_names_the_chapter_on_main():
    assert browser_check.colab_link("https://github.com/a/b.git", "book/x") == (
        "https://colab.research.google.com/github/a/b/blob/main/book/x.ipynb")


def test_the_footer_extension_writes_the_line_the_check_reads():
    """book/_ext/ddpm_lite_version.py puts the package's version in sphinx-book-theme's extra_footer."""
    import types

    import ddpm_lite

    spec = importlib.util.spec_from_file_location(
        "ddpm_lite_version", Path(__file__).resolve().parents[2] / "book" / "_ext" / "ddpm_lite_version.py")
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    assert extension.VERSION_LINE == browser_check.VERSION_LINE
    config = types.SimpleNamespace(html_theme_options={"extra_footer": "<p>kept</p>"})
    extension.add_version_to_footer(None, config)
    footer = config.html_theme_options["extra_footer"]
    assert footer.startswith("<p>kept</p>") and f"Built with ddpm_lite {ddpm_lite.__version__}</p>" in footer


@needs_chromium
@pytest.mark.skipif(not MATHJAX.is_dir(), reason="needs sphinx-mathjax-offline (the book extra)")
def test_a_tex_error_and_a_missing_embedded_file_are_reported(tmp_path):
    html = site(tmp_path, {
        "intro": (".md", "# Intro", "<p>intro</p>"),
        "bad": (".md", "$\\frac{a}$", r'<p><span class="math">\(\frac{a}\)</span></p><object data="gone.svg"></object>'),
    })
    script = mathjax(html)
    page = html / "book" / "bad.html"
    page.write_text(page.read_text().replace("<head>", "<head>" + script))
    found = "\n".join(run(html))
    assert "book/bad.html: MathJax error: " in found, found
    assert "book/bad.html: missing embedded file gone.svg" in found, found
