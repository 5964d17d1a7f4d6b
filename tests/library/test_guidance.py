"""Class-conditional U-Nets and classifier-free guidance (issue 20, first part): an unconditional config builds
today's network; w = 0 and w = -1 are exactly the conditional and the unconditional model; guidance wraps every
sampler; bad input is one line naming the fix."""
import pytest
import torch
from torch.testing import assert_close

import ddpm_lite as dl
from ddpm_lite.guidance import ClassifierFreeGuidance, ClassifierGuidance
from ddpm_lite.reconstruction import inpaint
from ddpm_lite.sampling import SAMPLERS


def _conditional(learn_sigma=False, seed=0):
    torch.manual_seed(seed)
    net = dl.UNet(dl.UNetConfig(num_classes=3, learn_sigma=learn_sigma)).eval()
    with torch.no_grad():  # the output layer and each residual branch start at zero: give them weights, so that
        for p in net.parameters():  # the class (on the time step's path) changes the output
            if not p.abs().max() > 0:
                p.normal_(0, 0.1)
    return net


def test_an_unconditional_config_builds_todays_network():
    torch.manual_seed(0)
    today = dl.UNet(dl.UNetConfig())
    names = {name: tuple(p.shape) for name, p in today.named_parameters()}
    torch.manual_seed(0)
    conditional = dl.UNet(dl.UNetConfig(num_classes=10))
    extra = {name: tuple(p.shape) for name, p in conditional.named_parameters() if name not in names}
    assert extra == {"class_embed.weight": (11, dl.UNetConfig().time_dim)}  # ten classes and the null class
    assert set(names) <= {name for name, _ in conditional.named_parameters()}
    assert today.null_class is None and conditional.null_class == 10


def test_the_shape_trace_shows_the_class_embedding_beside_the_time_embedding():
    net = _conditional()
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 7)
    rows = {row["name"]: row for row in dl.trace(net, x, t, torch.tensor([0, 1, 2, 3]))}
    assert rows["class_embed"]["input_shape"] == (4,)
    assert rows["class_embed"]["output_shape"] == rows["time_embed"]["output_shape"] == (4, net.config.time_dim)
    assert rows["class_embed"]["params"] == 4 * net.config.time_dim  # 3 classes and the null class


def test_classes_change_the_output_and_the_null_class_is_the_default():
    net = _conditional()
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 5, 9, 20])
    with torch.no_grad():
        by_class = [net(x, t, torch.full((4,), c)) for c in range(4)]
        assert_close(net(x, t), by_class[3], rtol=0, atol=0)  # y=None: the null class (3)
    assert all((by_class[i] - by_class[j]).abs().max() > 1e-4 for i in range(4) for j in range(i))


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_w_zero_and_minus_one_are_exactly_the_conditional_and_unconditional_models(learn_sigma):
    net = _conditional(learn_sigma)
    x, t, y = torch.randn(5, 1, 8, 8), torch.randint(0, 1000, (5,)), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        assert torch.equal(ClassifierFreeGuidance(net, y, 0.0)(x, t), net(x, t, y))
        assert torch.equal(ClassifierFreeGuidance(net, y, -1.0)(x, t), net(x, t, torch.full((5,), 3)))
        conditional, unconditional = net(x, t, y), net(x, t)
        guided = ClassifierFreeGuidance(net, y, 2.0)(x, t)
    assert_close(guided[:, :1], 3 * conditional[:, :1] - 2 * unconditional[:, :1])
    if learn_sigma:  # the variance channel is the conditional model's
        assert torch.equal(guided[:, 1:], conditional[:, 1:])


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_guidance_wraps_every_sampler(sampler):
    net = _conditional()
    diffusion = dl.GaussianDiffusion.from_config(dl.DiffusionConfig(num_timesteps=50))
    guided = ClassifierFreeGuidance(net, 2, guidance=1.5)  # one class for the whole batch
    with torch.no_grad():
        x = dl.sample(diffusion, guided, (3, 1, 8, 8), sampler=sampler, steps=12,
                      generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


@pytest.mark.parametrize("build, fix", [
    (lambda: dl.UNetConfig(num_classes=0), "positive int"),
    (lambda: dl.UNetConfig(num_classes=10, injection="none"), "time-step path"),
    (lambda: ClassifierFreeGuidance(dl.UNet(dl.UNetConfig()), 1, 1.0), "class-conditional"),
    (lambda: ClassifierFreeGuidance(_conditional(), 1, -2.0), ">= -1"),
    (lambda: ClassifierFreeGuidance(_conditional(), 1, float("nan")), ">= -1"),
    (lambda: dl.UNet(dl.UNetConfig())(torch.zeros(1, 1, 8, 8), 3, torch.tensor([1])), "unconditional"),
    (lambda: _conditional()(torch.zeros(1, 1, 8, 8), 3, torch.tensor([4])), r"0 \.\.\. 2"),
    (lambda: _conditional()(torch.zeros(2, 1, 8, 8), 3, torch.tensor([1.0, 2.0])), "integer tensor"),
    (lambda: ClassifierFreeGuidance(_conditional(), torch.tensor([1, 2]), 1.0)(torch.zeros(3, 1, 8, 8),
                                                                               torch.zeros(3, dtype=torch.long)),
     "one label per sample"),
])
def test_bad_input_names_the_fix(build, fix):
    with pytest.raises(ValueError, match=fix):
        build()


# ------------------------------------------------------------------ training on labels, with label dropout
class RecordingNet(torch.nn.Module):
    """A tiny network of your own that takes labels and records the ones it is trained with."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.seen = []

    def forward(self, x, t, y=None):
        if y is not None and self.training:
            self.seen.append(y.detach().clone())
        return self.conv(x)


def test_label_dropout_replaces_labels_by_the_null_class_at_its_rate():
    """40 steps of 64 digits with label_dropout 0.3: the share of null labels (10) within 4 standard errors of 0.3
    (n = 2560: SE 0.009), and every other label a real digit class."""
    net = RecordingNet()
    config = dl.TrainConfig(steps=40, batch_size=64, conditional=True, label_dropout=0.3, threads=1)
    dl.train(net, train_config=config, progress=False)
    seen = torch.cat(net.seen)
    assert len(seen) == 40 * 64
    null_share = (seen == 10).double().mean().item()
    assert abs(null_share - 0.3) < 4 * (0.3 * 0.7 / len(seen)) ** 0.5
    assert ((seen >= 0) & (seen <= 10)).all() and len(seen[seen < 10].unique()) == 10


def test_a_conditional_digits_run_is_checkpointed_and_guided(tmp_path):
    config = dl.TrainConfig(steps=3, batch_size=16, conditional=True, label_dropout=0.2, threads=1)
    dl.train(train_config=config, out_dir=tmp_path / "run", progress=False)
    model, diffusion, configs = dl.load_checkpoint(tmp_path / "run")
    assert configs["model_config"].num_classes == 10 and model.null_class == 10
    assert configs["train_config"].conditional and configs["train_config"].label_dropout == 0.2
    with torch.no_grad():
        x = dl.sample(diffusion, ClassifierFreeGuidance(model, 7, 1.0), (2, 1, 8, 8), steps=3,
                      generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("build, fix", [
    (lambda: dl.TrainConfig(steps=1, conditional=True, label_dropout=-0.1), "label_dropout"),
    (lambda: dl.TrainConfig(steps=1, conditional=True, label_dropout=1.0), "label_dropout"),
    (lambda: dl.train(train_config=dl.TrainConfig(steps=1), data=-torch.ones(4, 1, 8, 8), labels=torch.zeros(4)),
     "conditional=True"),
    (lambda: dl.train(train_config=dl.TrainConfig(steps=1, conditional=True), data=-torch.ones(4, 1, 8, 8)),
     "labels=LABELS"),
    (lambda: dl.train(train_config=dl.TrainConfig(steps=1, conditional=True), data=-torch.ones(4, 1, 8, 8),
                      labels=torch.zeros(3, dtype=torch.long)), r"shape \(4,\)"),
    (lambda: dl.train(dl.UNetConfig(num_classes=10), train_config=dl.TrainConfig(steps=1)), "--conditional"),
    (lambda: dl.train(dl.UNetConfig(num_classes=5), train_config=dl.TrainConfig(steps=1, conditional=True)),
     "num_classes=10"),
])
def test_bad_training_input_names_the_fix(build, fix):
    with pytest.raises(ValueError, match=fix):
        build()


# ------------------------------------------------------------------ classifier guidance, against the exact answer
MIXTURE = dl.GaussianMixture([0.3, 0.7], [[-0.6], [0.5]], 0.2)


@pytest.mark.parametrize("mean_type", ["eps", "x_start", "v"])
def test_classifier_guidance_with_the_exact_classifier_is_the_conditional_model(float64, mean_type):
    """Bayes: grad log p(x_t | y) = grad log p(x_t) + grad log p(y | x_t), so with s = 1 the guided eps of the
    mixture's eps* is the class's own eps*, in float64 - through whatever the model predicts."""
    diffusion = dl.GaussianDiffusion(dl.NoiseSchedule.from_name("linear", 100), model_mean_type=mean_type)
    oracle = dl.GaussianMixtureOracle(diffusion.schedule, MIXTURE)

    def as_prediction(eps_model):  # the oracle's eps read as the model's output type
        def model(x_t, t):
            eps = eps_model(x_t, t)
            x0 = diffusion.predict_x_start_from_eps(x_t, t, eps)
            return {"eps": eps, "x_start": x0, "v": diffusion.get_v(x0, t, eps)}[mean_type]
        return model

    x_t = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    t = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(1))
    for k in (0, 1):
        guided = ClassifierGuidance(diffusion, as_prediction(oracle), oracle.class_logits, k, scale=1.0)(x_t, t)
        assert_close(guided, as_prediction(oracle.component(k))(x_t, t), rtol=1e-9, atol=1e-9)


def test_classifier_guided_samples_follow_the_class():
    """DDPM with 200 steps, the mixture's eps* and the exact classifier at s = 1: the samples of class 0 follow
    N(-0.6, 0.2^2) (KS test at alpha = 0.001, n = 2000)."""
    from scipy import stats

    diffusion = dl.GaussianDiffusion(dl.NoiseSchedule.from_name("linear", 200))
    oracle = dl.GaussianMixtureOracle(diffusion.schedule, MIXTURE)
    guided = ClassifierGuidance(diffusion, oracle, oracle.class_logits, 0, scale=1.0)
    x = dl.sample(diffusion, guided, (2000, 1), sampler="ddpm", clip_denoised=False,
                  generator=torch.Generator().manual_seed(0))
    assert stats.kstest(x[:, 0].numpy(), stats.norm(-0.6, 0.2).cdf).pvalue > 0.001


def test_scale_zero_is_the_unconditional_model_and_bad_scales_are_refused():
    diffusion = dl.GaussianDiffusion(dl.NoiseSchedule.from_name("linear", 100))
    oracle = dl.GaussianMixtureOracle(diffusion.schedule, MIXTURE)
    x_t, t = torch.randn(5, 1), torch.randint(0, 100, (5,))
    assert torch.equal(ClassifierGuidance(diffusion, oracle, oracle.class_logits, 1, 0.0)(x_t, t), oracle(x_t, t))
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(ValueError, match="scale must be"):
            ClassifierGuidance(diffusion, oracle, oracle.class_logits, 1, bad)


def test_the_noise_aware_classifier_reads_clean_digits_and_not_pure_noise():
    """400 steps on the training digits (seconds): on the 360 held-out digits it is right at t = 1 far above
    chance (measured 0.98) and at t = T at chance (measured 0.08; 0.1 +- 0.016 is chance's mean and SE)."""
    from ddpm_lite.classifier import train_noisy_classifier

    diffusion = dl.GaussianDiffusion.from_config(dl.default_configs("digits")[1])
    classifier = train_noisy_classifier(diffusion, *dl.load_dataset_with_labels("digits"), steps=400)
    held_out, labels = dl.load_dataset_with_labels("digits", train=False)
    g = torch.Generator().manual_seed(1)
    accuracy = {}
    with torch.no_grad():
        for t in (0, diffusion.num_timesteps - 1):
            index = torch.full((len(held_out),), t)
            x_t = diffusion.q_sample(held_out, index, noise=torch.randn(held_out.shape, generator=g))
            accuracy[t] = (classifier(x_t, index).argmax(1) == labels).double().mean().item()
    assert accuracy[0] > 0.9 and accuracy[diffusion.num_timesteps - 1] < 0.1 + 4 * 0.016


def test_a_conditional_run_resumes_bit_for_bit(tmp_path):
    """The label dropout draws come from the trainer's generator, which the checkpoint stores: 2 + 2 steps give the
    weights of 4 straight steps."""
    config = dict(batch_size=16, conditional=True, label_dropout=0.3, threads=1)
    straight = dl.train(dl.UNetConfig(num_classes=10, base_channels=16), train_config=dl.TrainConfig(steps=4, **config),
                        progress=False)
    dl.train(dl.UNetConfig(num_classes=10, base_channels=16), train_config=dl.TrainConfig(steps=2, **config),
             out_dir=tmp_path / "r", progress=False)
    resumed = dl.train(dl.UNetConfig(num_classes=10, base_channels=16), train_config=dl.TrainConfig(steps=4, **config),
                       out_dir=tmp_path / "r", resume=True, progress=False)
    for a, b in zip(resumed.ema_model.state_dict().values(), straight.ema_model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["replace", "ddnm"])
def test_inpainting_as_a_class_is_one_line(method):
    """Reconstruction takes any model(x_t, t), so a guided conditional model inpaints "as a 3" with no new code: the
    known pixels stay, and the class changes the filled ones."""
    net = _conditional()
    diffusion = dl.GaussianDiffusion.from_config(dl.DiffusionConfig(num_timesteps=50))
    x_known = dl.load_dataset("digits", train=False)[:2]
    mask = torch.ones_like(x_known)
    mask[..., 4:] = 0  # the right half is missing
    filled = {}
    for c in (0, 2):
        with torch.no_grad():
            filled[c] = inpaint(diffusion, ClassifierFreeGuidance(net, c, 1.0), x_known, mask, method=method, steps=5,
                                generator=torch.Generator().manual_seed(0))
        assert torch.equal(filled[c][..., :4], x_known[..., :4])
    assert (filled[0][..., 4:] - filled[2][..., 4:]).abs().max() > 1e-3


# A labelled 2-D mixture whose classes overlap: three components of std 0.5 (issue 20's oracle tests, the chapter's).
LABELLED = dl.GaussianMixture(torch.full((3,), 1 / 3), torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]]), 0.5)


def test_the_labelled_oracle_is_each_component_and_the_null_class_the_mixture():
    schedule = dl.NoiseSchedule.from_name("cosine", 100)
    labelled = dl.LabelledMixtureOracle(schedule, LABELLED)
    whole = dl.GaussianMixtureOracle(schedule, LABELLED)
    x_t = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.randint(0, 100, (60,), generator=torch.Generator().manual_seed(1))
    y = torch.arange(60) % 4  # 3 is the null class
    eps = labelled(x_t, t, y)
    for k in range(3):
        assert_close(eps[y == k], whole.component(k)(x_t[y == k], t[y == k]), rtol=0, atol=1e-12)
    assert_close(eps[y == 3], whole(x_t[y == 3], t[y == 3]), rtol=0, atol=1e-12)
    # the guided density at w = 0 is the class's own, at w = -1 the mixture's: the quadrature gives their moments
    mean, covariance = labelled.guided_moments(1, 0.0)
    assert_close(mean, LABELLED.means[1], rtol=0, atol=1e-6)
    assert_close(covariance, 0.25 * torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-6)
    mean, covariance = labelled.guided_moments(1, -1.0)
    means = LABELLED.means
    spread = (means - means.mean(0)).T @ (means - means.mean(0)) / 3  # the covariance of the component means
    assert_close(mean, means.mean(0), rtol=0, atol=1e-6)
    assert_close(covariance, 0.25 * torch.eye(2, dtype=torch.float64) + spread, rtol=0, atol=1e-6)
    assert_close(labelled.class_logits(x_t, t), whole.class_logits(x_t, t), rtol=0, atol=0)
    with pytest.raises(ValueError, match="labels must be classes 0 ... 2 or the null class 3"):
        labelled(x_t[:2], t[:2], torch.tensor([0, 4]))


def test_classifier_guidance_with_the_exact_classifier_at_scale_one_plus_w_is_cfg():
    """With the classifier the exact eps*(., c) and eps*(., null) imply, eps_null - s sqrt(1 - a) grad log p(c | x)
    = eps_null + s (eps_c - eps_null): scale s = 1 + w is classifier-free guidance with weight w, in float64."""
    diffusion = dl.GaussianDiffusion(dl.NoiseSchedule.from_name("cosine", 100))
    labelled = dl.LabelledMixtureOracle(diffusion.schedule, LABELLED)
    x_t = torch.randn(40, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.randint(0, 100, (40,), generator=torch.Generator().manual_seed(1))
    for w in (0.5, 3.0):
        unconditional = ClassifierFreeGuidance(labelled, 0, -1.0)
        guided = ClassifierGuidance(diffusion, unconditional, labelled.class_logits, 2, 1 + w)(x_t, t)
        assert_close(guided, ClassifierFreeGuidance(labelled, 2, w)(x_t, t), rtol=0, atol=1e-10)


@pytest.mark.parametrize("w", [0.5, 3.0])
def test_guidance_between_two_gaussians_of_one_covariance_samples_the_tilted_gaussian(w):
    """p(x | c) = N(mu, s^2 I), p(x) = N(m, s^2 I): p(x | c)^{1 + w} p(x)^{-w} = N((1 + w) mu - w m, s^2 I), and the
    guided eps is exactly that Gaussian's eps* at every t (eps* is affine in the mean), in float64; DDPM with it
    draws the tilted Gaussian: the mean within 4 standard errors, the variance within 4 of its standard errors."""
    schedule = dl.NoiseSchedule.from_name("cosine", 200)
    mu, m, s = torch.tensor([[1.0, -0.5]]), torch.tensor([[0.0, 0.5]]), 0.4
    conditional = dl.GaussianMixtureOracle(schedule, dl.GaussianMixture([1.0], mu, s))
    unconditional = dl.GaussianMixtureOracle(schedule, dl.GaussianMixture([1.0], m, s))
    tilted_mean = (1 + w) * mu - w * m
    tilted = dl.GaussianMixtureOracle(schedule, dl.GaussianMixture([1.0], tilted_mean, s))

    def model(x_t, t, y):  # class 0, null class 1
        return torch.where((y == 0)[:, None], conditional(x_t, t), unconditional(x_t, t))

    guided = ClassifierFreeGuidance(model, 0, w, null_class=1)
    x_t = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.arange(200)
    assert_close(guided(x_t, t), tilted(x_t, t), rtol=0, atol=1e-12)

    n = 4000
    x = dl.sample(dl.GaussianDiffusion(schedule), guided, (n, 2), sampler="ddpm", clip_denoised=False,
                  generator=torch.Generator().manual_seed(1)).double()
    se_mean = s / n**0.5
    assert (x.mean(0) - tilted_mean[0]).abs().max() < 4 * se_mean
    se_variance = s**2 * (2 / (n - 1)) ** 0.5
    assert (x.var(0) - s**2).abs().max() < 4 * se_variance


def test_guidance_on_a_mixture_overshoots_the_tilt_and_langevin_at_the_last_level_finds_its_mean():
    """With overlapping classes CFG is not a sampler of p(x | c)^{1 + w} p(x)^{-w} (Bradley & Nakkiran,
    TMLR 2025): at w = 1 the samples' mean lies beyond the tilted law's, away from the other classes,
    by more than 10 standard errors. The guided eps at the lowest noise level is the tilt's score (of p_t, within
    the level's blur), and Langevin dynamics on it, started from the CFG samples, lands on the tilted law's mean: within
    4 standard errors."""
    from ddpm_lite.score import langevin_dynamics

    schedule = dl.NoiseSchedule.from_name("cosine", 1000)
    labelled = dl.LabelledMixtureOracle(schedule, LABELLED)
    w, n = 1.0, 4000
    tilted_mean, tilted_covariance = labelled.guided_moments(0, w)
    guided = ClassifierFreeGuidance(labelled, 0, w)
    x = dl.sample(dl.GaussianDiffusion(schedule), guided, (n, 2), sampler="ddpm", clip_denoised=False,
                  generator=torch.Generator().manual_seed(0)).double()
    assert x.mean(0)[0] < tilted_mean[0] - 10 * x.std(0)[0] / n**0.5  # further left than the tilt: from class 1

    level = 7  # sqrt(1 - alpha_bar) = 0.022, 4 % of the components' std
    sigma = (1 - schedule.alphas_cumprod[level]).sqrt()
    t = torch.full((n,), level)
    x = langevin_dynamics(lambda z: -guided(z, t) / sigma, x, step_size=0.01, num_steps=1000,
                          generator=torch.Generator().manual_seed(1))
    assert ((x.mean(0) - tilted_mean).abs() < 4 * x.std(0) / n**0.5).all()
