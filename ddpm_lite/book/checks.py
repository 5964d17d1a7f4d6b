"""Automatic checks for the book's exercises: grade a reader's function against ddpm_lite and say what is wrong.

Each ``check_*`` function takes the reader's function, calls it on a few fixed random batches (float64), and
compares the result with the package's own implementation (the reference). When they disagree it also
evaluates the reference *with the typical mistakes* (a forgotten square root, alpha_t for alpha_bar_t, the
time index off by one, a wrong sign, ...); if the reader's result matches one of those, the message names it::

    >>> from ddpm_lite.book import checks
    >>> checks.check_q_sample(my_q_sample)
    ✗ forgot the square roots: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε; ...

Every check returns a :class:`CheckResult` (``passed``, ``message``); a function that raises, returns the
wrong shape or returns NaN fails with a one-sentence message instead of an exception.

Every message is written once in both of the book's languages, as a :class:`~ddpm_lite.book.Bilingual`
pair, and shows in the one the chapter chose: ``book.setup_notebook(lang="zh_CN")`` makes every grader speak
Chinese (``book.language()``); code names, formulas and numbers read the same in both.

Time-step convention, as everywhere in ddpm_lite: ``t`` is an int64 tensor (B,) of indices 0 ... T-1, and index
0 is the paper's t = 1.

Adding a check: write the reference with the reader's signature (it should call the package; its docstring, what
the reader's function computes, becomes the grader's), a ``make_trials()`` returning a list of argument dicts, and a
dict ``{Bilingual(english, chinese): wrong_function}`` of typical mistakes, and register them with one
``@exercise("name", ...)`` on the reference: that defines ``check_name`` and adds it to :data:`EXERCISES` and
``__all__``.
:func:`compare` is the one generic grader behind every check.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..diffusion import GaussianDiffusion
from ..losses import mean_flat, normal_kl
from ..sampling import ddim_sample, respace, space_timesteps
from ..schedules import NoiseSchedule, extract
from .plotting import Bilingual

__all__ = [  # and one check_<name> per registered exercise, added by @exercise
    "CheckResult",
    "MESSAGES",
    "Exercise",
    "EXERCISES",
    "exercise",
    "compare",
]


@dataclass(frozen=True, init=False)
class CheckResult:
    """The verdict on one function: ``passed`` and a one-sentence ``message``.

    Prints as "✓ correct: ...", "✗ <what is wrong>", or "… not attempted yet: ..." while the function is still the
    exercise's stub (``attempted`` is False); ``bool(result)`` is ``passed``. In a notebook write
    ``assert result.passed, result.message``. ``message`` is the text in the session's language
    (``book.language()``); ``text`` holds both (``text.en``, ``text.zh``).
    """

    passed: bool
    text: Bilingual  # the message in both languages
    attempted: bool = True  # False while the function is still the exercise's stub (it raises NotImplementedError)

    def __init__(self, passed: bool, message: str | Bilingual, attempted: bool = True):
        object.__setattr__(self, "passed", bool(passed))
        object.__setattr__(self, "text", Bilingual.of(message))
        object.__setattr__(self, "attempted", bool(attempted))

    @property
    def message(self) -> str:
        """The one-sentence verdict in the session's language."""
        return str(self.text)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        mark = "✓" if self.passed else ("✗" if self.attempted else "…")
        return f"{mark} {self.message}"

    __str__ = __repr__


# Every message the generic grader gives, in both languages; each exercise adds its own typical mistakes.
MESSAGES: dict[str, Bilingual] = {
    "not_attempted": Bilingual(
        "not attempted yet: replace the line `raise NotImplementedError(...)` with your code and run this cell again "
        "(one answer is in the solution cell below)",
        "尚未作答：把 `raise NotImplementedError(...)` 这一行换成你的代码，再运行本单元格（下方的答案单元格给出了一种解法）"),
    "correct": Bilingual("correct: matches {what} on {n} random batches",
                         "正确：在 {n} 组随机输入上与 {what} 的结果一致"),
    "wrong_values": Bilingual(
        "wrong values: they differ from {what} by up to {worst:.3g}, and not in one of the typical ways; compare "
        "your formula with the chapter's equation term by term",
        "数值不对：与 {what} 的结果最多相差 {worst:.3g}，而且不属于常见的几类错误；请把你的公式与本章的公式逐项对照"),
    "raised": Bilingual("your function raised {error}: {detail}", "你的函数抛出了 {error}：{detail}"),
    "hint_broadcast": Bilingual(
        " (a per-sample coefficient of shape (B,) must be reshaped to (B, 1, ..., 1) to broadcast against x)",
        "（形状为 (B,) 的逐样本系数要先变形为 (B, 1, ..., 1)，才能与 x 广播）"),
    "hint_index": Bilingual(
        " (is {time_arg} off by one? the valid indices are 0 ... T-1, and index 0 is the paper's t = 1)",
        "（{time_arg} 是否差了一位？合法的时间步下标是 0 ... T-1，下标 0 对应论文中的 t = 1）"),
    "returned_sequence": Bilingual("your function returned a {kind}; return one tensor of shape {shape}",
                                   "你的函数返回了一个 {kind}；应当只返回一个形状为 {shape} 的张量"),
    "not_a_tensor": Bilingual("your function returned a {kind}, not a tensor",
                              "你的函数返回的是 {kind}，而不是张量"),
    "wrong_shape": Bilingual("wrong shape: expected {expected}, got {got}", "形状不对：应为 {expected}，实际为 {got}"),
    "not_finite": Bilingual("your function returned NaN or infinite values (a log of 0 or a division by 0?)",
                            "你的函数返回了 NaN 或无穷大（是不是对 0 取了对数，或者除以了 0？）"),
    "not_a_function": Bilingual("expected a function {signature}, got a {kind}",
                                "需要一个函数 {signature}，实际传入的是 {kind}"),
    "off_by_one": Bilingual(
        "off by one in {time_arg}: your result is the reference at index {time_arg} {sign} 1; index 0 is the paper's "
        "t = 1 (schedule.betas[0] is β_1), so index the schedule with {time_arg} itself",
        "时间步 {time_arg} 差了一位：你的结果等于参考实现在下标 {time_arg} {sign} 1 处的值；下标 0 对应论文中的 "
        "t = 1（schedule.betas[0] 就是 β_1），所以请直接用 {time_arg} 去索引 schedule"),
}


# ---------------------------------------------------------------------------------------------- the generic grader
def _clone(args: Mapping[str, Any]) -> list:
    """Fresh copies of the arguments, so that a function that writes into its inputs cannot spoil the others."""
    return [a.clone() if isinstance(a, torch.Tensor) else a for a in args.values()]


def _first_line(text: str, limit: int = 160) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _as_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    if a.shape != b.shape:
        return False
    a, b = a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def _num_timesteps(args: Mapping[str, Any]) -> int | None:
    """T of the NoiseSchedule among the arguments, if there is one (bounds the shifted time index)."""
    for value in args.values():
        if isinstance(value, NoiseSchedule):
            return value.num_timesteps
    return None


def _time_shifted(reference: Callable, time_arg: str, shift: int) -> Callable:
    """The reference evaluated at t + shift; raises IndexError where t + shift leaves 0 ... T-1 (trial skipped)."""

    def wrong(**args):
        t = args[time_arg] + shift
        upper = _num_timesteps(args)
        if bool((t < 0).any()) or (upper is not None and bool((t >= upper).any())):
            raise IndexError("shifted time index out of range")
        return reference(**{**args, time_arg: t})

    return wrong


def _off_by_one_mistakes(reference: Callable, time_arg: str) -> dict[Bilingual, Callable]:
    return {
        MESSAGES["off_by_one"].format(time_arg=time_arg, sign=sign): _time_shifted(reference, time_arg, shift)
        for sign, shift in (("+", 1), ("−", -1))
    }


def _raised(error: Exception, time_arg: str | None) -> Bilingual:
    message = MESSAGES["raised"].format(error=type(error).__name__, detail=_first_line(error))
    if isinstance(error, RuntimeError) and "must match the size" in str(error):
        message += MESSAGES["hint_broadcast"]
    elif isinstance(error, IndexError) and time_arg is not None:
        message += MESSAGES["hint_index"].format(time_arg=time_arg)
    return message


def compare(
    candidate: Callable,
    reference: Callable,
    trials: list[dict[str, Any]],
    mistakes: Mapping[str | Bilingual, Callable] | None = None,
    *,
    time_arg: str | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    what: str | Bilingual = Bilingual("the reference", "参考实现"),
) -> CheckResult:
    """Grade ``candidate`` against ``reference`` on ``trials`` and name the typical mistake it makes, if any.

    trials: argument dicts; every function is called positionally with the values, in order.
    mistakes: ``{message: wrong_function}`` (message: a Bilingual pair), each wrong function with keyword arguments
    named like the trials';
    the first whose outputs match the candidate's on every trial where it can be evaluated gives the message.
    time_arg: the name of the time-index argument; adds the two off-by-one mistakes (reference at t + 1 and t - 1).
    rtol, atol: the tolerance of :func:`torch.allclose` (a float32 answer to float64 inputs passes).
    what: the name of the reference, for the success message.
    """
    named = dict(mistakes or {})
    if time_arg is not None:
        named.update(_off_by_one_mistakes(lambda **a: reference(*a.values()), time_arg))
    outputs, expected_outputs = [], []
    for args in trials:
        expected = reference(*_clone(args))
        try:
            got = candidate(*_clone(args))
        except NotImplementedError:  # the exercise's stub, not yet replaced: not a wrong answer
            return CheckResult(False, MESSAGES["not_attempted"], attempted=False)
        except Exception as error:  # the reader's code may raise anything; report it in one sentence
            return CheckResult(False, _raised(error, time_arg))
        if isinstance(got, (tuple, list)):
            return CheckResult(False, MESSAGES["returned_sequence"].format(kind=type(got).__name__,
                                                                           shape=tuple(expected.shape)))
        tensor = _as_tensor(got)
        if tensor is None:
            return CheckResult(False, MESSAGES["not_a_tensor"].format(kind=type(got).__name__))
        if tuple(tensor.shape) != tuple(expected.shape):
            return CheckResult(False, MESSAGES["wrong_shape"].format(expected=tuple(expected.shape),
                                                                     got=tuple(tensor.shape)))
        if not bool(torch.isfinite(tensor).all()):
            return CheckResult(False, MESSAGES["not_finite"])
        outputs.append(tensor)
        expected_outputs.append(expected)

    if all(_close(got, exp, rtol, atol) for got, exp in zip(outputs, expected_outputs)):
        return CheckResult(True, MESSAGES["correct"].format(what=what, n=len(trials)))

    for message, wrong in named.items():
        if _matches(wrong, trials, outputs, rtol, atol):
            return CheckResult(False, message)
    worst = max((got.double() - exp.double()).abs().max().item() for got, exp in zip(outputs, expected_outputs))
    return CheckResult(False, MESSAGES["wrong_values"].format(what=what, worst=worst))


def _matches(wrong: Callable, trials, outputs, rtol: float, atol: float) -> bool:
    """Does ``wrong`` reproduce the candidate's outputs on every trial where it can be evaluated (at least one)?"""
    evaluated = 0
    for args, got in zip(trials, outputs):
        try:
            value = wrong(**dict(zip(args, _clone(args))))
        except IndexError:  # e.g. an off-by-one index that leaves 0 ... T-1 on this trial
            continue
        if not _close(got, value, rtol, atol):
            return False
        evaluated += 1
    return evaluated > 0


@dataclass(frozen=True)
class Exercise:
    """One exercise: the reference (called with the reader's signature), its trials, and its typical mistakes."""

    name: str | Bilingual  # the quantity, as named in the success message
    signature: str | Bilingual  # the reader's function, e.g. "fn(x_start, t, noise, schedule) -> x_t"
    reference: Callable  # computes the answer with ddpm_lite, same signature as the reader's function
    make_trials: Callable[[], list[dict[str, Any]]]  # fixed random argument dicts (float64)
    mistakes: Mapping[Bilingual, Callable] = field(default_factory=dict)  # message -> wrong function (keyword args)
    time_arg: str | None = "t"  # argument that holds the time index (adds the off-by-one mistakes); None if none
    rtol: float = 1e-5
    atol: float = 1e-8

    def check(self, fn: Callable) -> CheckResult:
        """Grade ``fn`` (see :func:`compare`)."""
        if not callable(fn):
            return CheckResult(False, MESSAGES["not_a_function"].format(signature=self.signature,
                                                                        kind=type(fn).__name__))
        return compare(fn, self.reference, self.make_trials(), self.mistakes, time_arg=self.time_arg,
                       rtol=self.rtol, atol=self.atol, what=self.name)

    def wrong_answers(self) -> dict[Bilingual, Callable]:
        """Every typical mistake as a function with the reader's signature (positional), for tests and demos.

        The keys are the messages (Bilingual pairs; ``str()`` of one is its text in the session's language).
        """
        named = {Bilingual.of(message): wrong for message, wrong in self.mistakes.items()}
        if self.time_arg is not None:
            named.update(_off_by_one_mistakes(lambda **a: self.reference(*a.values()), self.time_arg))
        names = list(self.make_trials()[0])
        return {message: (lambda w: lambda *a: w(**dict(zip(names, a))))(w) for message, w in named.items()}

    def __repr__(self) -> str:
        """The exercise and the typical mistakes its check names, in the session's language (one per line)."""
        head = _EXERCISE_HEADER.format(name=self.name, signature=self.signature)
        return "\n".join([str(head), *(f"  - {message}" for message in self.wrong_answers())])


_EXERCISE_HEADER = Bilingual("{name}: {signature}; the typical mistakes its check names:",
                             "{name}：{signature}；检查能识别出的常见错误：")

EXERCISES: dict[str, Exercise] = {}
"""Every exercise by name, in the book's order, as :func:`exercise` registered it; ``EXERCISES[name].wrong_answers()``
lists its typical mistakes as functions."""


def exercise(key: str, **fields) -> Callable[[Callable], Callable]:
    """Register the decorated reference as the exercise ``key``: ``EXERCISES[key]`` and the grader ``check_<key>``.

    fields: the other fields of :class:`Exercise`. The reference's docstring says what the reader's function
    computes; it becomes the grader's. Returns the reference unchanged, so that other exercises' mistakes can call it.
    """
    if key in EXERCISES:
        raise ValueError(f"exercise {key!r} is registered twice: give the second one another key")

    def register(reference: Callable) -> Callable:
        if not reference.__doc__:
            raise ValueError(f"exercise {key!r}: give {reference.__name__} a docstring (what the reader's function "
                             f"computes; it becomes check_{key}'s)")
        EXERCISES[key] = Exercise(reference=reference, **fields)
        globals()[f"check_{key}"] = _grader(key, EXERCISES[key])
        __all__.append(f"check_{key}")
        return reference

    return register


def _grader(key: str, registered: Exercise) -> Callable[[Callable], CheckResult]:
    """The public ``check_<key>(fn)``: grades ``fn`` with the registered exercise, documented by its reference."""

    def check(fn: Callable) -> CheckResult:
        return registered.check(fn)

    check.__name__ = check.__qualname__ = f"check_{key}"
    signature = Bilingual.of(registered.signature).en
    check.__doc__ = f"Grade ``{signature}``: {inspect.cleandoc(registered.reference.__doc__)}"
    return check


# ------------------------------------------------------------------------------------------------- shared inputs
def _trial_schedules() -> list[NoiseSchedule]:
    """Short schedules make every coefficient mistake large; the last is Ho et al.'s linear T = 1000."""
    return [
        NoiseSchedule.from_betas(torch.linspace(0.01, 0.25, 20, dtype=torch.float64)),
        NoiseSchedule.from_name("cosine", 50),
        NoiseSchedule.from_name("linear", 1000),
    ]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _uniform(shape, g) -> torch.Tensor:
    return torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1  # data-like values in [-1, 1]


def _normal(shape, g) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _times(T: int, batch: int, g, include_ends: bool = False) -> torch.Tensor:
    """Indices 1 ... T-2 (so t - 1 and t + 1 exist), or with the ends 0 and T-1 included."""
    t = torch.randint(1, T - 1, (batch,), generator=g)
    if include_ends:
        t[0], t[-1] = 0, T - 1
    return t


IMAGE = (5, 1, 4, 4)  # (B, C, H, W); B differs from H and W, so a coefficient that does not broadcast raises


def _c(s: NoiseSchedule, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return extract(getattr(s, name), t, x)


# ------------------------------------------------------------------------------------- q(x_t | x_0), eq. (4)
def _q_sample_trials():
    trials = []
    for seed, s in enumerate(_trial_schedules()):
        g = _generator(seed)
        trials.append({"x_start": _uniform(IMAGE, g), "t": _times(s.num_timesteps, IMAGE[0], g),
                       "noise": _normal(IMAGE, g), "schedule": s})
    return trials


def _q_sample_with(signal: str, noise_coef: str):
    """x_t with the coefficients named by ``signal`` and ``noise_coef`` (expressions in ab = alpha_bar_t, a = alpha_t)."""
    coefficient = {
        "sqrt(ab)": lambda ab, a: ab.sqrt(),
        "ab": lambda ab, a: ab,
        "sqrt(1-ab)": lambda ab, a: (1 - ab).sqrt(),
        "1-ab": lambda ab, a: 1 - ab,
        "1-sqrt(ab)": lambda ab, a: 1 - ab.sqrt(),
    }

    def wrong(x_start, t, noise, schedule):
        ab, a = _c(schedule, "alphas_cumprod", t, x_start), _c(schedule, "alphas", t, x_start)
        return coefficient[signal](ab, a) * x_start + coefficient[noise_coef](ab, a) * noise

    return wrong


@exercise(
    "q_sample",
    name="GaussianDiffusion.q_sample",
    signature="fn(x_start, t, noise, schedule) -> x_t",
    make_trials=_q_sample_trials,
    mistakes={
        Bilingual("used α_t where ᾱ_t belongs: √α_t x_0 + √(1 − α_t) ε is one step q(x_t | x_{t−1}), not the jump "
                  "from x_0; use schedule.alphas_cumprod",
                  "在该用 ᾱ_t 的地方用了 α_t：√α_t x_0 + √(1 − α_t) ε 只是前向过程的一步 q(x_t | x_{t−1})，"
                  "而不是从 x_0 一步跳到 x_t；请用 schedule.alphas_cumprod"):
            lambda x_start, t, noise, schedule: GaussianDiffusion(schedule).q_sample_step(x_start, t, noise),
        Bilingual("forgot the square roots: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (standard deviations, not variances)",
                  "漏了平方根：x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε（系数是标准差，不是方差）"):
            _q_sample_with("ab", "1-ab"),
        Bilingual("forgot the square root on the noise coefficient: ε is scaled by √(1 − ᾱ_t), a standard deviation",
                  "噪声系数漏了平方根：ε 乘的是标准差 √(1 − ᾱ_t)"):
            _q_sample_with("sqrt(ab)", "1-ab"),
        Bilingual("forgot the square root on the signal coefficient: x_0 is scaled by √ᾱ_t",
                  "信号系数漏了平方根：x_0 乘的是 √ᾱ_t"):
            _q_sample_with("ab", "sqrt(1-ab)"),
        Bilingual("swapped the coefficients: x_0 is scaled by √ᾱ_t and the noise by √(1 − ᾱ_t)",
                  "两个系数写反了：x_0 乘 √ᾱ_t，噪声乘 √(1 − ᾱ_t)"):
            _q_sample_with("sqrt(1-ab)", "sqrt(ab)"),
        Bilingual("used 1 − √ᾱ_t for the noise: the variances must add up to one, so the noise is scaled by "
                  "√(1 − ᾱ_t)",
                  "噪声系数写成了 1 − √ᾱ_t：两项的方差之和必须为 1，所以噪声乘的是 √(1 − ᾱ_t)"):
            _q_sample_with("sqrt(ab)", "1-sqrt(ab)"),
        Bilingual("wrong sign: the noise is added, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε",
                  "符号错了：噪声是加上去的，x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε"):
            lambda x_start, t, noise, schedule: _q_sample_reference(x_start, t, -noise, schedule),
        Bilingual("left out the noise: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε",
                  "漏掉了噪声项：x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε"):
            lambda x_start, t, noise, schedule: _q_sample_reference(x_start, t, torch.zeros_like(noise), schedule),
    },
)
def _q_sample_reference(x_start, t, noise, schedule):
    """the reparameterised q(x_t | x_0) (Ho et al. eq. (4)).

    x_start, noise: (B, C, H, W) float64; t: (B,) int64; schedule: a :class:`NoiseSchedule`.
    Reference: :meth:`GaussianDiffusion.q_sample`.
    """
    return GaussianDiffusion(schedule).q_sample(x_start, t, noise)


# ------------------------------------------------------------------- posterior mean mu_tilde_t, eq. (7)
def _posterior_mean_trials():
    trials = []
    for seed, s in enumerate(_trial_schedules()):
        g = _generator(10 + seed)
        trials.append({"x_start": _uniform(IMAGE, g), "x_t": _normal(IMAGE, g),
                       "t": _times(s.num_timesteps, IMAGE[0], g), "schedule": s})
    return trials


def _posterior_mean_with(previous: str, root: bool = True, xt_alpha: str = "alphas"):
    """mu_tilde with alpha_bar_{t-1} replaced by ``previous``, optionally without square roots or with another alpha."""

    def wrong(x_start, x_t, t, schedule):
        ab, ab_prev = _c(schedule, "alphas_cumprod", t, x_t), _c(schedule, previous, t, x_t)
        beta, a = _c(schedule, "betas", t, x_t), _c(schedule, xt_alpha, t, x_t)
        r = torch.sqrt if root else (lambda v: v)
        return beta * r(ab_prev) / (1 - ab) * x_start + (1 - ab_prev) * r(a) / (1 - ab) * x_t

    return wrong


@exercise(
    "posterior_mean",
    name=Bilingual("GaussianDiffusion.q_posterior_mean_variance (the mean)",
                   "GaussianDiffusion.q_posterior_mean_variance（后验均值）"),
    signature="fn(x_start, x_t, t, schedule) -> mu_tilde",
    make_trials=_posterior_mean_trials,
    mistakes={
        Bilingual("swapped x_0 and x_t: the coefficient with √ᾱ_{t−1} β_t multiplies x_0, the one with "
                  "√α_t (1 − ᾱ_{t−1}) multiplies x_t",
                  "把 x_0 和 x_t 对调了：含 √ᾱ_{t−1} β_t 的系数乘 x_0，含 √α_t (1 − ᾱ_{t−1}) 的系数乘 x_t"):
            lambda x_start, x_t, t, schedule: _posterior_mean_reference(x_t, x_start, t, schedule),
        Bilingual("used ᾱ_t where ᾱ_{t−1} belongs (schedule.alphas_cumprod_prev)",
                  "在该用 ᾱ_{t−1} 的地方用了 ᾱ_t（应为 schedule.alphas_cumprod_prev）"):
            _posterior_mean_with("alphas_cumprod"),
        Bilingual("forgot the square roots: the coefficients hold √ᾱ_{t−1} and √α_t",
                  "漏了平方根：两个系数里分别是 √ᾱ_{t−1} 和 √α_t"):
            _posterior_mean_with("alphas_cumprod_prev", root=False),
        Bilingual("used ᾱ_t where α_t belongs in the coefficient of x_t, √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)",
                  "x_t 的系数 √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) 中该用 α_t 的地方用了 ᾱ_t"):
            _posterior_mean_with("alphas_cumprod_prev", xt_alpha="alphas_cumprod"),
        Bilingual("left out the x_t term: μ̃_t is a weighted sum of x_0 and x_t",
                  "漏掉了 x_t 项：后验均值 μ̃_t 是 x_0 与 x_t 的加权和"):
            lambda x_start, x_t, t, schedule: _posterior_mean_reference(x_start, torch.zeros_like(x_t), t, schedule),
        Bilingual("left out the x_0 term: μ̃_t is a weighted sum of x_0 and x_t",
                  "漏掉了 x_0 项：后验均值 μ̃_t 是 x_0 与 x_t 的加权和"):
            lambda x_start, x_t, t, schedule: _posterior_mean_reference(torch.zeros_like(x_start), x_t, t, schedule),
    },
)
def _posterior_mean_reference(x_start, x_t, t, schedule):
    """the mean of q(x_{t-1} | x_t, x_0) (Ho et al. eq. (7)).

    x_start, x_t: (B, C, H, W) float64; t: (B,) int64. Reference: :meth:`GaussianDiffusion.q_posterior_mean_variance`.
    """
    return GaussianDiffusion(schedule).q_posterior_mean_variance(x_start, x_t, t)[0]


# ----------------------------------------------------------------------------- KL between two Gaussians
def _normal_kl_trials():
    trials = []
    for seed in range(3):
        g = _generator(20 + seed)
        shape = (4, 3)
        trials.append({"mean1": _normal(shape, g), "logvar1": _normal(shape, g),
                       "mean2": _normal(shape, g), "logvar2": _normal(shape, g)})
    return trials


def _kl_scaled(factor: float, minus_one: bool = True):
    """``factor`` times the bracket of the KL, with or without its -1."""

    def wrong(mean1, logvar1, mean2, logvar2):
        bracket = 2 * normal_kl(mean1, logvar1, mean2, logvar2)
        return factor * (bracket if minus_one else bracket + 1.0)

    return wrong


@exercise(
    "normal_kl",
    name="losses.normal_kl",
    signature="fn(mean1, logvar1, mean2, logvar2) -> KL",
    make_trials=_normal_kl_trials,
    time_arg=None,
    mistakes={
        Bilingual("the KL points the wrong way: KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) divides by the second "
                  "variance",
                  "KL 散度的方向反了：KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) 除以的是第二个分布的方差"):
            lambda mean1, logvar1, mean2, logvar2: normal_kl(mean2, logvar2, mean1, logvar1),
        Bilingual("forgot the factor 1/2 in front of the bracket", "漏了括号前的系数 1/2"): _kl_scaled(1.0),
        Bilingual("forgot the −1 inside the bracket (the KL of a distribution with itself must be 0)",
                  "漏了括号里的 −1（一个分布与它自身的 KL 散度必须为 0）"): _kl_scaled(0.5, False),
        Bilingual("wrong sign: the KL is ½[log σ₂² − log σ₁² + σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂² − 1] ≥ 0",
                  "符号错了：KL 散度 ½[log σ₂² − log σ₁² + σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂² − 1] ≥ 0"):
            lambda mean1, logvar1, mean2, logvar2: -normal_kl(mean1, logvar1, mean2, logvar2),
    },
)
def _normal_kl_reference(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats.

    mean1, logvar1, mean2, logvar2: (4, 3) float64. Reference: :func:`losses.normal_kl`.
    """
    return normal_kl(mean1, logvar1, mean2, logvar2)


# --------------------------------------------------------------------------------- the prior term L_T
def _prior_kl_trials():
    return [{"x_start": _uniform(IMAGE, _generator(30 + seed)), "schedule": s}
            for seed, s in enumerate(_trial_schedules())]


def _prior_kl_from(mean_of, log_variance_of, reverse: bool = False):
    """KL(q(x_T | x_0) || N(0, I)) in bits/dim with a wrong mean or log-variance (or the KL reversed)."""

    def wrong(x_start, schedule):
        ab = schedule.alphas_cumprod[-1].to(x_start)
        mean, log_variance = mean_of(ab, x_start), log_variance_of(ab) * torch.ones_like(x_start)
        zeros = torch.zeros_like(x_start)
        kl = normal_kl(zeros, zeros, mean, log_variance) if reverse else normal_kl(mean, log_variance, zeros, zeros)
        return mean_flat(kl) / math.log(2.0)

    return wrong


_RIGHT_MEAN = lambda ab, x: ab.sqrt() * x  # noqa: E731
_RIGHT_LOG_VARIANCE = lambda ab: torch.log(1 - ab)  # noqa: E731


@exercise(
    "prior_kl",
    name="GaussianDiffusion.prior_bpd",
    signature=Bilingual("fn(x_start, schedule) -> L_T in bits/dim, (B,)",
                        "fn(x_start, schedule) -> 以 bits/dim 为单位的 L_T，形状 (B,)"),
    make_trials=_prior_kl_trials,
    time_arg=None,
    mistakes={
        Bilingual("returned nats: divide by ln 2 to get bits", "返回的单位是 nats：除以 ln 2 才得到 bits"):
            lambda x_start, schedule: _prior_kl_reference(x_start, schedule) * math.log(2.0),
        Bilingual("summed over the dimensions: bits per dimension is the mean over C·H·W",
                  "对各维求了和：bits/dim 是在 C·H·W 个维度上取平均"):
            lambda x_start, schedule: _prior_kl_reference(x_start, schedule) * x_start[0].numel(),
        Bilingual("off by one in t: x_T is the last index T − 1, you used ᾱ at index T − 2",
                  "时间步差了一位：x_T 对应最后一个下标 T − 1，你用的是下标 T − 2 处的 ᾱ"):
            lambda x_start, schedule: _prior_kl_reference(x_start, NoiseSchedule.from_betas(schedule.betas[:-1])),
        Bilingual("forgot the square root: q(x_T | x_0) has mean √ᾱ_T x_0",
                  "漏了平方根：q(x_T | x_0) 的均值是 √ᾱ_T x_0"):
            _prior_kl_from(lambda ab, x: ab * x, _RIGHT_LOG_VARIANCE),
        Bilingual("used the standard deviation √(1 − ᾱ_T) where the variance 1 − ᾱ_T belongs",
                  "在该用方差 1 − ᾱ_T 的地方用了标准差 √(1 − ᾱ_T)"):
            _prior_kl_from(_RIGHT_MEAN, lambda ab: 0.5 * torch.log(1 - ab)),
        Bilingual("the KL points the wrong way: L_T = KL(q(x_T | x_0) ‖ N(0, I)), not KL(N(0, I) ‖ q(x_T | x_0))",
                  "KL 散度的方向反了：L_T = KL(q(x_T | x_0) ‖ N(0, I))，而不是 KL(N(0, I) ‖ q(x_T | x_0))"):
            _prior_kl_from(_RIGHT_MEAN, _RIGHT_LOG_VARIANCE, reverse=True),
        Bilingual("left out x_0: the mean of q(x_T | x_0) is √ᾱ_T x_0, not 0",
                  "漏掉了 x_0：q(x_T | x_0) 的均值是 √ᾱ_T x_0，不是 0"):
            lambda x_start, schedule: _prior_kl_reference(torch.zeros_like(x_start), schedule),
    },
)
def _prior_kl_reference(x_start, schedule):
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dimension.

    x_start: (B, C, H, W) float64. Reference: :meth:`GaussianDiffusion.prior_bpd`.
    """
    return GaussianDiffusion(schedule).prior_bpd(x_start)


# -------------------------------------------------------------------------- the weight lambda_t, eq. (12)
def _eps_loss_weight_trials():
    trials = []
    for seed, s in enumerate(_trial_schedules()):
        for var_type in ("fixed_small", "fixed_large"):
            g = _generator(40 + seed)
            trials.append({"t": _times(s.num_timesteps, 6, g), "schedule": s, "model_var_type": var_type})
    return trials


def _eps_loss_weight_times(factor: Callable):
    """The reference times ``factor(schedule, t)``."""
    return lambda t, schedule, model_var_type: _eps_loss_weight_reference(t, schedule, model_var_type) * factor(
        schedule, t)


@exercise(
    "eps_loss_weight",
    name="GaussianDiffusion.eps_loss_weight",
    signature="fn(t, schedule, model_var_type) -> lambda_t, (B,)",
    make_trials=_eps_loss_weight_trials,
    mistakes={
        Bilingual("used the other variance: σ_t² is β̃_t (schedule.posterior_variance) for \"fixed_small\" and β_t for "
                  "\"fixed_large\"",
                  "两种方差用反了：\"fixed_small\" 对应 σ_t² = β̃_t（schedule.posterior_variance），"
                  "\"fixed_large\" 对应 σ_t² = β_t"):
            lambda t, schedule, model_var_type: _eps_loss_weight_reference(
                t, schedule, {"fixed_small": "fixed_large", "fixed_large": "fixed_small"}[model_var_type]),
        Bilingual("ignored model_var_type: \"fixed_large\" means σ_t² = β_t, not β̃_t",
                  "忽略了 model_var_type：\"fixed_large\" 表示 σ_t² = β_t，而不是 β̃_t"):
            lambda t, schedule, model_var_type: _eps_loss_weight_reference(t, schedule, "fixed_small"),
        Bilingual("ignored model_var_type: \"fixed_small\" means σ_t² = β̃_t (schedule.posterior_variance), not β_t",
                  "忽略了 model_var_type：\"fixed_small\" 表示 σ_t² = β̃_t（schedule.posterior_variance），而不是 β_t"):
            lambda t, schedule, model_var_type: _eps_loss_weight_reference(t, schedule, "fixed_large"),
        Bilingual("forgot to square β_t in the numerator: λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t))",
                  "分子里的 β_t 忘了平方：λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t))"):
            _eps_loss_weight_times(lambda s, t: 1 / s.betas[t]),
        Bilingual("forgot the 2 in the denominator 2 σ_t²", "漏了分母 2 σ_t² 中的 2"):
            _eps_loss_weight_times(lambda s, t: 2.0),
        Bilingual("used ᾱ_t where α_t belongs in the denominator α_t (1 − ᾱ_t)",
                  "分母 α_t (1 − ᾱ_t) 中该用 α_t 的地方用了 ᾱ_t"):
            _eps_loss_weight_times(lambda s, t: s.alphas[t] / s.alphas_cumprod[t]),
        Bilingual("left out α_t in the denominator 2 σ_t² α_t (1 − ᾱ_t)", "漏了分母 2 σ_t² α_t (1 − ᾱ_t) 中的 α_t"):
            _eps_loss_weight_times(lambda s, t: s.alphas[t]),
        Bilingual("forgot to square the square root: the denominator holds 1 − ᾱ_t, not √(1 − ᾱ_t)",
                  "平方根忘了平方：分母里是 1 − ᾱ_t，而不是 √(1 − ᾱ_t)"):
            _eps_loss_weight_times(lambda s, t: (1 - s.alphas_cumprod[t]).sqrt()),
        Bilingual("inverted the weight: λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t))",
                  "权重取了倒数：λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t))"):
            lambda t, schedule, model_var_type: 1 / _eps_loss_weight_reference(t, schedule, model_var_type),
    },
)
def _eps_loss_weight_reference(t, schedule, model_var_type):
    """lambda_t of Ho et al. eq. (12) for a fixed sigma_t^2.

    t: (B,) int64 indices 1 ... T-2; model_var_type: "fixed_small" (sigma_t^2 = beta_tilde_t) or "fixed_large"
    (sigma_t^2 = beta_t). Reference: :meth:`GaussianDiffusion.eps_loss_weight`.
    """
    return GaussianDiffusion(schedule, model_var_type=model_var_type).eps_loss_weight(t)


# ------------------------------------------------------------------ one step of Algorithm 2, line 4
def _p_sample_step_trials():
    trials = []
    for seed, s in enumerate(_trial_schedules()):
        g = _generator(50 + seed)
        trials.append({"x_t": _normal(IMAGE, g), "t": _times(s.num_timesteps, IMAGE[0], g, include_ends=seed == 2),
                       "eps": _normal(IMAGE, g), "z": _normal(IMAGE, g), "schedule": s})
    return trials


def _p_sample_step_with(scale: str | None = "alphas", root_noise: bool = True, sigma: str = "sigma"):
    """Algorithm 2, line 4, with 1/sqrt(``scale``) in front (None: no division), a missing root, or another sigma_t."""

    def wrong(x_t, t, eps, z, schedule):
        c = lambda name: _c(schedule, name, t, x_t)  # noqa: E731
        eps_coef = c("betas") / (c("sqrt_one_minus_alphas_cumprod") if root_noise else 1 - c("alphas_cumprod"))
        mean = (x_t - eps_coef * eps) / (c(scale).sqrt() if scale else 1.0)
        nonzero = (t != 0).to(x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        noise_scale = {
            "sigma": c("posterior_variance").sqrt(),
            "sigma^2": c("posterior_variance"),
            "beta": nonzero * c("betas").sqrt(),
            "clipped, always": c("posterior_log_variance_clipped").mul(0.5).exp(),
        }[sigma]
        return mean + noise_scale * z

    return wrong


@exercise(
    "p_sample_step",
    name=Bilingual("one step of Algorithm 2 (ddpm_lite.sampling.p_sample without clipping)",
                   "算法 2 中反向过程的一步（不做截断的 ddpm_lite.sampling.p_sample）"),
    signature="fn(x_t, t, eps, z, schedule) -> x_{t-1}",
    make_trials=_p_sample_step_trials,
    mistakes={
        Bilingual("used 1/√ᾱ_t where 1/√α_t belongs in front of the bracket", "括号前该用 1/√α_t 的地方用了 1/√ᾱ_t"):
            _p_sample_step_with(scale="alphas_cumprod"),
        Bilingual("forgot the square root in the ε coefficient β_t / √(1 − ᾱ_t)",
                  "ε 的系数 β_t / √(1 − ᾱ_t) 漏了平方根"):
            _p_sample_step_with(root_noise=False),
        Bilingual("forgot to divide the bracket by √α_t", "括号里的式子忘了除以 √α_t"):
            _p_sample_step_with(scale=None),
        Bilingual("wrong sign: the predicted noise is subtracted, x_t − β_t/√(1 − ᾱ_t) ε_θ",
                  "符号错了：预测的噪声要减去，x_t − β_t/√(1 − ᾱ_t) ε_θ"):
            lambda x_t, t, eps, z, schedule: _p_sample_step_reference(x_t, t, -eps, z, schedule),
        Bilingual("forgot the square root on the noise: add σ_t z, the standard deviation, not σ_t² z",
                  "噪声项漏了平方根：加的是标准差乘 z，即 σ_t z，而不是 σ_t² z"):
            _p_sample_step_with(sigma="sigma^2"),
        Bilingual("used σ_t² = β_t (\"fixed_large\"); this exercise uses σ_t² = β̃_t, schedule.posterior_variance",
                  "用了 σ_t² = β_t（\"fixed_large\"）；本练习用的是 σ_t² = β̃_t，即 schedule.posterior_variance"):
            _p_sample_step_with(sigma="beta"),
        Bilingual("added noise at the last step: Algorithm 2 sets z = 0 at t = 1 (index 0)",
                  "最后一步也加了噪声：算法 2 在 t = 1（下标 0）处令 z = 0"):
            _p_sample_step_with(sigma="clipped, always"),
        Bilingual("left out the noise σ_t z", "漏掉了噪声项 σ_t z"):
            lambda x_t, t, eps, z, schedule: _p_sample_step_reference(x_t, t, eps, torch.zeros_like(z), schedule),
    },
)
def _p_sample_step_reference(x_t, t, eps, z, schedule):
    """Algorithm 2 line 4 with sigma_t^2 = beta_tilde_t ("fixed_small"):

        x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,   z = 0 at index 0.

    x_t, eps, z: (B, C, H, W) float64; t: (B,) int64, one trial includes 0 and T-1. Reference: mu_theta of eq. (11),
    :meth:`GaussianDiffusion.mean_from_eps`, plus sigma_t z; beta_tilde at index 0 (the paper's t = 1) is exactly 0,
    so z drops out there as Algorithm 2 says. The tests check that this equals :func:`ddpm_lite.sampling.p_sample`
    (no clipping) for the same z.
    """
    diffusion = GaussianDiffusion(schedule, model_var_type="fixed_small")
    variance, _ = diffusion.p_variance(x_t, t)
    return diffusion.mean_from_eps(x_t, t, eps) + variance.sqrt() * z


# ------------------------------------------------------------------------- sinusoidal time embedding
def _timestep_embedding_trials():
    return [{"t": torch.randint(1, 999, (6,), generator=_generator(60 + i)), "dim": dim}
            for i, dim in enumerate((16, 64, 9))]


def _embedding_halves(arrange: Callable):
    def wrong(t, dim):
        e, k = _timestep_embedding_reference(t, dim), dim // 2
        return torch.cat([arrange(e[:, :k], e[:, k: 2 * k]), e[:, 2 * k:]], dim=1)

    return wrong


@exercise(
    "timestep_embedding",
    name="unet.timestep_embedding",
    signature="fn(t, dim) -> (B, dim)",
    make_trials=_timestep_embedding_trials,
    rtol=1e-4,
    atol=2e-4,  # float32 sines of arguments up to ~1000 radians
    mistakes={
        Bilingual("cosines first: ddpm_lite (like improved-diffusion) concatenates [sin, cos], the sines first",
                  "余弦放在了前面：ddpm_lite（与 improved-diffusion 一样）按 [sin, cos] 的顺序拼接，正弦在前"):
            _embedding_halves(lambda sin, cos: torch.cat([cos, sin], dim=1)),
        Bilingual("interleaved sines and cosines: ddpm_lite concatenates all sines, then all cosines",
                  "正弦与余弦交错排列了：ddpm_lite 先放全部正弦，再放全部余弦"):
            _embedding_halves(lambda sin, cos: torch.stack([sin, cos], dim=2).flatten(1)),
        Bilingual("frequencies max_period^(−i/(k−1)) are Ho et al.'s TensorFlow convention (diffusers' "
                  "downscale_freq_shift=1); ddpm_lite uses max_period^(−i/k) with k = dim // 2",
                  "频率 max_period^(−i/(k−1)) 是 Ho 等人 TensorFlow 代码的约定（即 diffusers 的 "
                  "downscale_freq_shift=1）；ddpm_lite 用的是 max_period^(−i/k)，其中 k = dim // 2"):
            lambda t, dim: _timestep_embedding_reference(t, dim, 10000.0 ** ((dim // 2) / (dim // 2 - 1))),
        Bilingual("divided the exponent by dim instead of k = dim // 2: the frequencies are max_period^(−i/k)",
                  "指数除以了 dim，而应除以 k = dim // 2：频率是 max_period^(−i/k)"):
            lambda t, dim: _timestep_embedding_reference(t, dim, 10000.0 ** ((dim // 2) / dim)),
    },
)
def _timestep_embedding_reference(t, dim, max_period=10000.0):
    """the sinusoidal embedding [sin(t f_i), cos(t f_i)], f_i = 10000^(-i/k).

    t: (B,) int64; an odd ``dim`` ends with one zero column. Reference: :func:`ddpm_lite.unet.timestep_embedding`.
    """
    from ..unet import timestep_embedding  # the network module is imported only by this check

    return timestep_embedding(t, dim, max_period)


# =============================================================================================== Part II
# ------------------------------------------------------------------------- L_simple, Algorithm 1 lines 2-5
def _toy_model(x_t, t):
    """A fixed stand-in for eps_theta that depends on x_t and t."""
    return torch.tanh(x_t) * (1 + t.to(x_t.dtype).reshape(-1, 1, 1, 1) / 100)


def _training_loss_trials():
    trials = []
    for seed, s in enumerate(_trial_schedules()):
        g = _generator(100 + seed)
        trials.append({"model": _toy_model, "x_start": _uniform(IMAGE, g), "t": _times(s.num_timesteps, IMAGE[0], g),
                       "noise": _normal(IMAGE, g), "schedule": s})
    return trials


def _training_loss_with(make_x_t, target="noise", model_input="x_t"):
    def wrong(model, x_start, t, noise, schedule):
        x_t = make_x_t(x_start, t, noise, schedule)
        output = model(x_t if model_input == "x_t" else x_start, t)
        return mean_flat(((noise if target == "noise" else x_start) - output) ** 2)

    return wrong


@exercise(
    "training_loss",
    name="GaussianDiffusion.training_losses",
    signature="fn(model, x_start, t, noise, schedule) -> (B,)",
    make_trials=_training_loss_trials,
    mistakes={
        Bilingual("regressed x_0: the target of L_simple is the noise ε", "回归的是 x_0：L_simple 的目标是噪声 ε"):
            _training_loss_with(_q_sample_reference, target="x_start"),
        Bilingual("gave the model x_0: it sees the noisy x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε",
                  "把 x_0 输入了模型：模型看到的应是加噪后的 x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε"):
            _training_loss_with(_q_sample_reference, model_input="x_0"),
        Bilingual("summed over the pixels: average the squared error over each image's C·H·W values",
                  "对像素求了和：平方误差应在每张图像的 C·H·W 个值上取平均"):
            lambda model, x_start, t, noise, schedule: _training_loss_reference(model, x_start, t, noise, schedule)
            * x_start[0].numel(),
        Bilingual("used α_t where ᾱ_t belongs: x_t is one jump from x_0, √ᾱ_t x_0 + √(1 − ᾱ_t) ε",
                  "在该用 ᾱ_t 的地方用了 α_t：x_t 是从 x_0 一步跳到的，√ᾱ_t x_0 + √(1 − ᾱ_t) ε"):
            _training_loss_with(lambda x_start, t, noise, schedule: GaussianDiffusion(schedule).q_sample_step(
                x_start, t, noise)),
        Bilingual("forgot the square roots: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε", "漏了平方根：x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε"):
            _training_loss_with(_q_sample_with("ab", "1-ab")),
    },
)
def _training_loss_reference(model, x_start, t, noise, schedule):
    """the per-image L_simple of Algorithm 1:
    mean over pixels of ||noise - model(sqrt(alpha_bar_t) x_start + sqrt(1 - alpha_bar_t) noise, t)||^2.

    model: a callable (x_t, t) -> eps; x_start, noise: (B, C, H, W) float64; t: (B,) int64.
    Reference: :meth:`GaussianDiffusion.training_losses` (loss_type "simple").
    """
    return GaussianDiffusion(schedule).training_losses(model, x_start, t=t, noise=noise)["loss"]


# ------------------------------------------------------------------------------- one EMA update of the weights
def _ema_update_trials():
    g = _generator(110)
    return [{"ema_weight": _normal((4, 3), g), "weight": _normal((4, 3), g), "decay": decay} for decay in (0.9, 0.99)]


@exercise(
    "ema_update",
    name=Bilingual("the EMA of training.make_ema", "training.make_ema 的指数滑动平均（EMA）"),
    signature=Bilingual("fn(ema_weight, weight, decay) -> new ema_weight",
                        "fn(ema_weight, weight, decay) -> 新的 ema_weight"),
    make_trials=_ema_update_trials,
    time_arg=None,
    mistakes={
        Bilingual("swapped the weights: the old average keeps the large share d, the new weights get 1 − d",
                  "两个权重对调了：旧的滑动平均保留大份额 d，新权重只占 1 − d"):
            lambda ema_weight, weight, decay: (1 - decay) * ema_weight + decay * weight,
        Bilingual("forgot the factor 1 − d on the new weights: the two shares must add up to 1",
                  "新权重漏了系数 1 − d：两部分的份额之和必须为 1"):
            lambda ema_weight, weight, decay: decay * ema_weight + weight,
        Bilingual("returned the new weights: the average moves only a fraction 1 − d towards them",
                  "直接返回了新权重：滑动平均每次只向新权重移动 1 − d 的比例"):
            lambda ema_weight, weight, decay: weight,
    },
)
def _ema_update_reference(ema_weight, weight, decay):
    """one update d * ema + (1 - d) * weight.

    ema_weight, weight: (4, 3) float64 tensors; decay: a float. Reference: :func:`ddpm_lite.training.make_ema`.
    """
    from ..training import make_ema  # the trainer is imported only by this check

    holder = torch.nn.ParameterDict({"w": torch.nn.Parameter(ema_weight.clone())})
    average = make_ema(holder, decay)
    average.update_parameters(holder)  # torch's first update copies: the average is now ema_weight
    with torch.no_grad():
        holder["w"].copy_(weight)
    average.update_parameters(holder)  # one EMA step
    return average.module["w"].detach()


# ---------------------------------------------------------------------------- one DDIM step (eta = 0)
def _ddim_step_trials():
    trials = []
    for seed, s in enumerate(_trial_schedules()):
        g = _generator(200 + seed)
        t = _times(s.num_timesteps, IMAGE[0], g)
        t[0] = 0 if seed == 0 else t[0]  # index 0: the last step, where alpha_bar_{t-1} = 1
        trials.append({"x_t": _normal(IMAGE, g), "t": t, "eps": _normal(IMAGE, g), "schedule": s})
    return trials


def _ddim_step_with(prev="alphas_cumprod_prev", roots=True, noise_term=True):
    def wrong(x_t, t, eps, schedule):
        alpha_bar, alpha_bar_prev = _c(schedule, "alphas_cumprod", t, x_t), _c(schedule, prev, t, x_t)
        x0_hat = (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        signal, noise = (alpha_bar_prev.sqrt(), (1 - alpha_bar_prev).sqrt()) if roots else (alpha_bar_prev, 1 - alpha_bar_prev)
        return signal * x0_hat + (noise * eps if noise_term else 0)

    return wrong


@exercise(
    "ddim_step",
    name=Bilingual("sampling.ddim_sample with eta = 0", "eta = 0 时的 sampling.ddim_sample"),
    signature="fn(x_t, t, eps, schedule) -> x_{t-1}",
    make_trials=_ddim_step_trials,
    mistakes={
        Bilingual("used ᾱ_t where ᾱ_{t−1} belongs: the step moves to the noise level of t − 1 (your x_{t−1} is x_t)",
                  "在该用 ᾱ_{t−1} 的地方用了 ᾱ_t：这一步要走到 t − 1 的噪声水平（你的 x_{t−1} 就是 x_t 本身）"):
            _ddim_step_with(prev="alphas_cumprod"),
        Bilingual("forgot the square roots: x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1}) ε_θ",
                  "漏了平方根：x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1}) ε_θ"):
            _ddim_step_with(roots=False),
        Bilingual("left out the predicted noise: DDIM adds √(1 − ᾱ_{t−1}) ε_θ back to √ᾱ_{t−1} x̂_0",
                  "漏掉了预测的噪声：DDIM 要在 √ᾱ_{t−1} x̂_0 上加回 √(1 − ᾱ_{t−1}) ε_θ"):
            _ddim_step_with(noise_term=False),
        Bilingual("took Algorithm 2's mean, eq. (11): DDIM's step is √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1}) ε_θ",
                  "用了算法 2 的均值（式 (11)）：DDIM 的一步是 √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1}) ε_θ"):
            lambda x_t, t, eps, schedule: GaussianDiffusion(schedule).mean_from_eps(x_t, t, eps),
    },
)
def _ddim_step_reference(x_t, t, eps, schedule):
    """the deterministic DDIM step (Song et al. eq. (12), eta = 0):

        x_{t-1} = sqrt(alpha_bar_{t-1}) x0_hat + sqrt(1 - alpha_bar_{t-1}) eps,
        x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t).

    x_t, eps: (B, C, H, W) float64; t: (B,) int64, one trial includes index 0. Reference: :func:`sampling.ddim_sample`.
    """
    return ddim_sample(GaussianDiffusion(schedule), lambda x, s: eps, x_t, t, eta=0.0, clip_denoised=False)["sample"]


# ------------------------------------------------------------------------ the betas of a respaced chain
def _respaced_betas_trials():
    g = _generator(210)
    trials = []
    for s, K in zip(_trial_schedules()[1:], (7, 25)):
        trials.append({"schedule": s, "timesteps": space_timesteps(s.num_timesteps, K)})
        trials.append({"schedule": s, "timesteps": torch.randperm(s.num_timesteps, generator=g)[:K].sort().values.tolist()})
    return trials


def _respaced_betas_dividing_first_by(first_previous: Callable):
    def wrong(schedule, timesteps):
        kept = schedule.alphas_cumprod[timesteps]
        return 1 - kept / torch.cat([first_previous(kept), kept[:-1]])

    return wrong


@exercise(
    "respaced_betas",
    name="respace",
    signature="fn(schedule, timesteps) -> (K,)",
    make_trials=_respaced_betas_trials,
    time_arg=None,
    mistakes={
        Bilingual("kept the one-step β_{τ_i} = 1 − ᾱ_{τ_i}/ᾱ_{τ_i − 1}: divide by ᾱ at the previous *kept* step, "
                  "τ_{i−1}",
                  "沿用了单步的 β_{τ_i} = 1 − ᾱ_{τ_i}/ᾱ_{τ_i − 1}：应除以上一个*保留下来的*时间步 τ_{i−1} 处的 ᾱ"):
            lambda schedule, timesteps: schedule.betas[timesteps],
        Bilingual("the first step divides by ᾱ_{τ_0} = 1 (the chain starts at x_0), not by ᾱ_{τ_1}",
                  "第一步应除以 ᾱ_{τ_0} = 1（马尔可夫链从 x_0 出发），而不是 ᾱ_{τ_1}"):
            _respaced_betas_dividing_first_by(lambda kept: kept[:1]),
        Bilingual("returned the ratios ᾱ_{τ_i}/ᾱ_{τ_{i−1}}, which are α'_i: β'_i = 1 − α'_i",
                  "返回的是比值 ᾱ_{τ_i}/ᾱ_{τ_{i−1}}，也就是 α'_i：应为 β'_i = 1 − α'_i"):
            lambda schedule, timesteps: 1 - _respaced_betas_reference(schedule, timesteps),
    },
)
def _respaced_betas_reference(schedule, timesteps):
    """the variances beta'_i = 1 - alpha_bar_{tau_i} / alpha_bar_{tau_{i-1}} (alpha_bar_{tau_0} = 1) of the chain
    that keeps the sorted indices ``timesteps``. Reference: :func:`sampling.respace`.
    """
    return respace(GaussianDiffusion(schedule), timesteps).schedule.betas


# ----------------------------------------------------------------- the U-Net's decoder channel bookkeeping
def _decoder_columns(base_channels, channel_mult, num_res_blocks):
    """(c_h, c_skip, c_out) of every decoder ResidualBlock, read from a real U-Net, and the pushed skips."""
    from ..unet import UNet, UNetConfig  # the network is imported only by the U-Net checks
    from .unet_drawing import unet_layout

    net = UNet(UNetConfig(base_channels=base_channels, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                          attention_resolutions=(), num_heads=1, image_size=4 * 2 ** (len(channel_mult) - 1)))
    nodes = [n for n in unet_layout(net)["nodes"] if "skip_ch" in n]
    pushed = [net.input_conv.out_channels] + [c for block in net.down for c in block.skip_channels]
    return ([n["in_ch"] - n["skip_ch"] for n in nodes], [n["skip_ch"] for n in nodes], [n["out_ch"] for n in nodes],
            pushed)


def _up_in_channels_fifo(base_channels, channel_mult, num_res_blocks):
    h, _, _, pushed = _decoder_columns(base_channels, channel_mult, num_res_blocks)
    return torch.tensor([a + b for a, b in zip(h, pushed)])  # skips taken first-in, first-out


@exercise(
    "up_in_channels",
    name=Bilingual("the decoder's ResidualBlock input channels", "解码器中各 ResidualBlock 的输入通道数"),
    signature=Bilingual(
        "fn(base_channels, channel_mult, num_res_blocks) -> (number of decoder ResidualBlocks,) int tensor",
        "fn(base_channels, channel_mult, num_res_blocks) -> 形状为 (解码器中 ResidualBlock 的个数,) 的整数张量"),
    make_trials=lambda: [dict(base_channels=32, channel_mult=(1, 2), num_res_blocks=1),
                         dict(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=2),
                         dict(base_channels=8, channel_mult=(1, 2, 3, 4), num_res_blocks=1)],
    time_arg=None,
    mistakes={
        Bilingual("left out the skip: a decoder block reads cat([h, skip]), so in_c = c_h + c_skip",
                  "漏掉了 skip：解码器的块读入 cat([h, skip])，所以 in_c = c_h + c_skip"):
            lambda base_channels, channel_mult, num_res_blocks: torch.tensor(
                _decoder_columns(base_channels, channel_mult, num_res_blocks)[0]),
        Bilingual("used in_c = 2 c_out: the skip has the channels of the encoder tensor it comes from, and the first "
                  "block of a level receives h from the level below",
                  "用了 in_c = 2 c_out：skip 的通道数等于它所来自的编码器张量的通道数，而且每一层的第一个块"
                  "收到的 h 来自下面一层"):
            lambda base_channels, channel_mult, num_res_blocks: 2 * torch.tensor(
                _decoder_columns(base_channels, channel_mult, num_res_blocks)[2]),
        Bilingual("took the skips first-in, first-out: the decoder pops the most recent skip (last in, first out)",
                  "按先进先出取了 skip：解码器每次取出的是最近压入的 skip（后进先出）"):
            _up_in_channels_fifo,
    },
)
def _up_in_channels_reference(base_channels, channel_mult, num_res_blocks):
    """the input channels of every decoder ResidualBlock of a :class:`~ddpm_lite.unet.UNet`, in execution order.

    Reference: the modules of a real UNet.
    """
    h, skip, _, _ = _decoder_columns(base_channels, channel_mult, num_res_blocks)
    return torch.tensor([a + b for a, b in zip(h, skip)])


def _residual_block_parameters_without(in_ch, out_ch, time_dim, injection,
                                       leave_out: Callable = lambda name: False):
    """The parameter count of a ResidualBlock less the parameters for which ``leave_out(name)`` is true."""
    from ..unet import ResidualBlock

    block = ResidualBlock(in_ch, out_ch, time_dim, injection=injection)
    return torch.tensor(sum(p.numel() for name, p in block.named_parameters() if not leave_out(name)))


def _time_projection(in_ch, out_ch, time_dim, injection, sign: int, when: str):
    """The full count, minus (sign = -1) or plus (+1) one projection time_dim -> out_ch when injection == when."""
    full = _residual_block_parameters_without(in_ch, out_ch, time_dim, injection)
    return full + sign * (time_dim + 1) * out_ch * (injection == when)


@exercise(
    "residual_block_parameters",
    name=Bilingual("the parameter count of unet.ResidualBlock", "unet.ResidualBlock 的参数量"),
    signature="fn(in_ch, out_ch, time_dim, injection) -> int",
    make_trials=lambda: [dict(in_ch=32, out_ch=32, time_dim=128, injection="additive"),
                         dict(in_ch=32, out_ch=64, time_dim=128, injection="scale_shift"),
                         dict(in_ch=96, out_ch=32, time_dim=64, injection="none"),
                         dict(in_ch=64, out_ch=32, time_dim=128, injection="additive")],
    time_arg=None,
    rtol=0,
    atol=0,
    mistakes={
        Bilingual("forgot the 1x1 skip convolution: when in_ch != out_ch the skip path is a Conv2d(in_ch, out_ch, 1) "
                  "with a bias",
                  "漏掉了 1x1 的 skip 卷积：in_ch != out_ch 时，skip 支路是一个带偏置的 Conv2d(in_ch, out_ch, 1)"):
            lambda in_ch, out_ch, time_dim, injection: _residual_block_parameters_without(
                in_ch, out_ch, time_dim, injection, lambda name: name.startswith("skip.")),
        Bilingual("scale_shift projects the time embedding to 2 out_ch values (a scale and a shift per channel), "
                  "not out_ch",
                  "scale_shift 把时间嵌入投影成 2 out_ch 个值（每个通道一个缩放、一个平移），而不是 out_ch 个"):
            lambda in_ch, out_ch, time_dim, injection: _time_projection(
                in_ch, out_ch, time_dim, injection, -1, "scale_shift"),
        Bilingual("forgot the biases of the convolutions and the linear layer", "漏了卷积层和线性层的偏置"):
            lambda in_ch, out_ch, time_dim, injection: _residual_block_parameters_without(
                in_ch, out_ch, time_dim, injection, lambda name: name.endswith("bias") and "norm" not in name),
        Bilingual("forgot GroupNorm's own parameters: a learned scale and shift per channel, in both norms",
                  "漏了 GroupNorm 自身的参数：两个归一化层中，每个通道各有一个可学习的缩放和平移"):
            lambda in_ch, out_ch, time_dim, injection: _residual_block_parameters_without(
                in_ch, out_ch, time_dim, injection, lambda name: "norm" in name),
        Bilingual("counted the time projection although injection is 'none': then the block has no time_proj",
                  "injection 为 'none' 时仍计入了时间投影：这时块里没有 time_proj"):
            lambda in_ch, out_ch, time_dim, injection: _time_projection(in_ch, out_ch, time_dim, injection, 1, "none"),
    },
)
def _residual_block_parameters_reference(in_ch, out_ch, time_dim, injection):
    """the parameter count of ``unet.ResidualBlock(in_ch, out_ch, time_dim, injection=injection)``.

    Reference: the module itself.
    """
    return _residual_block_parameters_without(in_ch, out_ch, time_dim, injection)


# --------------------------------------------------------------- the dot product of two time embeddings
def _embedding_dot_with(combine: Callable, exponent_scale: Callable | None = None):
    def wrong(t, s, dim):
        k = dim // 2
        freqs = 10000.0 ** (-torch.arange(k, dtype=torch.float64) / (exponent_scale(dim) if exponent_scale else k))
        return torch.cos(combine(t.double(), s.double())[:, None] * freqs).sum(1)

    return wrong


@exercise(
    "embedding_dot",
    name=Bilingual("the dot product of two sinusoidal embeddings", "两个正弦时间嵌入的点积"),
    signature="fn(t, s, dim) -> (B,)",
    make_trials=lambda: [{"t": torch.randint(0, 1000, (6,), generator=_generator(70 + i)),
                          "s": torch.randint(0, 1000, (6,), generator=_generator(80 + i)),
                          "dim": dim} for i, dim in enumerate((16, 32, 64))],
    time_arg=None,
    rtol=1e-4,
    atol=5e-3,  # the reference multiplies float32 sines of arguments up to 1000 radians
    mistakes={
        Bilingual("used t + s: sin a sin b + cos a cos b = cos(a − b), a function of the difference t − s",
                  "用了 t + s：sin a sin b + cos a cos b = cos(a − b)，点积只取决于差 t − s"):
            _embedding_dot_with(lambda t, s: t + s),
        Bilingual("divided the exponent by dim instead of k = dim // 2: the frequencies are 10000^(−i/k)",
                  "指数除以了 dim，而应除以 k = dim // 2：频率是 10000^(−i/k)"):
            _embedding_dot_with(lambda t, s: t - s, exponent_scale=lambda dim: dim),
        Bilingual("returned the mean over the k frequencies: the dot product is their sum",
                  "返回了 k 个频率上的平均值：点积是它们的和"):
            lambda t, s, dim: _embedding_dot_reference(t, s, dim) / (dim // 2),
    },
)
def _embedding_dot_reference(t, s, dim):
    """e(t) . e(s) of the sinusoidal embeddings = sum_i cos((t - s) f_i).

    t, s: (B,) int64. Reference: the dot product of :func:`ddpm_lite.unet.timestep_embedding`'s vectors.
    """
    e_t, e_s = _timestep_embedding_reference(t, dim), _timestep_embedding_reference(s, dim)
    return (e_t.double() * e_s.double()).sum(1)


# ---------------------------------------------------------- the learned variance of Nichol & Dhariwal
def _learned_log_variance_with(fraction: Callable, interpolate_logs: bool = True, swap: bool = False):
    def wrong(v, t, schedule):
        high = schedule.betas.log()[t][:, None]
        low = schedule.posterior_log_variance_clipped[t][:, None]
        if swap:
            high, low = low, high
        w = fraction(v)
        if interpolate_logs:
            return w * high + (1 - w) * low
        return (w * high.exp() + (1 - w) * low.exp()).log()

    return wrong


def _learned_log_variance_trials():
    trials = []
    for seed, s in enumerate(_trial_schedules()):
        g = _generator(90 + seed)
        trials.append({"v": _uniform((6, 2), g), "t": _times(s.num_timesteps, 6, g), "schedule": s})
    return trials


@exercise(
    "learned_log_variance",
    name="GaussianDiffusion.p_variance (learned_range)",
    signature="fn(v, t, schedule) -> log sigma_t^2, (B, D)",
    make_trials=_learned_log_variance_trials,
    mistakes={
        Bilingual("used v itself as the weight: the network's v lies in [−1, 1]; the weight of log β_t is (v + 1) / 2",
                  "直接把 v 当作了权重：网络输出的 v 在 [−1, 1] 之间，log β_t 的权重是 (v + 1) / 2"):
            _learned_log_variance_with(lambda v: v),
        Bilingual("interpolated the variances: Nichol and Dhariwal interpolate the log-variances, "
                  "log σ² = w log β_t + (1 − w) log β̃_t",
                  "对方差做了插值：Nichol 和 Dhariwal 插值的是对数方差，log σ² = w log β_t + (1 − w) log β̃_t"):
            _learned_log_variance_with(lambda v: (v + 1) / 2, interpolate_logs=False),
        Bilingual("swapped β_t and β̃_t: v = 1 means σ_t² = β_t (the upper end), v = −1 means β̃_t",
                  "β_t 与 β̃_t 对调了：v = 1 对应 σ_t² = β_t（上端），v = −1 对应 β̃_t"):
            _learned_log_variance_with(lambda v: (v + 1) / 2, swap=True),
    },
)
def _learned_log_variance_reference(v, t, schedule):
    """log sigma_t^2 = w log beta_t + (1 - w) log beta_tilde_t with w = (v + 1) / 2 (Nichol & Dhariwal eq. (15)).

    v: (B, D) in [-1, 1]; t: (B,) int64 with 1 <= t <= T-2.
    Reference: :meth:`GaussianDiffusion.p_variance` with model_var_type "learned_range".
    """
    diffusion = GaussianDiffusion(schedule, model_var_type="learned_range", loss_type="hybrid")
    return diffusion.p_variance(v, t, v)[1]  # x_t only sets the shape; v is the variance output

