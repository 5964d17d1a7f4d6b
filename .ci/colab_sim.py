"""Run chapters as a Colab reader would, and fail on what would stop or confuse that reader.

    python .ci/colab_sim.py --repo . book/forward_process.ipynb book/sampling.ipynb

What it simulates, per chapter (each chapter gets its own fresh "runtime", as each Colab notebook does):

- a virtual environment that holds only Colab's preinstalled packages (COLAB_PACKAGES, plus torch and torchvision),
  built once at --venv and reused while its package list matches; after each chapter the packages that chapter
  installed are uninstalled again, so the next one starts from the same fresh runtime;
- ``google.colab`` importable (the stub in .ci/colab_stub) and imported as the kernel starts, as Colab's kernel
  does, so the setup cell takes its Colab branch;
- a working directory outside the repository that holds only the notebook (Colab's /content), a fresh HOME, and
  so a fresh ddpm_lite cache (unless --cache names one);
- the setup cell's own ``pip install ... git+<repository URL>@<ref>``, unedited: a temporary global gitconfig
  rewrites the repository URL (``url.<clone>.insteadOf``) to a local clone of the repository's committed HEAD, in
  which <ref> (``main``, or whatever the cell names) points at that HEAD.

The notebooks are executed with nbclient from this (the executor's) environment, in a kernel whose python is the
simulated environment's, started with a clean environment (no PYTHONPATH, no VIRTUAL_ENV), so nothing of the
executor (nbclient, jupyter-book, myst-nb, the repository's ddpm_lite) is visible to the kernel.

Checks, besides every cell running without an error:
- before the setup cell: ddpm_lite and einops are not importable, google.colab is;
- after it: ddpm_lite and einops import from the simulated environment's site-packages, and myst_nb does not import;
- at the end: no module was loaded from the repository, its clone, or the executor's environment;
- numbers the prose glues ({glue:text}`name`) print in Colab as ``name = value`` lines, with at most
  MAX_SIGNIFICANT_DIGITS significant digits in any decimal number of such a line.

Exits 1 with one line per failure (``colab_sim: FAIL ...``). The executed notebooks and report.json (per-cell
times) are written to --out. Building the environment takes 2-4 minutes (once; it is reused while its package
list matches), installing ddpm_lite in each chapter's setup cell about 20-30 s, then the chapter's own time with a
cold cache. --timeout bounds one cell; with a cold cache the sampling chapter's first cell that loads the
pretrained digits model trains it (and the digit classifier) first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# What a fresh Colab runtime already has, of what the chapters could touch (torch and torchvision come from --torch).
COLAB_PACKAGES = ["numpy", "scipy", "matplotlib", "scikit-learn", "tqdm", "pillow", "ipykernel"]
# Modules a Colab runtime must not have before the setup cell, and the one it must not have at all.
INSTALLED_BY_SETUP = ["ddpm_lite", "einops"]
BOOK_ONLY = ["myst_nb"]
DEFAULT_TORCH = "torch==2.14.1 torchvision==0.29.1"  # as the Makefile's TORCH; pass --torch "$(TORCH)"
MAX_SIGNIFICANT_DIGITS = 4
KERNEL_NAME = "colab-sim"
STUB = Path(__file__).resolve().parent / "colab_stub"
PROBE = "COLAB_SIM_PROBE"
# A decimal number as printed: 0.1235, -1.5e-05, 12.5%, 1,234.5 (integers carry no precision claim: skipped).
DECIMAL = re.compile(r"[-+\u2212]?(?:\d[\d,]*)?\.\d+(?:[eE][-+]?\d+)?|[-+\u2212]?\d[\d,]*(?:\.\d*)?[eE][-+]?\d+")
GLUE_ROLE = re.compile(r"\{glue(?::[\w-]+)?\}`([^`<>:]+)")
GLUE_DIRECTIVE = re.compile(r"^[`:]{3,}\{glue(?::[\w-]+)?\}\s+(\S+)", re.MULTILINE)


# ---------------------------------------------------------------- pure helpers (tests/book/test_colab_sim.py)

def significant_digits(number: str) -> int:
    """The significant digits of a printed decimal number: ``0.01235`` -> 4, ``1.5e-05`` -> 2, ``1,234.5`` -> 5."""
    mantissa = re.split(r"[eE]", number)[0]
    digits = re.sub(r"\D", "", mantissa).lstrip("0")
    return max(len(digits), 1)


def too_precise(value: str, limit: int = MAX_SIGNIFICANT_DIGITS) -> list[str]:
    """The decimal numbers in a printed value that carry more than ``limit`` significant digits."""
    return [number for number in DECIMAL.findall(value) if significant_digits(number) > limit]


def glue_names(nb) -> list[str]:
    """The names a notebook's markdown glues into its prose, in order of first use."""
    names: dict[str, None] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for name in GLUE_ROLE.findall(cell.source) + GLUE_DIRECTIVE.findall(cell.source):
                names[name.strip()] = None
    return list(names)


def output_lines(cell) -> list[str]:
    """Every line of text a code cell showed: its streams and the text of its results and displays."""
    lines = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            lines += output.text.splitlines()
        elif output.output_type in ("execute_result", "display_data"):
            for mime in ("text/plain", "text/markdown"):
                if mime in output.get("data", {}):
                    lines += output.data[mime].splitlines()
    return lines


def glued_lines(lines: list[str], names: list[str]) -> list[tuple[str, str]]:
    """(name, value) for each output line that shows a glued name as ``name = value`` (markdown emphasis ignored)."""
    wanted = set(names)
    found = []
    for line in lines:
        match = re.fullmatch(r"\s*[*_`]*([\w.-]+)[*_`]*\s*=\s*(.+?)\s*", line)
        if match and match.group(1) in wanted:
            found.append((match.group(1), match.group(2)))
    return found


def setup_cell_index(nb) -> int | None:
    """The index of the setup cell: the first code cell that runs ``pip install``."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and re.search(r"\bpip\b.*\binstall\b", cell.source, re.DOTALL):
            return index
    return None


def install_source(setup_source: str) -> tuple[str, str] | None:
    """(repository URL, git ref) of the ``git+URL@ref`` requirement in a setup cell, or None."""
    match = re.search(r"git\+(https?://[^\s\"'@]+?)(?:\.git)?@([\w./-]+)", setup_source)
    return (match.group(1), match.group(2)) if match else None


def config_repository_url(config_text: str) -> str | None:
    """The ``repository: url:`` of a Jupyter Book _config.yml (read without a YAML parser)."""
    match = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*[\"']?([^\s\"'#]+)", config_text, re.MULTILINE)
    return match.group(1) if match else None


def under(path: str | os.PathLike, root: Path) -> bool:
    """Whether ``path`` lies inside ``root`` (both resolved)."""
    try:
        Path(path).resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


# ---------------------------------------------------------------- the simulated runtime

def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, raising with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}")
    return result


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def site_packages(venv: Path) -> Path:
    return Path(run([venv_python(venv), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())


def installed(venv: Path) -> dict[str, str]:
    """{distribution name: version} in a virtual environment."""
    listing = run([venv_python(venv), "-m", "pip", "list", "--format=json"]).stdout
    return {entry["name"].lower(): entry["version"] for entry in json.loads(listing)}


def ensure_venv(venv: Path, python: str, requirements: list[str]) -> float:
    """Build (or reuse, reset to its baseline) the Colab-like environment; returns the seconds spent building."""
    stamp = venv / "colab-sim.json"
    wanted = {"python": python, "requirements": requirements}
    if stamp.exists() and venv_python(venv).exists():
        recorded = json.loads(stamp.read_text())
        if {key: recorded.get(key) for key in wanted} == wanted:
            reset_venv(venv, recorded["baseline"])
            now = installed(venv)
            if all(now.get(name) == version for name, version in recorded["baseline"].items()):
                return 0.0
            print(f"colab_sim: {venv} lost packages of its baseline; rebuilding it", flush=True)
    print(f"colab_sim: building the Colab-like environment at {venv} ({' '.join(requirements)})", flush=True)
    start = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    run([python, "-m", "venv", venv])
    run([venv_python(venv), "-m", "pip", "install", "-q", *requirements])
    stamp.write_text(json.dumps({**wanted, "baseline": installed(venv)}, indent=1))
    return time.perf_counter() - start


def reset_venv(venv: Path, baseline: dict[str, str]) -> None:
    """Uninstall what a previous chapter's setup cell installed, so the next chapter meets a fresh runtime."""
    extra = sorted(set(installed(venv)) - set(baseline))
    if extra:
        run([venv_python(venv), "-m", "pip", "uninstall", "-q", "-y", *extra])


def install_stub(venv: Path) -> None:
    """Copy the google.colab stub into the environment (google stays a namespace package)."""
    target = site_packages(venv) / "google" / "colab"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(STUB / "google" / "colab", target, ignore=shutil.ignore_patterns("__pycache__"))


def clone_repository(repo: Path, clone: Path, refs: set[str]) -> str:
    """Clone the repository's committed HEAD; every ref a setup cell installs from points at it. Returns HEAD."""
    run(["git", "clone", "-q", repo, clone])
    run(["git", "-C", clone, "checkout", "-q", "-B", "main"])
    for ref in refs - {"main"}:
        run(["git", "-C", clone, "branch", "-f", ref, "HEAD"])
    return run(["git", "-C", clone, "rev-parse", "HEAD"]).stdout.strip()


def write_gitconfig(path: Path, url: str, clone: Path) -> None:
    """A global gitconfig that sends ``url`` (with or without .git) to the local clone."""
    path.write_text(f'[url "file://{clone}"]\n\tinsteadOf = {url}\n\tinsteadOf = {url}.git\n')


def write_kernelspec(jupyter_path: Path, python: Path) -> None:
    kernel = jupyter_path / "kernels" / KERNEL_NAME
    kernel.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Colab simulation", "language": "python"}
    (kernel / "kernel.json").write_text(json.dumps(spec, indent=1))


def kernel_environment(venv: Path, home: Path, gitconfig: Path, cache: Path | None) -> dict[str, str]:
    """The executor's environment without what would leak the executor or the repository into the kernel."""
    leaks = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "JUPYTER_PATH", "MPLBACKEND", "DDPM_LITE_CACHE",
             "PYTHONSTARTUP", "PYTHONUSERBASE", "CONDA_PREFIX"}
    env = {key: value for key, value in os.environ.items() if key not in leaks}
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(gitconfig), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    if cache is not None:
        env["DDPM_LITE_CACHE"] = str(cache)
    return env


# ---------------------------------------------------------------- probes run in the kernel, outside the notebook

def probe_source(names: list[str], modules: bool = False) -> str:
    """A cell that prints one JSON line: where each of ``names`` would import from, and the runtime's facts."""
    return "\n".join([
        "import importlib.util as _u, json as _j, os as _o, sys as _s",
        "def _origin(_m):",
        "    try:",
        "        _spec = _u.find_spec(_m)",
        "    except (ImportError, ValueError):",
        "        return None",
        "    return _spec and (_spec.origin or list(_spec.submodule_search_locations or []) or '?')",
        f"_r = {{_m: _origin(_m) for _m in {names!r}}}",
        "_r.update(executable=_s.executable, cwd=_o.getcwd(), path=_s.path, colab_loaded='google.colab' in _s.modules)",
        ("_r['files'] = sorted({_f for _m in list(_s.modules.values()) "
         "for _f in [getattr(_m, '__file__', None)] if isinstance(_f, str)})" if modules else ""),
        f"print({PROBE!r}, _j.dumps(_r))",
    ])


def run_probe(client, names: list[str], modules: bool = False) -> dict:
    from nbformat.v4 import new_code_cell

    cell = new_code_cell(probe_source(names, modules))
    client.nb.cells.append(cell)  # nbclient stores the executed cell at its index; this one leaves again at once
    try:
        client.execute_cell(cell, len(client.nb.cells) - 1, store_history=False)
    finally:
        client.nb.cells.pop()
    for line in output_lines(cell):
        if line.startswith(PROBE):
            return json.loads(line[len(PROBE):])
    raise RuntimeError(f"the probe printed no result: {output_lines(cell)}")


# ---------------------------------------------------------------- one chapter

@dataclass
class Chapter:
    name: str
    failures: list[str] = field(default_factory=list)
    cell_seconds: list[tuple[int, float, str]] = field(default_factory=list)  # (cell index, seconds, first line)
    seconds: float = 0.0
    glued: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(f"colab_sim: FAIL {self.name}: {message}")


def first_line(source: str) -> str:
    lines = [line for line in source.splitlines() if line.strip()]
    return (lines[0][:70] if lines else "")


def check_before_setup(chapter: Chapter, facts: dict, venv: Path, workdir: Path) -> None:
    if Path(facts["executable"]).parent != venv / "bin":
        chapter.fail(f"the kernel runs {facts['executable']}, not the simulated environment's python")
    if not under(facts["cwd"], workdir):
        chapter.fail(f"the kernel's working directory is {facts['cwd']}, not the simulated /content {workdir}")
    for name in INSTALLED_BY_SETUP + BOOK_ONLY:
        if facts[name]:
            chapter.fail(f"{name} is importable before the setup cell ({facts[name]}): the runtime is not fresh")
    if not facts["google.colab"] or not facts["colab_loaded"]:
        chapter.fail("google.colab is not imported as the kernel starts, as in Colab: the stub or its startup failed")


def check_after_setup(chapter: Chapter, facts: dict, site: Path) -> None:
    for name in INSTALLED_BY_SETUP:
        origin = facts[name]
        if not origin:
            chapter.fail(f"after the setup cell {name} is not importable: the setup cell must install it in Colab")
        elif not under(origin if isinstance(origin, str) else origin[0], site):
            chapter.fail(f"after the setup cell {name} imports from {origin}, not from the runtime's site-packages")
    for name in BOOK_ONLY:
        if facts[name]:
            chapter.fail(f"{name} is importable in the Colab kernel ({facts[name]}): the book's build tools leaked in")


def check_no_leaks(chapter: Chapter, facts: dict, forbidden: dict[str, Path], venv: Path) -> None:
    """No module or sys.path entry of the kernel lies in a forbidden folder (the environment itself may lie in one)."""
    for label, root in forbidden.items():
        files = [f for f in facts["files"] if os.path.isabs(f) and under(f, root) and not under(f, venv)]
        paths = [p for p in facts["path"] if p and under(p, root) and not under(p, venv)]
        if files or paths:
            chapter.fail(f"the kernel used the {label} ({root}): {(files + paths)[:3]}")


def check_glue(chapter: Chapter, nb) -> None:
    names = glue_names(nb)
    if not names:
        return
    lines = [line for cell in nb.cells if cell.cell_type == "code" for line in output_lines(cell)]
    chapter.glued = glued_lines(lines, names)
    if not chapter.glued:
        chapter.fail(f"none of the {len(names)} glued numbers ({', '.join(names[:3])}, ...) is printed as "
                     "'name = value': in Colab the prose's {glue:text} shows nothing")
    for name, value in chapter.glued:
        if too_precise(value):
            chapter.fail(f"glued line '{name} = {value}' prints more than {MAX_SIGNIFICANT_DIGITS} significant "
                         "digits: format it where it is glued")


def run_name(notebook: Path) -> str:
    """forward_process.ipynb, or zh-forward_process.ipynb for the Chinese edition's book/zh/forward_process.ipynb."""
    return f"{notebook.parent.name}-{notebook.name}" if notebook.parent.name == "zh" else notebook.name


def run_chapter(notebook: Path, args, venv: Path, site: Path, gitconfig: Path, scratch: Path,
                forbidden: dict[str, Path]) -> Chapter:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    chapter = Chapter(run_name(notebook))
    runtime = scratch / Path(chapter.name).stem
    workdir, home = runtime / "content", runtime / "home"
    workdir.mkdir(parents=True)
    startup = home / ".ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    # Colab's kernel imports google.colab as it starts; chapters test `"google.colab" in sys.modules`
    (startup / "00-colab.py").write_text("import google.colab\n")
    shutil.copy(notebook, workdir / notebook.name)
    nb = nbformat.read(workdir / notebook.name, as_version=4)
    setup = setup_cell_index(nb)
    if setup is None:
        chapter.fail("no setup cell: no code cell runs 'pip install'")
        return chapter
    client = NotebookClient(nb, timeout=args.timeout, kernel_name=KERNEL_NAME, allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    env = kernel_environment(venv, home, gitconfig, args.cache)
    start = time.perf_counter()
    try:
        with client.setup_kernel(env=env, cwd=str(workdir)):
            check_before_setup(chapter, run_probe(client, INSTALLED_BY_SETUP + BOOK_ONLY + ["google.colab"]), venv,
                               workdir)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                cell_start = time.perf_counter()
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    chapter.fail(f"cell {index} ({first_line(cell.source)!r}) raised "
                                 f"{error.ename}: {first_line(str(error.evalue)) or '(no message)'}")
                    break
                except CellTimeoutError:
                    chapter.fail(f"cell {index} ({first_line(cell.source)!r}) ran past --timeout {args.timeout} s")
                    break
                finally:
                    seconds = time.perf_counter() - cell_start
                    chapter.cell_seconds.append((index, seconds, first_line(cell.source)))
                    print(f"  {notebook.name} cell {index:3d} {seconds:7.1f} s  {first_line(cell.source)}", flush=True)
                if index == setup:
                    check_after_setup(chapter, run_probe(client, INSTALLED_BY_SETUP + BOOK_ONLY), site)
            else:
                check_no_leaks(chapter, run_probe(client, [], modules=True), forbidden, venv)
    except DeadKernelError as error:
        chapter.fail(f"the kernel died: {first_line(str(error))}")
    chapter.seconds = time.perf_counter() - start
    check_glue(chapter, nb)
    args.out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, args.out / chapter.name)
    return chapter


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="chapters to run, e.g. book/sampling.ipynb")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository whose committed HEAD is installed")
    parser.add_argument("--venv", type=Path, default=Path("_build/colab-sim/venv"),
                        help="where the Colab-like environment is built once and reused")
    parser.add_argument("--out", type=Path, default=Path("_build/colab-sim"),
                        help="where the executed notebooks and report.json go")
    parser.add_argument("--torch", default=os.environ.get("TORCH", DEFAULT_TORCH),
                        help=f"the torch requirements Colab has (default: $TORCH or {DEFAULT_TORCH!r})")
    parser.add_argument("--python", default=getattr(sys, "_base_executable", sys.executable),
                        help="the interpreter the environment is built from")
    parser.add_argument("--cache", type=Path, default=None,
                        help="a DDPM_LITE_CACHE for the kernel (default: none, so each chapter starts cold, as in Colab)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary runtime folders (their path is printed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repo = args.repo.resolve()
    args.venv, args.out = args.venv.resolve(), args.out.resolve()
    args.cache = args.cache.resolve() if args.cache else None
    notebooks = [path.resolve() for path in args.notebooks]
    failures: list[str] = []

    sources = {}
    for notebook in notebooks:
        import nbformat

        nb = nbformat.read(notebook, as_version=4)
        index = setup_cell_index(nb)
        source = install_source(nb.cells[index].source) if index is not None else None
        if source is None:
            failures.append(f"colab_sim: FAIL {notebook.name}: its setup cell has no 'pip install ... git+URL@ref'")
        else:
            sources[notebook] = source
    urls = {url for url, _ in sources.values()}
    config = repo / "_config.yml"
    config_url = config_repository_url(config.read_text()) if config.exists() else None
    if config_url and urls - {config_url}:
        failures.append(f"colab_sim: FAIL the setup cells install from {sorted(urls)}, _config.yml names {config_url}")
    if len(urls) > 1:
        failures.append(f"colab_sim: FAIL the setup cells install from several repositories: {sorted(urls)}")
    dirty = run(["git", "-C", repo, "status", "--porcelain", "--", "ddpm_lite", "pyproject.toml"]).stdout
    if dirty:
        print("colab_sim: note: ddpm_lite has uncommitted changes; the simulation installs the committed HEAD",
              flush=True)

    report = {"chapters": {}}
    scratch = Path(tempfile.mkdtemp(prefix="colab-sim-"))
    try:
        build = ensure_venv(args.venv, args.python, args.torch.split() + COLAB_PACKAGES)
        report["venv_build_seconds"] = round(build, 1)
        print(f"colab_sim: environment {'built in %.0f s' % build if build else 'reused'}: {args.venv}", flush=True)
        baseline = json.loads((args.venv / "colab-sim.json").read_text())["baseline"]
        install_stub(args.venv)
        site = site_packages(args.venv)
        clone = scratch / "clone"
        head = clone_repository(repo, clone, {ref for _, ref in sources.values()})
        gitconfig = scratch / "gitconfig"
        write_gitconfig(gitconfig, next(iter(urls)) if urls else "https://example.invalid/none", clone)
        write_kernelspec(scratch / "jupyter", venv_python(args.venv))
        os.environ["JUPYTER_PATH"] = str(scratch / "jupyter")  # the executor finds the kernelspec; the kernel does not
        forbidden = {"repository": repo, "clone": clone, "executor's environment": Path(sys.prefix)}
        print(f"colab_sim: installing {head[:10]} of {repo} in place of {', '.join(sorted(urls))}", flush=True)
        for notebook in sources:
            reset_venv(args.venv, baseline)
            chapter = run_chapter(notebook, args, args.venv, site, gitconfig, scratch, forbidden)
            failures += chapter.failures
            slow = sorted(chapter.cell_seconds, key=lambda entry: -entry[1])[:3]
            print(f"colab_sim: {chapter.name}: {chapter.seconds:.0f} s, {len(chapter.glued)} glued lines printed; "
                  f"slowest cells: {', '.join(f'{i} ({s:.0f} s)' for i, s, _ in slow)}", flush=True)
            report["chapters"][chapter.name] = {
                "seconds": round(chapter.seconds, 1), "failures": chapter.failures, "glued": chapter.glued,
                "cells": [{"index": i, "seconds": round(s, 2), "first_line": line} for i, s, line in chapter.cell_seconds]}
        reset_venv(args.venv, baseline)
    finally:
        if args.keep:
            print(f"colab_sim: kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report["failures"] = failures
    (args.out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    for failure in failures:
        print(failure)
    print(f"colab_sim: {'FAILED' if failures else 'passed'}; executed notebooks and report.json in {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
