#!/usr/bin/env bash
# Model parallelism on 2 ranks (bench/model_parallel_step.cpp): training steps of moe-s under
# tp2, tp2 + sequence parallelism and ep2 (dp2) by default, each printing the communication
# per step per rank by group and operation against the analytic formula, and a step-time
# breakdown (waits per group and operation, compute). Ends with a summary table. Not a test:
# it prints numbers and never fails on one.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/model_parallel.sh [options] [-- extra castor_bench_model_parallel options]
  --steps N          timed steps per layout (default 3)
  --warmup W         untimed steps first (default 2)
  --model M          dense-s or moe-s (default moe-s)
  --layouts L        comma-separated layouts, each degrees joined by '+': tpN, sp, epN, dpN, zeroN
                     (default tp2,tp2+sp,ep2; dp is np / tp, a dpN given must agree)
  --np N             ranks (default 2)
  --threads T        threads per rank (default 1)
  --batch B          micro-batch rows per dp rank (default 4)
  --seq-len T        sequence length (default 256)
  --build-dir DIR    CMake build folder (default build-bench; configured Release, -DCASTOR_CUDA=OFF if new)
  --no-build         use the binary as it is
  -h, --help         this text
Examples:
  bench/model_parallel.sh                                   # moe-s: tp2, tp2+sp, ep2 (about 2-3 minutes)
  bench/model_parallel.sh --model dense-s --layouts tp2,tp2+sp
  bench/model_parallel.sh --layouts ep2 -- --capacity 1.25 --family llama
  bench/model_parallel.sh --layouts tp2+sp --batch 2 --seq-len 64 -- --layers 2 --d-model 128 --heads 4 --vocab 4096
EOF
}

steps=3 warmup=2 model=moe-s layouts=tp2,tp2+sp,ep2 np=2 threads=1 batch=4 seq_len=256 build=build-bench do_build=1
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --layouts) layouts="$2"; shift 2 ;;
    --np) np="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --seq-len) seq_len="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "model_parallel.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$steps" "$np" "$threads" "$batch" "$seq_len"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "model_parallel.sh: '$v' is not a positive integer" >&2; exit 2; }
done
[[ "$warmup" =~ ^[0-9]+$ ]] || { echo "model_parallel.sh: --warmup '$warmup' is not an integer >= 0" >&2; exit 2; }

# Program options of one layout name, e.g. "tp2+sp" -> "--tp 2 --sp".
layout_args() {
  local name="$1" tp=1 dp="" out=() part
  IFS='+' read -ra parts <<<"$name"
  for part in "${parts[@]}"; do
    case "$part" in
      tp[1-9]*) tp="${part#tp}"; out+=(--tp "$tp") ;;
      ep[1-9]*) out+=(--ep "${part#ep}") ;;
      dp[1-9]*) dp="${part#dp}" ;;
      zero[0-2]) out+=(--zero "${part#zero}") ;;
      sp) out+=(--sp) ;;
      *) echo "model_parallel.sh: layout '$name': unknown part '$part' (tpN, sp, epN, dpN, zeroN)" >&2; return 2 ;;
    esac
  done
  if [[ -n "$dp" ]] && ((dp * tp != np)); then
    echo "model_parallel.sh: layout '$name': tp $tp x dp $dp is not --np $np" >&2
    return 2
  fi
  echo "${out[@]}"
}
IFS=',' read -ra layout_list <<<"$layouts"
declare -A args_of
for l in "${layout_list[@]}"; do args_of[$l]="$(layout_args "$l")"; done  # every name checked before building

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ $do_build -eq 1 ]]; then
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCASTOR_CUDA=OFF >/dev/null
  fi
  cmake --build "$build" -j2 --target castor_bench_model_parallel >/dev/null
fi
bin="$build/bin/castor_bench_model_parallel"
cores="$(nproc)"  # before OMP_NUM_THREADS is set: nproc reads it
[ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
bind=()
((threads > 1)) && bind=(--bind-to none)  # mpirun binds each rank to one core otherwise

log="$(mktemp)"
results="$(mktemp)"
trap 'rm -f "$log" "$results"' EXIT

cpu="$(lscpu | sed -n 's/^Model name: *//p')"
echo "model-parallel benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $cores cores ($cpu)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
start=$SECONDS
for l in "${layout_list[@]}"; do
  echo
  echo "== $model, layout $l: mpirun -np $np, $threads thread(s) per rank =="
  # shellcheck disable=SC2086 # the layout's options are words
  mpirun --oversubscribe "${bind[@]}" -np "$np" "$bin" --model "$model" --steps "$steps" --warmup "$warmup" \
    --threads "$threads" --batch "$batch" --seq-len "$seq_len" ${args_of[$l]} "${extra[@]}" | tee "$log"
  grep '^RESULT ' "$log" | tail -1 >>"$results"
done

# Value of key=... on a RESULT line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
echo
echo "Finished in $((SECONDS - start)) s, $(date -u '+%H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Per step, rank 0; times: the slowest rank's median step, its compute and waits; MB = 1e6 bytes."
echo
echo "| layout | tokens/s | step ms | compute ms | waits ms | tp MB | ep MB | dp MB | edp MB | measured = formula |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
while read -r line; do
  awk -v l="$(field "$line" layout)" -v tps="$(field "$line" tokens_per_s)" -v s="$(field "$line" step_ms)" \
    -v c="$(field "$line" compute_ms)" -v w="$(field "$line" wait_ms)" -v tp="$(field "$line" tp_bytes)" \
    -v ep="$(field "$line" ep_bytes)" -v dp="$(field "$line" dp_bytes)" -v edp="$(field "$line" edp_bytes)" \
    -v m="$(field "$line" match)" \
    'BEGIN { printf "| %s | %.1f | %.1f | %.1f | %.1f | %.3f | %.3f | %.3f | %.3f | %s |\n",
             l, tps, s, c, w, tp / 1e6, ep / 1e6, dp / 1e6, edp / 1e6, m == 1 ? "yes" : "NO" }'
done <"$results"
