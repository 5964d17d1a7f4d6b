"""Small helpers the book's chapters share: notebook setup and image grids.

matplotlib is imported inside the functions that draw, so ``import ddpm_lite`` stays light.
"""
from __future__ import annotations

import math
import os
import random

import torch
from einops import rearrange


def setup_notebook(seed: int = 0) -> torch.device:
    """Seed every random number generator once, at the top of a chapter, and pick the device.

    Returns cuda when a GPU is present (Colab), else cpu. On CPU, torch uses every core it may.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return torch.device("cpu")


def glue(name: str, value, fmt: str = "{}"):
    """Make a computed number available to the chapter's prose as {glue:text}`name` and print it.

    In the built book myst-nb's glue stores the value; elsewhere (Colab) the printed line shows it.
    Returns the value, so a chapter can write ``x = dl.glue("x", compute())``.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        myst_glue = None
    if myst_glue is not None:
        myst_glue(name, value, display=False)
    print(f"{name} = {fmt.format(value)}")
    return value


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """Tile images into one picture with ``pad`` pixels of white between them.

    images: (N, C, H, W) in [-1, 1] -> (rows * (H + pad) - pad, nrow * (W + pad) - pad, C) in [0, 1].
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n = images.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2)
    x = torch.nn.functional.pad(x, (0, pad, 0, pad), value=1.0)  # white gutter right and below each image
    blank = torch.ones(rows * nrow - n, *x.shape[1:])
    x = torch.cat([x, blank])
    grid = rearrange(x, "(r c) ch h w -> (r h) (c w) ch", r=rows, c=nrow)
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad]


def show_images(images: torch.Tensor, nrow: int | None = None, ax=None, title: str | None = None):
    """Draw an image grid (see :func:`image_grid`) on a matplotlib axis and return the axis."""
    import matplotlib.pyplot as plt

    grid = image_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
