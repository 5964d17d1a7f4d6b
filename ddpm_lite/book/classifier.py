"""Sample quality for 8x8 digits: a Fréchet distance in a small classifier's feature space.

FID (Heusel et al. 2017) compares two sets of images by the Fréchet distance
between Gaussians fitted to their Inception-v3 features. Inception needs large
RGB images and a download, so for the offline ``digits`` dataset ddpm_lite
trains its own small CNN (:class:`DigitClassifier`, a few seconds on a CPU) and
uses its 128 penultimate activations as the feature space::

    fd = digits_fd(samples)              # samples: (N, 1, 8, 8) in [-1, 1]
    floor = real_vs_real_floor(len(samples))
    labels, confidence = classify_digits(samples)   # which digit, and how sure the classifier is

The number is *not* comparable with published FIDs, only with other numbers
from this module. Samples are scored against the 360 **held-out** digits
(``load_dataset("digits", train=False)``), which no model or classifier here
trains on, so a generator that memorised its training digits gains nothing.
The estimate from finite samples is biased upward, so even a perfect generator
scores above zero, and more so at small n: always state n and show
:func:`real_vs_real_floor` beside it, the one floor of this project — n real
*training* digits scored by the same function against the same held-out digits.
Compare models at the same n.

The classifier is trained deterministically on the CPU on the training split of the digits
(1,437 images; a few seconds), cached in memory and on disk in the cache folder of
:func:`~ddpm_lite._io.default_cache_dir` (``$DDPM_LITE_CACHE``; in Colab with Drive mounted, a folder in Drive;
else ``~/.cache/ddpm_lite``) as a plain state_dict. The Fréchet distance itself is
:func:`ddpm_lite.metrics.frechet_distance`; any feature space will do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .._io import default_cache_dir, save_atomic
from ..metrics import feature_statistics, frechet_distance

__all__ = [
    "DigitClassifier",
    "classifier_accuracy",
    "classify_digits",
    "digit_features",
    "digits_fd",
    "digits_split",
    "get_digit_classifier",
    "real_vs_real_floor",
    "train_digit_classifier",
]

CLASSIFIER_VERSION = 1
"""Bump when the architecture or training recipe changes; it names the cache file."""


_classifier: DigitClassifier | None = None  # in-memory cache of get_digit_classifier()
_reference_stats: tuple[torch.Tensor, torch.Tensor] | None = None  # feature stats of the 360 held-out digits


class DigitClassifier(nn.Module):
    """Small CNN for (N, 1, 8, 8) digits in [-1, 1] -> (N, 10) logits.

    conv3x3(32) -> ReLU -> conv3x3(64) -> ReLU -> maxpool 2 -> linear(128) -> ReLU
    -> linear(10). :meth:`features` returns the 128 ReLU activations.
    """

    feature_dim = 128

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 8, 8) -> (N, 128) penultimate activations."""
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 8, 8) -> (N, 10) logits."""
        return self.head(self.features(x))


def _check_digit_images(x: torch.Tensor, what: str = "samples", min_n: int = 1) -> torch.Tensor:
    """Validate (N, 1, 8, 8) finite images; return them as float32 on the CPU, detached."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of shape (N, 1, 8, 8), got {type(x).__name__}")
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8) or x.shape[0] < min_n:
        raise ValueError(
            f"{what} must have shape (N, 1, 8, 8) with N >= {min_n} (8x8 digits in [-1, 1]), "
            f"got {tuple(x.shape)}"
        )
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return x


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The package's one split of the digits (:func:`~ddpm_lite.data.digits_split_indices`), with labels.

    Returns:
        train_images (1437, 1, 8, 8), train_labels (1437,), heldout_images (360, 1, 8, 8),
        heldout_labels (360,).
    """
    from ..data import load_dataset_with_labels

    return (*load_dataset_with_labels("digits", train=True), *load_dataset_with_labels("digits", train=False))


def train_digit_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` with Adam; deterministic for a given seed.

    The callers' RNG state is left untouched (training runs inside
    ``torch.random.fork_rng``). Training uses one CPU thread (restored after):
    the network is so small that extra threads only add overhead, and a fixed
    thread count keeps the result reproducible. Returns the model in eval mode
    on the CPU.

    Args:
        images: (N, 1, 8, 8) in [-1, 1].
        labels: (N,) int64 in 0..9.
    """
    images = _check_digit_images(images, "images")
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        try:
            return _train(images, labels, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
        finally:
            torch.set_num_threads(threads)


@torch.enable_grad()  # callers may be inside no_grad (digit_features trains the classifier on first use)
def _train(images, labels, *, steps, batch_size, lr, seed) -> DigitClassifier:
    torch.manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,))
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of (N, 1, 8, 8) images whose predicted class equals the label."""
    images = _check_digit_images(images, "images")
    pred = model.eval()(images).argmax(dim=1)
    return float((pred == torch.as_tensor(labels).cpu()).float().mean())


@torch.no_grad()
def classify_digits(images: torch.Tensor, classifier: DigitClassifier | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The digit classifier's verdict on (N, 1, 8, 8) images in [-1, 1].

    Returns the predicted digits (N,) int64 and the probability the classifier gives them (N,) float32. The
    share of samples classified with a probability of at least 0.9 is a rough readability number: compare it
    with the same share on :func:`digits_split`'s held-out digits, which the classifier never saw (97%). It is
    no test of realism on its own, since the classifier is also confident on many images unlike any digit
    (42% of clipped Gaussian noise); report it beside :func:`digits_fd`.
    """
    images = _check_digit_images(images, "images")
    model = get_digit_classifier() if classifier is None else classifier.eval()
    probs = torch.cat([model(chunk).softmax(dim=1) for chunk in images.split(1024)])
    confidence, labels = probs.max(dim=1)
    return labels, confidence


def get_digit_classifier() -> DigitClassifier:
    """The shared feature network: trained once on :func:`digits_split`'s train part, then cached.

    Looks in memory, then in ``CACHE/digit_classifier_v{CLASSIFIER_VERSION}.pt`` (CACHE: see the module's docstring)
    (a state_dict, read with ``weights_only=True``); otherwise trains it (a few
    seconds) and writes that file atomically. An unusable cache is ignored with a warning.
    """
    global _classifier
    if _classifier is not None:
        return _classifier
    path = default_cache_dir() / f"digit_classifier_v{CLASSIFIER_VERSION}.pt"
    model = DigitClassifier()
    loaded = False
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            loaded = True
        except Exception as exc:  # corrupt or stale file: retrain and overwrite
            warnings.warn(f"ignoring unreadable classifier cache {path}: {exc}", stacklevel=2)
    if not loaded:
        train_x, train_y, _, _ = digits_split()
        model = train_digit_classifier(train_x, train_y)
        _save_atomic(model.state_dict(), path)
    for p in model.parameters():
        p.requires_grad_(False)
    _classifier = model.eval()
    return _classifier


def _save_atomic(state: dict, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(state, path)
    except OSError as exc:  # read-only home etc.: keep working without the disk cache
        warnings.warn(f"could not cache the digit classifier at {path}: {exc}", stacklevel=3)


@torch.no_grad()
def digit_features(images: torch.Tensor, classifier: DigitClassifier | None = None) -> torch.Tensor:
    """Classifier features of (N, 1, 8, 8) images in [-1, 1] -> (N, 128) float64."""
    images = _check_digit_images(images, "images")
    model = get_digit_classifier() if classifier is None else classifier.eval()
    feats = [model.features(chunk) for chunk in images.split(1024)]
    return torch.cat(feats).to(torch.float64)


def _heldout_stats() -> tuple[torch.Tensor, torch.Tensor]:
    global _reference_stats
    if _reference_stats is None:
        from ..data import load_dataset

        _reference_stats = feature_statistics(digit_features(load_dataset("digits", train=False)))
    return _reference_stats


def digits_fd(samples: torch.Tensor, reference: torch.Tensor | None = None) -> float:
    """Fréchet distance between classifier features of samples and of real digits.

    Args:
        samples: (N, 1, 8, 8) generated images in [-1, 1], N >= 2.
        reference: (M, 1, 8, 8) real images; default the 360 held-out digits.

    Biased upward at small N: report N and :func:`real_vs_real_floor` (N) beside it.
    """
    samples = _check_digit_images(samples, "samples", min_n=2)
    if reference is None:
        mu_r, sigma_r = _heldout_stats()
    else:
        mu_r, sigma_r = feature_statistics(digit_features(_check_digit_images(reference, "reference", 2)))
    mu_s, sigma_s = feature_statistics(digit_features(samples))
    return frechet_distance(mu_s, sigma_s, mu_r, sigma_r)


def real_vs_real_floor(n: int, seed: int = 0) -> float:
    """The floor of :func:`digits_fd` at n: ``digits_fd`` of n real training digits, drawn at random with ``seed``.

    A generator whose samples were as good as fresh real digits would score about this at the same n: same
    estimator, same held-out reference, n real digits in place of n samples. It is positive only because the
    estimate is biased at finite n. It varies with ``seed`` (by about ten percent at n = 300), so average a few
    seeds when it matters. n <= 1,437 (the size of the training split).
    """
    from ..data import load_dataset

    images = load_dataset("digits", train=True)
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= len(images):
        raise ValueError(f"n must be an int in [2, {len(images)}] (the training digits), got {n!r}")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return digits_fd(images[perm[:n]])
