#!/usr/bin/env bash
# Tokens/s of `castor train` as data, tensor and expert parallelism grow from 1 to N ranks
# (one thread per rank, one rank per core), for a dense-s-sized GPT-2 model (8 heads so that
# tp up to 8 divides them) or its MoE variant (8 experts, top-2, MoE in every layer). dp and
# ep keep the micro-batch per rank (the global batch grows with the ranks); tp splits one
# micro-batch's work. Prints one table; not a test, it never fails on a number.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bench/layout_scaling.sh [options]
  --ranks "1 2 4 8"  rank counts to run (default "1 2 4 8"; each must fit the cores)
  --model M          dense or moe (default moe; dense skips the ep rows)
  --steps N          training steps per run; tokens/s of the last logged interval (default 6)
  --data PATH        GPT-2 token shards (default runs/data/kjv/train, made by scripts/demo.sh)
  --build-dir DIR    CMake build folder with bin/castor (default build)
  --mpirun CMD       the MPI launcher (default mpirun)
  -h, --help         this text
USAGE
}

ranks="1 2 4 8" model=moe steps=6 data=runs/data/kjv/train build=build mpirun=mpirun
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ranks) ranks="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --mpirun) mpirun="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench/layout_scaling.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
castor="$build/bin/castor"
[[ -x "$castor" ]] || { echo "bench/layout_scaling.sh: $castor not found (build first: bash scripts/setup.sh)" >&2; exit 1; }
[[ -e "$data" ]] || { echo "bench/layout_scaling.sh: no data at $data (bash scripts/demo.sh makes it)" >&2; exit 1; }
[[ "$model" == dense || "$model" == moe ]] || { echo "bench/layout_scaling.sh: --model dense or moe" >&2; exit 2; }
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

args=(train --data.train "$data" --model.family gpt2 --model.d_model 384 --model.n_layers 6 --model.n_heads 8
      --model.max_seq_len 256 --model.vocab_size 50304 --train.seq_len 256 --train.micro_batch 4
      --train.steps "$steps" --train.log_every "$steps" --train.threads 1 --optim.warmup_steps 1)
[[ "$model" == moe ]] && args+=(--model.moe_experts 8 --model.moe_top_k 2 --model.moe_d_ff 768)

# tokens/s of the last logged interval of one run
run() {
  local n="$1"; shift
  local out
  if [[ "$n" == 1 ]]; then
    out=$("$castor" "${args[@]}" "$@" 2>&1) || { echo "$out" | tail -3 >&2; return 1; }
  else
    out=$($mpirun --oversubscribe --bind-to core -np "$n" "$castor" "${args[@]}" "$@" 2>&1) ||
      { echo "$out" | tail -3 >&2; return 1; }
  fi
  echo "$out" | sed -n 's/.*| \([0-9]*\) tok\/s |.*/\1/p' | tail -1
}

base=$(run 1)
printf '%-6s %-6s %12s %9s\n' kind ranks "tokens/s" speedup
printf '%-6s %-6s %12s %9s\n' - 1 "$base" 1.00
for kind in dp tp ep; do
  [[ "$kind" == ep && "$model" == dense ]] && continue
  for n in $ranks; do
    [[ "$n" == 1 ]] && continue
    case "$kind" in
      dp) extra=(--parallel.dp "$n") ;;
      tp) extra=(--parallel.tp "$n" --parallel.dp 1 --parallel.sequence_parallel true) ;;
      ep) extra=(--parallel.dp "$n" --parallel.ep "$n") ;;
    esac
    tps=$(run "$n" "${extra[@]}") || tps=""
    if [[ -z "$tps" ]]; then
      printf '%-6s %-6s %12s %9s\n' "$kind" "$n" failed -
    else
      printf '%-6s %-6s %12s %9.2f\n' "$kind" "$n" "$tps" "$(echo "$tps / $base" | bc -l)"
    fi
  done
done
