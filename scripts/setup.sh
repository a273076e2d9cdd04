#!/usr/bin/env bash
# Installs castor's dependencies (Debian 12 packages; needs root or sudo) and builds it.
# Usage: scripts/setup.sh [--sanitize] [--build-dir DIR]
#   --sanitize   build with AddressSanitizer + UBSan into build-asan/ (tests only)
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
cmake_extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) build_dir=build-asan; cmake_extra+=(-DCASTOR_SANITIZE=ON -DCASTOR_CUDA=OFF) ;;
    --build-dir) build_dir=$2; shift ;;
    *) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

packages=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhdf5-dev hdf5-tools
  libboost-program-options-dev libgtest-dev libopenblas-dev libopenblas0-openmp
  python3 python3-torch python3-numpy python3-h5py python3-regex bible-kjv
  libpng-dev zlib1g-dev libsndfile1-dev espeak-ng dataset-fashion-mnist pocketsphinx-testdata
  fortunes)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${cmake_extra[@]}" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
echo "setup: built $build_dir/bin/castor"
