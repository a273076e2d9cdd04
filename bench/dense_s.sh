#!/usr/bin/env bash
# dense-s training-step benchmark: castor (bench/dense_s_step.cpp) against PyTorch eager
# (bench/torch_dense_s.py) on the same model, batch and thread count, one table at the end.
# Both MFUs use castor's SGEMM peak measured in the same round (passed to the torch script).
# --rounds R alternates castor and PyTorch R times (both see the same machine load) and
# the table shows the median over rounds. --memory instead runs castor alone for many
# steps and prints RSS along the way. Not a test: it prints numbers and never fails on one.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/dense_s.sh [options]
  --steps N         timed steps per run (default 20)
  --warmup W        untimed steps first (default 3)
  --rounds R        castor then PyTorch, R times; the table takes medians over rounds (default 1)
  --threads T       threads for both (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS; default 2)
  --build-dir DIR   CMake build folder (default build; configured with -DCASTOR_CUDA=OFF if new)
  --kernels         also time the fused head and attention alone on both sides
  --peak-gflops P   fixed MFU reference for both (e.g. a quiet-machine SGEMM rate); default:
                    castor's SGEMM peak measured in the same round
  --no-torch        castor only
  --memory          castor only, --memory-steps steps, RSS at steps 10, 100, 500, 1000
  --memory-steps N  steps of the --memory run (default 1000)
  -h, --help        this text
EOF
}

steps=20 warmup=3 rounds=1 threads=2 build=build kernels="" torch=1 memory=0 memory_steps=1000 peak=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --kernels) kernels="--kernels"; shift ;;
    --peak-gflops) peak="$2"; shift 2 ;;
    --no-torch) torch=0; shift ;;
    --memory) memory=1; shift ;;
    --memory-steps) memory_steps="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "dense_s.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$steps" "$rounds" "$threads" "$memory_steps"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "dense_s.sh: '$v' is not a positive integer" >&2; exit 2; }
done
[[ "$warmup" =~ ^[0-9]+$ ]] || { echo "dense_s.sh: --warmup '$warmup' is not an integer >= 0" >&2; exit 2; }
[[ "$peak" =~ ^[0-9]+([.][0-9]*)?$ ]] || { echo "dense_s.sh: --peak-gflops '$peak' is not a number" >&2; exit 2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S . -B "$build" -DCASTOR_CUDA=OFF >/dev/null
fi
cmake --build "$build" -j"$threads" --target castor_bench_dense_s >/dev/null
bin="$build/bin/castor_bench_dense_s"
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"

log="$(mktemp)"
results="$(mktemp)"
trap 'rm -f "$log" "$results"' EXIT

cpu="$(lscpu | sed -n 's/^Model name: *//p')"
echo "dense-s benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($cpu), threads $threads," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

if [[ $memory -eq 1 ]]; then
  marks=""
  for s in 10 100 500 1000 "$memory_steps"; do
    [[ $s -le $memory_steps ]] && marks="${marks:+$marks,}$s"
  done
  echo "== castor, $memory_steps steps, RSS at steps $marks =="
  "$bin" --steps "$memory_steps" --warmup 0 --threads "$threads" --peak-reps 1 --rss-at "$marks" | tee "$log"
  echo
  echo "| step | RSS now | peak RSS | backend allocated |"
  echo "|---:|---:|---:|---:|"
  # "step     10 | loss .. | .. ms | RSS x MiB | peak RSS x MiB | backend allocated x MiB"
  awk -F'|' '/^step .*peak RSS/ {
    n = split($1, a, " "); split($4, r, " "); split($5, p, " "); split($6, b, " ")
    printf "| %s | %s MiB | %s MiB | %s MiB |\n", a[n], r[2], p[3], b[3] }' "$log"
  exit 0
fi

# Value of key=... on a "RESULT key=value ..." line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
# Median over rounds of key for impl, from the collected RESULT lines.
med() {
  grep "^RESULT impl=$1 " "$results" | while read -r line; do field "$line" "$2"; done | sort -g |
    awk '{ v[NR] = $1 }
         END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

for ((r = 1; r <= rounds; ++r)); do
  echo "== round $r/$rounds: castor =="
  "$bin" --steps "$steps" --warmup "$warmup" --threads "$threads" --peak-gflops "$peak" $kernels | tee "$log"
  castor="$(grep '^RESULT ' "$log" | tail -1)"
  echo "$castor" >>"$results"
  if [[ $torch -eq 1 ]]; then
    echo
    echo "== round $r/$rounds: PyTorch eager =="
    /usr/bin/python3 bench/torch_dense_s.py --steps "$steps" --warmup "$warmup" --threads "$threads" \
      --peak-gflops "$(field "$castor" ref_gflops)" $kernels | tee "$log"
    grep '^RESULT ' "$log" | tail -1 >>"$results"
  fi
  echo
done

echo "Finished $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)."
if [[ $peak == 0 ]]; then
  echo "MFU reference for both: castor's SGEMM peak measured in the same round (768^3, best of 5)," \
    "median $(med castor ref_gflops) GFLOP/s."
else
  echo "MFU reference for both: --peak-gflops $peak; castor's measured SGEMM peak was" \
    "median $(med castor sgemm_gflops) GFLOP/s."
fi
[[ $torch -eq 1 ]] && echo "torch.mm on the same shape: median $(med pytorch sgemm_gflops) GFLOP/s (shown only)."
echo "Per run: tokens/s, ms/step and phases are medians over $steps timed steps, 'best' the fastest step;"
echo "the table shows the median over $rounds round(s). castor's forward includes the LM head's gradient"
echo "GEMMs (fused head) that PyTorch does in backward: compare forward + backward."
echo "Ratio row: tokens/s castor / PyTorch (> 1: castor faster); times and memory castor / PyTorch."
echo
echo "| impl | tokens/s | tokens/s (best step) | ms/step | MFU | peak RSS | forward ms | backward ms | fwd+bwd ms | optimizer ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
row() {
  awk -v name="$1" -v tps="$(med "$2" tokens_per_s)" -v ms="$(med "$2" ms_per_step)" \
    -v best="$(med "$2" best_ms_per_step)" -v mfu="$(med "$2" mfu)" -v rss="$(med "$2" peak_rss_mib)" \
    -v f="$(med "$2" fwd_ms)" -v b="$(med "$2" bwd_ms)" -v o="$(med "$2" opt_ms)" -v tokens=1024 \
    'BEGIN { printf "| %s | %.1f | %.1f | %.0f | %.1f%% | %.0f MiB | %.0f | %.0f | %.0f | %.0f |\n",
             name, tps, tokens / (best / 1e3), ms, 100 * mfu, rss, f, b, f + b, o }'
}
row castor castor
if [[ $torch -eq 1 ]]; then
  row "PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') eager" pytorch
  awk -v ct="$(med castor tokens_per_s)" -v pt="$(med pytorch tokens_per_s)" \
    -v cbest="$(med castor best_ms_per_step)" -v pbest="$(med pytorch best_ms_per_step)" \
    -v cms="$(med castor ms_per_step)" -v pms="$(med pytorch ms_per_step)" \
    -v cr="$(med castor peak_rss_mib)" -v pr="$(med pytorch peak_rss_mib)" \
    -v cf="$(med castor fwd_ms)" -v pf="$(med pytorch fwd_ms)" \
    -v cb="$(med castor bwd_ms)" -v pb="$(med pytorch bwd_ms)" \
    -v co="$(med castor opt_ms)" -v po="$(med pytorch opt_ms)" \
    'BEGIN { printf "| castor / PyTorch | %.2fx | %.2fx | %.2fx | | %.2fx | %.2fx | %.2fx | %.2fx | %.2fx |\n",
             ct / pt, pbest / cbest, cms / pms, cr / pr, cf / pf, cb / pb, (cf + cb) / (pf + pb), co / po }'
fi
