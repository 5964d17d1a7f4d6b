"""Writing a benchmark's results: RESULTS/NAME.json (with the machine and the command) and NAME.md (the README's
table), shared by the benchmark scripts run as ``python benchmarks/bench_NAME.py``."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, result: dict, markdown: str, started: float, **machine) -> None:
    """Add {"machine": cpu, cores, torch, wall_s since ``started`` (time.perf_counter()), **machine} and the command
    line to ``result``; write RESULTS/name.json and name.md; print the markdown."""
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "torch": torch.__version__, **machine, "wall_s": time.perf_counter() - started}
    result["command"] = " ".join(["python", *sys.argv])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
