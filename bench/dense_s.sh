#!/usr/bin/env bash
# dense-s training-step benchmark: castor (bench/dense_s_step.cpp) against PyTorch eager
# (bench/torch_dense_s.py) on the same model, batch and thread count, one table at the end.
# Both MFUs use castor's measured SGEMM peak as the reference (passed to the torch script).
# --memory instead runs castor alone for many steps and prints RSS along the way.
# Not a test: it prints numbers and never fails on a timing.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/dense_s.sh [options]
  --steps N         timed steps per implementation (default 20)
  --warmup W        untimed steps first (default 3)
  --threads T       threads for both (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS; default 2)
  --build-dir DIR   CMake build folder (default build; configured with -DCASTOR_CUDA=OFF if new)
  --kernels         also time the fused head and attention alone on both sides
  --no-torch        castor only
  --memory          castor only, --memory-steps steps, RSS at steps 10, 100, 500, 1000
  --memory-steps N  steps of the --memory run (default 1000)
  -h, --help        this text
EOF
}

steps=20 warmup=3 threads=2 build=build kernels="" torch=1 memory=0 memory_steps=1000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --kernels) kernels="--kernels"; shift ;;
    --no-torch) torch=0; shift ;;
    --memory) memory=1; shift ;;
    --memory-steps) memory_steps="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "dense_s.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S . -B "$build" -DCASTOR_CUDA=OFF >/dev/null
fi
cmake --build "$build" -j"$threads" --target castor_bench_dense_s >/dev/null
bin="$build/bin/castor_bench_dense_s"
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"

# Value of key=... on a "RESULT key=value ..." line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

echo "dense-s benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), threads $threads"
echo

log_castor="$(mktemp)"
log_torch="$(mktemp)"
trap 'rm -f "$log_castor" "$log_torch"' EXIT

if [[ $memory -eq 1 ]]; then
  marks=""
  for s in 10 100 500 1000 "$memory_steps"; do
    [[ $s -le $memory_steps ]] && marks="${marks:+$marks,}$s"
  done
  echo "== castor, $memory_steps steps, RSS at steps $marks =="
  "$bin" --steps "$memory_steps" --warmup 0 --threads "$threads" --rss-at "$marks" | tee "$log_castor"
  echo
  echo "| step | RSS now | peak RSS | backend allocated |"
  echo "|---:|---:|---:|---:|"
  # "step     10 | loss .. | .. ms | RSS x MiB | peak RSS x MiB | backend allocated x MiB"
  awk -F'|' '/^step .*peak RSS/ {
    n = split($1, a, " "); split($4, r, " "); split($5, p, " "); split($6, b, " ")
    printf "| %s | %s MiB | %s MiB | %s MiB |\n", a[n], r[2], p[3], b[3] }' "$log_castor"
  exit 0
fi

echo "== castor =="
"$bin" --steps "$steps" --warmup "$warmup" --threads "$threads" $kernels | tee "$log_castor"
castor="$(grep '^RESULT ' "$log_castor" | tail -1)"
peak="$(field "$castor" sgemm_gflops)"

if [[ $torch -eq 1 ]]; then
  echo
  echo "== PyTorch eager =="
  /usr/bin/python3 bench/torch_dense_s.py --steps "$steps" --warmup "$warmup" --threads "$threads" \
    --peak-gflops "$peak" $kernels | tee "$log_torch"
  pytorch="$(grep '^RESULT ' "$log_torch" | tail -1)"
fi

echo
echo "MFU reference for both rows: castor's measured SGEMM peak, $peak GFLOP/s (768^3, $threads threads)."
[[ $torch -eq 1 ]] && echo "torch.mm on the same shape: $(field "$pytorch" sgemm_gflops) GFLOP/s."
echo
echo "| impl | tokens/s | ms/step | MFU | peak RSS | forward ms | backward ms | optimizer ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
row() {
  awk -v name="$1" -v tps="$(field "$2" tokens_per_s)" -v ms="$(field "$2" ms_per_step)" \
    -v mfu="$(field "$2" mfu)" -v rss="$(field "$2" peak_rss_mib)" -v f="$(field "$2" fwd_ms)" \
    -v b="$(field "$2" bwd_ms)" -v o="$(field "$2" opt_ms)" \
    'BEGIN { printf "| %s | %.1f | %.0f | %.1f%% | %.0f MiB | %.0f | %.0f | %.0f |\n", name, tps, ms, 100 * mfu, rss, f, b, o }'
}
row castor "$castor"
if [[ $torch -eq 1 ]]; then
  row "PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') eager" "$pytorch"
  awk -v ct="$(field "$castor" tokens_per_s)" -v pt="$(field "$pytorch" tokens_per_s)" \
    -v cr="$(field "$castor" peak_rss_mib)" -v pr="$(field "$pytorch" peak_rss_mib)" \
    -v cf="$(field "$castor" fwd_ms)" -v pf="$(field "$pytorch" fwd_ms)" \
    -v cb="$(field "$castor" bwd_ms)" -v pb="$(field "$pytorch" bwd_ms)" \
    -v co="$(field "$castor" opt_ms)" -v po="$(field "$pytorch" opt_ms)" \
    'BEGIN { printf "| castor / PyTorch | %.2fx | | | %.2fx | %.2fx time | %.2fx time | %.2fx time |\n", ct / pt, cr / pr, cf / pf, cb / pb, co / po }'
fi
