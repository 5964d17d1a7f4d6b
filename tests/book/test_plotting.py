"""ddpm_lite.book.plotting: the grid's layout, the animation, source_line, glue."""
import inspect
import re
import sys

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import ddpm_lite as dl
from ddpm_lite import book
from ddpm_lite.book.plotting import animate_images, image_grid, source_line


def test_image_grid_layout_and_range():
    images = torch.stack([torch.full((1, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # (3, 1, 2, 3)
    grid = image_grid(images, nrow=2, pad=1)
    assert grid.shape == (2 * (2 + 1) - 1, 2 * (3 + 1) - 1, 1)  # 2 rows x 2 columns, 1-pixel gutters
    assert grid[0, 0, 0] == 0.0 and grid[0, 4, 0] == 0.5 and grid[3, 0, 0] == 1.0  # [-1, 1] -> [0, 1]
    assert grid[3, 4, 0] == 1.0  # the empty fourth cell is white
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        image_grid(torch.zeros(2, 8, 8))


def test_show_images_puts_each_caption_in_the_corner_of_its_image():
    import matplotlib.pyplot as plt

    images = torch.zeros(5, 1, 8, 8)
    ax = book.show_images(images, nrow=3, captions=list("abcde"), caption_colors=["red"] * 4 + ["lime"])
    texts = {t.get_text(): t for t in ax.texts}
    assert sorted(texts) == list("abcde")
    # the 5th image is row 1, column 1: its bottom-right pixel edge is at (1 * 9 + 7.5, 1 * 9 + 7.5)
    assert texts["e"].get_position() == (16.5, 16.5) and texts["e"].get_color() == "lime"
    assert texts["a"].get_position() == (7.5, 7.5)
    with pytest.raises(ValueError, match="one caption and colour per image"):
        book.show_images(images, captions=["a"])
    plt.close("all")


def test_animate_images_embeds_every_frame():
    frames = torch.rand(3, 4, 1, 8, 8) * 2 - 1  # (S, N, C, H, W)
    html = animate_images(frames, frame_labels=["a", "b", "c"]).data
    assert "<script" in html and html.count("data:image/png;base64") >= 3


def test_source_line_points_at_the_line():
    line = source_line(dl.GaussianDiffusion.q_sample, "if noise is None")
    lines, first = inspect.getsourcelines(dl.GaussianDiffusion.q_sample)
    assert "if noise is None" in lines[line - first]
    with pytest.raises(ValueError, match="occurs 0 times"):
        source_line(dl.GaussianDiffusion.q_sample, "no such text anywhere")


def test_source_line_of_a_module_counts_from_its_first_line():
    from ddpm_lite import training

    line = source_line(training, "while not stop:")  # in the trainer's loop, a private function of the module
    assert inspect.getsource(training).splitlines()[line - 1].strip() == "while not stop:"


def test_glue_in_the_book_stores_and_prints_nothing(capsys):
    """With myst-nb (the book's build, CI) the value goes to the prose only: no output box per number."""
    pytest.importorskip("myst_nb")
    assert book.glue("answer", 42.123456789) == 42.123456789
    assert capsys.readouterr().out == ""


def test_glue_in_colab_prints_one_formatted_line(capsys, monkeypatch):
    """Without myst-nb (Colab) each number prints once, formatted; the value is returned unchanged."""
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import myst_nb now raises ImportError
    assert book.glue("share", 91.66666865348816) == 91.66666865348816
    assert book.glue("steps", 20000) == 20000
    assert book.glue("tiny", 0.000123456) == 0.000123456
    assert book.glue("ratio", 0.5, "{:.0%}") == 0.5
    assert capsys.readouterr().out.splitlines() == ["share = 91.67", "steps = 20,000", "tiny = 0.0001235", "ratio = 50%"]


def test_smallest_text_is_measured_as_the_page_shows_it():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)  # narrower than the page: shown at its own size
    ax.set_title("title", fontsize=12)
    ax.text(0.5, 0.5, "small", fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
    assert book.smallest_text_pt(fig) == pytest.approx(8 * 100 / 72 * 0.75)  # 8 pt at 100 dpi: 8.33 pt on the page
    fig.set_size_inches(14, 3)  # twice the page: shrunk to it, and the text with it
    shrink = book.plotting.PAGE_WIDTH_PX / ((fig.get_tightbbox().width + 0.2) * fig.dpi)
    assert book.smallest_text_pt(fig) == pytest.approx(8 * 100 / 72 * 0.75 * shrink)
    plt.close("all")


def test_show_refuses_a_figure_whose_text_the_page_would_shrink_below_9_pt():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 4))
    ax.plot([0, 1], label="a line")
    ax.legend(fontsize=7)
    fig.suptitle("too wide")
    with pytest.raises(ValueError, match=r"figure 'too wide': its smallest text shows at \d\.\d pt .* below 9"):
        book.show()
    assert plt.get_fignums() == []  # the refused figure is closed, not left for the next cell
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], label="a line")
    ax.legend()
    book.show()  # 10 pt at 6 in: legible


def test_show_source_folds_a_long_listing_and_keeps_a_short_one_open(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    book.show_source(dl.timestep_embedding)
    book.show_source(dl.GaussianDiffusion.training_losses, fold_after=5)
    short, long = shown
    assert '<details class="ddpm-source" open>' in short["text/html"] and "timestep_embedding" in short["text/html"]
    assert '<details class="ddpm-source">' in long["text/html"]  # folded
    assert long["text/plain"].startswith("def training_losses(")  # dedented source for a plain console
    lines, first = inspect.getsourcelines(dl.timestep_embedding)
    assert f"lines {first}–{first + len(lines) - 1}" in short["text/html"]


def test_show_source_of_a_decorated_function_names_its_own_file_and_lines(monkeypatch):
    """calc_bpd_loop is wrapped by @torch.no_grad(): the header names diffusion.py, not torch's _contextlib.py."""
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    wrapped = dl.GaussianDiffusion.calc_bpd_loop
    assert inspect.unwrap(wrapped) is not wrapped  # still decorated, or this test tests nothing
    book.show_source(wrapped)
    lines, first = inspect.getsourcelines(inspect.unwrap(wrapped))
    html = shown[0]["text/html"]
    assert f"diffusion.py, lines {first}–{first + len(lines) - 1}" in html and "_contextlib" not in html
    assert "<code>GaussianDiffusion.calc_bpd_loop</code>" in html


def test_show_source_shows_docstring_roles_as_plain_names(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    book.show_source(dl.GaussianDiffusion.training_losses)  # its docstring cites :func:`~ddpm_lite.training.train`
    assert ":func:" in inspect.getsource(dl.GaussianDiffusion.training_losses)
    plain = shown[0]["text/plain"]
    assert "`train`" in plain and not re.search(r":(func|meth|class):`", plain + shown[0]["text/html"])
    assert plain.count("\n") == inspect.getsource(dl.GaussianDiffusion.training_losses).count("\n")  # lines kept


@pytest.mark.parametrize("text, shown", [
    (":func:`~ddpm_lite.training.train`", "`train`"),
    (":class:`SpacedModel`", "`SpacedModel`"),
    (":meth:`GaussianDiffusion.q_sample`", "`GaussianDiffusion.q_sample`"),
    (":py:func:`x`", "`x`"),
    (":func:`the check <ddpm_lite.book.checks.check_q_sample>`", "`the check`"),
    ("see :mod:`ddpm_lite.book.checks` and ``x_t``", "see `ddpm_lite.book.checks` and ``x_t``"),
    ("no role `here`", "no role `here`"),
])
def test_plain_roles_renders_them_as_sphinx_shows_them(text, shown):
    assert book.plain_roles(text) == shown
