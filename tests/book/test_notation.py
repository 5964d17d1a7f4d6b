"""book/notation.md: every ddpm_lite (and, where installed, diffusers) name in the notation table exists.

A name cell holds names in backticks, in one of three forms:
    A.b               an attribute, method, submodule or dataclass field
    A.f(x, y)         A.f takes arguments named x and y
    A.f(x="value")    A.f's argument x accepts "value" (checked against its Literal type, or by constructing A)
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest

import ddpm_lite

NOTATION = Path(__file__).resolve().parents[2] / "book" / "notation.md"
NAME = re.compile(r"^(?P<path>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\((?P<args>[^()]*)\))?$")
ARGUMENT = re.compile(r'^(?P<name>[A-Za-z_]\w*)(?:="(?P<value>[^"]*)")?$')


def table_names(column: str) -> list[tuple[str, str]]:
    """(symbol, name) for every backticked name in the table column whose header mentions ``column``."""
    rows = [line for line in NOTATION.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    index = next(i for i, cell in enumerate(header) if column in cell)
    names = []
    for row in rows[2:]:  # skip the header and the |---| line
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == len(header), f"row has {len(cells)} cells, header {len(header)}: {row}"
        names += [(cells[0], name) for name in re.findall(r"`([^`]+)`", cells[index])]
    return names


def _attribute(obj, part: str):
    """obj.part, trying submodules, dataclass fields and (for classes that need no arguments) instances."""
    if hasattr(obj, part):
        return getattr(obj, part)
    if inspect.ismodule(obj):
        try:
            return importlib.import_module(f"{obj.__name__}.{part}")
        except ImportError:
            pass
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj) and part in {f.name for f in dataclasses.fields(obj)}:
            return dataclasses.MISSING  # a field without a class-level default: it exists
        try:
            return getattr(obj(), part)  # an attribute set in __init__, e.g. DDPMScheduler().betas
        except Exception:
            pass
    raise AttributeError(f"{getattr(obj, '__name__', obj)!r} has no {part!r}")


def _parameter_options(func, name: str):
    """The Literal options of parameter ``name`` of ``func``, or None if it is not annotated with a Literal."""
    target = func.__init__ if inspect.isclass(func) else func
    try:
        annotation = typing.get_type_hints(target).get(name)
    except Exception:  # unresolvable annotations elsewhere in the signature
        annotation = inspect.signature(func).parameters[name].annotation
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None


def resolve(root, name: str) -> None:
    """Raise if ``name`` (in the forms of the module docstring) does not exist under the module ``root``."""
    match = NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a name in one of the table's forms")
    obj = root
    for part in match["path"].split("."):
        obj = _attribute(obj, part)
    if match["args"] is None:
        return
    parameters = inspect.signature(obj).parameters
    for argument in (a.strip() for a in match["args"].split(",")):
        parsed = ARGUMENT.match(argument)
        if parsed is None:
            raise ValueError(f"{argument!r} in {name!r} is not an argument name or name=\"value\"")
        if parsed["name"] not in parameters:
            raise AttributeError(f"{match['path']} has no argument {parsed['name']!r}")
        value = parsed["value"]
        if value is None:
            continue
        options = _parameter_options(obj, parsed["name"])
        if options is not None:
            if value not in options:
                raise ValueError(f"{value!r} is not one of {options} for {name!r}")
        elif inspect.isclass(obj):
            obj(**{parsed["name"]: value})  # e.g. DiffusionConfig validates its options when built
        else:
            raise ValueError(f"cannot check the value in {name!r}: {parsed['name']} is not a Literal")


DDPM_LITE_NAMES = table_names("ddpm_lite")


def test_the_table_lists_enough_names():
    assert len(DDPM_LITE_NAMES) >= 40
    symbols = " ".join(symbol for symbol, _ in DDPM_LITE_NAMES)
    for symbol in [r"\beta_t", r"\alpha_t", r"\bar\alpha_t", r"\tilde\beta_t", r"\tilde\mu_t", r"\epsilon_\theta",
                   "x_0", "x_t", "$T$", r"\sigma_t^2", r"\lambda_t", "L_T", "L_{t-1}", "L_0", r"L_{\text{simple}}",
                   "SNR", "$v"]:
        assert symbol in symbols, f"the table has no row for {symbol}"


@pytest.mark.parametrize("symbol, name", DDPM_LITE_NAMES, ids=[name for _, name in DDPM_LITE_NAMES])
def test_ddpm_lite_name_exists(symbol, name):
    resolve(ddpm_lite, name)


@pytest.mark.parametrize("symbol, name", table_names("diffusers"), ids=[name for _, name in table_names("diffusers")])
def test_diffusers_name_exists(symbol, name):
    diffusers = pytest.importorskip("diffusers")
    resolve(diffusers, name)


@pytest.mark.parametrize("misspelt", [
    "NoiseSchedule.alphas_cumprd",  # a field that does not exist
    "GaussianDiffusion.q_sampel",  # a method that does not exist
    "GaussianDiffusion.q_sample(x_strat)",  # an argument that does not exist
    "GaussianDiffusion(model_var_type=\"fixed_smal\")",  # an option value that does not exist (Literal)
    "DiffusionConfig(model_var_type=\"fixed_smal\")",  # ... checked by building the config
    "samplingg.p_sample",  # a submodule that does not exist
    "GaussianDiffusion.q_sample x_start",  # not a name at all
])
def test_a_misspelt_name_is_caught(misspelt):
    with pytest.raises((AttributeError, ValueError)):
        resolve(ddpm_lite, misspelt)


# ------------------------------------------------------------------------------------------------ the glossary
GLOSSARY_TERM = re.compile(r"^(?P<zh>[^()]+?) \((?P<en>[^()]+)\)$")
LECTURE_TERMS = ["前向过程", "反向过程", "变分下界", "损失函数简化", "重参数化", "马尔可夫链", "时间步条件的注入方式",
                 "DownBlock = ResidualBlock + AttentionBlock", "去噪得分匹配", "得分", "Langevin 动力学", "图像重建"]


def glossary() -> dict[str, list[str]]:
    """{Chinese term: [English term, alternatives]} from the definition list under "Glossary of the lecture's terms".

    A term line is ``中文 (english[, english alternative])``; its definition lines start with ':' or are indented.
    """
    text = NOTATION.read_text(encoding="utf-8").split("## Glossary of the lecture's terms", 1)[1]
    lines = text.split("\n## ", 1)[0].splitlines() + [""]
    terms = {}
    for line, following in zip(lines, lines[1:]):
        if not following.startswith(":") or not line.strip():
            continue  # only the line right before a definition (": ...") is a term
        match = GLOSSARY_TERM.match(line)
        assert match, f"glossary term {line!r} is not written as '中文 (english[, english alternative])'"
        assert match["zh"] not in terms, f"glossary term {match['zh']!r} is defined twice"
        terms[match["zh"]] = [part.strip() for part in match["en"].split(",")]
    return terms


def test_the_glossary_has_the_lectures_terms_in_the_parsed_shape():
    terms = glossary()
    for term in LECTURE_TERMS:
        assert term in terms, f"the glossary has no entry {term!r}"
    assert "ELBO" in terms["变分下界"] and terms["Langevin 动力学"] == ["Langevin dynamics"]
    assert terms["图像重建"] == ["image reconstruction"]
    generic = {"the bound", "bound", "score", "time", "model", "noise", "step"}
    for zh, english in terms.items():  # an English term this generic would force its Chinese term everywhere
        assert not generic & set(english), f"{zh}: {english} holds a generic English term"
