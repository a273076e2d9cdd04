#!/usr/bin/env bash
# Installs dependencies, builds castor and runs the whole test suite with ctest.
# Usage: scripts/test.sh [--sanitize]   (--sanitize: ASan + UBSan build in build-asan/)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "$@"
build_dir=build
[ "${1:-}" = "--sanitize" ] && build_dir=build-asan
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Under the sanitizers the minutes-long training tests (label "long") are left out;
# the short training, resume and parity tests still run every code path they use.
label_args=()
[ "$build_dir" = build-asan ] && label_args=(-LE long)
ctest --test-dir "$build_dir" --output-on-failure -j2 "${label_args[@]}"
