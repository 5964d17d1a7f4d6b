"""Small helpers the book's chapters share: notebook setup and its language, glued numbers, image grids and
animations of them, source listings.

matplotlib is imported inside the functions that draw, so importing this module stays light.
"""
from __future__ import annotations

import math
import os
import random
import re

from dataclasses import dataclass

import torch

from .. import _io
from .._device import default_device
from ..images import image_grid

# Where the book's Colab setup cell installs ddpm_lite from: the one place of the URL in the package. _config.yml
# (repository: url) and every chapter's setup cell must agree with it (tests/book/test_book_setup.py); to point a fork at
# its own repository, replace the URL in all three at once (README, "The book in Colab").
REPOSITORY_URL = "https://github.com/ddpm-lite/ddpm_lite"
INSTALL_REQUIREMENT = f"ddpm_lite[plot] @ git+{REPOSITORY_URL}@main"  # what the setup cell passes to pip


_OWNER, _REPO = REPOSITORY_URL.rstrip("/").split("/")[-2:]
BOOK_URL = f"https://{_OWNER}.github.io/{_REPO}"  # where .github/workflows/book.yml publishes the built book


# ------------------------------------------------------------------------------------------------ the language
LANGUAGES = ("en", "zh_CN")  # the book's editions: English at the site's root, Chinese under zh/
_language = "en"  # the one setting: setup_notebook(lang=...) sets it for the rest of the session


def language() -> str:
    """The language the chapter chose in :func:`setup_notebook` ("en" or "zh_CN"): the Colab note and the exercise
    graders' messages (``book.checks``) speak it. Code, its comments and other printed output stay English."""
    return _language


def set_language(lang: str) -> str:
    """Set the session's language (one of LANGUAGES) and return it; :func:`setup_notebook` calls it."""
    global _language
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}: choose one of {', '.join(map(repr, LANGUAGES))}")
    _language = lang
    return lang


_CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"  # CJK punctuation, ideographs, full-width forms
_CJK_GAP = re.compile(f"(?<=[{_CJK}]) (?=[{_CJK}])")


@dataclass(frozen=True)
class Bilingual:
    """One sentence written once in both editions' languages; ``str()`` gives it in the session's :func:`language`.

    Either text may hold ``str.format`` fields, filled in both by :meth:`format`.
    """

    en: str
    zh: str

    def __str__(self) -> str:
        return self.zh if _language == "zh_CN" else self.en

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __add__(self, other: Bilingual) -> Bilingual:
        return Bilingual(self.en + other.en, self.zh + other.zh)

    def format(self, *args, **kwargs) -> Bilingual:
        """Both texts with their fields filled in; a Bilingual argument fills each text with its own language."""
        def pick(value, lang):
            return getattr(value, lang) if isinstance(value, Bilingual) else value

        en, zh = (getattr(self, lang).format(*(pick(a, lang) for a in args),
                                             **{k: pick(v, lang) for k, v in kwargs.items()}) for lang in ("en", "zh"))
        return Bilingual(en, _CJK_GAP.sub("", zh))  # a Chinese name filled in between Chinese words: no spaces

    @classmethod
    def of(cls, text: str | Bilingual) -> Bilingual:
        """A Bilingual as it is; a plain str (a reader's own text) the same in both languages."""
        return text if isinstance(text, Bilingual) else cls(str(text), str(text))


# -------------------------------------------------------------------------------------------- the notebook's setup
def setup_notebook(seed: int = 0, chapter: str | None = None, lang: str = "en") -> torch.device:
    """Seed every random number generator once, at the top of a chapter, and pick the device the chapter passes on.

    Returns cuda when a GPU is present (Colab), else cpu; on CPU, torch uses every core it may. In Colab it also
    prints what a reader there needs (:func:`colab_note`): the device, where the book's model is cached, and how
    the book's cross-references look in a notebook. chapter: the notebook's name, for the link to its page.
    lang: "en" or "zh_CN" (the Chinese edition's notebooks); sets :func:`language` for the rest of the session.
    """
    set_language(lang)
    random.seed(seed)
    torch.manual_seed(seed)
    device = default_device()  # cuda or cpu
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    if _io.in_colab():
        print(colab_note(device, chapter))
    return device


def colab_note(device: torch.device, chapter: str | None = None, lang: str | None = None) -> str:
    """What the setup cell tells a Colab reader: device, cache, Drive, and the book's syntax they will see raw.

    lang: "en" or "zh_CN"; None: the session's :func:`language`. The link goes to the chapter's page in that
    language's edition (the Chinese one lives under zh/ of the site).
    """
    from .. import __version__

    lang = language() if lang is None else lang
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}: choose one of {', '.join(map(repr, LANGUAGES))}")
    zh = lang == "zh_CN"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        hardware = (f"GPU（{name}）：本章的模型、采样器和训练都在它上面运行。" if zh else
                    f"a GPU ({name}): every model, sampler and training run uses it.")
    else:
        hardware = ("没有 GPU，本章在 CPU 上运行，会慢一些。如需 GPU：依次选择 代码执行程序 > 更改运行时类型 > "
                    "T4 GPU（英文界面：Runtime > Change runtime type），然后重新运行本 notebook。" if zh else
                    "no GPU: this chapter runs on the CPU, more slowly. For a GPU: Runtime > Change runtime type > "
                    "T4 GPU, then run the notebook again.")
    cache = _io.default_cache_dir()
    drive_mounted = _io.COLAB_DRIVE in cache.parents
    if zh:
        keep = ("Google Drive 已挂载，下一个运行时会直接在那里找到模型。" if drive_mounted else
                "每个新的运行时都要重新训练一次。若想保留模型，请在运行本单元格之前挂载 Google Drive"
                "（from google.colab import drive; drive.mount('/content/drive')），然后重新运行本单元格。")
    else:
        keep = ("Google Drive is mounted, so the next runtime finds the model there." if drive_mounted else
                "Each new runtime trains it again. To keep it, mount Google Drive before this cell "
                "(from google.colab import drive; drive.mount('/content/drive')) and run this cell again.")
    edition = f"{BOOK_URL}/zh/" if zh else f"{BOOK_URL}/"
    page = f"{edition}book/{chapter}.html" if chapter else edition
    if zh:
        return "\n".join([
            f"ddpm_lite {__version__}，运行于 {device.type}：{hardware}",
            f"本书的手写数字模型在第一次使用时训练（会显示进度条），并缓存在 {cache} 中。{keep}",
            "本 notebook 是书中的一章：{eq}`name` 标记一个带编号的公式，{cite}`key` 标记一篇参考文献，"
            "{glue:text}`name` 标记一个由代码算出的数，它在计算它的单元格下方以 'name = value' 的形式打印出来。",
            "代码、代码注释和其他打印输出保持英文；练习的判定信息（book.checks）为中文。",
            f"同一页面（公式已编号、参考文献已解析）：{page}",
        ])
    return "\n".join([
        f"ddpm_lite {__version__} on {device.type}: {hardware}",
        f"The book's digits model is trained on first use (a progress bar shows it) and cached in {cache}. {keep}",
        "This notebook is a chapter of the book: {eq}`name` marks a numbered equation, {cite}`key` a reference and "
        "{glue:text}`name` a number the chapter prints as 'name = value' below the cell that computes it.",
        f"The same page, with equations numbered and references resolved: {page}",
    ])


def glue(name: str, value, fmt: str | None = None):
    """Make a computed number available to the chapter's prose (MyST's ``glue:text`` role, by its name).

    Where myst-nb is installed (the book's build and CI) its glue stores the value and nothing is printed: the
    prose shows it, formatted where it is glued. Elsewhere (Colab) one formatted line ``name = value`` shows it
    instead. Returns the value, so a chapter can write ``x = book.glue("x", compute())``.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        myst_glue = None
    if myst_glue is not None:
        myst_glue(name, value, display=False)
    else:
        print(f"{name} = {fmt.format(value) if fmt else _readable(value)}")
    return value


def _readable(value) -> str:
    """A number as a reader wants it: 4 significant digits, thousands separated; anything else as str()."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1e4 and abs(value) < 1e9):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def source_line(obj, text: str) -> int:
    """The line number, in its file, of the one line of ``obj``'s source that contains ``text``.

    obj: a function, class or module (a module: the whole file). Chapters use it to point at the line of
    ``ddpm_lite`` that implements a line of an algorithm, without typing a number that the next edit of the package
    would make wrong. Raises ValueError unless ``text`` occurs exactly once.
    """
    import inspect

    lines, first = inspect.getsourcelines(obj)
    first = first or 1  # a module's source starts at line 1 (getsourcelines says 0)
    found = [first + i for i, line in enumerate(lines) if text in line]
    if len(found) != 1:
        name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
        raise ValueError(f"{text!r} occurs {len(found)} times in the source of {name}, not once")
    return found[0]


def show_images(images: torch.Tensor, nrow: int | None = None, ax=None, title: str | None = None,
                captions=None, caption_colors=None):
    """Draw an image grid (see :func:`image_grid`) on a matplotlib axis and return the axis.

    captions: optional N strings, written small in the bottom-right corner of each image, in caption_colors
    (N matplotlib colours; default yellow).
    """
    import matplotlib.pyplot as plt

    n, _, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    grid = image_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if captions is not None:
        colors = ["yellow"] * n if caption_colors is None else list(caption_colors)
        if len(captions) != n or len(colors) != n:
            raise ValueError(f"give one caption and colour per image: {n} images, {len(captions)} captions, "
                             f"{len(colors)} colours")
        for i, (text, color) in enumerate(zip(captions, colors)):
            row, column = divmod(i, nrow)  # pixel centres are integers, so a tile spans [-0.5, w - 0.5]
            ax.text(column * (w + 1) + w - 0.5, row * (h + 1) + h - 0.5, text, ha="right", va="bottom", fontsize=9,
                    color=color, fontweight="bold")
    return ax


def animate_images(
    frames, titles=None, frame_labels=None, nrow: int | None = None, interval: int = 200, size: float = 2.0,
    dpi: int = 72,
):
    """A JavaScript animation of image grids that plays in a notebook and in the static HTML of the book.

    frames: (S, N, C, H, W) in [-1, 1], or a list of such tensors (one panel each, side by side, same S).
    titles: one title per panel; frame_labels: S strings, shown above the panels frame by frame.
    size: inches per panel; keep S small (about 20): every frame is embedded as a PNG.
    Returns an ``IPython.display.HTML`` (``FuncAnimation.to_jshtml``); display it as a cell's last value.
    """
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    panels = [frames] if isinstance(frames, torch.Tensor) else list(frames)
    steps = {len(p) for p in panels}
    if len(steps) != 1 or any(p.ndim != 5 for p in panels):
        raise ValueError("frames must be (S, N, C, H, W) tensors with the same number S of frames")
    (num_frames,) = steps
    if frame_labels is not None and len(frame_labels) != num_frames:
        raise ValueError(f"need {num_frames} frame labels, got {len(frame_labels)}")
    grids = [[image_grid(frame, nrow) for frame in panel] for panel in panels]  # panel -> S grids (h, w, c)
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size + 0.4), dpi=dpi, squeeze=False)
    shown = []
    for k, (ax, panel) in enumerate(zip(axes[0], grids)):
        first = panel[0].squeeze(-1) if panel[0].shape[-1] == 1 else panel[0]
        shown.append(ax.imshow(first, cmap="gray", vmin=0, vmax=1, interpolation="nearest"))
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[k], fontsize=12)  # 9 pt on the page at this dpi (72)
    label = fig.suptitle(frame_labels[0] if frame_labels else "", fontsize=13)
    fig.tight_layout()

    def draw(i):
        for image, panel in zip(shown, grids):
            image.set_data(panel[i].squeeze(-1) if panel[i].shape[-1] == 1 else panel[i])
        if frame_labels:
            label.set_text(frame_labels[i])
        return [*shown, label]

    animation = FuncAnimation(fig, draw, frames=num_frames, interval=interval, blit=False)
    html = animation.to_jshtml(default_mode="once")
    # matplotlib links Font Awesome from a CDN for the player's icons; the book's theme serves Font Awesome itself,
    # and the page must load nothing from the network (.ci/browser_check.py)
    html = re.sub(r'<link rel="stylesheet"[^>]*font-awesome[^>]*>', "", html)
    plt.close(fig)  # the animation replaces the static figure
    return HTML(html)


# The book's text column at a 1280-px-wide window (sphinx-book-theme's article is 740 px, less its padding): an
# image wider than this is shrunk to fit it, and its text with it.
PAGE_WIDTH_PX = 700
MIN_TEXT_PT = 9.0  # the smallest text a figure may show on the book's page


def smallest_text_pt(fig, page_width_px: float | None = PAGE_WIDTH_PX) -> float:
    """The size, in points as a reader sees it on the book's page, of the smallest text in a matplotlib figure.

    The book shows a figure as a PNG cropped to its drawn content (``bbox_inches="tight"``, 0.1 in of padding), one
    image pixel to a CSS pixel (0.75 pt), shrunk to PAGE_WIDTH_PX when wider. Text of s points is drawn
    s · dpi / 72 pixels high, so it shows at s · dpi / 72 · 0.75 · min(1, PAGE_WIDTH_PX / width) points;
    page_width_px=None: a figure shown at its own size in a box that scrolls sideways (no shrinking). Draws the
    figure first, so that ticks and legends exist; a figure with no text returns inf.
    """
    fig.canvas.draw()
    width_px = (fig.get_tightbbox().width + 0.2) * fig.dpi
    shrink = 1.0 if page_width_px is None else min(1.0, page_width_px / width_px)
    texts = fig.findobj(lambda artist: hasattr(artist, "get_fontsize") and hasattr(artist, "get_text"))
    sizes = [text.get_fontsize() for text in texts if text.get_visible() and text.get_text().strip()]
    return min(sizes, default=math.inf) * fig.dpi / 72 * 0.75 * shrink


def show(fig=None, scroll: bool = False) -> None:
    """Show the open figures (or ``fig``) as ``plt.show()`` does, once each is checked legible on the book's page.

    Raises ValueError, naming the figure and the fix, when a figure's smallest text would show below MIN_TEXT_PT
    (see :func:`smallest_text_pt`). The chapters call it instead of ``plt.show()``. scroll=True: a diagram too wide
    for the page, shown at its own size in a box that scrolls sideways; its cell carries the tag
    ``scroll-figure`` (book/_static/custom.css).
    """
    import matplotlib.pyplot as plt

    figures = [fig] if fig is not None else [plt.figure(number) for number in plt.get_fignums()]
    for figure in figures:
        size = smallest_text_pt(figure, None if scroll else PAGE_WIDTH_PX)
        if size < MIN_TEXT_PT:
            name = (figure._suptitle.get_text() if figure._suptitle else "") or next((ax.get_title() for ax in figure.axes if ax.get_title()), "untitled")
            plt.close(figure)
            raise ValueError(f"figure {name!r}: its smallest text shows at {size:.1f} pt on the book's page, below "
                             f"{MIN_TEXT_PT:g}; make it narrower than {figure.get_figwidth():.1f} in or its text larger")
    plt.show()


# A Sphinx cross-reference role in a docstring, :func:`name`, :meth:`~pkg.Class.name`, :class:`title <target>`
_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|obj|exc|const|ref|doc):`(~?)([^`<]*?)\s*(?:<([^`>]*)>)?`")


def plain_roles(text: str) -> str:
    """Docstring text as a reader of a listing wants it: a Sphinx role (func, meth, class, ...) around a name
    becomes the bare name in single backquotes.

    ``~pkg.mod.name`` shows its last part, ``title <target>`` its title, as Sphinx renders them on the API page.
    """
    def plain(match):
        tilde, name, _target = match.groups()  # with a title, the name shown is the title
        return f"`{name.rsplit('.', 1)[-1] if tilde else name}`"

    return _ROLE.sub(plain, text)


def show_source(obj, fold_after: int = 30) -> None:
    """Display the source of a function, class or method of ddpm_lite, highlighted, under a line naming its lines.

    A listing of at most ``fold_after`` lines shows open; a longer one is folded behind that line (click to open),
    so that a chapter shows the code it discusses without a page of scrolling. The book and Colab show the HTML; a
    plain console prints the source. A decorated function (``@torch.no_grad()``) is listed, and its file named,
    as written; the Sphinx roles in its docstring show as plain names (:func:`plain_roles`).
    """
    import html
    import inspect
    import textwrap
    from pathlib import Path

    from IPython.display import display
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    obj = inspect.unwrap(obj)  # a decorator's wrapper lives in the decorator's file (torch's _contextlib.py)
    lines, first = inspect.getsourcelines(obj)
    code = plain_roles(textwrap.dedent("".join(lines)))
    where = f"{Path(inspect.getsourcefile(obj)).name}, lines {first}–{first + len(lines) - 1}"
    body = highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))
    opened = " open" if len(lines) <= fold_after else ""
    summary = f"<code>{html.escape(obj.__qualname__)}</code> in {where}"
    display({"text/html": f'<details class="ddpm-source"{opened}><summary>{summary}</summary>{body}</details>',
             "text/plain": code}, raw=True)
