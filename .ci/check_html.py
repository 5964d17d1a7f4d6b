"""Checks of the built book that need no browser: run by `make test` after the strict build.

- every page loads MathJax from the book's own _static folder (sphinx-mathjax-offline), and the file is there;
- no MyST role ({glue:text}, {eq}, {cite}, {ref}, {numref}) is left untranslated in the text of a page;
- every link from a chapter to the API reference ({py:func}`...` and the like) resolved: Sphinx renders one it cannot find as
  code with no link, silently (-W does not catch it unless nitpicky, which the docstrings' type hints defeat).

Usage: python .ci/check_html.py BUILD_HTML_DIR; exits 1 with one line per problem.
"""
import re
import sys
from pathlib import Path

ROLE = re.compile(r"\{(glue:text|glue|eq|cite|cite:p|cite:t|ref|numref)\}`")
SCRIPT = re.compile(r'<script[^>]*src="([^"]*mathjax[^"]*)"')
CODE = re.compile(r"<(pre|code)\b.*?</\1>", re.S)  # source listings may show roles on purpose
# a resolved cross-reference is <a class="reference internal" ...><code class="xref py ...">; an unresolved one has
# no <a> right before its <code>
UNRESOLVED = re.compile(r'(?<!">)<code class="xref py[^"]*"><span class="pre">([^<]*)</span>')


def problems(root: Path) -> list[str]:
    pages = sorted(root.rglob("*.html"))
    found = [] if pages else [f"{root}: no HTML pages; build the book first"]
    for page in pages:
        html = page.read_text(encoding="utf-8")
        for src in SCRIPT.findall(html):
            if re.match(r"[a-z]+://|//", src):
                found.append(f"{page}: MathJax from the network ({src}); the site must typeset offline")
            elif not (page.parent / src.split("?")[0]).is_file():
                found.append(f"{page}: MathJax script {src} is missing from the build")
        for role in sorted(set(ROLE.findall(CODE.sub("", html)))):
            found.append(f"{page}: untranslated MyST role {{{role}}}")
        for name in sorted(set(UNRESOLVED.findall(html))) if page.name != "api.html" else []:  # the chapters' links
            found.append(f"{page}: the API link {name} resolves to nothing; name an object of the API reference")
    return found


if __name__ == "__main__":
    found = problems(Path(sys.argv[1]))
    print("\n".join(found) or "HTML checks passed")
    sys.exit(1 if found else 0)
