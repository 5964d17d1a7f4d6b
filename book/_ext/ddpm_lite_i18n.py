"""Sphinx extension: the two editions of the book (English at the site's root, Chinese under zh/).

* Every page links to the same page in the other edition (a line at the top of the article, and
  <link rel="alternate" hreflang> in the head), by a relative URL, so the link works offline and on any host.
* On zh pages the Colab button opens the Chinese notebook, book/zh/<chapter>.ipynb, which .ci/i18n.py generates from
  the English notebook and the catalogs.
* {glue:text} roles keep working inside translated paragraphs. Sphinx parses a translated message as a separate
  small document, in which myst-nb finds no notebook to read glued values from; here such a document borrows the
  notebook of the page it belongs to.

Wired in _config.yml (local_extensions). .ci/browser_check.py follows every language link.
"""
from __future__ import annotations

from docutils import nodes
from sphinx.transforms import SphinxTransform

ZH = "zh_CN"
ZH_DIR = "zh"  # the zh edition's folder in the deployed site, and book/zh/ for its notebooks
LINK_CLASS = "ddpm-lite-language"  # .ci/browser_check.py looks for it
_MAIN_DOCUMENT = "ddpm_lite_i18n_document"


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


class RememberNotebook(SphinxTransform):
    """Before the Locale transform (priority 20): note the page's document, whose notebook holds the glued values."""

    default_priority = 10

    def apply(self, **kwargs) -> None:
        if "nb_renderer" in self.document:
            self.env.temp_data[_MAIN_DOCUMENT] = self.document


def _patch_glue_lookup() -> None:
    from myst_nb.ext.glue import roles

    original = roles.retrieve_glue_data
    if getattr(original, "ddpm_lite", False):
        return

    def retrieve_glue_data(document: nodes.document, key: str):
        if "nb_renderer" not in document:  # a translated message: read the glue of the page it belongs to
            env = getattr(document.settings, "env", None)
            page = env.temp_data.get(_MAIN_DOCUMENT) if env is not None else None
            if page is not None:
                document = page
        return original(document, key)

    retrieve_glue_data.ddpm_lite = True
    roles.retrieve_glue_data = retrieve_glue_data


def setup(app):
    _patch_glue_lookup()
    app.add_transform(RememberNotebook)
    app.connect("html-page-context", add_language_link)
    app.connect("html-page-context", zh_colab_buttons, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
