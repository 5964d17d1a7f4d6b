"""Every fenced code block of README.md and README.zh.md runs here (and so in `make test`), as a reader would run it.

* Python blocks run as written, each in a fresh namespace and a scratch folder (a block that README.zh.md repeats
  runs once). A comment that promises a shape on
  an assignment, ``x = ...  # (8, 1, 8, 8)``, ``t = ...  # t: (B,) int64`` or ``terms = ...  # a dict of (B,)
  tensors: "loss", ...``, is asserted on the value (capital letters stand for sizes, bound at their first use in the
  block), and so are "in [-1, 1]", a dtype and quoted dict keys in that comment.
* Shell blocks of ``ddpm-lite`` commands run line by line in a scratch folder, with this repository's package on
  PYTHONPATH and ``ddpm-lite`` a wrapper for ``python -m ddpm_lite``, on one thread and a short budget
  (:func:`shortened`), after the test wrote the input files each line names from real digits (:func:`write_inputs`);
  the training lines first, then the others, two at a time. Each line must exit with 0 and write (or print) what
  it says (:func:`check_output`).
* The fork's ``sed`` runs on a scratch copy of every file that holds the repository URL.
* Blocks that cannot run inside the test suite are listed in NOT_RUN with the reason; a block that is neither run
  nor listed fails :func:`test_every_block_is_run_or_listed`.

The module tables and the troubleshooting table are checked against the package too.
"""
from __future__ import annotations

import ast
import functools
import gzip
import io
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import ddpm_lite as dl


def _repository_root() -> Path:
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(f"no pyproject.toml above {__file__}")


ROOT = _repository_root()
READMES = (ROOT / "README.md", ROOT / "README.zh.md")
REPOSITORY_URL = "https://github.com/ddpm-lite/ddpm_lite"

# Blocks that do not run here, by their first line (without its comment), each with the reason.
NOT_RUN = {
    "make book": "the two commands themselves: `make test` runs this very test (`.ci/run` is `make test`), and "
                 "`make book` executes and builds the whole book (minutes)",
    "make catalogs": "the translator's workflow: it rewrites locale/ and book/zh/ and builds the book; `make test` "
                     "runs its checks (`.ci/i18n.py check`, `notebooks --check`) itself",
    "DDPM_LITE_CACHE=/tmp/benchcache PYTHONPATH=. python benchmarks/bench_samplers.py --n 1000 --seeds 0 1 --nfes 5 "
    "10 20 50 --threads 2": "a 12-minute benchmark, run by hand; tests/book/test_bench_samplers.py runs its functions on a "
                           "stand-in model",
    "PYTHONPATH=. python benchmarks/bench_samplers.py --n 1000 --seeds 0 1 2 --nfes 10 20 50 100 \\":
        "a 20-minute benchmark (the score-based samplers), run by hand",
    ".venv/bin/python benchmarks/bench_conditional.py --seeds 0 1":
        "trains two conditional models for 180 s each and scores them (10 minutes), run by hand",
    "PYTHONPATH=. python benchmarks/bench_likelihood.py --steps 50 --threads 2":
        "a 15-minute benchmark (the exact likelihood on all held-out digits), run by hand",
    "PYTHONPATH=. python benchmarks/train_lever_models.py --out /tmp/lever": "trains the book's model twice more and "
                                                                           "benchmarks each (minutes), run by hand",
}
SCRATCH_COPY = ("sed -i 's#https://github.com/ddpm-lite/ddpm_lite#",)  # blocks that edit the repository

# The short budget of the command blocks (see shortened()).
TRAIN = {"--steps": "2", "--batch-size": "16"}
NUM = {"sample": "4", "fd": "16", "bpd": "8", "nll": "2"}
NLL_ODE_STEPS = "5"  # the ODE's likelihood in 5 Heun steps, not 50
RECONSTRUCT_STEPS = "10"
SAMPLE_DDPM_STEPS = "50"  # Algorithm 2 on a respaced chain of 50 steps, not all T = 1000
SUBPROCESS_TIMEOUT = 300


# ---------------------------------------------------------------------------------------------- the blocks
class Block:
    def __init__(self, readme: Path, line: int, language: str, text: str):
        self.readme, self.line, self.language, self.text = readme, line, language, text

    @property
    def name(self) -> str:
        return f"{self.readme.name}:{self.line}"

    @property
    def key(self) -> str:
        """The first line without its comment, whitespace collapsed: how NOT_RUN names a block."""
        first = next(line for line in self.text.splitlines() if line.strip())
        return " ".join(re.sub(r"\s+#.*$", "", first).split())

    def commands(self) -> list[str]:
        """The logical lines (continuations joined), comment-only lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def fenced_blocks(readme: Path) -> list[Block]:
    blocks, lines, i = [], readme.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if opening:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(readme, i + 2, opening.group(1), "\n".join(lines[i + 1:end]) + "\n"))
            i = end
        i += 1
    return blocks


BLOCKS = [block for readme in READMES for block in fenced_blocks(readme)]


def _is_command_block(block: Block) -> bool:
    """Every line is `[VAR=value ...] ddpm-lite ...`."""
    for line in block.commands():
        words = [w for w in shlex.split(line, comments=True) if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
        if not words or words[0] != "ddpm-lite":
            return False
    return True


def how_run(block: Block) -> str:
    if block.language == "python":
        return "python"
    if block.key in NOT_RUN:
        return "not run"
    if block.key.startswith(SCRATCH_COPY):
        return "scratch copy"
    if block.language in ("bash", "sh", "shell") and _is_command_block(block):
        return "commands"
    return "unknown"


def _distinct(kind: str) -> list[Block]:
    """The blocks run that way, one of each text (README.zh.md repeats README.md's Python blocks)."""
    seen, out = set(), []
    for block in BLOCKS:
        if how_run(block) == kind and block.text not in seen:
            seen.add(block.text)
            out.append(block)
    return out


def test_every_block_is_run_or_listed():
    assert BLOCKS, "no fenced blocks found in the READMEs"
    unknown = [f"{b.name} ({b.key!r})" for b in BLOCKS if how_run(b) == "unknown"]
    assert not unknown, f"blocks neither run by this test nor listed in NOT_RUN with a reason: {unknown}"
    keys = {b.key for b in BLOCKS}
    stale = [key for key in NOT_RUN if key not in keys]
    assert not stale, f"NOT_RUN names blocks that no README has any more: {stale}"
    for block in BLOCKS:
        if how_run(block) in ("commands", "scratch copy"):
            placeholder = re.search(r"\[--|\w\|\w", re.sub(r"'[^']*'", "", block.text))
            assert placeholder is None, f"{block.name}: a placeholder ({placeholder.group()}...) instead of a command"
    assert {how_run(b) for b in BLOCKS} >= {"python", "commands", "scratch copy"}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- Python blocks
SHAPE = re.compile(r"^(?:[A-Za-z_]\w*:\s*|(?:a\s+)?dict\s+of\s+)?\(\s*((?:\d+|[A-Z]\w*)(?:\s*,\s*(?:\d+|[A-Z]\w*))*"
                   r"\s*,?)\s*\)")
DTYPES = {"int64": torch.int64, "float32": torch.float32, "float64": torch.float64, "bool": torch.bool}


def _comments(source: str) -> dict[int, str]:
    """Line number -> the comment on that line (without '#')."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string.lstrip("#").strip() for tok in tokens if tok.type == tokenize.COMMENT}


def check_promise(name: str, value, comment: str, sizes: dict) -> None:
    """Assert what ``comment`` promises about ``value``: its shape (or its tensors' shapes), range, dtype, keys."""
    shape = SHAPE.match(comment)
    tensors = list(value.values()) if isinstance(value, dict) else [value]
    tensors = [v for v in tensors if isinstance(v, torch.Tensor)]
    assert tensors, f"{name}: the comment {comment!r} promises a tensor, got {type(value).__name__}"
    if shape:
        expected = []
        for size in (s.strip() for s in shape.group(1).split(",") if s.strip()):
            if size.isdigit():
                expected.append(int(size))
            else:  # a letter: bound at its first use
                expected.append(sizes.setdefault(size, tensors[0].shape[len(expected)] if tensors[0].ndim >
                                                 len(expected) else -1))
        for tensor in tensors:
            assert tuple(tensor.shape) == tuple(expected), \
                f"{name}: the comment says {shape.group(0)!r} ({tuple(expected)}), the shape is {tuple(tensor.shape)}"
    if "in [-1, 1]" in comment:
        for tensor in tensors:
            assert bool((tensor.abs() <= 1).all()), f"{name} is not in [-1, 1] as its comment says"
    for word, dtype in DTYPES.items():
        if re.search(rf"\b{word}\b", comment):
            assert all(t.dtype == dtype for t in tensors), f"{name}: the comment says {word}, got {tensors[0].dtype}"
    keys = re.findall(r'"(\w+)"', comment)
    if isinstance(value, dict) and keys:
        braces = re.search(r"\{([^}]*)\}", comment)
        if braces:
            assert set(value) == set(re.findall(r'"(\w+)"', braces.group(1))), \
                f"{name} has keys {sorted(value)}, its comment says {braces.group(0)}"
        else:
            assert set(keys) <= set(value), f"{name} has keys {sorted(value)}, its comment names {keys}"


def run_python_block(block: Block) -> int:
    """Run the block statement by statement (tracebacks name README lines); returns the promises checked."""
    offset = block.line - 1
    source = "\n" * offset + block.text
    tree = ast.parse(source, filename=str(block.readme))
    comments = _comments(source)
    namespace = {"__name__": "__readme__"}
    sizes, checked = {}, 0
    for node in tree.body:
        exec(compile(ast.Module([node], type_ignores=[]), str(block.readme), "exec"), namespace)
        comment = " ".join(comments.get(n, "") for n in range(node.lineno, node.end_lineno + 1)).strip()
        if not SHAPE.match(comment):
            continue
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"{block.readme.name}:{node.lineno}: a shape comment on a line that assigns no name"
        name = node.targets[0].id
        check_promise(f"{block.readme.name}:{node.lineno}: {name}", namespace[name], comment, sizes)
        checked += 1
    return checked


@pytest.mark.parametrize("block", _distinct("python"), ids=lambda b: b.name)
def test_python_block_runs_and_keeps_its_comments(block, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    assert run_python_block(block) >= 1, f"{block.name}: no comment promises a shape; say what the block computes"


def test_the_shape_checker_fails_on_a_wrong_comment():
    value = torch.zeros(8, 1, 8, 8)
    check_promise("x", value, "(8, 1, 8, 8) in [-1, 1]", {})
    sizes = {}
    check_promise("t", torch.zeros(8, dtype=torch.int64), "t: (B,) int64", sizes)
    assert sizes == {"B": 8}
    check_promise("terms", {"loss": torch.zeros(8), "t": torch.zeros(8)}, 'a dict of (B,) tensors: "loss"', sizes)
    wrong = [("(8, 1, 8, 9)", value), ("(B, 1, 8, 8)", torch.zeros(7, 1, 8, 8)), ("(8,) int64", value[:, 0, 0, 0]),
             ("(2,) in [-1, 1]", torch.tensor([0.0, 2.0])), ('{"bpd", "se"}', {"bpd": torch.zeros(())})]
    for comment, got in wrong:
        with pytest.raises(AssertionError):
            check_promise("x", got, comment, {"B": 8})


# ---------------------------------------------------------------------------------------------- command blocks
def _flag(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words else None


def _set_flag(words: list[str], flag: str, value: str) -> None:
    if flag in words:
        words[words.index(flag) + 1] = value
    else:
        words += [flag, value]


def shortened(words: list[str]) -> list[str]:
    """A command with the short budget: few training steps in small batches, few samples, short reverse chains
    (reconstruct, and Algorithm 2 when it would run all T steps, the likelihood ODE); the bits/dim keep all T terms."""
    words = list(words)
    command = words[1]
    if command == "train":
        for flag, value in TRAIN.items():
            _set_flag(words, flag, value)
    elif command == "sample":
        _set_flag(words, "--num", NUM["sample"])
        if _flag(words, "--sampler") == "ddpm" and "--steps" not in words:
            _set_flag(words, "--steps", SAMPLE_DDPM_STEPS)
    elif command == "eval":
        _set_flag(words, "--num", NUM[_flag(words, "--metric")])
        if _flag(words, "--metric") == "nll":
            _set_flag(words, "--ode-steps", NLL_ODE_STEPS)
    elif command == "reconstruct" and "--steps" not in words:
        _set_flag(words, "--steps", RECONSTRUCT_STEPS)
    return words


def _digits(n: int, size: int = 8, train: bool = True) -> torch.Tensor:
    x = dl.load_dataset("digits", train=train)[:n]
    return x if size == 8 else torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear").clamp(-1, 1)


def _write(x: torch.Tensor, path: Path) -> None:
    """Images to a .npy or .png file, or to a folder of PNGs (a path without a suffix)."""
    if path.suffix:
        dl.save_images(x, path, scale=1, padding=0) if path.suffix == ".png" else np.save(path, x.numpy())
    else:
        for i, image in enumerate(x):
            dl.save_images(image[None], path / f"{i:03d}.png", scale=1, padding=0)


def _write_mnist_test_split(root: Path) -> None:
    """ROOT/MNIST/raw/t10k-{images-idx3,labels-idx1}-ubyte.gz of 64 digits scaled to 28x28 (MNIST's IDX format)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    pixels = ((_digits(64, 28) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    header = np.array([0x0803, len(pixels), 28, 28], dtype=">i4").tobytes()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + pixels.tobytes()))
    labels = np.zeros(len(pixels), dtype=np.uint8)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(np.array([0x0801, len(labels)], ">i4").tobytes()
                                                                  + labels.tobytes()))


def write_inputs(words: list[str], env: dict, cwd: Path) -> None:
    """The files a command reads, made from real digits, of the size of its model."""
    command = words[1]
    if command == "train":
        if _flag(words, "--data"):
            _write(_digits(64), cwd / _flag(words, "--data"))
        if _flag(words, "--dataset") == "mnist" and "DDPM_LITE_DATA" in env:
            assert not Path(env["DDPM_LITE_DATA"]).expanduser().is_absolute(), \
                "the README's DDPM_LITE_DATA example must be a relative folder (the test writes MNIST's files there)"
            _write_mnist_test_split(cwd / env["DDPM_LITE_DATA"])
        return
    if not _flag(words, "--checkpoint"):
        return
    size = dl.load_checkpoint(cwd / _flag(words, "--checkpoint"))[2]["model_config"].image_size
    if command == "eval" and _flag(words, "--data"):
        _write(_digits(8, size, train=False), cwd / _flag(words, "--data"))
    if command == "reconstruct":
        task, given = _flag(words, "--task"), _flag(words, "--input")
        x = _digits(2, size, train=False)
        if task == "superres":
            x = torch.nn.functional.avg_pool2d(x, int(_flag(words, "--scale")))
        if task == "denoise":
            x = x + float(_flag(words, "--sigma")) * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        _write(x[:1] if given.endswith(".png") else x, cwd / given)
        if _flag(words, "--mask"):
            mask = torch.ones(1, 1, size, size)
            mask[..., size // 2:] = -1  # the right half is missing (black)
            _write(mask, cwd / _flag(words, "--mask"))


def _environment(scratch: Path, cache: Path) -> dict:
    bin_dir = scratch / ".bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "ddpm-lite"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ddpm_lite "$@"\n')
    wrapper.chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
               DDPM_LITE_CACHE=env.get("DDPM_LITE_CACHE") or str(cache), DDPM_LITE_DATA=str(scratch / ".no-data"))
    return env


def check_output(words: list[str], cwd: Path, stdout: str) -> None:
    """What the command wrote or printed."""
    command, out = words[1], _flag(words, "--out")
    if command == "train":
        assert (cwd / out / "checkpoint.pt").is_file() and (cwd / out / "log.jsonl").is_file()
    elif command in ("sample", "reconstruct"):
        assert (cwd / out).is_file() and (cwd / out).stat().st_size > 0
    elif _flag(words, "--metric") in ("bpd", "nll"):  # the uniform reference beside the number, log2(grey levels)
        reference = re.search(r"bits/dim \d+\.\d+ .*a uniform distribution over the (\d+) grey levels scores "
                              r"(\d+\.\d+)", stdout)
        assert reference and float(reference.group(2)) == pytest.approx(math.log2(int(reference.group(1))), abs=1e-3)
    else:
        assert re.search(r"FD \d+\.\d+ of \d+ samples .* floor at n = \d+", stdout), stdout


def _parse(line: str) -> tuple[dict, list[str]]:
    """`A=1 ddpm-lite train ...` -> ({"A": "1"}, ["ddpm-lite", "train", ...]) on the short budget."""
    words, assignments = shlex.split(line, comments=True), {}
    while re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        assignments[name] = value
    return assignments, shortened(words)


@pytest.mark.parametrize("block", _distinct("commands"), ids=lambda b: b.name)
def test_command_block_runs_on_a_short_budget(block, tmp_path, tmp_path_factory):
    """Training lines first, then the lines that use their runs, two at a time (each on one thread)."""
    env = _environment(tmp_path, tmp_path_factory.mktemp("cache"))
    lines = [_parse(line) for line in block.commands()]

    def run(assignments: dict, words: list[str]) -> None:
        script = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in assignments.items()), shlex.join(words)])
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=SUBPROCESS_TIMEOUT)
        assert done.returncode == 0, f"{block.name}: `{script}` exited with {done.returncode}:\n{done.stderr[-3000:]}"
        check_output(words, tmp_path, done.stdout)

    trains = [(a, w) for a, w in lines if w[1] == "train"]
    others = [(a, w) for a, w in lines if w[1] != "train"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for group in (trains, others):
            for assignments, words in group:
                write_inputs(words, assignments, tmp_path)
            for future in [pool.submit(run, *line) for line in group]:
                future.result()


# ---------------------------------------------------------------------------------------------- the fork's sed
def _repository_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                                capture_output=True).stdout.decode().split("\0")
        return [ROOT / name for name in listed if name and (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        skip = {".git", ".venv", "_build", "test-tree", "node_modules"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
                and not p.name.endswith(".egg-info")]


@pytest.mark.parametrize("block", _distinct("scratch copy"), ids=lambda b: b.name)
def test_the_fork_sed_changes_every_copy_of_the_url(block, tmp_path):
    holders = []
    for path in _repository_files():
        if path.name in ("README.md", "README.zh.md") or path == Path(__file__).resolve() or \
                path.suffix in (".png", ".pt", ".gz", ".npy"):
            continue
        try:
            if REPOSITORY_URL in path.read_text(encoding="utf-8"):
                holders.append(path.relative_to(ROOT))
        except (UnicodeDecodeError, OSError):
            continue
    assert Path("ddpm_lite/book/plotting.py") in holders and Path("_config.yml") in holders
    for relative in holders:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, tmp_path / relative)
    for line in block.commands():
        subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True, timeout=60)
    fork = REPOSITORY_URL.replace("/ddpm-lite/", "/YOU/")
    for relative in holders:
        text = (tmp_path / relative).read_text(encoding="utf-8")
        assert REPOSITORY_URL not in text, f"the README's sed leaves the repository URL in {relative}"
        assert fork in text, relative


# ---------------------------------------------------------------------------------------------- the tables
def _table_rows(text: str, header: str) -> list[list[str]]:
    """The rows (cells) of every Markdown table whose header line starts with ``header``."""
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
        elif inside and line.startswith("|"):
            if not set(line) <= set("|-: "):
                rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
        else:
            inside = False
    return rows


def test_the_module_tables_list_every_module():
    listed = {re.fullmatch(r"`([\w/]+\.py)`", row[0]).group(1)
              for row in _table_rows(READMES[0].read_text(encoding="utf-8"), "| module |")}
    package = ROOT / "ddpm_lite"
    present = {str(p.relative_to(package)) for p in [*package.glob("*.py"), *package.glob("book/*.py")]
               if p.name not in ("__init__.py", "__main__.py")}
    assert listed == present, f"missing from the README: {sorted(present - listed)}; gone: {sorted(listed - present)}"


PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]*\b")  # N, DIR, ROOT, SIGINT: values the message fills in
MAX_VALUE = 40  # characters one formatted value may stand for


@functools.cache
def _string_templates() -> list[tuple[list[str], set[str]]]:
    """Every string the package can print, as its literal parts (a formatted value between each two) and its words."""
    templates = []
    for file in sorted((ROOT / "ddpm_lite").rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                templates.append([node.value])
            elif isinstance(node, ast.JoinedStr):
                parts = [""]
                for value in node.values:
                    if isinstance(value, ast.Constant):
                        parts[-1] += value.value
                    else:
                        parts.append("")
                templates.append(parts)
    return [(parts, _words(" ".join(parts))) for parts in templates]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{4,}", text))


@functools.cache
def _printable(text: str) -> bool:
    """Whether some string of the package can contain ``text`` (see :func:`_could_print`)."""
    words = _words(text)
    return any(_could_print(text, parts) for parts, known in _string_templates() if known & words or not words)


def _could_print(fragment: str, literals: list[str]) -> bool:
    """Whether a message of these literal parts, with a value between each two, can contain ``fragment``.

    A value stands for at most MAX_VALUE characters of the fragment; where the fragment starts or ends inside a
    value, that part holds placeholders, numbers, paths or flags and at most one plain word. At least 10 characters
    and a third of the fragment (placeholders aside) must be literal text. A message that the command line builds
    from the library's is quoted in pieces, separated by "..." (or " / ").
    """
    if any(fragment in literal for literal in literals):
        return True
    needed = max(10, (len(fragment) - sum(len(m) for m in PLACEHOLDER.findall(fragment))) / 3)

    def fits(value: str) -> bool:  # a value where the fragment starts or ends
        plain = [w for w in value.split() if re.fullmatch(r"[(\[]*[a-z]{3,}[)\],.;:]*", w)]
        return len(value) <= MAX_VALUE and len(plain) <= 1

    def after_value(p: int, j: int, matched: int) -> bool:  # fragment[p:] starts in the value before literals[j]
        if matched >= needed and fits(fragment[p:]):
            return True  # the fragment ends inside this value
        if j >= len(literals):
            return False
        literal = literals[j]
        if not literal:  # two values side by side
            return after_value(p, j + 1, matched)
        for q in range(p, min(p + MAX_VALUE, len(fragment)) + 1):
            if p == 0 and q > 0 and not fits(fragment[:q]):
                break  # the fragment starts inside this value
            tail = fragment[q:]
            if tail and literal.startswith(tail):
                if matched + len(tail) >= needed:
                    return True
            elif tail.startswith(literal) and after_value(q + len(literal), j + 1, matched + len(literal)):
                return True
        return False

    for i, literal in enumerate(literals):
        for k in range(len(literal)):
            if fragment.startswith(literal[k:]) and after_value(len(literal) - k, i + 1, len(literal) - k):
                return True
        if after_value(0, i, 0):
            return True
    return False


def test_the_troubleshooting_table_quotes_the_packages_messages():
    text = READMES[0].read_text(encoding="utf-8")
    rows = _table_rows(text[text.index("## Troubleshooting"):], "| you see |")
    assert len(rows) >= 10
    wrong = []
    for row in rows:
        for quote in re.findall(r"`([^`]+)`", row[0]):
            wrong += [f for f in (f.strip() for f in quote.split("...")) if len(f) >= 6 and not _printable(f)]
    assert not wrong, f"the troubleshooting table quotes messages that ddpm_lite does not print: {wrong}"


def test_the_message_check_refuses_an_invented_message():
    template = ["the run in ", " is already at step ", ", so steps=", " leaves nothing to do"]
    assert _could_print("the run in DIR is already at step N", template)
    assert not _could_print("the run in DIR has finished", template)
    assert not _could_print("images must be finite and scaled to [-1, 1]",
                            ["", " ", "; images must be finite and in [-1, 1]: ", ""])
    # what the table quoted before the messages changed
    for stale in ("images must be finite and scaled to [-1, 1]", "unknown keys", "tensors ...; refused unread",
                  "do not fit the foo"):
        assert not all(_printable(f.strip()) for f in stale.split("...")), stale


def benchmark_tables_quoted(readme: str) -> dict[str, list[str]]:
    """{results file: its table rows missing from ``readme``} for every benchmarks/results/NAME.md whose NAME.json or
    NAME.md the README names: a benchmark's numbers are copied from the file its script wrote, never typed."""
    missing = {}
    for table in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        if not re.search(rf"results/{re.escape(table.stem)}\.(json|md)\b", readme):
            continue
        rows = [line for line in table.read_text().splitlines() if line.startswith("|")]
        missing[table.name] = [row for row in rows if row not in readme.splitlines()]
    return missing


def test_the_benchmark_tables_are_the_results_files():
    missing = benchmark_tables_quoted((ROOT / "README.md").read_text())
    assert {"threads.md", "sampling_loop_cpu.md"} <= set(missing), "the README no longer names these results files"
    assert not any(missing.values()), f"README tables differ from benchmarks/results (rerun or recopy): {missing}"


def test_the_table_check_finds_a_typed_number():
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in (ROOT / "benchmarks/results/sampling_loop_cpu.md").read_text().splitlines()
               if line.startswith("| 1 |"))
    assert benchmark_tables_quoted(readme.replace(row, row.replace("| 1 |", "| 1 | 0 |", 1)))["sampling_loop_cpu.md"]
