#!/usr/bin/env bash
# Builds castor for a GPU machine that has the CUDA toolkit but no Debian packages, and
# packs what its binaries need into one folder to carry there with the repository
# (docs/gpu.md). Runs on the build machine (Debian 12, CUDA toolkit with nvcc).
#   build-gpu/         Release, CASTOR_NATIVE=OFF (the GPU machine's CPU may lack this one's
#                      vector extensions), CASTOR_CUDA=ON, CASTOR_TESTS=ON; targets castor,
#                      castor_bench_cuda_gemm and every test_cuda_*
#   build-gpu/bundle/  the bundle, unpacked:
#     bin/       those executables, stripped
#     lib/       every shared library they load (ldd) except the CUDA libraries (the GPU
#                machine's) and glibc; libstdc++ and libgcc_s included
#     glibc/     this machine's glibc, used by scripts/gpu_run.sh only where the GPU
#                machine's glibc is older than the binaries need
#     openmpi/   Open MPI's plugins, help texts and settings (a one-process MPI_Init without
#                mpirun, as castor train alone does) and mpirun/orted (bench/layout_scaling.sh)
#     data/      the King James Bible as GPT-2 token shards (kjv/train, kjv/val)
#     env.sh     sourced by scripts/gpu_run.sh: library path, Open MPI relocated into the bundle
#     MANIFEST.txt  commit, build options, glibc needed, every file and its size
#   DIR/castor-gpu.tar.xz  the bundle packed (OpenBLAS alone is 35 MiB: ~115 MiB unpacked,
#                      ~21 MiB packed); scripts/gpu_run.sh unpacks it into a temporary folder
#   DIR/MANIFEST.txt   a copy of the manifest
# Checks before packing: no library "not found", and bin/castor --help and a 2-step cpu
# castor train run from the bundle alone (env -i, only its libraries and the toolkit's CUDA
# libraries). Fails if DIR is 60 MiB or more.
# Usage: scripts/gpu_bundle.sh [--out DIR (.gpu-bundle)] [--build-dir DIR] [--jobs N] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

out=.gpu-bundle
build_dir=build-gpu
jobs=$(nproc)
do_build=1
limit_mib=60
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --no-build) do_build=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "gpu_bundle.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "gpu_bundle: $*"; }
die() { echo "gpu_bundle: error: $*" >&2; exit 1; }

# --- build ---------------------------------------------------------------------------------
if [ "$do_build" = 1 ]; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCASTOR_NATIVE=OFF -DCASTOR_CUDA=ON \
    -DCASTOR_TESTS=ON >"$build_dir.configure.log" 2>&1 || { tail -20 "$build_dir.configure.log"; die "cmake configure failed"; }
  rm -f "$build_dir.configure.log"
fi
[ -f "$build_dir/CMakeCache.txt" ] || die "$build_dir is not configured (run without --no-build)"
grep -q '^CASTOR_NATIVE:BOOL=OFF' "$build_dir/CMakeCache.txt" || die "$build_dir was configured with CASTOR_NATIVE=ON"
help=$(cmake --build "$build_dir" --target help)
grep -q 'castor_bench_cuda_gemm' <<<"$help" || die "no CUDA targets in $build_dir: nvcc not found at configure time?"
mapfile -t tests < <(grep -o 'test_cuda_[A-Za-z0-9_]*' <<<"$help" | sort -u)
[ ${#tests[@]} -gt 0 ] || die "no test_cuda_* targets in $build_dir (CASTOR_TESTS=OFF?)"
targets=(castor castor_bench_cuda_gemm "${tests[@]}")
if [ "$do_build" = 1 ]; then
  log "building ${#targets[@]} targets in $build_dir with -j$jobs"
  cmake --build "$build_dir" -j"$jobs" --target "${targets[@]}"
fi

# --- executables ---------------------------------------------------------------------------
stage="$build_dir/bundle"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib" "$stage/glibc" "$stage/openmpi/lib" "$stage/openmpi/bin" "$stage/data"
for t in "${targets[@]}"; do
  f=$(find "$build_dir" -type f -name "$t" -perm -u+x -print -quit)
  [ -n "$f" ] || die "executable $t not found under $build_dir"
  cp "$f" "$stage/bin/$t"
  strip "$stage/bin/$t"
done

# --- Open MPI: plugins, help texts, settings, launcher ----------------------------------------
# Debian's layout: libdir /usr/lib/<triplet>/openmpi/lib, plugins in its openmpi3/, help texts
# in /usr/share/openmpi, settings in /etc/openmpi. Plugins that need libraries for network
# fabrics this bundle does not carry (UCX, libfabric, PSM, verbs) are left out; Debian's
# settings file already excludes most of them.
ompi_pkglib=$(ompi_info --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p')
ompi_pkgdata=$(ompi_info --path pkgdatadir --parsable 2>/dev/null | sed -n 's/^path:pkgdatadir://p')
ompi_sysconf=$(ompi_info --path sysconfdir --parsable 2>/dev/null | sed -n 's/^path:sysconfdir://p')
[ -d "$ompi_pkglib" ] || die "Open MPI plugin directory not found (ompi_info --path pkglibdir)"
plugins="$stage/openmpi/lib/openmpi3"
mkdir -p "$plugins" "$stage/openmpi/share" "$stage/openmpi/etc"
skip_plugin='ucx|_ofi|psm|openib|mca_(atomic|memheap|scoll|spml|sshmem)_'
for p in "$ompi_pkglib"/*.so; do
  grep -Eq "$skip_plugin" <<<"$(basename "$p")" && continue
  cp "$p" "$plugins/"
done
cp -r "$ompi_pkgdata" "$stage/openmpi/share/openmpi"
cp "$ompi_sysconf/openmpi-mca-params.conf" "$stage/openmpi/etc/" 2>/dev/null || touch "$stage/openmpi/etc/openmpi-mca-params.conf"
: >"$stage/openmpi/etc/openmpi-default-hostfile"
# pmix_ext3x, the PMIx server mpirun needs, loads the external libpmix; its plugins and help
# texts go to openmpi/pmix/, where env.sh points PMIx's install directories.
pmix_lib=$(ldd "$plugins/mca_pmix_ext3x.so" 2>/dev/null | awk '/libpmix/ {print $3}')
if [ -n "$pmix_lib" ]; then
  pmix_prefix=$(dirname "$(dirname "$(readlink -f "$pmix_lib")")")
  mkdir -p "$stage/openmpi/pmix/lib"
  if [ -d "$pmix_prefix/lib/pmix" ]; then cp -r "$pmix_prefix/lib/pmix" "$stage/openmpi/pmix/lib/"; fi
  if [ -d "$pmix_prefix/share" ]; then cp -r "$pmix_prefix/share" "$stage/openmpi/pmix/"; fi
fi
for tool in orterun orted; do
  if [ -x "/usr/bin/$tool" ]; then cp "/usr/bin/$tool" "$stage/openmpi/bin/"; fi
done
if [ -x "$stage/openmpi/bin/orterun" ]; then ln -s orterun "$stage/openmpi/bin/mpirun"; fi

# --- shared libraries ------------------------------------------------------------------------
# From the machine: the CUDA driver and toolkit libraries, and glibc (its parts share private
# symbols and must all be the machine's own). Everything else, libstdc++ and libgcc_s
# included (the machine's may be older), comes from here.
not_bundled='^(libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia|libnvrtc|libcufft|libcurand|libcusparse|libcusolver|libnvJitLink)\.so'
glibc_core='^(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|libnsl|libBrokenLocale|libthread_db|libnss_[a-z]+|libc_malloc_debug)\.so|^ld-linux'
declare -A seen=()
bundle_deps() {  # ldd of every file given; copy what is not excluded into lib/
  local f name path
  for f in "$@"; do
    while read -r name path; do
      [ -n "$path" ] && [ -f "$path" ] || continue
      [ -n "${seen[$name]:-}" ] && continue
      seen[$name]=1
      if grep -Eq "$not_bundled" <<<"$name"; then continue; fi
      if grep -Eq "$glibc_core" <<<"$name"; then
        cp -L "$path" "$stage/glibc/$name"
        continue
      fi
      cp -L "$path" "$stage/lib/$name"
    done < <(ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3} $1 ~ /^\// {n = $1; sub(/.*\//, "", n); print n, $1}')
  done
}
bundle_deps "$stage"/bin/* "$stage"/openmpi/bin/orterun "$stage"/openmpi/bin/orted "$plugins"/*.so
# libraries ldd lists as "not found" for plugins (e.g. a fabric's) mean that plugin cannot load
for p in "$plugins"/*.so; do
  if LD_LIBRARY_PATH="$stage/lib" ldd "$p" | grep -q 'not found'; then
    log "dropping plugin $(basename "$p"): $(LD_LIBRARY_PATH="$stage/lib" ldd "$p" | awk '/not found/ {print $1}' | tr '\n' ' ')"
    rm -f "$p"
  fi
done
# the pmix plugins (if any) link libpmix's own dependencies
if [ -d "$stage/openmpi/pmix/lib/pmix" ]; then bundle_deps "$stage"/openmpi/pmix/lib/pmix/*.so; fi
for f in "$stage"/lib/*.so*; do strip --strip-unneeded "$f" 2>/dev/null || true; done

# --- environment file --------------------------------------------------------------------------
cat >"$stage/env.sh" <<'EOF'
# Sourced (bash) to run this bundle's programs: its libraries first, Open MPI relocated into
# it. The caller appends the CUDA libraries' folders to LD_LIBRARY_PATH.
CASTOR_BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CASTOR_BUNDLE
export LD_LIBRARY_PATH="$CASTOR_BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OPAL_PREFIX="$CASTOR_BUNDLE/openmpi"
export OPAL_EXEC_PREFIX="$OPAL_PREFIX" OPAL_BINDIR="$OPAL_PREFIX/bin" OPAL_LIBDIR="$CASTOR_BUNDLE/lib"
export OPAL_PKGLIBDIR="$OPAL_PREFIX/lib/openmpi3" OPAL_DATAROOTDIR="$OPAL_PREFIX/share"
export OPAL_DATADIR="$OPAL_PREFIX/share" OPAL_PKGDATADIR="$OPAL_PREFIX/share/openmpi"
export OPAL_SYSCONFDIR="$OPAL_PREFIX/etc"
export PMIX_PREFIX="$OPAL_PREFIX/pmix" PMIX_EXEC_PREFIX="$OPAL_PREFIX/pmix" PMIX_LIBDIR="$OPAL_PREFIX/pmix/lib"
export PMIX_PKGLIBDIR="$OPAL_PREFIX/pmix/lib/pmix" PMIX_DATADIR="$OPAL_PREFIX/pmix/share"
export PMIX_PKGDATADIR="$OPAL_PREFIX/pmix/share/pmix" PMIX_SYSCONFDIR="$OPAL_PREFIX/pmix/share"
# one process without mpirun: no orted daemon is forked (castor train alone)
export OMPI_MCA_ess_singleton_isolated=1
export OMPI_MCA_mca_base_component_show_load_errors=0
EOF

# --- check: the bundle alone, in a clean environment ----------------------------------------
# The CUDA libraries are not in the bundle; here the toolkit's stand in for the GPU machine's.
cuda_libs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib; do
  [ -d "$d" ] && cuda_libs="$cuda_libs:$d"
done
check() {
  env -i PATH=/usr/bin:/bin HOME=/tmp bash -c 'source "$1/env.sh"; export LD_LIBRARY_PATH="$LD_LIBRARY_PATH$2"; shift 2; "$@"' \
    _ "$(cd "$stage" && pwd)" "$cuda_libs" "$@"
}
# --- data: KJV as GPT-2 tokens ---------------------------------------------------------------
kjv=runs/data/kjv
for split in train val; do
  shard="$kjv/$split/kjv-00000.h5"
  if [ ! -f "$shard" ]; then
    [ -f "$kjv/text/$split.txt" ] || bash scripts/kjv.sh "$kjv/text" || die "no KJV text (needs Debian's bible-kjv)"
    log "tokenizing $kjv/text/$split.txt"
    check "$stage/bin/castor" prep text --tokenizer gpt2 --input "$kjv/text/$split.txt" --out "$kjv/$split" --prefix kjv --overwrite
  fi
  mkdir -p "$stage/data/kjv/$split"
  cp "$shard" "$stage/data/kjv/$split/"
done

# --- check: the bundle alone, in a clean environment ----------------------------------------
missing=$(check bash -c 'for f in "$CASTOR_BUNDLE"/bin/* "$CASTOR_BUNDLE"/openmpi/bin/orte*; do ldd "$f" | grep "not found"; done; true' | sort -u)
[ -z "$missing" ] || die "libraries not found in the bundle: $missing"
check bash -c '"$CASTOR_BUNDLE/bin/castor" --help' >/dev/null || die "bin/castor --help failed in a clean environment"
tmp=$(mktemp -d)
if check bash -c 'cd "$0" && "$CASTOR_BUNDLE/bin/castor" train --data.train "$CASTOR_BUNDLE/data/kjv/train" \
    --model.d_model 64 --model.n_layers 2 --model.n_heads 2 --model.max_seq_len 64 --train.seq_len 64 \
    --train.micro_batch 2 --train.steps 2 --train.log_every 1 --train.threads 1 --train.device cpu' "$tmp" \
    >"$tmp/train.log" 2>&1; then
  log "check: bin/castor train (cpu, 2 steps, one process, no mpirun) ran from the bundle alone: $(grep '^done' "$tmp/train.log")"
else
  cat "$tmp/train.log"
  die "castor train failed in a clean environment"
fi
rm -rf "$tmp"

# --- manifest and size ------------------------------------------------------------------------
glibc_need=$(for f in "$stage"/bin/* "$stage"/lib/*.so* "$stage"/openmpi/bin/orte*; do objdump -T "$f" 2>/dev/null; done |
  grep -o 'GLIBC_[0-9][0-9.]*' | sort -u -V | tail -1)
{
  echo "castor GPU bundle"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), $(nvcc --version 2>/dev/null | tail -1 || /usr/local/cuda/bin/nvcc --version | tail -1)"
  echo "cmake: -DCMAKE_BUILD_TYPE=Release -DCASTOR_NATIVE=OFF -DCASTOR_CUDA=ON -DCASTOR_TESTS=ON"
  echo "glibc_needed: ${glibc_need#GLIBC_}"
  echo "glibc_bundled: $(getconf GNU_LIBC_VERSION | awk '{print $2}')"
  echo "cuda_libraries_needed: $(for f in "$stage"/bin/*; do ldd "$f"; done | awk '{print $1}' | grep -E "$not_bundled" | sort -u | tr '\n' ' ')"
  echo "files:"
  (cd "$stage" && find . -type f -printf '%10s  %p\n' | sort -k2)
} >"$stage/MANIFEST.txt"
unpacked_kib=$(du -sk "$stage" | cut -f1)
log "bundle $stage: $((unpacked_kib / 1024)) MiB unpacked: $(find "$stage/bin" -type f | wc -l) executables, $(find "$stage/lib" -type f | wc -l) libraries, $(find "$plugins" -type f | wc -l) Open MPI plugins; glibc needed ${glibc_need#GLIBC_}"
for d in bin lib glibc openmpi data; do printf '  %-8s %6s\n' "$d/" "$(du -sh "$stage/$d" | cut -f1)"; done
echo "largest files:"
find "$stage" -type f -printf '%s %P\n' | sort -rn | awk 'NR <= 5 {printf "  %6.1f MiB  %s\n", $1 / 1048576, $2}'

# --- pack ---------------------------------------------------------------------------------------
mkdir -p "$out"
rm -f "$out/castor-gpu.tar.xz" "$out/MANIFEST.txt"
log "packing into $out/castor-gpu.tar.xz (xz -9: a minute or two)"
tar -C "$(dirname "$stage")" -cf - "$(basename "$stage")" | xz -T0 -9 >"$out/castor-gpu.tar.xz"
cp "$stage/MANIFEST.txt" "$out/"
size_kib=$(du -sk "$out" | cut -f1)
log "$out: $(du -sh "$out/castor-gpu.tar.xz" | cut -f1) packed ($((unpacked_kib / 1024)) MiB unpacked), $size_kib KiB in all"
if [ "$size_kib" -ge $((limit_mib * 1024)) ]; then
  die "$out is $((size_kib / 1024)) MiB, over the ${limit_mib} MiB limit"
fi
log "done: carry $out with the repository; there: bash scripts/gpu_run.sh --bundle $out --out DIR --phase all"
