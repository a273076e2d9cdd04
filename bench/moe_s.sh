#!/usr/bin/env bash
# moe-s against dense-s: training steps of both models (bench/dense_s_step.cpp, --moe for
# moe-s) in the same invocation, with the same threads. --rounds R runs the two R times,
# alternating which goes first, and the table shows the median over rounds of each
# config's per-run medians; the ratio is moe-s tokens/s / dense-s tokens/s (goal >= 0.8).
# A second table splits the MoE layers' time into the router, the dispatch plan, the
# gather/scatter, the experts and the combine. Not a test: it prints numbers and never
# fails on one.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/moe_s.sh [options]
  --steps N          timed steps per run (default 10)
  --warmup W         untimed steps first (default 2)
  --rounds R         dense-s and moe-s R times, alternating the order; medians over rounds (default 3)
  --threads T        threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS; default 2)
  --build-dir DIR    CMake build folder (default build-bench; configured Release, -DCASTOR_CUDA=OFF if new)
  --moe-capacity C   moe-s capacity factor (default 0: dropless)
  --no-build         use the binary as it is
  -h, --help         this text
EOF
}

steps=10 warmup=2 rounds=3 threads=2 build=build-bench capacity=0 do_build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --moe-capacity) capacity="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "moe_s.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$steps" "$rounds" "$threads"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "moe_s.sh: '$v' is not a positive integer" >&2; exit 2; }
done
[[ "$warmup" =~ ^[0-9]+$ ]] || { echo "moe_s.sh: --warmup '$warmup' is not an integer >= 0" >&2; exit 2; }
[[ "$capacity" =~ ^[0-9]+([.][0-9]*)?$ ]] || { echo "moe_s.sh: --moe-capacity '$capacity' is not a number" >&2; exit 2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ $do_build -eq 1 ]]; then
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCASTOR_CUDA=OFF >/dev/null
  fi
  cmake --build "$build" -j"$threads" --target castor_bench_dense_s >/dev/null
fi
bin="$build/bin/castor_bench_dense_s"
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"

log="$(mktemp)"
results="$(mktemp)"
trap 'rm -f "$log" "$results"' EXIT

cpu="$(lscpu | sed -n 's/^Model name: *//p')"
echo "moe-s vs dense-s, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($cpu), threads $threads," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# Value of key=... on a "RESULT key=value ..." line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
# Median over rounds of key for config, from the collected RESULT lines.
med() {
  grep "config=$1 " "$results" | while read -r line; do field "$line" "$2"; done | sort -g |
    awk '{ v[NR] = $1 }
         END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

run_one() {  # config name, extra args
  local name="$1"
  shift
  echo "== round $r/$rounds: $name =="
  "$bin" --steps "$steps" --warmup "$warmup" --threads "$threads" --peak-reps 1 "$@" | tee "$log"
  grep '^RESULT ' "$log" | tail -1 >>"$results"
  echo
}

ratios=()
for ((r = 1; r <= rounds; ++r)); do
  if ((r % 2)); then
    run_one dense-s
    run_one moe-s --moe --moe-capacity "$capacity"
  else
    run_one moe-s --moe --moe-capacity "$capacity"
    run_one dense-s
  fi
  d="$(grep 'config=dense-s ' "$results" | tail -1)"
  m="$(grep 'config=moe-s ' "$results" | tail -1)"
  ratios+=("$(awk -v a="$(field "$m" tokens_per_s)" -v b="$(field "$d" tokens_per_s)" 'BEGIN { printf "%.3f", a / b }')")
done

echo "Finished $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Per run: tokens/s and ms/step are medians over $steps timed steps (after $warmup warm-up steps);"
echo "the table shows the median over $rounds round(s). Ratio: moe-s / dense-s tokens/s (goal >= 0.80)."
echo "Per round moe-s / dense-s: ${ratios[*]}; SGEMM 768^3 at the start of each run (GFLOP/s):" \
  "$(grep -o 'sgemm_gflops=[0-9.]*' "$results" | cut -d= -f2 | tr '\n' ' ')"
echo "moe-s: 8 experts, top-2, expert hidden 768 (= dense 1536 / 2), MoE in all 6 layers, capacity" \
  "$([[ $capacity == 0 ]] && echo "0 (dropless)" ||
    echo "factor $capacity (median share of assignments dropped: $(med moe-s moe_dropped_share))")."
echo
echo "| config | params total | active params | tokens/s | ms/step | ratio | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|"
row() {
  awk -v name="$1" -v pt="$(med "$1" params_total)" -v pa="$(med "$1" params_active)" \
    -v tps="$(med "$1" tokens_per_s)" -v ms="$(med "$1" ms_per_step)" -v rss="$(med "$1" peak_rss_mib)" \
    -v ref="$(med dense-s tokens_per_s)" \
    'BEGIN { printf "| %s | %.2fM | %.2fM | %.1f | %.0f | %.2fx | %.0f MiB |\n",
             name, pt / 1e6, pa / 1e6, tps, ms, tps / ref, rss }'
}
row dense-s
row moe-s
printf '%s\n' "${ratios[@]}" | sort -g |
  awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
        printf "\nMedian of the per-round ratios: %.2fx (min %.2fx, max %.2fx).\n", m, v[1], v[NR] }'

echo
echo "MoE layers of moe-s (median over rounds of the per-run medians, ms per step summed over the 6 layers):"
echo
echo "| phase | forward ms | backward ms | fwd + bwd ms | share of moe-s step |"
echo "|---|---:|---:|---:|---:|"
step="$(med moe-s ms_per_step)"
for p in route plan dispatch combine experts; do
  awk -v p="$p" -v f="$(med moe-s "moe_${p}_fwd_ms")" -v b="$(med moe-s "moe_${p}_bwd_ms")" -v s="$step" \
    'BEGIN { printf "| %s | %.1f | %.1f | %.1f | %.1f%% |\n", p, f, b, f + b, 100 * (f + b) / s }'
done
awk -v f="$(med moe-s moe_fwd_ms)" -v b="$(med moe-s moe_bwd_ms)" -v s="$step" \
  'BEGIN { printf "| MoE layers in all | %.1f | %.1f | %.1f | %.1f%% |\n", f, b, f + b, 100 * (f + b) / s }'
awk -v o="$(med moe-s moe_routing_ms)" -v s="$step" \
  'BEGIN { printf "| routing overhead (route + plan + dispatch + combine) | | | %.1f | %.1f%% |\n", o, 100 * o / s }'
echo
echo "Step phases (median ms over rounds):"
echo
echo "| config | forward | backward | optimizer | step |"
echo "|---|---:|---:|---:|---:|"
for c in dense-s moe-s; do
  awk -v c="$c" -v f="$(med "$c" fwd_ms)" -v b="$(med "$c" bwd_ms)" -v o="$(med "$c" opt_ms)" \
    -v s="$(med "$c" ms_per_step)" 'BEGIN { printf "| %s | %.0f | %.0f | %.0f | %.0f |\n", c, f, b, o, s }'
done
