""".ci/check_html.py: the built-book checks fail on a CDN MathJax, a missing local copy and a raw MyST role."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("check_html", Path(__file__).resolve().parents[2] / ".ci" / "check_html.py")
check_html = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_html)


def page(root: Path, name: str, body: str, script: str = "../_static/mathjax/tex-chtml.js") -> None:
    (root / "book").mkdir(parents=True, exist_ok=True)
    (root / "book" / name).write_text(f'<html><script defer="defer" src="{script}"></script><body>{body}</body></html>')


def test_a_clean_site_passes(tmp_path):
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("// MathJax")
    page(tmp_path, "a.html", "<p>x</p><pre>{glue:text}`shown on purpose`</pre>")
    assert check_html.problems(tmp_path) == []


def test_each_problem_is_named(tmp_path):
    page(tmp_path, "cdn.html", "<p>ok</p>", script="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    page(tmp_path, "missing.html", "<p>ok</p>")  # the local copy was never copied
    page(tmp_path, "role.html", "<p>see {eq}`eq-x` and {cite}`ho2020`</p>",
         script="../_static/mathjax/tex-chtml.js")
    found = "\n".join(check_html.problems(tmp_path))
    assert "cdn.html: MathJax from the network" in found
    assert "missing.html: MathJax script ../_static/mathjax/tex-chtml.js is missing" in found
    assert "role.html: untranslated MyST role {eq}" in found and "role.html: untranslated MyST role {cite}" in found
    assert check_html.problems(tmp_path / "nothing")[0].endswith("no HTML pages; build the book first")


def test_an_api_link_that_resolves_to_nothing_is_reported(tmp_path):
    page = tmp_path / "chapter.html"
    resolved = ('<a class="reference internal" href="api.html#ddpm_lite.sample" title="ddpm_lite.sample">'
                '<code class="xref py py-func docutils literal notranslate"><span class="pre">sample()</span></code></a>')
    unresolved = '<p>see <code class="xref py py-func docutils literal notranslate"><span class="pre">smaple()</span></code></p>'
    page.write_text(f"<html><body>{resolved}</body></html>")
    assert check_html.problems(tmp_path) == []
    page.write_text(f"<html><body>{resolved}{unresolved}</body></html>")
    assert check_html.problems(tmp_path) == [f"{page}: the API link smaple() resolves to nothing; name an object of the API reference"]
