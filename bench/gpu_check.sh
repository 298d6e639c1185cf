#!/usr/bin/env bash
# The GPU checks of the CUDA backend (cuDNN convolutions and BatchNorm, bf16, device memory),
# run ON the GPU machine (device tool) from the repository root. `.carry/` must hold, built
# and packed on the build machine (README, "GPU"):
#   auglocal.xz      `--features cudnn` release build of the CLI   (shared/cuda/pack.sh)
#   cuda-tests.xz    the `cuda` test binary of auglocal-tests       (same, from --no-run)
#   run-on-gpu.sh    copied from shared/cuda/
# 1. the cuda tests: cuDNN ops against the CPU, one training step GPU = CPU (f32, bf16),
#    the memory counters;
# 2. `auglocal bench` and bench/pytorch_bench.py side by side: ResNet-32/110, BP and AugLocal,
#    batch 1024, f32 and bf16, seconds per step and peak device memory (JSON lines).
#   bash bench/gpu_check.sh [ITERS]
set -euo pipefail
iters=${1:-10}
run() { bash .carry/run-on-gpu.sh "$@"; }
run .carry/cuda-tests.xz --test-threads 1
for precision in f32 bf16; do
  for cfg in "resnet32 bp 2" "resnet32 auglocal 2" "resnet110 bp 3" "resnet110 auglocal 3"; do
    set -- $cfg
    run .carry/auglocal.xz bench --device cuda --precision "$precision" --model "$1" --method "$2" \
        --aux-depth "$3" --pyramid 0.5 --batch-size 1024 --iters "$iters" --warmup 3 --json
    python3 bench/pytorch_bench.py --device cuda --precision "$precision" --model "$1" --method "$2" \
        --aux-depth "$3" --pyramid 0.5 --batch-size 1024 --iters "$iters" --warmup 3
  done
done
