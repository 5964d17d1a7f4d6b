"""Sphinx extension: the two editions of the book (English at the site's root, Chinese under zh/).

* Every page links to the same page in the other edition (a line at the top of the article, and
  <link rel="alternate" hreflang> in the head), by a relative URL, so the link works offline and on any host.
* On zh pages the Colab button opens the Chinese notebook, book/zh/<chapter>.ipynb, which .ci/i18n.py generates from
  the English notebook and the catalogs.
* Search finds Chinese words in the zh edition. Sphinx's Chinese index cuts the text into words with jieba, but its
  search page cannot cut a query (Chinese has no spaces), so a query such as 前向过程 matches nothing; here the
  index also holds every pair of adjacent Chinese characters, and the search page cuts a query into such pairs.
* The parts' captions in the sidebar are translated too: Jupyter Book inserts the toctrees (sphinx-external-toc,
  transform priority 100) after Sphinx has translated the page (priority 20), so their captions would stay English.
* The API page's docstrings stay English in both editions (.ci/i18n.py leaves them out of the catalogs); their
  paragraphs carry the class ddpm-lite-docstring, so that .ci/browser_check.py tells them from the page's own prose.
* {glue:text} roles keep working inside translated paragraphs. Sphinx parses a translated message as a separate
  small document, after myst-nb has closed the notebook, so a plain {glue:text}`key` finds no value there; in such a
  document the role reads the key from the page's own notebook, as myst-nb's `page.ipynb::key` form does.

Wired in _config.yml (local_extensions). .ci/browser_check.py follows every language link.
"""
from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.locale import init as init_locale
from sphinx.transforms import SphinxTransform
from sphinx.util.i18n import docname_to_domain

from sphinx.search.zh import SearchChinese

ZH = "zh_CN"
ZH_DIR = "zh"  # the zh edition's folder in the deployed site, and book/zh/ for its notebooks
LINK_CLASS = "ddpm-lite-language"  # .ci/browser_check.py looks for it


def other_edition(pagename: str, language: str) -> tuple[str, str, str]:
    """(relative URL, link text, hreflang) of `pagename` in the other edition."""
    up = "../" * pagename.count("/")
    if language == ZH:
        return f"../{up}{pagename}.html", "English", "en"
    return f"{up}{ZH_DIR}/{pagename}.html", "中文", "zh-CN"


def add_language_link(app, pagename, templatename, context, doctree) -> None:
    url, text, hreflang = other_edition(pagename, app.config.language)
    link = f'<a href="{url}" hreflang="{hreflang}" lang="{hreflang}">{text}</a>'
    if "body" in context:
        context["body"] = f'<p class="{LINK_CLASS}">{link}</p>\n' + context["body"]
    context["metatags"] = context.get("metatags", "") + f'\n<link rel="alternate" hreflang="{hreflang}" href="{url}" />'


def zh_colab_buttons(app, pagename, templatename, context, doctree) -> None:
    """After sphinx-book-theme made its launch buttons (priority 501): zh pages open book/zh/<chapter>.ipynb."""
    if app.config.language != ZH:
        return
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []):
            url = button.get("url", "")
            if "colab" in url and "/blob/" in url and "/book/" in url:
                head, name = url.rsplit("/book/", 1)
                button["url"] = f"{head}/book/{ZH_DIR}/{name}"


CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]{2,}")

# The query, cut as the index below is: Latin words whole, each run of Chinese characters into adjacent pairs.
SPLIT_QUERY_JS = r"""
function splitQuery(query) {
  const terms = [];
  for (const word of query.split(/[^\p{Letter}\p{Number}_]+/u).filter(w => w)) {
    for (const run of word.split(/([\u3400-\u9fff\uf900-\ufaff]+)/u).filter(w => w)) {
      if (/^[\u3400-\u9fff\uf900-\ufaff]{2,}$/u.test(run)) {
        for (let i = 0; i + 1 < run.length; i++) terms.push(run.slice(i, i + 2));
      } else {
        terms.push(run);
      }
    }
  }
  return terms;
}
"""


class SearchChineseByPairs(SearchChinese):
    """Sphinx's Chinese search index (jieba's words), plus every pair of adjacent Chinese characters."""

    js_splitter_code = SPLIT_QUERY_JS

    def split(self, input: str) -> list[str]:
        pairs = [run[i:i + 2] for run in CJK_RUN.findall(input) for i in range(len(run) - 1)]
        return super().split(input) + pairs


def _patch_glue_roles() -> None:
    """In a translated message, {glue:text}`key` reads `key` from the page's own notebook, as `page.ipynb::key` would."""
    from myst_nb.ext.glue import roles

    for role in (roles.PasteTextRole, roles.PasteRoleAny):
        if getattr(role.run, "ddpm_lite", False):
            continue

        def run(self, _original=role.run, _text_role=role is roles.PasteTextRole):
            if "nb_renderer" not in self.document and "::" not in self.text:
                env = self.document.settings.env
                key = self.text
                if _text_role and ":" not in key:  # {glue:text} splits its format off at the last ":"
                    key += ":s"
                self.text = f"{Path(env.doc2path(env.docname)).name}::{key}"
            return _original(self)

        run.ddpm_lite = True
        role.run = run


class TranslateTocCaptions(SphinxTransform):
    """After sphinx-external-toc's InsertToctrees (priority 100): each toctree caption from the page's catalog."""

    default_priority = 110

    def apply(self, **kwargs) -> None:
        if not self.config.language or self.config.language == "en":
            return
        dirs = [str(Path(self.env.srcdir) / directory) for directory in self.config.locale_dirs]
        domain = docname_to_domain(self.env.docname, self.config.gettext_compact)
        catalog, found = init_locale(dirs, self.config.language, domain)
        if not found:
            return
        for toctree in self.document.findall(addnodes.toctree):
            if toctree.get("caption"):
                toctree["caption"] = toctree["rawcaption"] = catalog.gettext(toctree["caption"])


DOCSTRING_CLASS = "ddpm-lite-docstring"


def mark_docstrings(app, doctree, docname) -> None:
    """Every text block autodoc took from a docstring (its source is ".../x.py:docstring of ...") gets the class."""
    for node in doctree.findall(nodes.TextElement):
        if node.source and "docstring of" in node.source:
            node["classes"].append(DOCSTRING_CLASS)


def setup(app):
    _patch_glue_roles()
    app.add_search_language(SearchChineseByPairs)  # lang "zh": the zh_CN edition's index
    app.add_transform(TranslateTocCaptions)
    app.connect("doctree-resolved", mark_docstrings)
    app.connect("html-page-context", add_language_link)
    app.connect("html-page-context", zh_colab_buttons, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
