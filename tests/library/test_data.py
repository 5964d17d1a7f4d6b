"""Tests for ddpm_lite.data: image datasets in [-1, 1], offline errors, 2-D toys."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm_lite.data import (
    DATASETS,
    DIGITS_HELDOUT_SIZE,
    TOY_2D,
    DatasetNotFoundError,
    GaussianMixture,
    digits_split_indices,
    load_dataset,
    load_dataset_with_labels,
    make_toy_2d,
    to_uint8,
)

REPO = Path(__file__).resolve().parents[2]
# In CI the checkout sits beside shared/, so look two levels up, never inside the repo.
SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


# --- digits ----------------------------------------------------------------


def test_digits_images_and_labels():
    images, labels = load_dataset_with_labels("digits", train=None)  # all of them
    assert images.shape == (1797, 1, 8, 8)
    assert images.dtype == torch.float32
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    # 17 grey levels 0..16 map to exactly k/8 - 1
    levels = torch.unique(images)
    assert len(levels) == 17
    assert torch.equal(levels, torch.arange(17, dtype=torch.float32) / 8 - 1)
    assert labels.dtype == torch.int64 and labels.shape == (1797,)
    assert torch.equal(torch.unique(labels), torch.arange(10))
    assert torch.equal(load_dataset(train=None), images)  # digits is the default, images only


def test_digits_split_is_fixed_disjoint_and_covers_everything():
    all_images, all_labels = load_dataset_with_labels("digits", train=None)
    train_idx, heldout_idx = digits_split_indices()
    assert len(train_idx) == 1437 and len(heldout_idx) == DIGITS_HELDOUT_SIZE == 360
    assert torch.equal(torch.sort(torch.cat([train_idx, heldout_idx])).values, torch.arange(1797))
    for train, idx in ((True, train_idx), (False, heldout_idx)):
        images, labels = load_dataset_with_labels("digits", train=train)
        assert torch.equal(images, all_images[idx]) and torch.equal(labels, all_labels[idx])
    assert torch.equal(load_dataset(), all_images[train_idx])  # the default is the training split
    assert all(torch.equal(a, b) for a, b in zip(digits_split_indices(), (train_idx, heldout_idx)))
    # every digit class is represented in the held-out split (at least 25 of each)
    assert torch.bincount(all_labels[heldout_idx], minlength=10).min() >= 25


def test_train_none_is_for_digits_only():
    with pytest.raises(ValueError, match="digits"):
        load_dataset("mnist", train=None)


def test_digits_honours_limit_and_pad():
    full = load_dataset("digits")
    first = load_dataset("digits", limit=10)
    assert torch.equal(first, full[:10])
    padded = load_dataset("digits", limit=10, pad_to=12)
    assert padded.shape == (10, 1, 12, 12)
    assert torch.equal(padded[..., 2:10, 2:10], first)
    border = torch.ones(12, 12, dtype=torch.bool)
    border[2:10, 2:10] = False
    assert (padded[..., border] == -1).all()


@pytest.mark.parametrize("kwargs", [{"pad_to": 7}, {"limit": 0}, {"limit": -3}])
def test_bad_limit_or_pad(kwargs):
    with pytest.raises(ValueError):
        load_dataset("digits", **kwargs)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(info.value)


def test_import_does_not_pull_heavy_dependencies():
    code = (
        "import sys, ddpm_lite.data\n"
        "heavy = [m for m in ('sklearn', 'torchvision', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- MNIST family and CIFAR-10 --------------------------------------------


def _assert_one_line_not_found(exc: BaseException) -> None:
    assert isinstance(exc, DatasetNotFoundError) and isinstance(exc, FileNotFoundError)
    message = str(exc)
    assert "\n" not in message
    assert "digits" in message and "download" in message
    assert exc.__cause__ is None and exc.__suppress_context__  # raised `from None`


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_files_give_one_line_error(tmp_path, name):
    pytest.importorskip("torchvision")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, root=tmp_path, train=False)
    _assert_one_line_not_found(info.value)
    assert str(tmp_path) in str(info.value)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"shared MNIST test split not found at {SHARED_MNIST}")
def test_mnist_test_split_from_raw_files_only():
    pytest.importorskip("torchvision")
    raw = SHARED_MNIST / "MNIST" / "raw"
    before = sorted(p.name for p in raw.iterdir())

    images, labels = load_dataset_with_labels("mnist", root=SHARED_MNIST, train=False)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    counts = torch.bincount(labels, minlength=10)
    assert len(counts) == 10 and (counts > 800).all()  # every class well represented

    padded = load_dataset("mnist", root=SHARED_MNIST, train=False, limit=100, pad_to=32)
    assert padded.shape == (100, 1, 32, 32)
    assert torch.equal(padded[..., 2:30, 2:30], images[:100])
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (padded[..., border] == -1).all()

    if not (raw / "train-images-idx3-ubyte.gz").exists() and not (raw / "train-images-idx3-ubyte").exists():
        # what is missing is named: the training split, not "MNIST"; and what is there, the test split
        with pytest.raises(DatasetNotFoundError, match=r"^the MNIST training split is not under .*; the test split "
                                                       r"is: use train=False") as info:
            load_dataset("mnist", root=SHARED_MNIST, train=True)
        assert "\n" not in str(info.value) and info.value.__suppress_context__
    assert sorted(p.name for p in raw.iterdir()) == before  # nothing written there


def _write_idx(path: Path, array: torch.Tensor, compress: bool) -> None:
    """Write a uint8 tensor in IDX format (magic 0x0000_08_nd, big-endian int32 dims)."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.to(torch.uint8).numpy().tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


@pytest.mark.parametrize("compress", [False, True])
def test_raw_idx_fallback_reads_requested_split(tmp_path, compress):
    pytest.importorskip("torchvision")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    pixels = torch.randint(0, 256, (5, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pixels[0, 0, 0], pixels[0, 0, 1] = 0, 255
    targets = torch.tensor([3, 1, 4, 1, 5], dtype=torch.uint8)
    _write_idx(raw / "t10k-images-idx3-ubyte", pixels, compress)
    _write_idx(raw / "t10k-labels-idx1-ubyte", targets, compress)

    images, labels = load_dataset_with_labels("fashion_mnist", root=tmp_path, train=False)
    assert images.shape == (5, 1, 28, 28)
    assert torch.equal(images[:, 0], pixels.float() / 255 * 2 - 1)
    assert torch.equal(labels, targets.long())
    with pytest.raises(DatasetNotFoundError):  # only the test split exists
        load_dataset("fashion_mnist", root=tmp_path, train=True)


def test_data_root_from_environment(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    monkeypatch.setenv("DDPM_LITE_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        load_dataset("mnist")


# --- to_uint8 --------------------------------------------------------------


def test_to_uint8_inverts_the_scaling_and_clips():
    values = torch.arange(256)
    assert torch.equal(to_uint8(values.float() / 255 * 2 - 1), values.to(torch.uint8))
    out = to_uint8(torch.tensor([[-3.0, -1.0, 0.0, 1.0, 5.0]]))
    assert out.dtype == torch.uint8 and out.shape == (1, 5)
    assert out.tolist() == [[0, 0, 128, 255, 255]]


# --- 2-D toys --------------------------------------------------------------


@pytest.mark.parametrize("name", TOY_2D)
def test_toy_shapes_scale_and_reproducibility(name):
    state = torch.get_rng_state()
    a = make_toy_2d(name, 4000, generator=torch.Generator().manual_seed(1))
    b = make_toy_2d(name, 4000, generator=torch.Generator().manual_seed(1))
    c = make_toy_2d(name, 4000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert a.shape == (4000, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.abs().max() < 2.5  # "roughly within [-2, 2]"
    std = a.std(dim=0)
    assert ((std > 0.4) & (std < 1.3)).all(), std  # roughly unit scale
    assert a.mean(dim=0).abs().max() < 0.5


def test_toy_unknown_name():
    with pytest.raises(ValueError, match="two_moons"):
        make_toy_2d("spiral", 10)


def _analytic_mean_var(gm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    # E[x] = sum_k w_k mu_k;  Var[x_d] = sum_k w_k (mu_kd - E[x_d])^2 + std^2 (law of total variance)
    mean = (gm.weights[:, None] * gm.means).sum(0)
    var = (gm.weights[:, None] * (gm.means - mean) ** 2).sum(0) + gm.std**2
    return mean, var


@pytest.mark.parametrize(
    "gm",
    [
        GaussianMixture.circle(),
        GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[2.0, 0.0], [-1.0, 1.0], [0.0, -3.0]]), 0.5),
    ],
    ids=["circle", "asymmetric"],
)
def test_gaussian_mixture_sample_mean_matches_analytic(gm):
    n = 20_000
    x = gm.sample(n, generator=torch.Generator().manual_seed(0)).double()
    mean, var = _analytic_mean_var(gm)
    se = (var / n).sqrt()  # standard error of the sample mean, per coordinate
    # k = 4 standard errors: a correct sampler fails this with probability ~6e-5 per coordinate
    assert ((x.mean(0) - mean).abs() < 4 * se).all(), (x.mean(0), mean, se)
    # variance within 5 % (its relative SE here is below 1 %)
    assert torch.allclose(x.var(0), var, rtol=0.05)


def test_toy_gaussian_mixture_is_the_circle_mixture():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(make_toy_2d("gaussian_mixture", 100, generator=g1), GaussianMixture.circle().sample(100, generator=g2))
    gm = GaussianMixture.circle()
    assert gm.means.shape == (8, 2) and torch.allclose(gm.weights, torch.full((8,), 1 / 8, dtype=torch.float64))
    assert torch.allclose(gm.means.norm(dim=1), torch.full((8,), 2**0.5, dtype=torch.float64))


def test_gaussian_mixture_score_is_gradient_of_log_prob():
    gm = GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[2.0, 0.0], [-1.0, 1.0], [0.0, -3.0]]), 0.7)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    assert torch.allclose(gm.score(x.detach()), grad, atol=1e-10)
    # one component: log N(x; mu, s^2 I) in closed form
    single = GaussianMixture(torch.tensor([1.0]), torch.tensor([[1.0, -2.0]]), 0.5)
    y = x.detach()
    expected = -((y - single.means) ** 2).sum(1) / (2 * 0.25) - torch.log(torch.tensor(2 * torch.pi * 0.25, dtype=torch.float64))
    assert torch.allclose(single.log_prob(y), expected, atol=1e-10)


def test_gaussian_mixture_noised_marginal():
    gm = GaussianMixture.circle()
    same = gm.noised(1.0)
    assert torch.equal(same.means, gm.means) and same.std == pytest.approx(gm.std)
    pure = gm.noised(0.0)  # all signal destroyed: N(0, I), score -x
    x = torch.randn(10, 2, dtype=torch.float64)
    assert torch.allclose(pure.score(x), -x, atol=1e-12)
    # Monte Carlo check of the marginal's variance at alpha_bar = 0.5
    ab = 0.5
    g = torch.Generator().manual_seed(0)
    x0 = gm.sample(50_000, generator=g).double()
    xt = ab**0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    _, var = _analytic_mean_var(gm.noised(ab))
    assert torch.allclose(xt.var(0), var, rtol=0.03)
    with pytest.raises(ValueError):
        gm.noised(1.5)
