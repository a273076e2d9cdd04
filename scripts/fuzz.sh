#!/usr/bin/env bash
# Builds the libFuzzer target for the corpus shard reader (tests/fuzz/shard_fuzz.cpp) with
# clang++ + ASan + UBSan in build-fuzz/, writes a seed corpus of small valid shards with the
# real castor binary, fuzzes for SECONDS (default 600) with one fuzzing process at a time,
# then prints the final status line and a triage of every finding.
# Usage: scripts/fuzz.sh [SECONDS] [extra libFuzzer flags...]
#        scripts/fuzz.sh --triage   (build, then only re-run and classify build-fuzz/artifacts/*
#                                    and the crafted inputs; no fuzzing)
# Env:   FUZZ_STOP_ON_CRASH=1  one process, stop at the first finding (default: -fork=1 and
#                           keep going past crashes/OOMs/timeouts, see below)
#        CASTOR_FUZZ_SKIP_KNOWN=0  also run inputs that hit the known libhdf5 hang (README)
#        CXX                the clang++ to use (default clang++-14 or clang++)
# Output: build-fuzz/fuzz.log (the whole run), build-fuzz/corpus/ (grown corpus, kept
#         between runs), build-fuzz/artifacts/ (crash-*, oom-*, timeout-*, leak-* inputs).
# Not part of the CMake build or ctest. See tests/fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
triage_only=0
if [ "${1:-}" = --triage ]; then triage_only=1; shift; fi
seconds=${1:-600}
shift || true
case "$seconds" in ''|*[!0-9]*|0) echo "fuzz.sh: SECONDS must be a positive integer" >&2; exit 2 ;; esac
out=$root/build-fuzz
obj=$out/obj
mkdir -p "$obj" "$out/seeds" "$out/corpus" "$out/artifacts" "$out/seed-work"

# ---------------------------------------------------------------------------- build
CXX=${CXX:-$(command -v clang++-14 || command -v clang++)}
common=(-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
        -I"$root" -I/usr/include/hdf5/serial -I/usr/include/x86_64-linux-gnu)
# Castor sources get coverage instrumentation without libFuzzer's main; gemm.cpp uses OpenMP.
sources=(io/shard.cpp io/shard_check.cpp io/hdf5.cpp io/audio.cpp io/image.cpp kernels/cpu/gemm.cpp
         tests/fuzz/shard_fuzz.cpp)
needs_build() {  # needs_build SRC OBJ: the object is missing or older than a dependency
  [ -f "$2" ] && [ -f "$2.d" ] || return 0
  local dep
  for dep in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$2.d"); do
    [ "$dep" -nt "$2" ] && return 0
  done
  return 1
}
pids=()
for src in "${sources[@]}"; do
  o=$obj/$(echo "${src%.cpp}" | tr / _).o
  needs_build "$src" "$o" || continue
  flags=(-fsanitize=fuzzer-no-link)
  [ "$src" = tests/fuzz/shard_fuzz.cpp ] && flags=(-fsanitize=fuzzer)
  [ "$src" = kernels/cpu/gemm.cpp ] && flags+=(-fopenmp)
  echo "fuzz.sh: compiling $src"
  "$CXX" "${common[@]}" "${flags[@]}" -MMD -MF "$o.d" -c "$src" -o "$o" &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
bin=$out/shard_fuzz
objs=()
for src in "${sources[@]}"; do objs+=("$obj/$(echo "${src%.cpp}" | tr / _).o"); done
relink=0
[ -f "$bin" ] || relink=1
for o in "${objs[@]}"; do [ "$o" -nt "$bin" ] && relink=1; done
if [ $relink = 1 ]; then
  echo "fuzz.sh: linking $bin"
  "$CXX" "${common[@]}" -fsanitize=fuzzer -fopenmp "${objs[@]}" -o "$bin" \
    -lhdf5_serial -lopenblas -lsndfile -lpng -lz -lpthread
fi

# ---------------------------------------------------------------------------- seeds
castor=$root/build/bin/castor
if [ ! -x "$castor" ]; then
  echo "fuzz.sh: building castor in build/ for the seed shards"
  cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$root/build" -j2 --target castor
fi
w=$out/seed-work
python3 - "$w" <<'EOF'
import gzip, json, math, os, struct, sys, wave, zlib
w = sys.argv[1]
with open(f"{w}/text.txt", "w") as f:
    f.write("In the beginning was the shard.\n\nA second document,\nover two lines.\n\n"
            "Third: caf\u00e9 \u2014 na\u00efve UTF-8.\n\nfour\n")
def wav(path, n, freq):
    with wave.open(path, "wb") as o:
        o.setnchannels(1); o.setsampwidth(2); o.setframerate(16000)
        o.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / 16000)))
                               for i in range(n)))
wav(f"{w}/a.wav", 800, 440.0)   # 50 ms: 6 frames at hop 160
wav(f"{w}/b.wav", 480, 880.0)   # 30 ms: 4 frames
with open(f"{w}/audio.tsv", "w") as f:
    f.write("a.wav\thello there\nb.wav\thi\n")
# IDX images + labels (MNIST format), used when the real Fashion-MNIST files are absent.
n, h = 8, 12
with gzip.open(f"{w}/images.idx.gz", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, h, h) + bytes((i * 37 + r * 11 + c * 5) % 256
                                                         for i in range(n) for r in range(h) for c in range(h)))
with gzip.open(f"{w}/labels.idx.gz", "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))
# An 8x8 RGB PNG for the mixed document.
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + bytes((x * 30, y * 30, 128) [k] for x in range(8) for k in range(3)) for y in range(8))
with open(f"{w}/pic.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
with open(f"{w}/mix.jsonl", "w") as f:
    f.write(json.dumps({"segments": [{"text": "a picture:"}, {"image": "pic.png", "pair": 0},
                                     {"text": "and a sound"}, {"audio": "a.wav", "pair": 2}],
                        "split": "validation"}) + "\n")
    f.write(json.dumps([{"text": "plain second document"}]) + "\n")
EOF
idx_images=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
idx_labels=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
if [ ! -s "$idx_images" ] || [ ! -s "$idx_labels" ]; then
  idx_images=$w/images.idx.gz idx_labels=$w/labels.idx.gz
fi
seed() {  # seed NAME PIPELINE ARGS...: one small shard -> build-fuzz/seeds/NAME.h5
  local name=$1 pipeline=$2
  shift 2
  rm -rf "$w/$name"
  "$castor" prep "$pipeline" --quiet --threads 1 --out "$w/$name" "$@" >/dev/null
  cp "$(ls "$w/$name"/*.h5 | head -n 1)" "$out/seeds/$name.h5"
}
# Uncompressed shards preallocate whole chunks (64 Ki tokens, 1 MiB of pixels or features):
# h5repack rewrites those datasets with tiny chunks (same data, types and attributes; -L
# keeps the HDF5 1.10 file format castor writes and requires), so the seeds stay small.
shrink() {  # shrink NAME
  local name=$1
  local layout=(-l text/tokens:CHUNK=64 -l images/pixels:CHUNK=64)
  h5dump -H -d /audio/features "$out/seeds/$name.h5" >/dev/null 2>&1 && layout+=(-l audio/features:CHUNK=4x8)
  h5repack -L "${layout[@]}" "$out/seeds/$name.h5" "$w/$name.repacked.h5"
  "$castor" data verify "$w/$name.repacked.h5" >/dev/null
  mv "$w/$name.repacked.h5" "$out/seeds/$name.h5"
}
rm -f "$out"/seeds/*.h5
seed text text --tokenizer byte --input "$w/text.txt"
shrink text
seed text-gpt2-deflate text --tokenizer gpt2 --deflate 1 --split validation --input "$w/text.txt"
seed images images --tokenizer byte --idx-images "$idx_images" --idx-labels "$idx_labels" \
  --class-names "$root/data/fashion-mnist/classes.txt" --limit 8 --size 8
shrink images
seed audio audio --tokenizer byte --manifest "$w/audio.tsv" --n-mels 8
shrink audio
seed mix-f16-deflate mix --tokenizer byte --input "$w/mix.jsonl" --size 8 --n-mels 8 --f16 --deflate 1
cp "$out/seeds/mix-f16-deflate.h5" "$out/seeds/mix-f16-deflate-small-chunks.h5"
shrink mix-f16-deflate-small-chunks
max_seed=$(stat -c %s "$out"/seeds/*.h5 | sort -n | tail -n 1)
echo "fuzz.sh: seeds:" $(cd "$out/seeds" && for f in *.h5; do echo "$f=$(stat -c %s "$f")B"; done)

# Names and signatures that occur in shards (HDF5 object signatures, castor paths/attrs).
dict=$out/shard.dict
: > "$dict"
for s in OHDR OCHK TREE HEAP SNOD GCOL BTHD BTIN BTLF FRHP FHDB FHIB FSHD FSSE EAHD EAIB EASB EADB FAHD FADB \
         castor_format corpus-shard schema_version 1.1 1.0 2.0 tokenizer vocab_size eot_id num_documents \
         num_tokens num_segments num_images num_audio text tokens doc_offsets segments kind flags start length \
         pair docs source split images pixels offsets shape audio features frame_offsets num_samples feature \
         log-mel sample_rate n_fft win_length hop_length n_mels f_min f_max meta sources names byte gpt2; do
  printf '"%s"\n' "$s" >> "$dict"
done
printf '"\\x89HDF\\x0d\\x0a\\x1a\\x0a"\n' >> "$dict"

# ---------------------------------------------------------------------------- triage
# Re-runs one input and prints what it hits, the top frame (libhdf5 or castor) and the first
# castor frame.
triage() {
  local f=$1 log what frames top castor where
  log=$(timeout 120 "$bin" -timeout=10 -rss_limit_mb=2048 "$f" 2>&1) || true
  what=$(grep -m1 -E 'runtime error|SUMMARY:|FINDING|ERROR: libFuzzer' <<<"$log" | sed 's/ *(BuildId[^)]*)//' || true)
  frames=$(grep -E '^ +#[0-9]+ ' <<<"$log" | grep -vE 'interceptor|sanitizer|fuzzer::| in (malloc|calloc|realloc|free|operator new)' \
           | sed -E 's/^ +#[0-9]+ 0x[0-9a-f]+ (in )?//; s/ *\(BuildId[^)]*\)//' || true)
  top=$(head -n 1 <<<"$frames")
  castor=$(grep -m1 -E 'castor::' <<<"$frames" || true)
  case "$what" in *runtime\ error*) top=${what%%: runtime error*} ;; esac
  where=castor
  case "$top" in *libhdf5*) where=libhdf5 ;; esac
  [ -z "$top" ] && where=-
  echo "  $(basename "$f"): ${what:-ok (no finding)}"
  [ -n "$what" ] && echo "      top frame ($where): ${top:0:160}"
  [ -n "$castor" ] && echo "      first castor frame: ${castor:0:160}"
  return 0
}
triage_all() {
  local f
  echo "triage of the newest artifacts (at most 40):"
  for f in $(ls -t "$out"/artifacts/* 2>/dev/null | head -n 40); do triage "$f"; done
  crafted
  if [ -n "$(ls "$out"/crafted/*.h5 2>/dev/null)" ]; then
    echo "crafted inputs (castor bugs found by review; they report until fixed):"
    for f in "$out"/crafted/*.h5; do triage "$f"; done
  fi
}
# Inputs written with h5py (when installed) from the seeds, each hitting one castor bug:
# signed overflows in the table checks, and allocations sized by the file's claims (sparse
# datasets: a 15 KB file can claim terabytes) in verify_shard and ShardReader.
crafted() {
  /usr/bin/python3 -c 'import h5py' 2>/dev/null || return 0
  mkdir -p "$out/crafted"
  /usr/bin/python3 - "$out/seeds" "$out/crafted" <<'PYEOF'
import shutil, sys
import h5py, numpy as np
seeds, dst = sys.argv[1], sys.argv[2]
M = np.iinfo(np.int64).max
def copy(seed, name):
    path = f"{dst}/{name}.h5"
    shutil.copy(f"{seeds}/{seed}.h5", path)
    return h5py.File(path, "r+")
with copy("images", "image-shape-mul-overflow") as f:   # h * w * c overflows int64
    s = f["images/shape"][...]; s[0] = [2**31 - 1, 2**31 - 1, 3]; f["images/shape"][...] = s
with copy("text", "num-documents-int64-max") as f:      # read_offsets: n + 1 overflows
    f.attrs.modify("num_documents", np.int64(M))
with copy("images", "num-images-int64-max") as f:
    f.attrs.modify("num_images", np.int64(M))
with copy("audio", "audio-num-samples-sum-overflow") as f:  # total_audio_samples overflows
    f["audio/num_samples"][...] = np.array([M, M], dtype=np.int64)
with copy("images", "sparse-1TiB-image") as f:          # verify_shard allocates image_bytes(i)
    sizes = np.diff(f["images/offsets"][...]); sizes[0] = 2**40
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    del f["images/pixels"]
    f.create_dataset("images/pixels", shape=(int(offs[-1]),), maxshape=(None,), chunks=(1 << 20,), dtype=np.uint8)
    f["images/offsets"][...] = offs
    s = f["images/shape"][...]; s[0] = [2**20, 2**20, 1]; f["images/shape"][...] = s
with copy("audio", "sparse-2TiB-audio-clip") as f:      # verify_shard allocates frames * n_mels
    sizes = np.diff(f["audio/frame_offsets"][...]); sizes[0] = 2**36
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    dt = f["audio/features"].dtype
    del f["audio/features"]
    f.create_dataset("audio/features", shape=(int(offs[-1]), 8), maxshape=(None, 8), chunks=(4096, 8), dtype=dt)
    f["audio/frame_offsets"][...] = offs
with copy("text", "sparse-16GiB-doc-offsets") as f:    # ShardReader reads 2^31 + 1 offsets
    f.attrs.modify("num_documents", np.int64(2**31))
    del f["text/doc_offsets"]
    f.create_dataset("text/doc_offsets", shape=(2**31 + 1,), chunks=(1 << 16,), dtype=np.int64)
PYEOF
}

# ---------------------------------------------------------------------------- fuzz
tmp=$(mktemp -d /dev/shm/castor-fuzz-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export CASTOR_FUZZ_TMPDIR=$tmp
# Leaks inside libhdf5 on corrupt metadata (e.g. in H5Fopen) are HDF5's, not castor's, and
# would stop every run: they are suppressed. Castor's own HDF5 handles are checked by the
# target (H5Fget_obj_count after each input); leaks of castor allocations still report.
echo "leak:libhdf5_serial.so" > "$out/lsan.supp"
# allocator_may_return_null: a malloc of a size read from corrupt metadata returns NULL (as
# glibc's would, and HDF5 then fails cleanly) instead of aborting; operator new still
# reports, and libFuzzer's -malloc_limit_mb (= rss limit) still flags mallocs over 2 GiB.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$out/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ $triage_only = 1 ]; then
  triage_all
  exit 0
fi
args=(-max_total_time="$seconds" -max_len=$((max_seed * 2)) -rss_limit_mb=2048 -timeout=10
      -dict="$dict" -artifact_prefix="$out/artifacts/" -print_final_stats=1)
# libhdf5 1.10 crashes on some corrupt metadata (tests/fuzz/README.md): by default the run
# goes on past crashes, OOMs and timeouts (-fork=1: one fuzzing child at a time, restarted
# after each finding, whose input lands in artifacts/). FUZZ_STOP_ON_CRASH=1: one process
# that stops at the first finding.
[ "${FUZZ_STOP_ON_CRASH:-0}" = 1 ] || args+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
args+=("$@")
n_before=$(find "$out/artifacts" -type f | wc -l)
echo "fuzz.sh: $bin ${args[*]} $out/corpus $out/seeds"
set +e
"$bin" "${args[@]}" "$out/corpus" "$out/seeds" 2>&1 | tee "$out/fuzz.log"
rc=${PIPESTATUS[0]}
set -e

# ---------------------------------------------------------------------------- summary
echo "---------------------------------------------------------------- fuzz.sh summary (exit $rc)"
grep -E '^#[0-9]+:? .*cov:' "$out/fuzz.log" | tail -n 1 || true
grep -E '^stat::|^INFO: exiting' "$out/fuzz.log" || true
echo "artifacts: $(find "$out/artifacts" -type f | wc -l) in $out/artifacts ($((\
  $(find "$out/artifacts" -type f | wc -l) - n_before)) new)"
triage_all
exit "$rc"
