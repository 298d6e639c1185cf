#!/usr/bin/env bash
# Run ON the GPU machine (device tool) from the repository root, with `.carry/` holding
# auglocal.xz (a `--features cuda` build packed by shared/cuda/pack.sh), run-on-gpu.sh and
# export/ (written by `cargo run --release -p auglocal-tests --example export_check -- .carry/export`).
# 1. the exported backbone loads into PyTorch with strict=True and gives our logits;
# 2. the same short AugLocal run on CPU and on CUDA gives the same per-module losses;
# 3. images/s of a longer CUDA run.
set -euo pipefail
python3 bench/check_export.py .carry/export resnet20
run() { bash .carry/run-on-gpu.sh .carry/auglocal.xz "$@"; }
common=(train --model resnet20 --method auglocal --aux-depth 2 --train-size 256 --test-size 64
        --batch-size 64 --epochs 1 --no-augment --no-shuffle --log-every 1 --seed 3)
run "${common[@]}" --device cpu --out /tmp/run-cpu --threads 16
run "${common[@]}" --device cuda --out /tmp/run-cuda
python3 - <<'PY'
import json
cpu = [json.loads(l) for l in open("/tmp/run-cpu/steps.jsonl")]
gpu = [json.loads(l) for l in open("/tmp/run-cuda/steps.jsonl")]
for a, b in zip(cpu, gpu):
    worst = max(abs(x - y) / max(abs(x), 1e-6) for x, y in zip(a["module_losses"], b["module_losses"]))
    print(f"step {a['step']}: max relative difference of the {len(a['module_losses'])} module losses CPU vs CUDA = {worst:.2e}")
first = max(abs(x - y) / abs(x) for x, y in zip(cpu[0]["module_losses"], gpu[0]["module_losses"]))
assert first < 1e-3, f"first step differs by {first}"
PY
run train --device cuda --out /tmp/run-speed --model resnet32 --method auglocal --train-size 5000 --test-size 1000 \
    --batch-size 256 --epochs 2 --lr 0.1
cat /tmp/run-speed/metrics.jsonl
