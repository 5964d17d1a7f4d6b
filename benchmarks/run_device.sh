#!/usr/bin/env bash
# Every part of bench_vs_diffusers.py at once on a quiet many-core machine: each CPU part pinned to its own
# two cores (the 2-core setting of the book), the GPU part beside them. Results land in ${OUT:-benchmarks/results}.
set -uo pipefail
out=${OUT:-benchmarks/results}; mkdir -p "$out"
bench="python3 benchmarks/bench_vs_diffusers.py"
taskset -c 0,1 $bench --part speed --threads 2 --out "$out/cpu_speed.json" > "$out/cpu_speed.log" 2>&1 &
taskset -c 2,3 $bench --part quality-ours --threads 2 --budget 180 ${BF16:+--bf16} --out "$out/cpu_quality_ours.json" > "$out/cpu_quality_ours.log" 2>&1 &
taskset -c 4,5 $bench --part quality-diffusers --threads 2 --budget 180 --out "$out/cpu_quality_diffusers.json" > "$out/cpu_quality_diffusers.log" 2>&1 &
if python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  taskset -c 6-15 $bench --part all --device cuda --threads 4 --budget 60 --bf16 --out "$out/gpu.json" > "$out/gpu.log" 2>&1 &
fi
wait
tail -n 3 "$out"/*.log
