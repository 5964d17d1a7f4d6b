"""The built book as a reader meets it: every chapter opened offline in headless Chromium (Playwright driving
Debian's /usr/bin/chromium; nothing is downloaded at test time). Run by `make test` after the strict build.

The site is served from 127.0.0.1 and every other request is refused, so a page that needs the network fails.
For each page listed in _toc.yml it reports, one line per problem, naming the page:
- an equation left untypeset: MathJax missing or not finished, a MathJax error, raw \\( \\[ $$ in the text outside
  code, or no typeset equation on a page whose source has math;
- a missing image (<img> that did not decode) or a missing <object>/<embed>/<source> file, or any local file the
  page asked for and the server did not have;
- a Colab launch link that is not exactly this chapter's notebook on main (every .ipynb chapter needs one; a page
  made from .md has none);
- a broken internal link: a local href whose file or #id does not exist;
- an untranslated MyST role ({eq}`...`, {cite}`...`, {glue:text}`...`, ...) or substitution in the text;
- a cross-reference label shown as text (code included), or Sphinx's marker of an unresolved reference;
- a footer without "Built with ddpm_lite <version>", the version read from the package.
When the site holds the Chinese edition (HTML/zh/, built by .ci/i18n.py), every page of it is checked the same way
(its Colab links must open book/zh/<chapter>.ipynb), and besides:
- each page's language link must land on the same page of the other edition, both ways;
- the equation numbers of a page must be the same in both editions;
- no English paragraph (nor a part caption in the sidebar) may be left on a zh page: a block of prose (outside code, math, the API page's docstrings,
  marked by book/_ext/ddpm_lite_i18n.py, and the bibliography) with at least ENGLISH_WORDS English words and no
  Chinese character is reported;
- the search page of each edition must find a term of that edition ("forward process", 前向过程).
It saves full-page screenshots (1280 px wide) of the chapters given by --screenshot (and of their zh pages).

Usage: python .ci/browser_check.py BUILD_HTML_DIR [--source ROOT] [--screenshots DIR] [--screenshot CHAPTER ...]
exits 1 with one line per problem.
"""
import argparse
import functools
import http.server
import json
import os
import re
import shutil
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_WIDTH = 1280
SCREENSHOTS = ("forward_process", "sampling")
VERSION_LINE = "Built with ddpm_lite {version}"
MATHJAX_TIMEOUT_MS = 30_000
ZH = "zh"  # the Chinese edition's folder in the site
# Measured on the first complete zh build (2026-12-03, .ci/test-tree of `make test`): outside the API page's
# docstrings (English by design), the longest block of a zh page with no Chinese character has 4 English words
# (myst-nb's toggle "Show code cell content"; proper names and table cells are shorter). A block of this many English
# words and no Chinese character is an untranslated paragraph.
ENGLISH_WORDS = 5
SEARCHES = {"": "forward process", ZH: "前向过程"}

RAW_TEX = re.compile(r"\\\(|\\\[|\$\$")
ROLE = re.compile(r"\{[a-zA-Z][\w:.+-]*\}`[^`]*`?")
SUBSTITUTION = re.compile(r"\{\{\s*[\w.]+\s*\}\}")
TARGET = re.compile(r"^\(([^()\s]+)\)=\s*$", re.M)  # MyST (label)=
EQUATION_LABEL = re.compile(r"\$\$\s*\(([^()\s]+)\)")  # $$ ... $$ (label)
DIRECTIVE_LABEL = re.compile(r"^:label:\s*(\S+)", re.M)  # {math} / {figure} :label:
PREFIX = re.compile(r"^(eq|fig|tab|sec|alg)-")  # eq-elbo-gauss-kl leaks as "eq. (elbo-gauss-kl)"
MATH_SOURCE = re.compile(r"\$[^$\s][^$]*\$|\$\$|\\begin\{|\{math\}")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")

# Runs in the page once it has loaded: waits for MathJax, loads every image, and reads what the checks need.
PAGE_STATE = """async (timeoutMs) => {
  const mj = window.MathJax;
  let mathjax = "absent";
  if (mj && mj.startup && mj.startup.promise) {
    const timer = new Promise(resolve => setTimeout(() => resolve("timeout"), timeoutMs));
    mathjax = await Promise.race([mj.startup.promise.then(() => "done", e => "failed: " + e), timer]);
  }
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const skip = "script, style, template, noscript, mjx-container, mjx-assistive-mml";
  const code = "pre, code, kbd, samp, textarea, .highlight";
  // Text nodes of one block (a paragraph, a code listing) join as they read; blocks are separate lines.
  const block = "p, pre, li, td, th, h1, h2, h3, h4, h5, h6, dt, dd, caption, figcaption, div";
  let prose = "", all = "", lastBlock = null;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip)) continue;
    const own = parent.closest(block), gap = own === lastBlock ? "" : "\\n";
    lastBlock = own;
    all += gap + node.nodeValue;
    if (!parent.closest(code)) prose += gap + node.nodeValue;
  }
  const outside = el => !el.closest("a");
  return {
    mathjax,
    typeset: document.querySelectorAll("mjx-container").length,
    mathErrors: [...document.querySelectorAll("mjx-merror, [data-mjx-error]")].map(
      e => e.getAttribute("data-mjx-error") || e.textContent),
    brokenImages: images.filter(img => img.getAttribute("src") && img.naturalWidth === 0)
      .map(img => img.getAttribute("src")),
    embedded: [...document.querySelectorAll("object[data], embed[src], source[src], iframe[src]")]
      .map(e => e.getAttribute("data") || e.getAttribute("src")),
    links: [...document.querySelectorAll("a[href]")].map(a => [a.getAttribute("href"), a.href]),
    unresolved: [...document.querySelectorAll(".xref")].filter(outside).map(e => e.textContent.trim()),
    prose,
    text: all,
    footer: document.body.innerText,
    languageLinks: [...document.querySelectorAll(".ddpm-lite-language a")].map(a => a.href),
    captions: [...document.querySelectorAll("nav.bd-docs-nav .caption-text")].map(e => e.textContent.trim()),
    equationNumbers: [...document.querySelectorAll("span.eqno")].map(e => e.firstChild ? e.firstChild.textContent.trim() : ""),
    // blocks of the article's prose, for the zh edition's check that nothing is left in English
    blocks: [...document.querySelectorAll("article p, article li, article td, article th, article h1, article h2, " +
                                          "article h3, article dt, article dd, article caption, article figcaption")]
      .filter(el => !el.closest("pre, code, .highlight, dl.py, .cell_output, .output, .bibliography, " +
                                 "div.citation, .ddpm-lite-language, .ddpm-lite-docstring, .toctree-wrapper"))
      .filter(el => !el.querySelector("p, li, td"))
      .map(el => {
        const copy = el.cloneNode(true);
        copy.querySelectorAll("mjx-container, code, pre, .math, a.reference.external, cite").forEach(n => n.remove());
        return copy.textContent.replace(/\\s+/g, " ").trim();
      }),
  };
}"""

SEARCH_STATE = """async () => {
  for (let i = 0; i < 100; i++) {
    const results = document.querySelectorAll("#search-results li, ul.search li");
    const status = document.querySelector("#search-results p.search-summary, .search-summary");
    if (results.length || (status && /0|no |did not/i.test(status.textContent) && i > 20)) return results.length;
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  return document.querySelectorAll("#search-results li, ul.search li").length;
}"""


def chapters(source: Path) -> list[tuple[str, Path]]:
    """The pages of _toc.yml in order, as (docname, source file), e.g. ("book/elbo", ROOT/book/elbo.ipynb)."""
    import yaml

    toc = yaml.safe_load((source / "_toc.yml").read_text(encoding="utf-8"))
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", [toc]):
        walk(part.get("chapters"))
    found = []
    for name in names:
        name = re.sub(r"\.(ipynb|md)$", "", name)
        files = [source / f"{name}{ext}" for ext in (".ipynb", ".md") if (source / f"{name}{ext}").is_file()]
        found.append((name, files[0] if files else source / f"{name}.md"))
    return found


def markdown_of(path: Path) -> str:
    """The Markdown a reader sees as prose: an .md file, or the Markdown cells of a notebook."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return text


def has_math(path: Path) -> bool:
    return bool(MATH_SOURCE.search(INLINE_CODE.sub("", FENCE.sub("", markdown_of(path)))))


def label_patterns(sources: list[Path]) -> dict[str, re.Pattern]:
    """Every cross-reference label the sources define, with the pattern that finds it leaked into text.

    The label itself (eq-elbo-gauss-kl) is found anywhere. Its stem without the kind prefix (elbo-gauss-kl),
    the form the comments use, is found as a reference: in parentheses, "eq. (elbo-gauss-kl)", so that a stem
    that is also a phrase (closed-form) stays allowed as one; a stem that is a plain word (snr) only after
    "eq.", so that log(snr) stays allowed too.
    """
    labels = set()
    for path in sources:
        text = markdown_of(path)
        for pattern in (TARGET, EQUATION_LABEL, DIRECTIVE_LABEL):
            labels.update(pattern.findall(text))
    found = {}
    for label in sorted(labels):
        forms = [rf"(?<![\w-]){re.escape(label)}(?![\w-])"]
        stem = PREFIX.sub("", label)
        if stem != label:
            reference = rf"\(\s*{re.escape(stem)}\s*\)"
            forms.append(rf"(?<!\w){reference}" if re.search(r"[-_:\d]", stem) else rf"\b[Ee]qs?\.?\s*{reference}")
        found[label] = re.compile("|".join(forms))
    return found


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (key == "name" and tag == "a"):
                self.ids.add(value)


@functools.lru_cache(maxsize=None)
def ids_in(path: Path) -> frozenset:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def colab_link(repository_url: str, docname: str, edition: str = "") -> str:
    """The one Colab link a notebook chapter may show: its notebook on main (for the zh edition, book/zh/...)."""
    owner_repo = urlsplit(repository_url).path.strip("/").removesuffix(".git")
    if edition:
        folder, _, stem = docname.rpartition("/")
        docname = f"{folder}/{edition}/{stem}" if folder else f"{edition}/{stem}"
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/{docname}.ipynb"


CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
ENGLISH_WORD = re.compile(r"[A-Za-z]{2,}")


def english_blocks(blocks: list[str], limit: int = ENGLISH_WORDS) -> list[str]:
    """The prose blocks of a zh page that read as English: `limit` or more English words and no Chinese character."""
    return [block for block in blocks if not CJK.search(block) and len(ENGLISH_WORD.findall(block)) >= limit]


def short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def around(text: str, match: re.Match, width: int = 40) -> str:
    return short(text[max(0, match.start() - width): match.end() + width], 2 * width + 20)


def page_problems(name: str, source: Path, state: dict, root: Path, base: str, labels: dict,
                  repository_url: str, version: str, edition: str = "") -> list[str]:
    """The problems of one loaded page (state: what PAGE_STATE returned), each a line without the page name."""
    found = []
    if state["mathjax"] not in ("done", "absent"):
        found.append(f"MathJax did not finish ({state['mathjax']})")
    math_in_source = has_math(source)
    if math_in_source and state["mathjax"] == "absent":
        found.append("the source has math but MathJax did not load")
    elif math_in_source and state["typeset"] == 0:
        found.append("the source has math but no equation was typeset")
    for error in state["mathErrors"]:
        found.append(f"MathJax error: {short(error)}")
    for match in RAW_TEX.finditer(state["prose"]):
        found.append(f"untypeset TeX {match.group()!r}: {around(state['prose'], match)!r}")
    for src in state["brokenImages"]:
        found.append(f"missing image {src}")
    for src in state["embedded"]:
        target = _local_file(urljoin(f"{base}/{name}.html", src), root, base)
        if target is not None and not target.is_file():
            found.append(f"missing embedded file {src}")

    expected = colab_link(repository_url, name, edition)
    colab = sorted({url for _, url in state["links"] if urlsplit(url).hostname == "colab.research.google.com"})
    if source.suffix == ".ipynb" and expected not in colab:
        found.append(f"no Colab launch link to {expected}")
    for url in colab:
        if url != expected or source.suffix != ".ipynb":
            found.append(f"Colab link {url} is not this chapter's {'zh ' if edition else ''}notebook on main"
                         + (f" ({expected})" if source.suffix == ".ipynb" else " (this page has no notebook)"))

    other = f"{base.removesuffix('/' + edition)}/{name}.html" if edition else f"{base}/{ZH}/{name}.html"
    if (root / ZH / "index.html").is_file() and state["languageLinks"] != [other]:
        found.append(f"the language link goes to {state['languageLinks']}, not to this page in the other edition ({other})")
    if edition:
        for caption in state["captions"]:
            if not CJK.search(caption):
                found.append(f"the sidebar's part caption {caption!r} is not translated")
        for block in english_blocks(state["blocks"]):
            found.append(f"English paragraph left in the zh edition: {short(block)!r}")
    for href, url in state["links"]:
        target = _local_file(url, root, base)
        if target is None:
            continue
        if not target.is_file():
            found.append(f"broken link {href}: no file {target.relative_to(root)}")
            continue
        fragment = unquote(urlsplit(url).fragment)
        if fragment and target.suffix == ".html" and fragment not in ids_in(target):
            found.append(f"broken link {href}: no id {fragment!r} in {target.relative_to(root)}")

    for pattern, what in ((ROLE, "untranslated MyST role"), (SUBSTITUTION, "untranslated MyST substitution")):
        for match in pattern.finditer(state["prose"]):
            found.append(f"{what} {short(match.group(), 60)!r}")
    for label, pattern in labels.items():
        for match in pattern.finditer(state["text"]):
            found.append(f"label {label} shown as text: {around(state['text'], match)!r}")
    for text in state["unresolved"]:
        found.append(f"unresolved reference {short(text, 60)!r}")
    if VERSION_LINE.format(version=version) not in state["footer"]:
        found.append(f"no {VERSION_LINE.format(version=version)!r} on the page")
    return found


def _local_file(url: str, root: Path, base: str):
    """The file a URL on the local server names (index.html for a folder), or None for another site."""
    if not url.startswith(base + "/") and url != base:
        return None
    path = root / unquote(urlsplit(url).path).lstrip("/")
    return path / "index.html" if path.is_dir() else path


class _Server:
    """The built site on http://127.0.0.1:<free port>, in a thread, quiet."""

    def __init__(self, root: Path):
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], ConnectionError):  # the browser left a page mid-transfer
                    super().handle_error(request, client_address)

        handler = functools.partial(Quiet, directory=str(root))
        self.httpd = Server(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chromium() -> str | None:
    """The browser to drive: $CHROMIUM if set, else chromium on PATH, else Debian's; None if there is none."""
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or CHROMIUM
    return executable if Path(executable).is_file() else None


def check(html: Path, source: Path, screenshots: Path | None = None, shots=SCREENSHOTS,
          repository_url: str | None = None, version: str | None = None) -> list[str]:
    """Open every chapter of the book built in `html` (sources in `source`) and return one line per problem.

    repository_url and version default to ddpm_lite's (ddpm_lite.book.REPOSITORY_URL, __version__).
    """
    if repository_url is None or version is None:
        import ddpm_lite
        from ddpm_lite.book import REPOSITORY_URL

        repository_url = repository_url or REPOSITORY_URL
        version = version or ddpm_lite.__version__
    executable = chromium()
    if executable is None:
        return [f"no Chromium at {CHROMIUM}; install it: apt-get install -y chromium fonts-noto-cjk (or make chromium)"]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return ["playwright is not installed: pip install playwright (it is in the test extra; never run "
                "`playwright install`, the check drives the system's Chromium)"]
    pages = chapters(source)
    labels = label_patterns([path for _, path in pages])
    found = []

    with _Server(html) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": SCREENSHOT_WIDTH, "height": 900})
        outside = []

        def only_local(route):
            url = route.request.url
            if url.startswith(server.base + "/"):
                route.continue_()
            else:
                outside.append(url)
                route.abort("blockedbyclient")

        context.route("**/*", only_local)
        page = context.new_page()
        missing = []
        page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
        editions = [""] + ([ZH] if (html / ZH / "index.html").is_file() else [])
        numbers = {}
        for edition in editions:
            prefix = f"{edition}/" if edition else ""
            for name, path in pages:
                where = f"{prefix}{name}.html"
                if not (html / where).is_file():
                    found.append(f"{where}: not built (listed in _toc.yml as {name})")
                    continue
                outside.clear()
                missing.clear()
                page.goto(f"{server.base}/{where}", wait_until="load")
                state = page.evaluate(PAGE_STATE, MATHJAX_TIMEOUT_MS)
                numbers[edition, name] = state["equationNumbers"]
                lines = page_problems(name, path, state, html, server.base + (f"/{edition}" if edition else ""),
                                      labels, repository_url, version, edition)
                lines += [f"tried the network: {url}" for url in dict.fromkeys(outside)]
                lines += [f"missing file {url.removeprefix(server.base + '/')}" for url in dict.fromkeys(missing)
                          if not url.endswith("/favicon.ico")]
                found += [f"{where}: {line}" for line in lines]
                stem = name.rsplit("/", 1)[-1]
                if screenshots is not None and stem in shots:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    shot = screenshots / f"{stem}{'-' + edition if edition else ''}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of {where} ({SCREENSHOT_WIDTH} px wide): {shot}")
            query = SEARCHES[edition]
            if not (html / prefix / "search.html").is_file():  # Sphinx always writes it; a hand-made test site may not
                continue
            page.goto(f"{server.base}/{prefix}search.html?q={query}", wait_until="load")
            if not page.evaluate(SEARCH_STATE):
                found.append(f"{prefix}search.html: searching {query!r} finds no page")
        for name, _ in pages if ZH in editions else []:
            if (ZH, name) in numbers and ("", name) in numbers and numbers[ZH, name] != numbers["", name]:
                found.append(f"{ZH}/{name}.html: equation numbers {numbers[ZH, name]} differ from the English "
                             f"page's {numbers['', name]}")
        browser.close()
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the built site, e.g. _build/html")
    parser.add_argument("--source", type=Path, default=None,
                        help="the book's root (with _toc.yml); default: two levels above HTML")
    parser.add_argument("--screenshots", type=Path, default=None, help="default: HTML/../screenshots")
    parser.add_argument("--screenshot", action="append", default=None,
                        help=f"a chapter to photograph (repeatable); default: {' '.join(SCREENSHOTS)}")
    args = parser.parse_args(argv)
    html = args.html.resolve()
    source = (args.source or html.parent.parent).resolve()
    if not (source / "_toc.yml").is_file():
        print(f"{source}: no _toc.yml; pass the book's root with --source")
        return 1
    if not (html / "index.html").is_file():
        print(f"{html}: no index.html; build the book first (make book-strict)")
        return 1
    found = check(html, source, args.screenshots or html.parent / "screenshots", args.screenshot or SCREENSHOTS)
    editions = 2 if (html / ZH / "index.html").is_file() else 1
    print("\n".join(found) or f"browser checks passed: {len(chapters(source))} pages in {editions} edition(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
