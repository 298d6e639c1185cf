#!/usr/bin/env bash
# Side-by-side CPU figures: auglocal bench and bench/pytorch_bench.py on the same
# configurations, same thread count, one after the other. Prints JSON lines.
#   bash bench/compare.sh [PYTHON] [THREADS] [ITERS]
set -euo pipefail
py=${1:-python3}; threads=${2:-2}; iters=${3:-5}
cargo build --release -q -p auglocal-cli
for cfg in "resnet32 bp 2" "resnet32 auglocal 2" "resnet110 bp 3" "resnet110 auglocal 3"; do
  set -- $cfg
  ./target/release/auglocal bench --model "$1" --method "$2" --aux-depth "$3" --pyramid 0.5 \
      --batch-size 128 --iters "$iters" --warmup 1 --threads "$threads" --json
  "$py" bench/pytorch_bench.py --model "$1" --method "$2" --aux-depth "$3" --pyramid 0.5 \
      --batch-size 128 --iters "$iters" --warmup 1 --threads "$threads" 2>/dev/null
done
