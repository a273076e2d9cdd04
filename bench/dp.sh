#!/usr/bin/env bash
# Data-parallel benchmarks: the all-reduce alone (bench/comm_bench.cpp) at np=2, then dense-s
# training steps (bench/dp_overlap.cpp) at np=2 with 1 thread per rank, in three modes
# (compute only, all-reduce after backward, all-reduce overlapped with backward), and at np=1
# with 2 threads (compute only) on the same cores. Prints a summary table at the end: the
# communication time, how much of it the overlap hides, and dp=2 tokens/s against one
# process. Not a test: it prints numbers and never fails on one.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/dp.sh [options]
  --steps N          timed steps per mode of the training benchmark (default 8)
  --warmup W         untimed steps per mode first (default 2)
  --bucket-mb MB     gradient bucket size (default 25, as castor train --parallel.bucket_mb)
  --threads T        cores to use: dp run T/2 threads on each of 2 ranks, single run T threads
                     (default 2)
  --comm-max-bytes B largest all-reduce message of the comm benchmark (default 268435456)
  --no-comm          skip the all-reduce benchmark
  --build-dir DIR    CMake build folder (default build; configured with -DCASTOR_CUDA=OFF if new)
  -h, --help         this text
Runs under mpirun --oversubscribe; the np=2 runs keep mpirun's default binding (one core per
rank), the np=1 run uses --bind-to none (mpirun would otherwise bind its 2 threads to one core).
EOF
}

steps=8 warmup=2 bucket=25 threads=2 comm_max=268435456 comm=1 build=build
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --bucket-mb) bucket="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --comm-max-bytes) comm_max="$2"; shift 2 ;;
    --no-comm) comm=0; shift ;;
    --build-dir) build="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "dp.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$steps" "$threads" "$comm_max"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "dp.sh: '$v' is not a positive integer" >&2; exit 2; }
done
[[ "$warmup" =~ ^[0-9]+$ ]] || { echo "dp.sh: --warmup '$warmup' is not an integer >= 0" >&2; exit 2; }
[[ "$bucket" =~ ^[0-9]+([.][0-9]*)?$ ]] || { echo "dp.sh: --bucket-mb '$bucket' is not a number" >&2; exit 2; }
((threads % 2 == 0)) || { echo "dp.sh: --threads must be even (split over 2 ranks)" >&2; exit 2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S . -B "$build" -DCASTOR_CUDA=OFF >/dev/null
fi
cmake --build "$build" -j"$threads" --target castor_bench_comm castor_bench_dp_overlap >/dev/null
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
per_rank=$((threads / 2))

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

cpu="$(lscpu | sed -n 's/^Model name: *//p')"
echo "data-parallel benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($cpu)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

if [[ $comm -eq 1 ]]; then
  echo "== all-reduce, np=2 =="
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    mpirun --oversubscribe -np 2 "$build/bin/castor_bench_comm" --max-bytes "$comm_max"
  echo
fi

# Value of key=... on the last "RESULT key=value ..." line of the log.
field() { grep '^RESULT ' "$log" | tail -1 | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }

echo "== dense-s, np=2 x $per_rank thread(s): compute only, serial, overlapped =="
OMP_NUM_THREADS=$per_rank OPENBLAS_NUM_THREADS=$per_rank \
  mpirun --oversubscribe -np 2 "$build/bin/castor_bench_dp_overlap" --threads "$per_rank" --steps "$steps" \
  --warmup "$warmup" --bucket-mb "$bucket" | tee "$log"
compute="$(field compute_ms)" comm_ms="$(field comm_ms)" comm_diff="$(field comm_diff_ms)"
exposed="$(field exposed_ms)" exposed_diff="$(field exposed_diff_ms)" hidden="$(field hidden)"
hidden_diff="$(field hidden_diff)" dp_tps="$(field overlap_tokens_per_s)" serial_tps="$(field serial_tokens_per_s)"
dp_compute_tps="$(field compute_tokens_per_s)"
echo

echo "== dense-s, np=1 x $threads threads: compute only =="
OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads \
  mpirun --oversubscribe --bind-to none -np 1 "$build/bin/castor_bench_dp_overlap" --threads "$threads" \
  --steps "$steps" --warmup "$warmup" | tee "$log"
single_tps="$(field compute_tokens_per_s)" single_ms="$(field compute_ms)"
echo

echo "Finished $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)."
echo "dp=2: 2 ranks x $per_rank thread(s), 1024 tokens per rank per step; single: 1 process x $threads threads,"
echo "1024 tokens per step. comm: communication after backward with every bucket all-reduced after it (b);"
echo "exposed: the same with buckets started during backward (c), from backward's last ready_from(0) to the"
echo "end of finish(); both for the rank that arrived last. hidden = 1 - exposed / comm. In brackets the same"
echo "from step differences, (b) - (a) and (c) - (a). Medians over steps; tokens/s from the slowest rank's step."
echo
echo "| compute ms (dp=2 rank) | comm ms | exposed ms | hidden | tokens/s dp=2 overlapped | tokens/s dp=2 serial | tokens/s dp=2 no comm | tokens/s 1 x $threads threads (ms/step) | dp=2 overlapped / single |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -v c="$compute" -v m="$comm_ms" -v md="$comm_diff" -v e="$exposed" -v ed="$exposed_diff" -v h="$hidden" \
  -v hd="$hidden_diff" -v dp="$dp_tps" -v st="$serial_tps" -v nc="$dp_compute_tps" -v s="$single_tps" \
  -v sm="$single_ms" \
  'BEGIN { printf "| %.0f | %.0f (%.0f) | %.0f (%.0f) | %.1f%% (%.1f%%) | %.1f | %.1f | %.1f | %.1f (%.0f) | %.2fx |\n",
           c, m, md, e, ed, 100 * h, 100 * hd, dp, st, nc, s, sm, dp / s }'
