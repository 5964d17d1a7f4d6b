"""Tests for ddpm_lite.metrics (the Fréchet distance) and ddpm_lite.book.classifier (the digit-classifier feature space)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ddpm_lite.book import classifier as metrics
from ddpm_lite.book.classifier import (
    DigitClassifier,
    classifier_accuracy,
    classify_digits,
    digit_features,
    digits_fd,
    digits_split,
    get_digit_classifier,
    real_vs_real_floor,
    train_digit_classifier,
)
from ddpm_lite.metrics import feature_statistics, frechet_distance


def _random_spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --- Fréchet distance --------------------------------------------------------


def test_frechet_zero_for_identical_statistics():
    mu, sigma = torch.randn(16, dtype=torch.float64), _random_spd(16, 0)
    assert abs(frechet_distance(mu, sigma, mu.clone(), sigma.clone())) < 1e-8


def test_frechet_closed_form_for_diagonal_gaussians():
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    s1 = torch.rand(10, generator=g, dtype=torch.float64) + 0.1
    s2 = torch.rand(10, generator=g, dtype=torch.float64) * 3 + 0.1
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1.sqrt() - s2.sqrt()) ** 2).sum())
    got = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_frechet_symmetric_and_matches_scipy_sqrtm():
    d = 12
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.linspace(-1, 1, d, dtype=torch.float64)
    s1, s2 = _random_spd(d, 2), _random_spd(d, 3)
    forward, backward = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert forward == pytest.approx(backward, rel=1e-10)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    reference = float(((mu1 - mu2) ** 2).sum()) + np.trace(s1.numpy()) + np.trace(s2.numpy()) - 2 * np.trace(covmean)
    assert forward == pytest.approx(reference, rel=1e-8)
    # numpy inputs work too
    assert frechet_distance(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy()) == pytest.approx(forward, rel=1e-12)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


def test_feature_statistics_matches_numpy():
    f = torch.randn(200, 5, generator=torch.Generator().manual_seed(4))
    mu, sigma = feature_statistics(f)
    assert mu.dtype == sigma.dtype == torch.float64
    assert np.allclose(mu.numpy(), f.double().numpy().mean(0))
    assert np.allclose(sigma.numpy(), np.cov(f.double().numpy(), rowvar=False))
    with pytest.raises(ValueError):
        feature_statistics(torch.randn(1, 5))


# --- classifier and digits FD -------------------------------------------------


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """Train the shared classifier once, with the disk cache in a temporary folder."""
    cache = tmp_path_factory.mktemp("ddpm_lite_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDPM_LITE_CACHE", str(cache))
        mp.setattr(metrics, "_classifier", None)
        mp.setattr(metrics, "_reference_stats", None)
        model = get_digit_classifier()
        yield model, cache


def test_classifier_heldout_accuracy(classifier):
    model, _ = classifier
    _, _, held_x, held_y = digits_split()
    assert len(held_x) == 360
    assert classifier_accuracy(model, held_x, held_y) > 0.95
    assert digit_features(held_x).shape == (len(held_x), DigitClassifier.feature_dim)


def test_classify_digits_agrees_with_accuracy_and_separates_noise(classifier):
    model, _ = classifier
    _, _, held_x, held_y = digits_split()
    labels, confidence = classify_digits(held_x)
    assert labels.shape == confidence.shape == (len(held_x),) and labels.dtype == torch.int64
    assert float((labels == held_y).float().mean()) == classifier_accuracy(model, held_x, held_y)
    assert ((confidence >= 0.1) & (confidence <= 1)).all()  # the largest of 10 probabilities
    noise = torch.rand(360, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _, noise_confidence = classify_digits(noise)
    # real held-out digits are read with confidence far more often than uniform noise
    assert (confidence >= 0.9).float().mean() > 0.85 > 0.5 > (noise_confidence >= 0.9).float().mean()


def test_split_is_fixed_and_disjoint():
    a, b = digits_split(), digits_split()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    train_x, _, held_x, _ = a
    assert len(train_x) + len(held_x) == 1797


def test_classifier_is_cached_on_disk(classifier, monkeypatch):
    model, cache = classifier
    path = cache / f"digit_classifier_v{metrics.CLASSIFIER_VERSION}.pt"
    assert path.is_file()
    assert not list(cache.glob("*.tmp"))  # the atomic write left no temporary file
    monkeypatch.setenv("DDPM_LITE_CACHE", str(cache))
    monkeypatch.setattr(metrics, "_classifier", None)

    def no_training(*args, **kwargs):
        raise AssertionError("should have loaded the cached weights")

    monkeypatch.setattr(metrics, "train_digit_classifier", no_training)
    loaded = get_digit_classifier()
    assert loaded is not model
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert get_digit_classifier() is loaded  # memory cache


def test_corrupt_cache_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_LITE_CACHE", str(tmp_path))
    monkeypatch.setattr(metrics, "_classifier", None)
    path = tmp_path / f"digit_classifier_v{metrics.CLASSIFIER_VERSION}.pt"
    path.write_bytes(b"not a checkpoint")
    quick = train_digit_classifier  # a few steps suffice to test the plumbing
    monkeypatch.setattr(metrics, "train_digit_classifier", lambda x, y: quick(x, y, steps=3))
    with pytest.warns(UserWarning, match="unreadable"):
        model = get_digit_classifier()
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_training_is_deterministic_and_leaves_rng_alone():
    x, y, _, _ = digits_split()
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    a = train_digit_classifier(x[:256], y[:256], steps=20, seed=5)
    b = train_digit_classifier(x[:256], y[:256], steps=20, seed=5)
    c = train_digit_classifier(x[:256], y[:256], steps=20, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_real_floor_far_below_noise(classifier):
    n = 500
    floor = real_vs_real_floor(n, seed=0)
    noise = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise_fd = digits_fd(noise)
    assert floor > 0  # finite-sample bias: even real data scores above zero
    assert 10 * floor < noise_fd, (floor, noise_fd)
    train_x, _, held_x, _ = digits_split()
    assert digits_fd(held_x) == pytest.approx(0.0, abs=1e-6)  # the default reference is the held-out split
    # the floor is digits_fd of n training digits drawn with the seed's permutation, nothing else
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(3))
    assert real_vs_real_floor(n, seed=3) == digits_fd(train_x[perm[:n]])


def test_floor_falls_with_n(classifier):
    """The estimator's bias shrinks with n: the mean floor over 3 seeds at n = 1000 is below that at n = 100."""
    small = sum(real_vs_real_floor(100, seed=s) for s in range(3)) / 3
    large = sum(real_vs_real_floor(1000, seed=s) for s in range(3)) / 3
    assert large < small, (small, large)


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(10, 8, 8), torch.zeros(10, 3, 8, 8), torch.zeros(10, 1, 28, 28), torch.zeros(1, 1, 8, 8)],
    ids=["no-channel", "rgb", "mnist-size", "single"],
)
def test_digits_fd_rejects_wrong_shapes(bad):
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)") as info:
        digits_fd(bad)
    assert "\n" not in str(info.value)


def test_digits_fd_rejects_nan():
    x = torch.zeros(4, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        digits_fd(x)


@pytest.mark.parametrize("n", [1, 1438, 2.5, True])
def test_floor_sample_count_range(n):
    with pytest.raises(ValueError, match="1437"):
        real_vs_real_floor(n)


def test_no_warnings_on_the_happy_path(classifier):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        digits_fd(digits_split()[0][:100])


def test_classifier_trains_inside_no_grad():
    """digits_fd -> digit_features (no_grad) -> get_digit_classifier trains on a cold cache: must still learn."""
    from ddpm_lite.book import classifier as metrics

    with torch.no_grad():
        model = metrics.train_digit_classifier(*metrics.digits_split()[:2], steps=5)
    assert isinstance(model, metrics.DigitClassifier)
