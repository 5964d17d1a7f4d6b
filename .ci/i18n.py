"""The Chinese edition: Sphinx gettext catalogs, the zh build, and the zh Colab notebooks, from one source.

One English source (book/*.ipynb, book/*.md); the translations live in gettext catalogs,
locale/zh_CN/LC_MESSAGES/book/<page>.po, one message per paragraph, heading, list item or table cell.

    python .ci/i18n.py extract [--only book/PAGE ...]   re-extract the English (a Sphinx gettext build) and merge
                                                      it into the catalogs: a new message is empty, a changed one
                                                      fuzzy (its old translation kept as a hint)
    python .ci/i18n.py todo book/PAGE                 the messages still to translate, as JSON
    python .ci/i18n.py fill book/PAGE FILE.json       write {msgid: msgstr} into the catalog (markup checked)
    python .ci/i18n.py check [book/PAGE ...]          fail on an untranslated, fuzzy or mangled message, against the
                                                      English as it is now (so an English edit without its
                                                      translation fails)
    python .ci/i18n.py notebooks [--check]            write (or compare) book/zh/*.ipynb, the Colab notebooks of
                                                      the Chinese edition, from book/*.ipynb and the catalogs
    python .ci/i18n.py html --lang zh_CN SRC OUT [-W] build one edition of the book in SRC into OUT

The Jupyter Book CLI cannot pass `-D language=...` (jupyter-book issue 1791), so `html` calls the same
jupyter_book.sphinx.build_sphinx that `jupyter-book build` calls, with the language as a configuration override:
_config.yml stays the one configuration of both editions.

Autodoc docstrings (the API page) are left out of the catalogs: they stay English in both editions.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANG = "zh_CN"
LOCALE = ROOT / "locale" / LANG / "LC_MESSAGES"
ZH_NOTEBOOKS = ROOT / "book" / "zh"  # what the zh pages' Colab buttons open
SETUP_CALL = re.compile(r'book\.setup_notebook\(seed=0, chapter="(?P<chapter>\w+)"\)')

# ---------------------------------------------------------------------------------------------------------------
# Building


def build(src: Path, out: Path, builder: str = "html", language: str | None = None, strict: bool = False,
          execute: str | None = None, doctrees: Path | None = None, quiet: bool = False) -> int:
    """One Sphinx build of the book in `src` (its _config.yml and _toc.yml), as `jupyter-book build` does it."""
    from jupyter_book.sphinx import build_sphinx

    src = src.resolve()
    overrides = {"external_toc_path": str(src / "_toc.yml"), "latex_individualpages": False}
    if language:
        overrides["language"] = language
    if execute:
        overrides["nb_execution_mode"] = execute
    return build_sphinx(src, out.resolve(), noconfig=True, path_config=str(src / "_config.yml"),
                        confoverrides=overrides, builder=builder, warningiserror=strict, keep_going=True, freshenv=True,
                        doctreedir=str(doctrees.resolve()) if doctrees else None, quiet=quiet,
                        really_quiet=quiet)


def templates(src: Path = ROOT) -> dict:
    """{domain: babel Catalog} of the English as it is now (domain: "book/elbo"), docstrings left out."""
    from babel.messages.pofile import read_po

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gettext"
        status = build(src, out, builder="gettext", execute="off", doctrees=Path(tmp) / "doctrees", quiet=True)
        if status:
            sys.exit(f"i18n: the gettext build failed (status {status})")
        result = {}
        for pot in sorted(out.rglob("*.pot")):
            domain = pot.relative_to(out).with_suffix("").as_posix()
            catalog = read_po(pot.open("rb"))
            for message in list(catalog):
                pages = [path for path, _ in message.locations if path.endswith((".md", ".ipynb"))]
                if message.id and message.locations and not pages:
                    del catalog[message.id]  # autodoc's docstrings (located in ddpm_lite/*.py): they stay English
            result[domain] = catalog
        return result


# ---------------------------------------------------------------------------------------------------------------
# Markup that a translation must keep exactly

_MARKUP = re.compile(
    r"\$\$.+?\$\$"                      # display math inline in a paragraph
    r"|\$(?:\\.|[^$\\])+\$"             # inline math
    r"|\{[\w:.-]+\}`[^`]*`"             # a MyST role: {eq}`...`, {glue:text}`...`, {py:func}`...`
    r"|``.+?``|`[^`]+`"                 # code spans
    r"|\]\([^)\s]+\)",                  # a link's target
    re.S,
)
_ROLE_TITLE = re.compile(r"^(\{(?:doc|ref|py:\w+)\}`)[^`<]*<([^>`]+)>`$")  # {doc}`Title <target>`: title translatable


def markup(text: str) -> list[str]:
    """The spans of `text` a translation keeps verbatim, sorted (math, code, roles, link targets)."""
    spans = []
    for span in _MARKUP.findall(text):
        titled = _ROLE_TITLE.match(span)
        spans.append(f"{titled.group(1)}<{titled.group(2)}>`" if titled else span)
    return sorted(spans)


def language_neutral(msgid: str) -> bool:
    """True when nothing but markup, numbers and punctuation is left: its translation is itself."""
    rest = _MARKUP.sub(" ", msgid)
    if msgid.lstrip().startswith("\\") or msgid.startswith("\n"):  # a display equation's body
        return True
    return not re.search(r"[A-Za-z]{2,}|[\u4e00-\u9fff]", rest)


def problems(message) -> list[str]:
    """What is wrong with one catalog entry: untranslated, fuzzy, or markup that differs from the English."""
    if not message.string:
        return ["untranslated"]
    found = []
    if message.fuzzy:
        found.append("fuzzy")
    if markup(message.id) != markup(message.string):
        missing = sorted(set(markup(message.id)) - set(markup(message.string)))
        extra = sorted(set(markup(message.string)) - set(markup(message.id)))
        found.append(f"markup differs (missing {missing}, extra {extra})")
    return found


# ---------------------------------------------------------------------------------------------------------------
# Catalogs


def po_path(domain: str) -> Path:
    return LOCALE / f"{domain}.po"


def read_catalog(domain: str):
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import read_po

    path = po_path(domain)
    if path.exists():
        with path.open("rb") as f:
            return read_po(f, locale=LANG)
    return Catalog(locale=LANG, domain=domain)


def write_catalog(domain: str, catalog) -> None:
    from babel.messages.pofile import write_po

    catalog.project, catalog.version, catalog.fuzzy = "ddpm_lite", "", False
    catalog.header_comment = (f"# The Chinese edition of the ddpm_lite book: {domain}.\n"
                              "# Kept with .ci/i18n.py (README.md, \"The Chinese edition\"); one message per paragraph.")
    catalog.last_translator = catalog.language_team = "the ddpm_lite authors"
    catalog.msgid_bugs_address = ""
    for message in catalog:
        message.flags = {"fuzzy"} & set(message.flags)  # not babel's guessed python-format flags
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=0, no_location=True, ignore_obsolete=True, include_previous=True,
             omit_header=False)
    path = po_path(domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = re.sub(r'"(POT-Creation-Date|PO-Revision-Date): [^"]*\\n"\n', "", buffer.getvalue().decode())
    path.write_text(text, encoding="utf-8")  # no dates: a catalog changes only when a message does


def merged(domain: str, template):
    """The catalog of `domain` brought up to the English `template`, without writing it."""
    return merge(read_catalog(domain), template)


def merge(catalog, template):
    """`catalog` updated to `template` (babel, as msgmerge): a new message empty, a changed one fuzzy, a gone one
    dropped; a message with nothing to translate (an equation) gets itself as its translation."""
    catalog.update(template, update_creation_date=False)
    for message in catalog:
        if message.id and not message.string and language_neutral(message.id):
            message.string = message.id
    return catalog


def cmd_extract(args) -> int:
    for domain, template in templates().items():
        if args.only and domain not in args.only:
            continue
        catalog = merged(domain, template)
        write_catalog(domain, catalog)
        todo = sum(bool(problems(m)) for m in catalog if m.id)
        print(f"{po_path(domain).relative_to(ROOT)}: {sum(1 for m in catalog if m.id)} messages, {todo} to translate")
    return 0


def cmd_todo(args) -> int:
    catalog = read_catalog(args.domain)
    todo = [{"msgid": m.id, **({"msgstr": m.string, "problems": problems(m)} if m.string else {})}
            for m in catalog if m.id and problems(m)]
    json.dump(todo, sys.stdout, ensure_ascii=False, indent=1)
    print()
    return 0


def cmd_fill(args) -> int:
    catalog = read_catalog(args.domain)
    translations = json.loads(Path(args.file).read_text(encoding="utf-8"))
    filled, refused, unknown = 0, [], []
    for msgid, msgstr in translations.items():
        message = catalog.get(msgid)
        if message is None:
            unknown.append(msgid)
            continue
        if markup(msgid) != markup(msgstr):
            refused.append((msgid, sorted(set(markup(msgid)) ^ set(markup(msgstr)))))
            continue
        message.string = msgstr
        message.flags.discard("fuzzy")
        message.previous_id = []
        filled += 1
    write_catalog(args.domain, catalog)
    for msgid, diff in refused:
        print(f"refused (markup differs: {diff}): {msgid[:100]!r}")
    for msgid in unknown:
        print(f"not in the catalog (run extract, copy msgids exactly): {msgid[:100]!r}")
    left = sum(bool(problems(m)) for m in catalog if m.id)
    print(f"{args.domain}: {filled} filled, {len(refused)} refused, {len(unknown)} unknown; {left} still to translate")
    return 1 if refused or unknown else 0


def cmd_check(args) -> int:
    """Fail on anything a reader of the zh edition would see in English or broken, against the English of now."""
    bad = 0
    for domain, template in templates().items():
        if args.domains and domain not in args.domains:
            continue
        catalog = merged(domain, template)
        for message in catalog:
            if message.id and (found := problems(message)):
                bad += 1
                print(f"{po_path(domain).relative_to(ROOT)}: {', '.join(found)}: {message.id[:90]!r}")
    if bad:
        print(f"i18n: {bad} messages untranslated, fuzzy or with changed markup. After an English edit run "
              "`make catalogs`, translate what `.ci/i18n.py todo book/PAGE` lists, then `make zh-notebooks`.")
        return 1
    print("i18n: every message of every page is translated, none fuzzy, markup intact")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The zh notebooks (Colab opens notebooks from the repository, so they are generated into it)

_BLOCK_START = r"(?:^[ \t]*(?:(?:[-*+]|\d+[.)]|#{1,6}|:|>)[ \t]+)?|\|[ \t]*)"


def _pattern(msgid: str) -> re.Pattern:
    words = [re.escape(w) for w in msgid.split()]
    return re.compile(rf"(?m)(?P<lead>{_BLOCK_START})" + r"\s+".join(words) + r"(?=[ \t]*(?:\||$))")


def translate_markdown(source: str, catalog) -> tuple[str, set[str]]:
    """`source` with every message of `catalog` found in it replaced by its translation; and the msgids used."""
    used = set()
    messages = sorted((m for m in catalog if m.id and m.string and m.id != m.string and "\n" not in m.id),
                      key=lambda m: -len(m.id))
    for message in messages:
        pattern = _pattern(message.id)
        new = pattern.sub(lambda match: match.group("lead") + message.string, source)
        if new != source:
            used.add(message.id)
            source = new
    return source, used


def zh_notebook(path: Path, catalog) -> tuple[str, set[str]]:
    """The text of book/zh/<name>.ipynb for the English notebook `path`, and the msgids it used."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    used = set()
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            source, found = translate_markdown(source, catalog)
            used |= found
        elif cell["cell_type"] == "code":
            source = SETUP_CALL.sub(lambda m: f'book.setup_notebook(seed=0, chapter="{m["chapter"]}", lang="{LANG}")',
                                    source)
        cell["source"] = source.splitlines(keepends=True)
    notebook["metadata"].setdefault("colab", {})["name"] = f"{path.stem} (中文)"
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", used


def cmd_notebooks(args) -> int:
    stale, missed = [], []
    expected = set()
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        catalog = read_catalog(f"book/{path.stem}")
        text, used = zh_notebook(path, catalog)
        target = ZH_NOTEBOOKS / path.name
        expected.add(target)
        english = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                          if c["cell_type"] == "markdown")
        for message in catalog:
            if (message.id and message.string and message.id != message.string and "\n" not in message.id
                    and message.id not in used and _pattern(message.id).search(english)):
                missed.append(f"{path.name}: {message.id[:80]!r}")
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(target.relative_to(ROOT).as_posix())
        else:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
    extra = sorted(p.relative_to(ROOT).as_posix() for p in ZH_NOTEBOOKS.glob("*.ipynb") if p not in expected)
    for line in missed:
        print(f"i18n: a translated message was not placed in the zh notebook: {line}")
    if args.check and (stale or extra):
        print(f"i18n: these zh notebooks differ from what book/*.ipynb and the catalogs produce: {stale + extra}; "
              "run `make zh-notebooks` and commit them (never edit book/zh/ by hand)")
        return 1
    if not args.check:
        for path in extra:
            (ROOT / path).unlink()
        print(f"wrote {len(expected)} notebooks to {ZH_NOTEBOOKS.relative_to(ROOT)}/")
    return 1 if missed else 0


def cmd_html(args) -> int:
    """Build one edition into SRC/_build/<lang> (beside the English _build/html, so that myst-nb finds the English
    build's execution cache and executes nothing again), then copy it to OUT (e.g. _build/html/zh)."""
    import shutil

    build_dir = args.src.resolve() / "_build"
    status = build(args.src, build_dir / args.lang, language=args.lang, strict=args.W,
                   doctrees=build_dir / f".doctrees-{args.lang}")
    if status == 0:
        shutil.rmtree(args.out, ignore_errors=True)
        shutil.copytree(build_dir / args.lang, args.out)
        print(f"The {args.lang} edition is at {args.out.resolve() / 'index.html'}")
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--only", nargs="*", default=[], help="domains such as book/elbo (default: all)")
    p = sub.add_parser("todo")
    p.add_argument("domain")
    p = sub.add_parser("fill")
    p.add_argument("domain")
    p.add_argument("file")
    p = sub.add_parser("check")
    p.add_argument("domains", nargs="*")
    p = sub.add_parser("notebooks")
    p.add_argument("--check", action="store_true")
    p = sub.add_parser("html")
    p.add_argument("--lang", default=LANG)
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("-W", action="store_true", help="warnings are errors")
    args = parser.parse_args(argv)
    return {"extract": cmd_extract, "todo": cmd_todo, "fill": cmd_fill, "check": cmd_check,
            "notebooks": cmd_notebooks, "html": cmd_html}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
