"""ddpm_lite.book.checks: each exercise is registered once and graded by its public check_<name>; each check passes
the reference and hand-written solutions, and names the typical mistakes, in English or Chinese as the chapter's
setup chose."""
import ast
import inspect
import json
import math
import re
from pathlib import Path

import pytest
import torch

from ddpm_lite import GaussianDiffusion, NoiseSchedule
from ddpm_lite import book
from ddpm_lite.book import checks
from ddpm_lite.sampling import p_sample

EXERCISES = sorted(checks.EXERCISES)
CJK = re.compile(r"[\u4e00-\u9fff]")
CHAPTERS = sorted((Path(__file__).resolve().parents[2] / "book").glob("*.ipynb"))


@pytest.fixture
def zh():
    """The Chinese edition's setting for one test; English again afterwards."""
    book.set_language("zh_CN")
    yield
    book.set_language("en")


# ------------------------------------------------------------------------------------------- the registry
def test_every_exercise_is_registered_once_by_its_decorator():
    """One ``@exercise("name", ...)`` per exercise, in the file's order, and nothing else fills EXERCISES."""
    tree = ast.parse(inspect.getsource(checks))
    decorated = [d.args[0].value for node in tree.body if isinstance(node, ast.FunctionDef)
                 for d in node.decorator_list if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "exercise"]
    assert len(set(decorated)) == len(decorated) and decorated == list(checks.EXERCISES)


@pytest.mark.parametrize("name", EXERCISES)
def test_every_registered_exercise_is_a_public_check(name):
    check = getattr(checks, f"check_{name}")
    assert callable(check) and f"check_{name}" in checks.__all__
    assert check.__name__ == f"check_{name}" and check.__module__ == "ddpm_lite.book.checks"
    assert list(inspect.signature(check).parameters) == ["fn"]
    exercise = checks.EXERCISES[name]
    signature = book.Bilingual.of(exercise.signature).en
    assert check.__doc__.startswith(f"Grade ``{signature}``: ")
    assert check.__doc__.endswith(inspect.cleandoc(exercise.reference.__doc__))  # the reference documents the check
    assert check(exercise.reference).passed and not check(lambda *args: None).passed


def test_the_public_names_are_the_generic_ones_and_one_check_per_exercise():
    checks_in_module = {name for name in vars(checks) if name.startswith("check_")}
    expected = {f"check_{name}" for name in checks.EXERCISES}
    assert checks_in_module == expected
    assert sorted(checks.__all__) == sorted(
        {"CheckResult", "MESSAGES", "Exercise", "EXERCISES", "exercise", "compare"} | expected)
    assert all(hasattr(checks, name) for name in checks.__all__)


def _chapter_checks() -> dict[str, set[str]]:
    """{check_<name>: the chapters that call or cite it}, from every English chapter's cells."""
    found = {}
    for path in CHAPTERS:
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for name in re.findall(r"\bchecks\.(check_\w+)", "".join(cell["source"])):
                found.setdefault(name, set()).add(path.name)
    return found


def test_every_check_a_chapter_calls_is_a_registered_exercise_and_every_exercise_is_in_a_chapter():
    called = _chapter_checks()
    unknown = {name: sorted(where) for name, where in called.items()
               if name.removeprefix("check_") not in checks.EXERCISES}
    assert not unknown, f"these chapters call checks that no @exercise registers: {unknown}"
    assert {f"check_{name}" for name in checks.EXERCISES} <= set(called), "an exercise that no chapter uses"


def test_registering_a_taken_name_or_an_undocumented_reference_fails_and_registers_nothing():
    before = dict(checks.EXERCISES)
    with pytest.raises(ValueError, match="'q_sample' is registered twice: give the second one another key"):
        checks.exercise("q_sample", name="x", signature="fn(x)", make_trials=lambda: [{"x": torch.zeros(1)}])
    register = checks.exercise("undocumented", name="x", signature="fn(x)", make_trials=lambda: [{"x": torch.zeros(1)}])
    with pytest.raises(ValueError, match="give <lambda> a docstring"):
        register(lambda x: x)
    assert checks.EXERCISES == before and not hasattr(checks, "check_undocumented")
    assert "check_undocumented" not in checks.__all__


# ------------------------------------------------------------------------------------ generic behaviour
@pytest.mark.parametrize("name", EXERCISES)
def test_the_reference_itself_passes(name):
    result = getattr(checks, f"check_{name}")(checks.EXERCISES[name].reference)
    assert result.passed and str(result).startswith("✓ correct"), result


@pytest.mark.parametrize("lang", book.LANGUAGES)
@pytest.mark.parametrize("name", EXERCISES)
def test_every_typical_mistake_is_named(name, lang):
    """Each registered mistake, fed back as a reader's answer, fails with its own message (so none coincide)."""
    exercise = checks.EXERCISES[name]
    wrong_answers = exercise.wrong_answers()
    assert len(wrong_answers) >= 2
    book.set_language(lang)
    try:
        for message, wrong in wrong_answers.items():
            result = getattr(checks, f"check_{name}")(wrong)
            assert not result.passed
            if message.en.startswith("off by one") and result.text.en.startswith("your function raised IndexError"):
                # an off-by-one index that runs off the end of the schedule raises; the hint still says so
                assert "off by one" in result.text.en and "差了一位" in result.text.zh
            else:
                assert result.text == message and result.message == str(message), (message, result.message)
            assert str(result).startswith("✗ ")
    finally:
        book.set_language("en")


@pytest.mark.parametrize("name", EXERCISES)
def test_the_untouched_stub_is_not_attempted_rather_than_wrong(name):
    def stub(*args):
        raise NotImplementedError("replace this line with your code")

    result = getattr(checks, f"check_{name}")(stub)
    not_attempted = checks.MESSAGES["not_attempted"]
    assert not result.passed and not result.attempted
    assert result.text == not_attempted and result.message == str(not_attempted)
    assert str(result).startswith("… not attempted yet") and "✗" not in str(result)


@pytest.mark.parametrize("name", EXERCISES)
def test_a_function_that_raises_fails_with_its_error(name):
    def broken(*args):
        raise KeyError("alpha")

    result = getattr(checks, f"check_{name}")(broken)
    assert not result.passed and result.attempted
    assert result.message == "your function raised KeyError: 'alpha'"
    assert str(result).startswith("✗ ")


def test_wrong_shape_nan_tuple_and_not_a_function():
    result = checks.check_q_sample(lambda x_start, t, noise, schedule: x_start[:, 0])
    assert not result.passed and result.message == "wrong shape: expected (5, 1, 4, 4), got (5, 4, 4)"
    result = checks.check_q_sample(lambda x_start, t, noise, schedule: x_start / 0 * 0)
    assert not result.passed and "NaN" in result.message
    result = checks.check_q_sample(lambda x_start, t, noise, schedule: (x_start, noise))
    assert not result.passed and "returned a tuple" in result.message
    assert not checks.check_q_sample(None).passed


def test_an_unrecognised_wrong_answer_gets_the_generic_message():
    result = checks.check_q_sample(lambda x_start, t, noise, schedule: 0.5 * x_start + noise)
    assert not result.passed and result.message.startswith("wrong values: they differ from GaussianDiffusion.q_sample")


def test_inputs_written_in_place_do_not_spoil_the_check():
    def in_place(x_start, t, noise, schedule):
        ab = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        return x_start.mul_(ab.sqrt()).add_(noise.mul_((1 - ab).sqrt()))

    assert checks.check_q_sample(in_place).passed


def test_result_prints_with_a_mark_and_is_truthy_only_when_passed():
    ok, bad = checks.CheckResult(True, "correct: fine"), checks.CheckResult(False, "forgot a square root")
    assert repr(ok) == "✓ correct: fine" and str(bad) == "✗ forgot a square root"
    assert ok and not bad


# -------------------------------------------------------------- hand-written answers, right and wrong
def _coef(values, t):
    return values[t].reshape(-1, 1, 1, 1)


def test_q_sample_student_answers():
    def right(x_start, t, noise, schedule):
        ab = _coef(schedule.alphas_cumprod, t)
        return (ab.sqrt() * x_start + (1 - ab).sqrt() * noise).float()  # a float32 answer passes

    def no_square_root(x_start, t, noise, schedule):
        ab = _coef(schedule.alphas_cumprod, t)
        return ab * x_start + (1 - ab) * noise

    def paper_t(x_start, t, noise, schedule):  # indexes with the paper's t = index + 1
        ab = _coef(schedule.alphas_cumprod, t + 1)
        return ab.sqrt() * x_start + (1 - ab).sqrt() * noise

    def alpha_not_alpha_bar(x_start, t, noise, schedule):
        a = _coef(schedule.alphas, t)
        return a.sqrt() * x_start + (1 - a).sqrt() * noise

    def unbroadcast(x_start, t, noise, schedule):
        ab = schedule.alphas_cumprod[t]
        return ab.sqrt() * x_start + (1 - ab).sqrt() * noise

    assert checks.check_q_sample(right).passed
    assert "square root" in checks.check_q_sample(no_square_root).message
    message = checks.check_q_sample(paper_t).message
    assert message.startswith("off by one in t") and "t + 1" in message
    assert "α_t where ᾱ_t" in checks.check_q_sample(alpha_not_alpha_bar).message
    message = checks.check_q_sample(unbroadcast).message
    assert message.startswith("your function raised RuntimeError") and "(B, 1, ..., 1)" in message


def test_posterior_mean_student_answers():
    def right(x_start, x_t, t, schedule):
        ab, ab_prev = _coef(schedule.alphas_cumprod, t), _coef(schedule.alphas_cumprod_prev, t)
        beta, alpha = _coef(schedule.betas, t), _coef(schedule.alphas, t)
        return ab_prev.sqrt() * beta / (1 - ab) * x_start + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x_t

    def previous_is_current(x_start, x_t, t, schedule):
        ab, beta, alpha = _coef(schedule.alphas_cumprod, t), _coef(schedule.betas, t), _coef(schedule.alphas, t)
        return ab.sqrt() * beta / (1 - ab) * x_start + alpha.sqrt() * (1 - ab) / (1 - ab) * x_t

    def one_step_back(x_start, x_t, t, schedule):
        return right(x_start, x_t, t - 1, schedule)

    assert checks.check_posterior_mean(right).passed
    assert "ᾱ_{t−1}" in checks.check_posterior_mean(previous_is_current).message
    assert "off by one in t" in checks.check_posterior_mean(one_step_back).message
    assert "swapped x_0 and x_t" in checks.check_posterior_mean(lambda x0, xt, t, s: right(xt, x0, t, s)).message


def test_normal_kl_student_answers():
    def right(mean1, logvar1, mean2, logvar2):
        return 0.5 * (logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 / logvar2.exp() - 1)

    assert checks.check_normal_kl(right).passed
    assert "wrong way" in checks.check_normal_kl(lambda m1, l1, m2, l2: right(m2, l2, m1, l1)).message
    assert "1/2" in checks.check_normal_kl(lambda *a: 2 * right(*a)).message


def test_prior_kl_student_answers():
    def right(x_start, schedule):
        ab = schedule.alphas_cumprod[-1]
        mean, var = ab.sqrt() * x_start, 1 - ab
        kl = 0.5 * (-var.log() + var + mean**2 - 1)  # KL(N(mean, var) || N(0, 1)) per dimension, nats
        return kl.flatten(1).mean(1) / math.log(2)

    assert checks.check_prior_kl(right).passed
    assert "nats" in checks.check_prior_kl(lambda x, s: right(x, s) * math.log(2)).message
    assert "summed" in checks.check_prior_kl(lambda x, s: right(x, s) * 16).message


def test_eps_loss_weight_student_answers():
    def right(t, schedule, model_var_type):
        s = schedule
        var = s.posterior_variance if model_var_type == "fixed_small" else s.betas
        return (s.betas**2 / (2 * var * s.alphas * (1 - s.alphas_cumprod)))[t]

    def forgot_square(t, schedule, model_var_type):
        return right(t, schedule, model_var_type) / schedule.betas[t]

    def always_small(t, schedule, model_var_type):
        return right(t, schedule, "fixed_small")

    assert checks.check_eps_loss_weight(right).passed
    assert "square β_t" in checks.check_eps_loss_weight(forgot_square).message
    assert "ignored model_var_type" in checks.check_eps_loss_weight(always_small).message
    assert "off by one in t" in checks.check_eps_loss_weight(lambda t, s, v: right(t + 1, s, v)).message


def test_p_sample_step_student_answers():
    def right(x_t, t, eps, z, schedule):
        s = schedule
        mean = (x_t - _coef(s.betas / s.sqrt_one_minus_alphas_cumprod, t) * eps) / _coef(s.alphas.sqrt(), t)
        nonzero = (t > 0).to(x_t).reshape(-1, 1, 1, 1)  # z = 0 at the last step
        return mean + nonzero * _coef(s.posterior_variance.sqrt(), t) * z

    def plus_eps(x_t, t, eps, z, schedule):
        return right(x_t, t, -eps, z, schedule)

    assert checks.check_p_sample_step(right).passed
    assert "wrong sign" in checks.check_p_sample_step(plus_eps).message
    assert "noise" in checks.check_p_sample_step(lambda x_t, t, eps, z, s: right(x_t, t, eps, 0 * z, s)).message


def test_p_sample_step_reference_is_the_package_sampler(float64):
    """The check's reference equals sampling.p_sample (no clipping) when both use the same z."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    diffusion = GaussianDiffusion(schedule)
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(6, 1, 4, 4, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 2, 500, 998, 999])
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))  # what p_sample draws from the same seed
    out = p_sample(diffusion, lambda x, t: eps, x_t, t, clip_denoised=False, generator=torch.Generator().manual_seed(7))
    expected = checks.EXERCISES["p_sample_step"].reference(x_t, t, eps, z, schedule)
    torch.testing.assert_close(out["sample"], expected, rtol=0, atol=1e-12)


def test_timestep_embedding_against_diffusers():
    """diffusers' embedding with ddpm_lite's layout passes; with its default frequency shift it is the named mistake."""
    embeddings = pytest.importorskip("diffusers.models.embeddings")

    def ours(t, dim):
        return embeddings.get_timestep_embedding(t, dim, flip_sin_to_cos=False, downscale_freq_shift=0)

    def tensorflow_style(t, dim):
        return embeddings.get_timestep_embedding(t, dim, flip_sin_to_cos=False, downscale_freq_shift=1)

    def cos_first(t, dim):
        return embeddings.get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)

    assert checks.check_timestep_embedding(ours).passed
    assert "downscale_freq_shift=1" in checks.check_timestep_embedding(tensorflow_style).message
    assert "cosines first" in checks.check_timestep_embedding(cos_first).message


# ------------------------------------------------------------------------------------ both languages
def _every_message():
    """Every message a grader can give: the generic ones and each exercise's typical mistakes (off-by-one included)."""
    messages = dict(checks.MESSAGES)
    for name, exercise in checks.EXERCISES.items():
        messages.update({f"{name}: {message.en}": message for message in exercise.wrong_answers()})
    return messages


@pytest.mark.parametrize("key, message", sorted(_every_message().items()))
def test_every_grader_message_has_a_chinese_form(key, message):
    assert isinstance(message, book.Bilingual)
    assert message.en.strip() and not CJK.search(message.en), key
    assert message.zh.strip() and CJK.search(message.zh), key
    assert message.zh != message.en
    # the same fields to fill in, so that neither language shows a raw {field} or misses a number
    fields = lambda text: sorted(re.findall(r"{(\w*)[^{}]*}", text))  # noqa: E731
    assert fields(message.en) == fields(message.zh), key


def test_the_setup_switches_every_grader_and_english_comes_back(zh):
    def stub(*args):
        raise NotImplementedError

    def broken(*args):
        raise KeyError("alpha")

    assert book.language() == "zh_CN"
    q_sample = checks.EXERCISES["q_sample"]
    assert str(checks.check_q_sample(q_sample.reference)) == "✓ 正确：在 3 组随机输入上与 GaussianDiffusion.q_sample 的结果一致"
    assert checks.check_q_sample(broken).message == "你的函数抛出了 KeyError：'alpha'"
    assert checks.check_q_sample(stub).message.startswith("尚未作答")
    result = checks.check_q_sample(lambda x_start, t, noise, schedule: x_start[:, 0])
    assert result.message == "形状不对：应为 (5, 1, 4, 4)，实际为 (5, 4, 4)"
    assert checks.check_q_sample(None).message.startswith("需要一个函数 fn(x_start, t, noise, schedule) -> x_t")
    assert CJK.search(checks.check_ema_update(lambda e, w, d: 2 * e - w).message)  # the generic "wrong values"
    p_sample_step = checks.EXERCISES["p_sample_step"]
    assert "与算法 2 中反向过程的一步" in checks.check_p_sample_step(p_sample_step.reference).message  # no gap
    message = checks.check_posterior_mean(lambda x0, xt, t, s: q_sample.reference(x0, t, xt, s)).message
    assert CJK.search(message) and "{" not in message
    result = checks.check_normal_kl(lambda m1, l1, m2, l2: 2 * checks.normal_kl(m1, l1, m2, l2))
    assert result.message == "漏了括号前的系数 1/2"
    book.setup_notebook(seed=0)  # the English edition's setup: English again
    assert book.language() == "en" and result.message == "forgot the factor 1/2 in front of the bracket"
    assert result.text.zh == "漏了括号前的系数 1/2"  # both stay reachable, whatever the language


def test_an_exercise_lists_its_typical_mistakes_in_the_language_chosen(zh):
    listing = repr(checks.EXERCISES["up_in_channels"])
    assert listing.startswith("解码器中各 ResidualBlock 的输入通道数：") and "  - 漏掉了 skip" in listing
    book.set_language("en")
    listing = repr(checks.EXERCISES["up_in_channels"]).splitlines()
    assert listing[0].startswith("the decoder's ResidualBlock input channels: fn(base_channels")
    assert listing[1] == "  - left out the skip: a decoder block reads cat([h, skip]), so in_c = c_h + c_skip"
    assert len(listing) == 1 + len(checks.EXERCISES["up_in_channels"].mistakes)
