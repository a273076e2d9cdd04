#!/usr/bin/env bash
# Data-side benchmarks: `castor prep` throughput (MB/s of input, 2 and 1 threads) on KJV
# text, Fashion-MNIST and spoken KJV verses; io::Loader throughput
# (bench/loader_bench.cpp) on the shards they produce and on an interleaved mix, with a
# prefetch thread and synchronously; the loader's rates against what dense-s training
# consumes (tok/s of a short `castor train --config examples/dense-s.ini` run); and a peer
# on the text shard, a plain h5py random-window loader (bench/h5py_loader.py). Data goes to
# runs/bench-data/ and is reused by later runs. Prints tables at the end (medians over
# --rounds). Not a test: it prints numbers and never fails on one.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/data.sh [options]
  --build-dir DIR   CMake build folder (default build-bench; configured Release if new)
  --seconds S       timed seconds per loader run (default 5; 1 s warm-up before)
  --rounds R        loader and peer runs, R times in turn; tables take medians (default 1)
  --prep-reps N     runs of each prep pipeline and thread count; median MB/s (default 3)
  --verses N        spoken KJV verses for the audio corpus (default 300)
  --mix-count N     documents of the interleaved mix (default 1000)
  --dense-steps N   steps of the dense-s `castor train` run (default 15, logged every 5;
                    the first log interval is start-up and is left out)
  --dense-tps X     skip that run and compare with X tok/s (e.g. bench/NOTES.md's 891)
  --dense-ref X     a second reference in the ratio table (default 891.4 tok/s: castor's dense-s on
                    a quiet machine, bench/NOTES.md; the measured run is slower when cores are shared)
  --no-peer         skip the h5py peer
  --tables-only     measure nothing: print the tables of the last run (runs/bench-data/results.txt)
  -h, --help        this text
EOF
}

build=build-bench seconds=5 rounds=1 prep_reps=3 verses=300 mix_count=1000 dense_steps=15 dense_tps="" dense_ref=891.4 peer=1 tables_only=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --prep-reps) prep_reps="$2"; shift 2 ;;
    --verses) verses="$2"; shift 2 ;;
    --mix-count) mix_count="$2"; shift 2 ;;
    --dense-steps) dense_steps="$2"; shift 2 ;;
    --dense-tps) dense_tps="$2"; shift 2 ;;
    --dense-ref) dense_ref="$2"; shift 2 ;;
    --no-peer) peer=0; shift ;;
    --tables-only) tables_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "data.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
for v in "$rounds" "$prep_reps" "$verses" "$mix_count" "$dense_steps"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "data.sh: '$v' is not a positive integer" >&2; exit 2; }
done
[[ "$seconds" =~ ^[0-9]+([.][0-9]*)?$ ]] || { echo "data.sh: --seconds '$seconds' is not a number" >&2; exit 2; }
[[ -z "$dense_tps" || "$dense_tps" =~ ^[0-9]+([.][0-9]*)?$ ]] ||
  { echo "data.sh: --dense-tps '$dense_tps' is not a number" >&2; exit 2; }
[[ "$dense_ref" =~ ^[0-9]+([.][0-9]*)?$ ]] || { echo "data.sh: --dense-ref '$dense_ref' is not a number" >&2; exit 2; }
(( dense_steps >= 10 )) || { echo "data.sh: --dense-steps must be >= 10 (two log intervals of 5)" >&2; exit 2; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
castor="$build/bin/castor"
lbench="$build/bin/castor_bench_loader"
fmnist=/usr/share/datasets/fashion-mnist
data=runs/bench-data
results="$data/results.txt"  # the raw RESULT lines of the last run, kept for --tables-only
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
corpora=(text images audio mix)
declare -A opts=([text]="" [images]="--image-patch 7" [audio]="--audio-stack 4" [mix]="--image-patch 7 --audio-stack 4")
measure() {
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build "$build" -j2 --target castor castor_bench_loader >/dev/null
  cpu="$(lscpu | sed -n 's/^Model name: *//p')"
  echo "data benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($cpu), load average $(load)"
  echo
  mkdir -p "$data"
  echo "RUN seconds=$seconds rounds=$rounds prep_reps=$prep_reps verses=$verses mix_count=$mix_count" >"$results"

  # ---------------------------------------------------------------------------- inputs
  [[ -s "$data/kjv/train.txt" ]] || bash scripts/kjv.sh "$data/kjv"
  if [[ ! -s "$data/media/speech/train.tsv" ]] || (( $(wc -l <"$data/media/speech/train.tsv") < verses )); then
    bash scripts/media_data.sh "$data/media" "$verses"
  fi
  # The first N verses (a manifest's WAV paths are relative to it: keep it next to wav/).
  speech="$data/media/speech/bench-$verses.tsv"
  head -n "$verses" "$data/media/speech/train.tsv" >"$speech"
  if [[ ! -s "$data/mix/manifest.jsonl" ]] || (( $(wc -l <"$data/mix/manifest.jsonl") != mix_count )); then
    /usr/bin/python3 scripts/make_mix.py --out "$data/mix" --speech "$speech" --count "$mix_count"
  fi

  # ---------------------------------------------------------------------------- prep
  # prep_run NAME THREADS ARGS...: one run into $data/prep/NAME-tTHREADS, a PREP line in $results.
  prep_run() {
    local name="$1" threads="$2"
    shift 2
    local out="$data/prep/$name-t$threads"
    rm -rf "$out"
    local t0 t1
    t0=$(date +%s.%N)
    OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" \
      "$castor" prep "$@" --out "$out" --threads "$threads" --quiet >"$log"
    t1=$(date +%s.%N)
    local line
    line="$(grep '^prep ' "$log" | tail -1)"
    echo "  [t$threads] $line"
    # "... (4.1 MB in, 2.2 MB out, 0.07 s, 58.7 MB/s of input)"
    sed -E 's/.*\(([0-9.]+) MB in, ([0-9.]+) MB out, ([0-9.]+) s, ([0-9.]+) MB\/s of input\)$/\1 \2 \3 \4/' <<<"$line" |
      awk -v n="$name" -v t="$threads" -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        '{ printf "PREP name=%s threads=%s mb_in=%s mb_out=%s seconds=%s mbps=%s wall=%.3f\n", n, t, $1, $2, $3, $4, w }' \
        >>"$results"
  }
  echo "== castor prep, $prep_reps run(s) per pipeline and thread count (load average $(load)) =="
  for ((r = 1; r <= prep_reps; ++r)); do
    for threads in 2 1; do
      prep_run text "$threads" text --tokenizer gpt2 --input "$data/kjv/train.txt" --prefix kjv
      prep_run images "$threads" images --idx-images "$fmnist/train-images-idx3-ubyte.gz" \
        --idx-labels "$fmnist/train-labels-idx1-ubyte.gz" --class-names data/fashion-mnist/classes.txt --prefix fmnist
      prep_run audio "$threads" audio --manifest "$speech" --prefix speech
    done
  done
  prep_run mix 2 mix --input "$data/mix/manifest.jsonl" --prefix mix
  echo

  # ---------------------------------------------------------------------------- dense-s
  if [[ -z "$dense_tps" ]]; then
    echo "== dense-s: castor train --config examples/dense-s.ini, $dense_steps steps on the KJV shard (load average $(load)) =="
    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 "$castor" train --config examples/dense-s.ini \
      --data.train "$data/prep/text-t2" --train.steps "$dense_steps" --train.log_every 5 --train.eval_every 0 | tee "$log"
    # "step     10/15 | loss ... | 891 tok/s | ...": the log intervals after the first.
    dense_tps="$(awk -F'|' '/^step +[0-9]+\/[0-9]+ \|/ {
        for (i = 1; i <= NF; ++i) if ($i ~ / tok\/s/) { split($i, a, " "); if (++n > 1) print a[1] } }' "$log" |
      sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
    [[ "$dense_tps" != nan ]] || { echo "data.sh: no tok/s in the dense-s log" >&2; exit 1; }
    dense_src="castor train, examples/dense-s.ini, median of the log intervals after the first"
    echo
  else
    dense_src="--dense-tps"
  fi
  echo "dense-s consumes $dense_tps tok/s ($dense_src)"
  echo "DENSE tps=$dense_tps src=$dense_src" >>"$results"
  echo

  # ---------------------------------------------------------------------------- loader
  export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  for ((r = 1; r <= rounds; ++r)); do
    for c in "${corpora[@]}"; do
      for p in 2 0; do
        echo "== round $r/$rounds: loader, $c, prefetch $p (load average $(load)) =="
        # shellcheck disable=SC2086  # opts are several words
        "$lbench" --data "$data/prep/$c-t2" --seq-len 1024 --batch 8 --seconds "$seconds" --prefetch "$p" \
          --dense-tps "$dense_tps" --label "$c" ${opts[$c]} | tee "$log" | grep -v '^RESULT '
        grep '^RESULT ' "$log" | sed 's/^RESULT /LOADER /' >>"$results"
        echo
      done
    done
    if [[ $peer -eq 1 ]]; then
      for m in h5py ram; do
        echo "== round $r/$rounds: peer, h5py_loader.py --mode $m on the text shard (load average $(load)) =="
        /usr/bin/python3 bench/h5py_loader.py --data "$data/prep/text-t2" --seq-len 1024 --batch 8 \
          --seconds "$seconds" --mode "$m" | tee "$log" | grep -v '^RESULT '
        grep '^RESULT ' "$log" | sed 's/^RESULT /PEER /' >>"$results"
        echo
      done
    fi
  done
  echo "Finished $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(load)."
  echo
}

if [[ $tables_only -eq 1 ]]; then
  [[ -s "$results" ]] || { echo "data.sh: no $results from an earlier run" >&2; exit 1; }
  IFS=' ' read -r dense_tps dense_src < <(sed -n 's/^DENSE tps=\([^ ]*\) src=/\1 /p' "$results" | tail -1)
  grep -q '^PEER ' "$results" || peer=0
  eval "$(sed -n 's/^RUN //p' "$results" | tail -1)"  # seconds= rounds= ... of that run
else
  measure
fi

# ---------------------------------------------------------------------------- tables
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
# med KIND FILTER KEY: median of KEY over the lines "KIND ..." that contain every word of FILTER.
med() {
  local kind="$1" filter="$2" key="$3"
  grep "^$kind " "$results" | awk -v f="$filter" '{ n = split(f, w, " "); ok = 1
      for (i = 1; i <= n; ++i) if (index(" " $0 " ", " " w[i] " ") == 0) ok = 0
      if (ok) print }' | while read -r line; do field "$line" "$key"; done | sort -g |
    awk '{ v[NR] = $1 }
         END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "Loader: castor_bench_loader, T=1024, B=8, rank 0 of dp 1, $seconds s timed after 1 s warm-up, OMP_NUM_THREADS=1;"
echo "prefetch 2 = the consumer thread + the loader's prefetch thread, sync = prefetch 0 (one thread). Medians over"
echo "$rounds round(s), each mode in its own process. CPU: process CPU time / wall time (sys: in the kernel)."
echo
echo "| corpus | options | mode | batches/s | positions/s | text tok/s | images/s | audio s/s | CPU | sys | page faults/batch | pad |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for c in "${corpora[@]}"; do
  for mode in prefetch2 sync; do
    f="corpus=$c mode=$mode"
    awk -v c="$c" -v o="${opts[$c]:-}" -v m="$mode" -v b="$(med LOADER "$f" batches_per_s)" \
      -v p="$(med LOADER "$f" positions_per_s)" -v t="$(med LOADER "$f" text_tokens_per_s)" \
      -v i="$(med LOADER "$f" images_per_s)" -v a="$(med LOADER "$f" audio_s_per_s)" \
      -v cpu="$(med LOADER "$f" cpu_all)" -v sys="$(med LOADER "$f" cpu_sys)" \
      -v flt="$(med LOADER "$f" minflt_per_batch)" -v pad="$(med LOADER "$f" pad)" \
      'BEGIN { printf "| %s | %s | %s | %.1f | %.3gM | %.3gM | %s | %s | %.0f%% | %.0f%% | %.0f | %.1f%% |\n",
               c, (o == "" ? "-" : o), m, b, p / 1e6, t / 1e6, (i > 0 ? sprintf("%.0f", i) : "-"),
               (a > 0 ? sprintf("%.0f", a) : "-"), 100 * cpu, 100 * sys, flt, 100 * pad }'
  done
done
echo

echo "Against dense-s: loader rate with prefetch 2 / what dense-s training at $dense_tps tok/s ($dense_src)"
echo "consumes: text tok/s = $dense_tps; images/s = $dense_tps / $(med LOADER "corpus=images" patches_per_image) patch"
echo "positions per image (28x28, patch 7); audio s/s = $dense_tps x $(med LOADER "corpus=audio" audio_s_per_pos) s of"
echo "sound per position (hop_length x 4 frames / sample rate), i.e. as if every position were of that modality."
echo "Goal: >= 50x for every modality. Last column: the same against dense-s at $dense_ref tok/s."
echo
echo "| corpus | modality | loader | dense-s consumes | loader / dense-s | >= 50x | loader / dense-s at $dense_ref tok/s |"
echo "|---|---|---:|---:|---:|:---:|---:|"
ratio_row() {  # corpus modality key unit
  local f="corpus=$1 mode=prefetch2" use
  case "$3" in
    text_tokens_per_s) use="$dense_tps" ;;
    images_per_s) use="$(awk -v d="$dense_tps" -v n="$(med LOADER "$f" patches_per_image)" 'BEGIN { print d / n }')" ;;
    audio_s_per_s) use="$(awk -v d="$dense_tps" -v s="$(med LOADER "$f" audio_s_per_pos)" 'BEGIN { print d * s }')" ;;
  esac
  awk -v c="$1" -v m="$2" -v v="$(med LOADER "$f" "$3")" -v d="$use" -v u="$4" -v q="$dense_ref" -v x="$dense_tps" \
    'BEGIN { r = v / d; printf "| %s | %s | %.0f %s | %.1f %s | %.0fx | %s | %.0fx |\n", c, m, v, u, d, u, r,
             (r >= 50 ? "yes" : "**no**"), r * x / q }'
}
ratio_row text "text tokens" text_tokens_per_s tok/s
ratio_row images images images_per_s images/s
ratio_row audio "audio" audio_s_per_s "audio s/s"
ratio_row mix "text tokens" text_tokens_per_s tok/s
ratio_row mix images images_per_s images/s
ratio_row mix "audio" audio_s_per_s "audio s/s"
echo

if [[ $peer -eq 1 ]]; then
  echo "Peer on the KJV text shard (T=1024, B=8, random windows of T + 1, one thread of work each):"
  echo
  echo "| loader | tokens/s | castor prefetch 2 / this |"
  echo "|---|---:|---:|"
  ct="$(med LOADER "corpus=text mode=prefetch2" positions_per_s)"
  peer_row() {
    awk -v n="$1" -v v="$2" -v c="$ct" 'BEGIN { printf "| %s | %.3gM | %.2fx |\n", n, v / 1e6, c / v }'
  }
  peer_row "castor io::Loader, prefetch 2" "$ct"
  peer_row "castor io::Loader, sync" "$(med LOADER "corpus=text mode=sync" positions_per_s)"
  peer_row "h5py_loader.py: one h5py slice per window" "$(med PEER "impl=h5py-h5py" tokens_per_s)"
  peer_row "h5py_loader.py: numpy array in RAM" "$(med PEER "impl=h5py-ram" tokens_per_s)"
  echo
fi

echo "castor prep: MB/s of input as the summary line prints it (median of $prep_reps; its clock starts when the"
echo "shard writer opens, i.e. after the tokenizer is loaded and, for IDX images, after the whole file is"
echo "decoded), and the command's wall time (process start to exit). Images' input is the gzipped IDX files."
echo
echo "| pipeline | input | MB in | MB/s, 2 threads | MB/s, 1 thread | 2 / 1 threads | wall s, 2 threads | wall s, 1 thread |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
declare -A inputs=([text]="KJV train.txt" [images]="Fashion-MNIST train, 60000 IDX gz" [audio]="$verses spoken verses, WAV 22.05 kHz" [mix]="$mix_count mixed documents")
for name in text images audio mix; do
  awk -v n="$name" -v inp="${inputs[$name]}" -v mb="$(med PREP "name=$name threads=2" mb_in)" \
    -v r2="$(med PREP "name=$name threads=2" mbps)" -v r1="$(med PREP "name=$name threads=1" mbps)" \
    -v w2="$(med PREP "name=$name threads=2" wall)" -v w1="$(med PREP "name=$name threads=1" wall)" \
    'BEGIN { printf "| %s | %s | %.1f | %.1f | %s | %s | %.2f | %s |\n", n, inp, mb, r2,
             (r1 == "nan" ? "-" : sprintf("%.1f", r1)), (r1 == "nan" ? "-" : sprintf("%.2fx", r2 / r1)), w2,
             (w1 == "nan" ? "-" : sprintf("%.2f", w1)) }'
done
