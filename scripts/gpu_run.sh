#!/usr/bin/env bash
# Runs castor's GPU checks on a GPU machine without Debian packages, from the repository root,
# with a bundle made by scripts/gpu_bundle.sh (docs/gpu.md). Everything is logged under --out;
# the last lines printed are a summary table.
# Usage: bash scripts/gpu_run.sh --bundle DIR --out DIR [--phase P] [--steps N] [--budget S] [--glibc G]
#   --bundle DIR    the folder gpu_bundle.sh wrote (castor-gpu.tar.xz, unpacked once into
#                   ${TMPDIR:-/tmp}), or an unpacked bundle (bin/, lib/, env.sh)
#   --phase tests   every bundled test_cuda_* binary (gtest XML and log each): passed/failed/skipped
#           parity  examples/kjv-small.ini, 10 steps, on cuda f32, cuda bf16 and this machine's CPU
#                   cores with the same binary: the three loss curves side by side
#           train   examples/dense-m.ini on cuda bf16 for --steps steps (tokens/s, MFU, memory);
#                   10 steps at micro-batch 2 in f32, bf16 and f16 (loss curves); moe-m on cuda
#           bench   castor_bench_cuda_gemm --micro-batch 16; bench/torch_gpt_m.py dense and moe
#           all     tests, parity, train, bench (default)
#           layout  (not in all) bench/layout_scaling.sh on the CPU cores with the bundle's
#                   castor and mpirun: dense and moe, ranks 1 2 4 8
#   --steps N       dense-m bf16 steps in phase train (default 30)
#   --budget S      seconds for the whole invocation (default 560); a step gets at most what is
#                   left, and phases that no longer fit are reported as not run
#   --glibc G       auto (default): the machine's glibc unless it is older than the bundle
#                   needs, then the bundle's (its ld.so --library-path); bundle; system
#   --python PY     the Python with PyTorch (default python3): phase bench, CUDA library search
# First prints nvidia-smi and how the CUDA libraries resolve, and stops if one is not found.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

bundle="" out="" phase=all steps=30 budget=560 glibc=auto python=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) bundle=$2; shift ;;
    --out) out=$2; shift ;;
    --phase) phase=$2; shift ;;
    --steps) steps=$2; shift ;;
    --budget) budget=$2; shift ;;
    --glibc) glibc=$2; shift ;;
    --python) python=$2; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "gpu_run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$bundle" ] && [ -n "$out" ] || { echo "gpu_run.sh: --bundle DIR and --out DIR are required (see --help)" >&2; exit 2; }
case "$phase" in tests|parity|train|bench|all|layout) ;; *) echo "gpu_run.sh: --phase tests|parity|train|bench|all|layout" >&2; exit 2 ;; esac
case "$glibc" in auto|bundle|system) ;; *) echo "gpu_run.sh: --glibc auto|bundle|system" >&2; exit 2 ;; esac
if [ -f "$bundle/castor-gpu.tar.xz" ] && [ ! -x "$bundle/bin/castor" ]; then
  # unpack once per archive (its size and checksum name the folder)
  packed="$bundle/castor-gpu.tar.xz"
  dest="${TMPDIR:-/tmp}/castor-gpu-$(cksum <"$packed" | awk '{print $1 "-" $2}')"
  if [ ! -x "$dest/bundle/bin/castor" ]; then
    echo "gpu_run: unpacking $packed into $dest"
    rm -rf "$dest.part" && mkdir -p "$dest.part"
    if ! { command -v xz >/dev/null && tar -C "$dest.part" -xJf "$packed"; }; then
      rm -rf "$dest.part" && mkdir -p "$dest.part"
      "$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$packed" "$dest.part" ||
        { echo "gpu_run.sh: cannot unpack $packed (needs xz, or python3 with lzma)" >&2; exit 2; }
    fi
    rm -rf "$dest" && mv "$dest.part" "$dest"
  fi
  bundle="$dest/bundle"
fi
[ -f "$bundle/env.sh" ] && [ -x "$bundle/bin/castor" ] || { echo "gpu_run.sh: $bundle is not a bundle from scripts/gpu_bundle.sh" >&2; exit 2; }
bundle=$(cd "$bundle" && pwd)
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$repo" || exit 2  # the configs (examples/) and bench/ scripts are the repository's
t_start=$SECONDS
cores=$(nproc)
cpu_threads=$((cores > 16 ? 16 : cores))

summary=()  # "phase|check|status|detail"
note() { summary+=("$1|$2|$3|$4"); }
left() { echo $((budget - (SECONDS - t_start))); }
# limit S: S, or what is left of the budget less 15 s for the summary
limit() { local l; l=$(( $(left) - 15 )); [ "$1" -lt "$l" ] && l=$1; echo "$l"; }
table() {  # stdin: |-separated rows, the first a header; prints aligned columns
  awk -F'|' '{ n[NR] = NF; for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } }
    END { for (r = 1; r <= NR; r++) { line = ""
            for (i = 1; i <= n[r]; i++) line = line sprintf(i < n[r] ? "%-" w[i] "s | " : "%s", c[r, i])
            print line } }'
}
print_summary() {
  echo
  echo "== summary: phase $phase, $(( SECONDS - t_start )) s; logs in $out =="
  { echo "phase|check|status|detail"; printf '%s\n' "${summary[@]}"; } | table | tee "$out/summary.txt"
}

# --- environment: the bundle's libraries, then the machine's CUDA libraries ------------------
cuda_dirs=()
for d in /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/local/cuda*/lib /usr/local/nvidia/lib64 \
  /usr/local/nvidia/lib; do
  [ -d "$d" ] && cuda_dirs+=("$d")
done
if command -v "$python" >/dev/null; then
  while read -r d; do [ -d "$d" ] && cuda_dirs+=("$d"); done < <("$python" - 2>/dev/null <<'EOF'
import glob, os
try:
    import nvidia
    for p in nvidia.__path__:
        for d in sorted(glob.glob(os.path.join(p, "*", "lib"))):
            print(d)
except Exception:
    pass
EOF
)
fi
cuda_path=$(IFS=:; echo "${cuda_dirs[*]}")
lib_path="$bundle/lib${cuda_path:+:$cuda_path}"

# glibc: the machine's, unless it is older than the binaries need; then the bundle's own loader
# and glibc run them (ld.so --library-path), the machine's programs stay untouched.
need=$(sed -n 's/^glibc_needed: //p' "$bundle/MANIFEST.txt")
have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
loader=()
older=0
if [ -n "$need" ] && [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | awk 'NR == 1')" != "$need" ]; then
  older=1
fi
if [ "$glibc" = bundle ] || { [ "$glibc" = auto ] && [ "$older" = 1 ]; }; then
  ld_so=$(find "$bundle/glibc" -name 'ld-linux*' -print -quit)
  loader=("$ld_so" --library-path "$bundle/glibc:$lib_path")
  echo "gpu_run: glibc ${have:-?} here, the bundle needs $need: running its programs with the bundle's glibc ($ld_so)"
fi

# bundled CMD...: runs CMD (a bundle executable) with the bundle's environment under timeout $T
T=60
bundled() {
  (
    # shellcheck source=/dev/null
    source "$bundle/env.sh"
    export LD_LIBRARY_PATH="$lib_path"
    exec timeout -k 10 "$T" "${loader[@]}" "$@"
  )
}
list_libs() {  # what the dynamic loader resolves for a bundle executable
  if [ ${#loader[@]} -gt 0 ]; then "${loader[0]}" --library-path "$bundle/glibc:$lib_path" --list "$1"
  else LD_LIBRARY_PATH="$lib_path" ldd "$1"; fi
}

echo "== gpu_run: $(date -u +%Y-%m-%dT%H:%M:%SZ), phase $phase, budget $budget s, $cores cores =="
bundle_commit=$(sed -n 's/^commit: //p' "$bundle/MANIFEST.txt")
repo_commit=$(git rev-parse HEAD 2>/dev/null || echo '?')
echo "bundle built from ${bundle_commit:-?}; this repository is at $repo_commit"
if [ "${bundle_commit%% *}" != "$repo_commit" ]; then
  echo "gpu_run: warning: the bundle was built from another commit than this checkout (configs and scripts may not match)"
  note setup commit warning "bundle ${bundle_commit:0:12}, repo ${repo_commit:0:12}"
fi
echo "glibc here $have, needed $need; CUDA library folders: ${cuda_path:-none}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi 2>&1 | tee "$out/nvidia-smi.txt"
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
  note setup nvidia-smi ok "${gpu:-?}"
else
  echo "gpu_run: nvidia-smi not found: no NVIDIA driver here, the CUDA tests will report skipped"
  note setup nvidia-smi missing "no driver: CUDA programs will find no device"
fi
missing_libs() { for f in "$bundle"/bin/*; do list_libs "$f" 2>&1 | awk '/not found/ {print $1}'; done | sort -u; }
# a library still missing: look for it elsewhere on the machine (bounded), and add its folder
for lib in $(missing_libs); do
  hit=$(timeout 30 find /usr /opt /root /home /lib /lib64 -xdev -name "$lib" \( -type f -o -type l \) -print -quit 2>/dev/null)
  if [ -n "$hit" ]; then
    echo "gpu_run: found $lib at $hit"
    lib_path="$lib_path:$(dirname "$hit")"
    [ ${#loader[@]} -gt 0 ] && loader=("${loader[0]}" --library-path "$bundle/glibc:$lib_path")
  fi
done
echo "-- library resolution (bin/castor) --"
list_libs "$bundle/bin/castor" 2>&1 | grep -E "cublas|cudart|nccl|libcuda|not found" | tee "$out/ldd.txt"
missing=""
for f in "$bundle"/bin/*; do
  m=$(list_libs "$f" 2>&1 | awk '/not found/ {print $1}')
  [ -n "$m" ] && missing="$missing $(basename "$f"):$(echo $m | tr ' ' ',')"
done
if [ -n "$missing" ]; then
  echo "gpu_run: error: shared libraries not found:$missing"
  echo "gpu_run: searched the bundle's lib/ and: ${cuda_path:-no CUDA folders found}"
  echo "gpu_run: install or locate the CUDA 13 runtime, cuBLAS and NCCL (e.g. pip's nvidia-* packages) and retry"
  note setup libraries "NOT FOUND" "$missing"
  print_summary
  exit 1
fi
note setup libraries ok "$(list_libs "$bundle/bin/castor" | awk '/cublasLt|cudart|nccl/ {print $3}' | tr '\n' ' ')"

# --- phase tests ---------------------------------------------------------------------------
phase_tests() {
  local t0=$SECONDS rows=() f name rc p fl s secs failed=""
  echo; echo "== phase tests: $(ls "$bundle"/bin/test_cuda_* | wc -l) binaries =="
  for f in "$bundle"/bin/test_cuda_*; do
    name=$(basename "$f")
    T=$(limit 240)
    if [ "$T" -lt 20 ] || [ $((SECONDS - t0)) -gt 450 ]; then
      rows+=("$name|-|-|-|not run (time)"); note tests "$name" "not run" "time budget"; continue
    fi
    local s0=$SECONDS
    OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4 bundled "$f" --gtest_output="xml:$out/$name.xml" >"$out/$name.log" 2>&1
    rc=$?
    secs=$((SECONDS - s0))
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$out/$name.log" | tail -1)
    fl=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$out/$name.log" | tail -1)
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9][0-9]*\) test.*/\1/p' "$out/$name.log" | tail -1)
    local status=ok
    case $rc in
      0) ;;
      77) status="skipped (no device)"; s=all ;;
      124|137) status="TIMEOUT after ${T}s" ;;
      *) status="FAILED rc=$rc" ;;
    esac
    rows+=("$name|${p:-0}|${fl:-0}|${s:-0}|$status, ${secs}s")
    if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
      failed=$(sed -n 's/^\[  FAILED  \] \([A-Za-z][A-Za-z0-9_./]*\).*/\1/p' "$out/$name.log" | sort -u | head -8 | tr '\n' ' ')
      [ -z "$failed" ] && failed=$(tail -2 "$out/$name.log" | tr '\n' ' ' | cut -c1-160)
    fi
    note tests "${name#test_cuda_}" "$status" "passed ${p:-0}, failed ${fl:-0}, skipped ${s:-0}${failed:+; $failed}"
    failed=""
  done
  { echo "binary|passed|failed|skipped|status"; printf '%s\n' "${rows[@]}"; } | table | tee "$out/tests.txt"
}

# --- castor train helpers ---------------------------------------------------------------------
# train_run NAME SECONDS ARGS...: castor train, log in OUT/NAME.log; sets rc
train_run() {
  local name=$1
  T=$(limit "$2"); shift 2
  if [ "$T" -lt 20 ]; then echo "skipped $name: time budget" >"$out/$name.log"; rc=200; return; fi
  echo "-- $name: castor train $* (limit ${T}s)"
  bundled "$bundle/bin/castor" train "$@" >"$out/$name.log" 2>&1
  rc=$?
  grep -E '^(model|device|step|done)' "$out/$name.log" | tail -4
  [ "$rc" = 0 ] || tail -3 "$out/$name.log"
}
# run_status NAME: one word for the summary
run_status() {
  case $rc in
    0) echo ok ;; 200) echo "not run (time)" ;; 124|137) echo TIMEOUT ;;
    *) if grep -q "so far" "$out/$1.log"; then echo "unsupported"; else echo "FAILED rc=$rc"; fi ;;
  esac
}
# losses NAME: "step loss" per logged step
losses() { sed -n 's/^step *\([0-9]*\)\/[0-9]* | loss \([0-9.eE+-]*\).*/\1 \2/p' "$out/$1.log"; }
# curves TITLE NAME...: the loss curves of several runs side by side, and the largest relative
# difference of each run from the first
curves() {
  local title=$1; shift
  local files=() n
  for n in "$@"; do losses "$n" >"$out/$n.loss"; files+=("$out/$n.loss"); done
  echo "-- $title: loss per step --"
  awk -v names="$*" '
    BEGIN { k = split(names, nm, " ") }
    FNR == 1 { f++ }
    { loss[f, $1] = $2; if ($1 + 0 > maxs) maxs = $1 + 0 }
    END {
      printf "%6s", "step"; for (i = 1; i <= k; i++) printf " %14s", nm[i]; printf "\n"
      for (s = 1; s <= maxs; s++) {
        printf "%6d", s
        for (i = 1; i <= k; i++) printf " %14s", ((i, s) in loss) ? loss[i, s] : "-"
        printf "\n"
        for (i = 2; i <= k; i++) if (((1, s) in loss) && ((i, s) in loss)) {
          d = loss[i, s] - loss[1, s]; if (d < 0) d = -d; d /= loss[1, s]; if (d > dmax[i]) dmax[i] = d; seen[i] = 1 }
      }
      for (i = 2; i <= k; i++) printf "max relative difference %s vs %s: %s\n", nm[i], nm[1], seen[i] ? sprintf("%.2e", dmax[i]) : "n/a"
    }' "${files[@]}" | tee "$out/$title.curves.txt"
}
# last_step NAME: loss, tok/s, MFU and memory of the last logged step; else the error
last_step() {
  local l
  l=$(grep '^step .*tok/s' "$out/$1.log" | tail -1 |
    sed -n 's/.*| loss \([0-9.]*\).*| \([0-9]*\) tok\/s | MFU \([0-9.]*%\).*peak mem \([0-9]*\) MiB.*/loss \1, \2 tok\/s, MFU \3, peak \4 MiB/p')
  [ -n "$l" ] || l=$(grep -o 'error: .*' "$out/$1.log" | tail -1 | sed 's/^error: rank 0: //' | cut -c1-110)
  [ -n "$l" ] || l=$(tail -1 "$out/$1.log" | cut -c1-110)
  echo "$l"
}

# --- phase parity ------------------------------------------------------------------------------
phase_parity() {
  echo; echo "== phase parity: examples/kjv-small.ini, 10 steps: cpu ($cpu_threads threads), cuda f32, cuda bf16 =="
  local common=(--config examples/kjv-small.ini --data.train "$bundle/data/kjv/train" --train.steps 10
    --train.log_every 1 --train.eval_every 0)
  local n st
  train_run parity-cpu 200 "${common[@]}" --train.device cpu --train.threads "$cpu_threads"
  note parity cpu "$(run_status parity-cpu)" "$(last_step parity-cpu)"
  train_run parity-cuda-f32 120 "${common[@]}" --train.device cuda --train.precision f32
  note parity cuda-f32 "$(run_status parity-cuda-f32)" "$(last_step parity-cuda-f32)"
  train_run parity-cuda-bf16 120 "${common[@]}" --train.device cuda --train.precision bf16
  note parity cuda-bf16 "$(run_status parity-cuda-bf16)" "$(last_step parity-cuda-bf16)"
  curves parity parity-cpu parity-cuda-f32 parity-cuda-bf16
  while read -r st; do note parity curves "" "$st"; done < <(sed -n 's/^max relative difference //p' "$out/parity.curves.txt")
}

# --- phase train -------------------------------------------------------------------------------
phase_train() {
  echo; echo "== phase train: dense-m on cuda =="
  local data=(--data.train "$bundle/data/kjv/train")
  train_run dense-m-bf16 300 --config examples/dense-m.ini "${data[@]}" --train.device cuda --train.precision bf16 \
    --train.steps "$steps" --train.log_every 5
  note train "dense-m bf16 x$steps" "$(run_status dense-m-bf16)" "$(last_step dense-m-bf16)"
  train_run dense-m-f32-mb2 150 --config examples/dense-m.ini "${data[@]}" --train.device cuda --train.precision f32 \
    --train.steps 10 --train.micro_batch 2 --train.log_every 1
  note train "dense-m f32 mb2 x10" "$(run_status dense-m-f32-mb2)" "$(last_step dense-m-f32-mb2)"
  train_run dense-m-bf16-mb2 120 --config examples/dense-m.ini "${data[@]}" --train.device cuda --train.precision bf16 \
    --train.steps 10 --train.micro_batch 2 --train.log_every 1
  note train "dense-m bf16 mb2 x10" "$(run_status dense-m-bf16-mb2)" "$(last_step dense-m-bf16-mb2)"
  train_run dense-m-f16-mb2 120 --config examples/dense-m.ini "${data[@]}" --train.device cuda --train.precision f16 \
    --train.steps 10 --train.micro_batch 2 --train.log_every 1
  note train "dense-m f16 mb2 x10" "$(run_status dense-m-f16-mb2)" "$(last_step dense-m-f16-mb2)"
  curves dense-m-mb2 dense-m-f32-mb2 dense-m-bf16-mb2 dense-m-f16-mb2
  while read -r st; do note train "dense-m mb2 curves" "" "$st"; done < <(sed -n 's/^max relative difference //p' "$out/dense-m-mb2.curves.txt")
  train_run moe-m-bf16 150 --config examples/moe-m.ini "${data[@]}" --train.device cuda --train.precision bf16 \
    --train.steps 10 --train.log_every 5
  note train "moe-m bf16 x10" "$(run_status moe-m-bf16)" "$(last_step moe-m-bf16)"
}

# --- phase bench -------------------------------------------------------------------------------
phase_bench() {
  echo; echo "== phase bench: cuBLASLt GEMM ceiling, PyTorch eager dense-m and moe-m =="
  T=$(limit 150)
  if [ "$T" -ge 20 ]; then
    bundled "$bundle/bin/castor_bench_cuda_gemm" --micro-batch 16 >"$out/bench-gemm.log" 2>&1
    rc=$?
    tail -3 "$out/bench-gemm.log"
    note bench "cuBLASLt gemm mb16" "$(run_status bench-gemm)" "$(grep -o 'step ceiling.*' "$out/bench-gemm.log" | cut -c1-110)$( [ "$rc" = 0 ] || tail -1 "$out/bench-gemm.log" | cut -c1-110)"
  else
    note bench "cuBLASLt gemm mb16" "not run (time)" ""
  fi
  local m
  for m in dense moe; do
    T=$(limit 200)
    if [ "$T" -lt 30 ]; then note bench "torch $m-m" "not run (time)" ""; continue; fi
    echo "-- torch $m-m (limit ${T}s)"
    timeout -k 10 "$T" "$python" bench/torch_gpt_m.py --model "$m" --json "$out/torch_gpt_m.jsonl" >"$out/torch-$m.log" 2>&1
    rc=$?
    tail -4 "$out/torch-$m.log"
    local row
    row=$(grep '^| pytorch' "$out/torch-$m.log" | tail -1 | awk -F'|' '{printf "batch%s:%s ms/step,%s tok/s, MFU%s, peak%s%s", $4, $5, $7, $8, $9, $10}')
    note bench "torch $m-m" "$(run_status "torch-$m")" "${row:-$(tail -1 "$out/torch-$m.log" | cut -c1-100)}"
  done
}

# --- phase layout ------------------------------------------------------------------------------
phase_layout() {
  echo; echo "== phase layout: bench/layout_scaling.sh with the bundle's castor and mpirun =="
  if [ ${#loader[@]} -gt 0 ]; then
    note layout - "not run" "mpirun starts castor with the machine's glibc ($have), older than the bundle's ($need)"
    return
  fi
  local m
  for m in dense moe; do
    T=$(limit 240)
    if [ "$T" -lt 60 ]; then note layout "$m" "not run (time)" ""; continue; fi
    echo "-- layout_scaling --model $m (limit ${T}s)"
    (
      source "$bundle/env.sh"
      export LD_LIBRARY_PATH="$lib_path"
      exec timeout -k 10 "$T" bash bench/layout_scaling.sh --model "$m" --ranks "1 2 4 8" \
        --build-dir "$bundle" --mpirun "$bundle/openmpi/bin/mpirun" --data "$bundle/data/kjv/train"
    ) >"$out/layout-$m.log" 2>&1
    rc=$?
    tail -12 "$out/layout-$m.log"
    note layout "$m" "$(run_status "layout-$m")" "table in layout-$m.log"
  done
}

run_phase() {
  local p=$1
  if [ "$(left)" -lt 40 ]; then note "$p" "-" "not run (time)" "$(left) s left of $budget"; return; fi
  local s0=$SECONDS
  "phase_$p"
  echo "-- phase $p: $((SECONDS - s0)) s"
}
case "$phase" in
  all) for p in tests parity train bench; do run_phase "$p"; done ;;
  *) run_phase "$phase" ;;
esac
print_summary
# exit status: 1 when a check failed or timed out
printf '%s\n' "${summary[@]}" | awk -F'|' '$3 ~ /^(FAILED|TIMEOUT|NOT FOUND)/ {bad = 1} END {exit bad}'
