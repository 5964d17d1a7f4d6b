"""Images in and out: the one check of image data, grids, and reading and writing .npy, .png and folders of images.

Everywhere in ddpm_lite an image batch is a float tensor (N, C, H, W) with values in [-1, 1] (pixel / 127.5 - 1
for 8-bit images); 2-D toy data are points (N, D). :func:`check_images` is the one place that checks this: the
diffusion losses, the trainer, the reconstruction methods and the command line all call it.

Files: ``.npy`` holds float32 (N, C, H, W) in [-1, 1] (also (H, W) or (C, H, W) for one image); ``.png`` holds one
image or a grid of them (:func:`save_images` writes a grid, :func:`load_images` reads one image); a folder holds
one image per file (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``, ``.webp``, read in name order), all of one
size. Every write is atomic (:func:`ddpm_lite._io.write_atomic`). Pillow and NumPy are imported when needed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from einops import rearrange

from ._io import write_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")  # the files load_images reads from a folder
FILE_SUFFIXES = (".npy", ".png")  # what save_images writes and load_images reads as one file
MAX_GRID = 4096  # images in one PNG grid (64 x 64); the grid is built in memory
SCALE_HINT = "scale it to [-1, 1] first, e.g. x / 127.5 - 1 for 8-bit pixels (x / 255 * 2 - 1)"


def check_images(x, what: str = "x_start") -> None:
    """Raise a one-line ValueError unless ``x`` is image data (N, C, H, W) in [-1, 1] or points (N, D), finite.

    One fused reduction for images: ``|x| <= 1`` is False for NaN and inf as well as for out-of-range pixels.
    The message names what to do: the scaling, a channel axis for (N, H, W), a float dtype for integer pixels.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch tensor (N, C, H, W), got {type(x).__name__}; convert it with "
                         "torch.as_tensor(x, dtype=torch.float32)")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{what} has integer dtype {x.dtype}; {SCALE_HINT}")
    if x.ndim == 4:
        if not bool((x.abs() <= 1).all()):
            finite = bool(torch.isfinite(x).all())
            problem = f"has values from {float(x.min()):g} to {float(x.max()):g}" if finite else "has NaN or inf"
            raise ValueError(f"{what} {problem}; images must be finite and in [-1, 1]: {SCALE_HINT}")
    elif x.ndim == 2:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{what} has NaN or inf values; pass finite data")
    elif x.ndim == 3:
        raise ValueError(f"{what} has shape {tuple(x.shape)}: images need a channel axis, (N, C, H, W); for grey "
                         "images use x[:, None] (or x.unsqueeze(1))")
    else:
        raise ValueError(f"{what} has shape {tuple(x.shape)}; pass images (N, C, H, W) or points (N, D)")


# ---------------------------------------------------------------------------------------------- grids
def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1):
    """Tile images into one picture with ``pad`` pixels of white between them.

    images: (N, C, H, W) in [-1, 1] -> numpy float32 (rows * (H + pad) - pad, nrow * (W + pad) - pad, C) in [0, 1].
    nrow: images per row (default ceil(sqrt(N))).
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
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad].numpy()


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError("reading or writing images needs Pillow: pip install pillow (or use .npy)") from None
    return Image, UnidentifiedImageError


# ---------------------------------------------------------------------------------------------- writing
def save_images(images: torch.Tensor, path: str | os.PathLike, *, nrow: int | None = None, scale: int | None = None,
                padding: int = 2) -> Path:
    """Write images (N, C, H, W) in [-1, 1] to ``path``: .npy (float32, as they are) or .png (one grid).

    PNG: values are clamped to [-1, 1]; ``nrow`` images per row (default ceil(sqrt(N))); ``scale``: nearest-neighbour
    enlargement (default: at least 64 px per image, so 8x8 digits become 64x64); ``padding`` white pixels between
    images; 1 or 3 channels; at most :data:`MAX_GRID` images. The folder is created; the write is atomic.
    Returns the path written.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"{path} must end in .npy or .png")
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor (N, C, H, W), got {getattr(images, 'shape', type(images))}")
    images = images.detach().cpu().float()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        write_atomic(path, lambda f: write_npy(f, tuple(images.shape), [images]))
        return path
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"a PNG grid needs 1 or 3 channels, got {c}; write .npy instead")
    if n > MAX_GRID:
        raise ValueError(f"{n} images are too many for one PNG grid (at most {MAX_GRID}); write .npy instead")
    Image, _ = _pillow()
    scale = scale or max(1, 64 // max(h, w))
    enlarged = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (N, C, sH, sW)
    grid = (image_grid(enlarged, nrow, pad=padding) * 255).round().astype("uint8")  # (H', W', C)
    array = grid[..., 0] if c == 1 else grid
    write_atomic(path, lambda f: Image.fromarray(array).save(f, format="PNG"))
    return path


def write_npy(f, shape: tuple[int, ...], batches) -> None:
    """Write an .npy file of float32 ``shape`` to the binary file f from an iterable of tensors (n, ...).

    The header says the full shape; the data follow batch by batch (C order), so one batch is in memory at a time
    (the command line streams thousands of samples this way).
    """
    import numpy as np

    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
    written = 0
    for batch in batches:
        f.write(np.ascontiguousarray(batch.detach().cpu().numpy(), dtype="<f4").tobytes())
        written += batch.shape[0]
    if written != shape[0]:
        raise RuntimeError(f"wrote {written} images, expected {shape[0]}")


# ---------------------------------------------------------------------------------------------- reading
def load_images(path: str | os.PathLike, *, channels: int | None = None, check: bool = True) -> torch.Tensor:
    """Read images as float32 (N, C, H, W) in [-1, 1] from a .npy file, one .png (or other image) file, or a folder.

    .npy: (N, C, H, W), or (C, H, W) / (H, W) for one image, already in [-1, 1]. An image file or a folder of
    them: 8-bit pixels scaled by x / 127.5 - 1; ``channels`` 1 reads grey, 3 reads RGB (default: grey if every
    image is grey, else RGB). check: also :func:`check_images` (the range); check=False also reads integer .npy
    arrays (masks of 0 and 1) as float32. Errors are one-line ValueErrors
    (FileNotFoundError for a missing path) that name the fix.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}); put the training images "
                             "there, one per file")
        images = _read_pictures(files, channels, str(path))
    elif path.suffix.lower() == ".npy":
        images = _read_npy(path, integers=not check)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        images = _read_pictures([path], channels, str(path))
    else:
        raise ValueError(f"{path} is not .npy, an image file ({', '.join(IMAGE_SUFFIXES)}) or a folder of images")
    if check:
        check_images(images, str(path))
    return images


def _read_npy(path: Path, integers: bool = False) -> torch.Tensor:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable .npy array ({' '.join(str(exc).split())})") from None
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{path} holds {array.dtype} values; save numbers, float32 (N, C, H, W) in [-1, 1]")
    if array.dtype.kind in "iub" and not integers:  # integers: a 0/1 mask, read with check=False
        raise ValueError(f"{path} holds integer pixels ({array.dtype}); {SCALE_HINT}, and save float32")
    if array.ndim in (2, 3):  # one image: (H, W) or (C, H, W)
        array = array.reshape((1,) * (4 - array.ndim) + array.shape)
    if array.ndim != 4:
        raise ValueError(f"{path} holds an array of shape {array.shape}; save images as (N, C, H, W) "
                         "(or (C, H, W), (H, W) for one image)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _read_pictures(files: list[Path], channels: int | None, where: str) -> torch.Tensor:
    import numpy as np

    Image, UnidentifiedImageError = _pillow()
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey), 3 (RGB) or None, got {channels!r}")
    pictures, sizes = [], {}
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                pictures.append(image.copy())
        except (UnidentifiedImageError, OSError):
            raise ValueError(f"{file} is not a readable image; remove it from {where} or replace it") from None
        sizes.setdefault(pictures[-1].size, file)
    if len(sizes) > 1:
        (size_a, file_a), (size_b, file_b) = list(sizes.items())[:2]
        raise ValueError(f"the images in {where} have {len(sizes)} sizes ({file_a.name} is {size_a[0]}x{size_a[1]}, "
                         f"{file_b.name} is {size_b[0]}x{size_b[1]}); resize them to one size first")
    if channels is None:
        channels = 1 if all(p.mode in ("1", "L", "LA", "I", "I;16", "F") for p in pictures) else 3
    mode = "L" if channels == 1 else "RGB"
    arrays = [np.asarray(p.convert(mode), dtype=np.float32) for p in pictures]
    stacked = np.stack(arrays) / 127.5 - 1  # (N, H, W) or (N, H, W, 3)
    stacked = stacked[:, None] if channels == 1 else stacked.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked, dtype=np.float32))
