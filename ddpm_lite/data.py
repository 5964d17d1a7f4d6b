"""Datasets for ddpm_lite: image sets scaled to [-1, 1] and 2-D toy distributions.

Image datasets
--------------
``load_dataset(name)`` returns a float32 tensor of shape (N, C, H, W) with
values in [-1, 1] (pixel / max_pixel * 2 - 1), the range DDPM assumes for x_0.
``load_dataset_with_labels(name)`` returns the same images and their int64
class labels (N,).

=================  ===========  ========  ==================================
name               shape        N         source
=================  ===========  ========  ==================================
``digits``         (1, 8, 8)    1437/360  scikit-learn, ships offline
``mnist``          (1, 28, 28)  60k/10k   torchvision (files or download)
``fashion_mnist``  (1, 28, 28)  60k/10k   torchvision (files or download)
``cifar10``        (3, 32, 32)  50k/10k   torchvision (files or download)
=================  ===========  ========  ==================================

``digits`` is the default because it needs no network: 1,797 real hand-written
digits, 8x8 pixels, 17 grey levels (0..16). scikit-learn ships no writer ids and
no official split, so ddpm_lite fixes one, seeded and documented
(:func:`digits_split_indices`): ``train=True`` gives the 1,437 training digits,
``train=False`` the 360 held-out digits that no model, no classifier and no
chapter trains on. Every quality number (Fréchet distance, bits/dim) is measured
on the held-out digits; ``train=None`` returns all 1,797 (for pictures only).

The torchvision sets look for their files under ``root``, which defaults to
``$DDPM_LITE_DATA`` or else the folder ``data`` in ddpm_lite's cache (:func:`ddpm_lite._io.default_cache_dir`:
``~/.cache/ddpm_lite/data`` on most machines). If they are missing
(and ``download=False``, or the download fails) a one-line
:class:`DatasetNotFoundError` says what to do. For the MNIST family, a folder
holding only one split's raw IDX files (``{root}/MNIST/raw/t10k-images-idx3-ubyte.gz``
etc.) is enough to load that split.

28x28 images do not halve cleanly three times; ``pad_to=32`` pads them with the
background value -1 so a U-Net with several downsamplings can take them.

2-D toy distributions
---------------------
``make_toy_2d(name, n)`` samples ``two_moons``, ``swiss_roll`` or
``gaussian_mixture`` as (n, 2) float32, each scaled to roughly unit variance and
lying (almost) within [-2, 2]. The mixture is the :class:`GaussianMixture`
returned by ``GaussianMixture.circle()``, whose parameters, density and exact
score are available for the math chapters.

Heavy dependencies (scikit-learn, torchvision) are imported only when needed.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from ._io import default_cache_dir
from .images import SCALE_HINT, check_images

__all__ = [
    "DATASETS",
    "SPLITS",
    "DIGITS_HELDOUT_SIZE",
    "DIGITS_SPLIT_SEED",
    "TOY_2D",
    "DatasetNotFoundError",
    "GaussianMixture",
    "as_images",
    "default_data_root",
    "digits_split_indices",
    "load_dataset",
    "load_dataset_with_labels",
    "make_toy_2d",
    "to_uint8",
]

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
"""Names accepted by :func:`load_dataset`."""

Split = Literal["train", "test"]
SPLITS = get_args(Split)
"""A dataset's two splits: ``train`` (load_dataset's train=True) and ``test`` (train=False; for digits the 360
held-out digits)."""

DIGITS_HELDOUT_SIZE = 360
"""Digits held out (20 %): the rest, 1,437, are the training split."""

DIGITS_SPLIT_SEED = 0
"""Seed of the one permutation that splits the digits (changing it would change every number in the book)."""

TOY_2D = ("two_moons", "swiss_roll", "gaussian_mixture")
"""Names accepted by :func:`make_toy_2d`."""

_NUM_DIGITS = 1797  # len(sklearn.datasets.load_digits().images)

# Display name and torchvision folder name for the MNIST family.
_MNIST_FAMILY = {"mnist": ("MNIST", "MNIST"), "fashion_mnist": ("Fashion-MNIST", "FashionMNIST")}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk (and were not, or could not be, downloaded).

    ``missing``: what is not there (and where); ``other_split``: the split that is there instead, or None. The
    message adds what to do in Python; the command line says it in flags.
    """

    def __init__(self, missing: str, other_split: str | None = None):
        self.missing, self.other_split = missing, other_split
        option = {"test": "train=False", "train": "train=True"}.get(other_split)
        fix = (f"the {other_split} split is: use {option}, or put the missing files there" if option else
               "set DDPM_LITE_DATA to the folder that holds it, run with download=True (needs a network), or use "
               "load_dataset('digits'), which ships offline")
        super().__init__(f"{missing}; {fix}")


def default_data_root() -> Path:
    """Where torchvision datasets are looked for: ``$DDPM_LITE_DATA``, else ``data`` in ddpm_lite's cache folder."""
    env = os.environ.get("DDPM_LITE_DATA")
    return Path(env).expanduser() if env else default_cache_dir() / "data"


# ---------------------------------------------------------------------------
# Image datasets
# ---------------------------------------------------------------------------


def load_dataset(name: str = "digits", **options) -> torch.Tensor:
    """Load an image dataset as float32 in [-1, 1] -> (N, C, H, W): :func:`load_dataset_with_labels` without the labels.

    options: root, train, download, limit, pad_to, as there. ``load_dataset("digits")`` gives the 1,437 training
    digits, ``load_dataset("digits", train=False)`` the 360 held-out ones.
    """
    images, _ = load_dataset_with_labels(name, **options)
    return images


def load_dataset_with_labels(
    name: str = "digits",
    *,
    root: str | os.PathLike | None = None,
    train: bool | None = True,
    download: bool = False,
    limit: int | None = None,
    pad_to: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an image dataset and its labels: images (N, C, H, W) float32 in [-1, 1], labels (N,) int64 in 0..9.

    Args:
        name: one of :data:`DATASETS` (``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``).
        root: folder holding the torchvision datasets; default :func:`default_data_root`.
            Ignored for ``digits``.
        train: training split if True, the test (held-out) split if False. For ``digits``: the
            1,437 training or 360 held-out digits of :func:`digits_split_indices`; None gives all 1,797
            (None is accepted for ``digits`` only).
        download: let torchvision download missing files (needs a network).
        limit: keep only the first ``limit`` images.
        pad_to: pad each image with the background value -1 (centred) to
            ``pad_to x pad_to``, e.g. 28 -> 32 for MNIST.

    Raises:
        ValueError: unknown ``name`` or bad ``limit``/``pad_to``.
        DatasetNotFoundError: the files are missing and could not be downloaded.
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")

    if train is None and key != "digits":
        raise ValueError(f"train=None (all images) is for 'digits' only; use train=True or train=False for {name!r}")
    if key == "digits":
        pixels, labels, max_value = _load_digits()
        if train is not None:
            train_idx, heldout_idx = digits_split_indices()
            keep = train_idx if train else heldout_idx
            pixels, labels = pixels[keep], labels[keep]
    else:
        data_root = Path(root).expanduser() if root is not None else default_data_root()
        if key in _MNIST_FAMILY:
            pixels, labels = _load_mnist_family(key, data_root, train, download)
        else:
            pixels, labels = _load_cifar10(data_root, train, download)
        max_value = 255.0

    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    images = pixels.to(torch.float32) / max_value * 2 - 1
    if pad_to is not None:
        images = _pad(images, pad_to)
    return images.contiguous(), labels.to(torch.int64)


# ---------------------------------------------------------------------------
# Your own data
# ---------------------------------------------------------------------------

IMAGE_KEYS = ("image", "images", "pixel_values", "img", "x")  # dict items: where the image is looked for


def as_images(data, what: str = "data") -> torch.Tensor:
    """The images a student already has -> float32 (N, C, H, W) in [-1, 1] (or points (N, D)), checked.

    data: a tensor or NumPy array (N, C, H, W) in [-1, 1] (or (N, D)); a path to a folder of images or a .npy file
    (:func:`ddpm_lite.images.load_images`); a torch ``Dataset`` or ``DataLoader`` whose items are images, or tuples
    ``(image, label, ...)`` (a torchvision dataset, e.g. ``torchvision.datasets.MNIST(root, train=False)``), or dicts
    with an "image" entry. PIL images are scaled from 8-bit pixels (x / 127.5 - 1); tensors must already be in
    [-1, 1] (``transforms.ToTensor()`` gives [0, 1]: add ``transforms.Normalize([0.5], [0.5])``).
    Everything is read into memory once (the trainer samples its batches from there).
    Errors (:func:`ddpm_lite.images.check_images`) are one line naming the fix.
    """
    from torch.utils.data import DataLoader, Dataset

    from .images import load_images

    if isinstance(data, (str, os.PathLike)):
        return load_images(data)
    if isinstance(data, DataLoader):
        images = torch.cat([_item_image(batch, what, batched=True) for batch in data])
    elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")
                                        and not isinstance(data, torch.Tensor) and not hasattr(data, "__array__")):
        items = [_item_image(data[i], what, batched=False) for i in range(len(data))]
        if not items:
            raise ValueError(f"{what} is empty; pass at least one image")
        shapes = {tuple(item.shape) for item in items}
        if len(shapes) > 1:
            raise ValueError(f"{what} holds images of {len(shapes)} shapes ({', '.join(map(str, sorted(shapes)[:2]))}, "
                             "...); resize or crop them to one size first")
        images = torch.stack(items)
    else:
        images = torch.as_tensor(data)
        if not images.dtype.is_floating_point:
            check_images(images, what)  # the integer-dtype message
    images = images.to(torch.float32).contiguous()
    check_images(images, what)
    if len(images) == 0:
        raise ValueError(f"{what} is empty; pass at least one image")
    if images.ndim == 4 and images.numel() > 1 and float(images.min()) >= 0:
        warnings.warn(f"{what} has no negative values (from {float(images.min()):g} to {float(images.max()):g}): "
                      "images in [0, 1] (transforms.ToTensor()) must be rescaled to [-1, 1] with x * 2 - 1",
                      stacklevel=2)
    return images


def _item_image(item, what: str, batched: bool) -> torch.Tensor:
    """One dataset item (or one loader batch) -> its image tensor: (C, H, W), or (B, C, H, W) when batched."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, dict):
        key = next((k for k in IMAGE_KEYS if k in item), None)
        if key is None:
            raise ValueError(f"{what}: its items are dicts without an image entry ({', '.join(IMAGE_KEYS)}); "
                             f"got keys {sorted(item)[:5]}")
        item = item[key]
    if hasattr(item, "mode") and hasattr(item, "size") and not isinstance(item, torch.Tensor):  # a PIL image
        import numpy as np

        array = np.asarray(item.convert("L" if item.mode in ("1", "L", "I", "F", "I;16") else "RGB"), np.float32)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array / 127.5 - 1))
    x = torch.as_tensor(item)
    if not x.dtype.is_floating_point:
        raise ValueError(f"{what} yields integer pixels ({x.dtype}); {SCALE_HINT}")
    if x.ndim == (3 if batched else 2):  # grey images without a channel axis: add it
        x = x.unsqueeze(-3)
    return x


def _load_digits() -> tuple[torch.Tensor, torch.Tensor, float]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32).reshape(-1, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return pixels, labels, 16.0


def digits_split_indices() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed split of the 1,797 digits: (train indices (1437,), held-out indices (360,)), int64.

    One random permutation with :data:`DIGITS_SPLIT_SEED`; its first :data:`DIGITS_HELDOUT_SIZE` entries are held
    out. scikit-learn's copy has no writer ids, so a split by writer is not possible; a writer's other digits may
    be in the training split, which makes held-out numbers slightly optimistic compared with unseen writers.
    """
    perm = torch.randperm(_NUM_DIGITS, generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    return perm[DIGITS_HELDOUT_SIZE:], perm[:DIGITS_HELDOUT_SIZE]


def _not_found(display: str, root: Path, reason: str = "") -> DatasetNotFoundError:
    why = f" ({reason})" if reason else ""
    return DatasetNotFoundError(f"{display} not found under {root}{why}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _import_torchvision_datasets():
    try:
        from torchvision import datasets
    except ImportError:
        raise ImportError(
            "this dataset needs torchvision: pip install 'ddpm_lite[vision]' "
            "(or use load_dataset('digits'), which needs only scikit-learn)"
        ) from None
    return datasets


def _load_mnist_family(
    key: str, root: Path, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    display, folder = _MNIST_FAMILY[key]
    datasets = _import_torchvision_datasets()
    cls = datasets.MNIST if key == "mnist" else datasets.FashionMNIST
    reason = ""
    try:
        ds = cls(str(root), train=train, download=download)
        return ds.data.unsqueeze(1), ds.targets
    except RuntimeError as exc:  # "Dataset not found..." or "Error downloading..."
        msg = str(exc).lower()
        if "not found" not in msg and "download" not in msg:
            raise
        if download and "not found" not in msg:
            reason = f"download failed: {_one_line(exc)}"
    except OSError as exc:  # network errors (URLError) while downloading
        if not download:
            raise
        reason = f"download failed: {_one_line(exc)}"

    # torchvision insists on all four raw files (both splits) before loading
    # either split; read the requested split's IDX files directly if present.
    raw = root / folder / "raw"
    loaded = _read_raw_idx_split(raw, "train" if train else "t10k")
    if loaded is not None:
        return loaded
    split, other = ("training", "test") if train else ("test", "training")
    if _read_raw_idx_split(raw, "t10k" if train else "train", probe=True):
        option = "train=False (--split test)" if train else "train=True (--split train)"
        prefix = "train" if train else "t10k"
        raise DatasetNotFoundError(f"the {display} {split} split is not under {root} ({raw}/{prefix}-*-ubyte[.gz] "
                                   "are missing)", other_split="test" if train else "train") from None
    raise _not_found(f"{display} ({split} split)", root, reason) from None


def _find_raw(raw_dir: Path, stem: str) -> Path | None:
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_raw_idx_split(raw_dir: Path, prefix: str, probe: bool = False):
    """Read ``{prefix}-images-idx3-ubyte[.gz]`` and labels with torchvision's IDX readers -> (images, labels) or None.

    probe=True: only say whether both files are there (True/False).
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    image_path = _find_raw(raw_dir, f"{prefix}-images-idx3-ubyte")
    label_path = _find_raw(raw_dir, f"{prefix}-labels-idx1-ubyte")
    if probe:
        return image_path is not None and label_path is not None
    if image_path is None or label_path is None:
        return None
    # torchvision's readers take an uncompressed path; decompress .gz files into
    # a private temporary folder (the data folder may be read-only).
    with tempfile.TemporaryDirectory(prefix="ddpm_lite_idx_") as tmp:

        def plain(path: Path) -> str:
            if path.suffix != ".gz":
                return str(path)
            out = Path(tmp) / path.stem
            with gzip.open(path, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            return str(out)

        images = read_image_file(plain(image_path))
        labels = read_label_file(plain(label_path))
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    return images.unsqueeze(1), labels


def _load_cifar10(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    datasets = _import_torchvision_datasets()
    reason = ""
    try:
        ds = datasets.CIFAR10(str(root), train=train, download=download)
        pixels = torch.as_tensor(ds.data).permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        return pixels, torch.as_tensor(ds.targets, dtype=torch.int64)
    except RuntimeError as exc:  # "Dataset not found or corrupted..."
        msg = str(exc).lower()
        if "not found" not in msg and "download" not in msg:
            raise
        if download:
            reason = f"download failed: {_one_line(exc)}"
    except OSError as exc:  # network errors (URLError) while downloading
        if not download:
            raise
        reason = f"download failed: {_one_line(exc)}"
    raise _not_found("CIFAR-10", root, reason) from None


def _pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-pad (N, C, H, W) to (N, C, size, size) with the background value -1."""
    h, w = images.shape[-2:]
    if not isinstance(size, int) or size < max(h, w):
        raise ValueError(f"pad_to must be an int >= the image size {h}x{w}, got {size!r}")
    top, left = (size - h) // 2, (size - w) // 2
    padding = (left, size - w - left, top, size - h - top)
    return torch.nn.functional.pad(images, padding, mode="constant", value=-1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Map floats in [-1, 1] to uint8 0..255 (rounded, out-of-range values clipped).

    The inverse of the scaling in :func:`load_dataset` for 8-bit data:
    ``to_uint8(v / 255 * 2 - 1) == v`` for every v in 0..255. Shape is kept.
    """
    return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------
# 2-D toy distributions
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianMixture:
    """Isotropic Gaussian mixture p(x) = sum_k weights[k] * N(x; means[k], std^2 I).

    Because every component is Gaussian, the DDPM forward marginal
    q(x_t) = int N(x_t; sqrt(abar) x_0, (1 - abar) I) p(x_0) dx_0 is again such a
    mixture (:meth:`noised`), so the exact score and the optimal noise prediction
    are available in closed form::

        gm_t = gm.noised(alpha_bar_t)
        eps_star = -math.sqrt(1 - alpha_bar_t) * gm_t.score(x_t)

    Attributes:
        weights: (K,) float64, non-negative, summing to 1.
        means: (K, D) float64.
        std: per-coordinate standard deviation of every component.
    """

    weights: torch.Tensor
    means: torch.Tensor
    std: float

    def __post_init__(self) -> None:
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        m = torch.as_tensor(self.means, dtype=torch.float64)
        if w.ndim != 1 or m.ndim != 2 or m.shape[0] != w.shape[0]:
            raise ValueError(f"need weights (K,) and means (K, D); got {tuple(w.shape)} and {tuple(m.shape)}")
        if (w < 0).any() or not math.isclose(float(w.sum()), 1.0, abs_tol=1e-6):
            raise ValueError("weights must be non-negative and sum to 1")
        if not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "std", float(self.std))

    @classmethod
    def circle(cls, k: int = 8, radius: float = math.sqrt(2.0), std: float = 0.1) -> GaussianMixture:
        """``k`` equally weighted components on a circle (the ``gaussian_mixture`` toy).

        With the defaults each coordinate has variance radius^2 / 2 + std^2 = 1.01.
        """
        angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        return cls(torch.full((k,), 1.0 / k, dtype=torch.float64), means, std)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n samples -> (n, D) float32."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[component] + self.std * noise).to(torch.float32)

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # (N, K)
        log_norm = -0.5 * self.dim * math.log(2 * math.pi * self.std**2)
        return torch.log(self.weights)[None] + log_norm - 0.5 * sq / self.std**2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x (N, D) -> (N,) float64."""
        return torch.logsumexp(self._component_log_probs(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) for x (N, D) -> (N, D) float64.

        = sum_k r_k(x) (means[k] - x) / std^2, with r_k the posterior responsibilities.
        """
        resp = torch.softmax(self._component_log_probs(x), dim=1)  # (N, K)
        return (resp @ self.means - x.to(torch.float64)) / self.std**2

    def noised(self, alpha_bar: float) -> GaussianMixture:
        """Marginal of x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps, x_0 ~ self."""
        alpha_bar = float(alpha_bar)
        if not 0.0 <= alpha_bar <= 1.0:
            raise ValueError(f"alpha_bar must be in [0, 1], got {alpha_bar}")
        std = math.sqrt(alpha_bar * self.std**2 + 1.0 - alpha_bar)
        return GaussianMixture(self.weights, math.sqrt(alpha_bar) * self.means, std)


def make_toy_2d(name: str, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample a 2-D toy distribution -> (n, 2) float32, roughly unit variance, within ~[-2, 2].

    Names (:data:`TOY_2D`):

    * ``two_moons``: two interleaved half circles (noise 0.05 before scaling),
      each point on either moon with probability 1/2.
    * ``swiss_roll``: the spiral (t cos t, t sin t), t in [1.5 pi, 4.5 pi], noise 0.3, divided by 7.
    * ``gaussian_mixture``: ``GaussianMixture.circle().sample(n, generator=generator)``.

    All randomness comes from ``generator`` (or torch's global RNG if None), so the
    same seeded generator gives the same points.
    """
    if name not in TOY_2D:
        raise ValueError(f"unknown toy distribution {name!r}; valid names: {', '.join(TOY_2D)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    g = generator
    if name == "gaussian_mixture":
        return GaussianMixture.circle().sample(n, generator=g)
    if name == "two_moons":
        t = math.pi * torch.rand(n, generator=g)
        lower = torch.rand(n, generator=g) < 0.5
        x = torch.where(lower, 1 - torch.cos(t), torch.cos(t))
        y = torch.where(lower, 0.5 - torch.sin(t), torch.sin(t))
        points = torch.stack([x, y], dim=1) + 0.05 * torch.randn(n, 2, generator=g)
        return ((points - torch.tensor([0.5, 0.25])) / 0.85).to(torch.float32)
    # swiss_roll
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    points = points + 0.3 * torch.randn(n, 2, generator=g)
    return (points / 7.0).to(torch.float32)
