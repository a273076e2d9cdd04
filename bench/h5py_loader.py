#!/usr/bin/python3
"""The peer of castor_bench_loader on text shards: a minimal random-window loader in the
style of nanoGPT's / llm.c's get_batch, reading /text/tokens of castor's shards with h5py.

Each batch draws B window starts uniformly (a shard chosen in proportion to its tokens,
then i in [0, N - T - 1]), reads tokens[i : i + T + 1] for each and returns
x = window[:-1], y = window[1:] as (B, T) int64 arrays, as nanoGPT does with
`torch.from_numpy(data[i:i+block_size].astype(np.int64))` (numpy here; no torch needed).
It does not do what castor's loader does besides (document-aware targets, modality,
position and document arrays, epoch permutations without repeats, dp cursor).

Modes:
  h5py  one h5py slice per window (an HDF5 hyperslab read, like castor's read_tokens)
  ram   the whole token array read once into a numpy array, then slices of it (the
        upper bound of such a loader: nanoGPT's np.memmap over a page-cached .bin file)

Prints a summary and a last line "RESULT impl=... key=value ..." (bench/data.sh reads it).
Single-threaded. Usage: h5py_loader.py --data DIR|FILE --seq-len T --batch B --seconds S
"""
import argparse
import glob
import os
import time

import h5py
import numpy as np


def shard_files(path):
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.h5")))
        if not files:
            raise SystemExit("h5py_loader.py: no *.h5 shards in %s" % path)
        return files
    return [path]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a shard file or a directory of *.h5 shards")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds")
    ap.add_argument("--warmup", type=float, default=1.0, help="untimed seconds first")
    ap.add_argument("--mode", choices=["h5py", "ram"], default="h5py")
    ap.add_argument("--seed", type=int, default=1337)
    a = ap.parse_args()
    T, B = a.seq_len, a.batch

    t_open = time.perf_counter()
    files = [h5py.File(f, "r") for f in shard_files(a.data)]
    data = [f["text/tokens"] for f in files]
    if a.mode == "ram":
        data = [d[:] for d in data]
    open_s = time.perf_counter() - t_open
    sizes = np.array([d.shape[0] for d in data], dtype=np.int64)
    usable = np.maximum(sizes - T - 1, 0)
    if usable.sum() == 0:
        raise SystemExit("h5py_loader.py: no shard holds T + 1 = %d tokens" % (T + 1))
    prob = usable / usable.sum()
    rng = np.random.default_rng(a.seed)

    def get_batch():
        shard = rng.choice(len(data), size=B, p=prob)
        x = np.empty((B, T), dtype=np.int64)
        y = np.empty((B, T), dtype=np.int64)
        for b in range(B):
            d = data[shard[b]]
            i = int(rng.integers(0, usable[shard[b]] + 1))
            w = d[i:i + T + 1].astype(np.int64)
            x[b] = w[:-1]
            y[b] = w[1:]
        return x, y

    sink = 0
    t = time.perf_counter()
    n = 0
    while n < 2 or time.perf_counter() - t < a.warmup:
        x, y = get_batch()
        sink += int(x[0, 0]) + int(y[-1, -1])
        n += 1

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    batches = 0
    while True:
        x, y = get_batch()
        sink += int(x[0, 0]) + int(y[-1, -1])
        batches += 1
        wall = time.perf_counter() - t0
        if wall >= a.seconds:
            break
    cpu = time.process_time() - cpu0
    tps = batches * B * T / wall
    print("h5py loader (%s): %s: %d shard(s), %d tokens, dtype %s; batch %d x %d, %.1f s timed"
          % (a.mode, a.data, len(data), int(sizes.sum()), files[0]["text/tokens"].dtype, B, T, wall))
    print("%s: %.1f batches/s, %.0f tokens/s, cpu %.0f%%, open %.1f ms (h5py %s, HDF5 %s, numpy %s)"
          % (a.mode, batches / wall, tps, 100 * cpu / wall, 1e3 * open_s, h5py.version.version,
             h5py.version.hdf5_version, np.__version__))
    print("RESULT impl=%s batches_per_s=%.2f tokens_per_s=%.1f cpu=%.3f open_ms=%.1f batches=%d checksum=%d"
          % ("h5py-" + a.mode, batches / wall, tps, cpu / wall, 1e3 * open_s, batches, sink))


if __name__ == "__main__":
    main()
