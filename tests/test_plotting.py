"""ddpm_lite.book.plotting: the grid's layout, the animation, source_line, glue."""
import inspect
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
