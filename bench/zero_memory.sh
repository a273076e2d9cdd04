#!/usr/bin/env bash
# Memory per rank for each ZeRO stage on dense-s (examples/dense-s.ini) at dp = 2: runs a
# few `castor train` steps under mpirun for --parallel.zero 0, 1 and 2 on the KJV shard and
# prints, per stage, the training state each rank holds (from the start-up log: weights,
# gradients, AdamW moments), the ZeRO-paper estimate (4 + 4 + 8 bytes/param
# replicated; 8/dp for sharded moments; 4/dp for sharded gradients) and the peak RSS of
# rank 0. --family llama runs the same shape with untied embeddings (see bench/NOTES.md on
# why that matters for stage 2). Not a test: it prints numbers and never fails on one.
set -euo pipefail

usage() {
  cat <<'EOF2'
usage: bench/zero_memory.sh [options]
  --build-dir DIR   CMake build folder (default build)
  --np N            data-parallel ranks (default 2)
  --steps S         training steps per stage (default 4)
  --family F        gpt2 (dense-s, tied embeddings; default) or llama
  -h, --help        this text
EOF2
}
build=build np=2 steps=4 family=gpt2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --np) np="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --family) family="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "zero_memory.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
[ -d "$build" ] || cmake -S . -B "$build" -DCASTOR_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target castor >/dev/null
castor="$build/bin/castor"
data=runs/data/kjv
if [ ! -f "$data/train/kjv-00000.h5" ]; then
  bash scripts/kjv.sh "$data/text"
  "$castor" prep text --tokenizer gpt2 --input "$data/text/train.txt" --out "$data/train" --prefix kjv --overwrite
fi
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

rows=()
for zero in 0 1 2; do
  log=$(mpirun --oversubscribe -np "$np" "$castor" train --config examples/dense-s.ini --data.train "$data/train" \
        --model.family "$family" --train.threads 1 --train.steps "$steps" --train.log_every "$steps" --parallel.zero "$zero")
  state=$(grep -m1 '^state per rank:' <<<"$log")
  params=$(grep -m1 '^model:' <<<"$log" | sed -E 's/.* ([0-9.]+)M params.*/\1/')
  peak=$(grep -m1 '^done:' <<<"$log" | sed -E 's/.*peak mem ([0-9]+) MiB.*/\1/')
  num() { sed -E "s/.*$1 ([0-9.]+) MiB.*/\1/" <<<"$state"; }
  expect=$(awk -v p="$params" -v z="$zero" -v n="$np" 'BEGIN {
    g = (z == 2) ? 4 / n : 4; m = (z >= 1) ? 8 / n : 8;
    printf "%.1f", p * 1e6 * (4 + g + m) / 1048576 }')
  rows+=("$(printf '| %d | %s | %s | %s | %s | %s | %s |' "$zero" "$(num weights)" "$(num 'gradients')" \
           "$(num 'AdamW moments')" "$(num total)" "$expect" "$peak")")
done
echo
echo "dense-s shape, $family family (${params}M params, fp32), dp=$np, 1 thread per rank, $steps steps; MiB per rank"
echo
echo "| zero | weights | gradients | moments | state total | ZeRO estimate | peak RSS rank 0 |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
