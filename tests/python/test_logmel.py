#!/usr/bin/python3
# Log-mel parity of castor (io/audio.h, float32, DFT by SGEMM) against an independent numpy
# implementation in float64 (logmel_reference.py) of the Whisper/librosa convention: reflect
# padding by n_fft/2 (zeros for clips too short to reflect), periodic Hann window centred in
# n_fft, power spectrum by numpy.fft.rfft, Slaney mel filterbank written from its formula,
# log10 with a 1e-10 floor. The numpy framing is itself checked against torch.stft here.
# Cases: a chirp + noise at 16 kHz with the default config and with n_fft 512 / win 320 /
# hop 128 / 40 mels / f_max 7000, a clip shorter than n_fft/2, and a real LibriVox WAV (read
# here by the stdlib wave module, by castor through libsndfile). Pass: max |castor - numpy|
# < 2e-3 (log10 units) over bins whose reference value is > -6.
# The tool is found through $CASTOR_LOGMEL_TOOL (set by ctest), else under build*/tests/.
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from castor_testing import check, finish, test_tool  # noqa: E402
from logmel_reference import DEFAULT, log_mel, power_spectrum, read_wav_stdlib  # noqa: E402

TOL = 2e-3
FLOOR = -6.0
LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"

OTHER = dict(sample_rate=16000, n_fft=512, win_length=320, hop_length=128, n_mels=40, f_min=0.0, f_max=7000.0)


def find_tool():
    return test_tool("CASTOR_LOGMEL_TOOL", "castor_logmel_tool")


# ---------------------------------------------------------------------------- reference

# The reference (hz_to_mel, mel_filterbank, window, power_spectrum, log_mel) lives in
# logmel_reference.py, shared with test_shard_h5py.py.


def torch_power_spectrum(x, cfg):
    """The same framing as Whisper computes it (torch.stft, center, reflect)."""
    t = torch.tensor(np.asarray(x, dtype=np.float64))
    w = torch.hann_window(cfg["win_length"], periodic=True, dtype=torch.float64)
    s = torch.stft(t, cfg["n_fft"], hop_length=cfg["hop_length"], win_length=cfg["win_length"], window=w,
                   center=True, pad_mode="reflect", return_complex=True)
    return (s.abs() ** 2).T.numpy()


# ---------------------------------------------------------------------------- castor

def run_castor(tool, input_path, cfg, out_path, repeat=1):
    cmd = [tool, "--input", input_path, "--out", out_path, "--repeat", str(repeat)]
    for k, v in cfg.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1",
                                                                     OPENBLAS_NUM_THREADS="1"))
    if p.returncode != 0:
        sys.exit(f"test_logmel: {' '.join(cmd)} failed (exit {p.returncode}):\n{p.stdout}{p.stderr}")
    print("  " + p.stdout.strip().replace("\n", "\n  "))
    return np.load(out_path)


def compare(name, got, want):
    print(f"{name}: castor {got.shape}, numpy {want.shape}")
    check(got.shape == want.shape, f"{name}: shape {got.shape} == {want.shape}")
    if got.shape != want.shape:
        return
    mask = want > FLOOR
    diff = np.abs(got.astype(np.float64) - want)
    worst = float(diff[mask].max()) if mask.any() else 0.0
    mean = float(diff[mask].mean()) if mask.any() else 0.0
    print(f"  bins > {FLOOR:g}: {mask.sum()} of {mask.size} ({100 * mask.mean():.1f}%); reference range "
          f"[{want.min():.3f}, {want.max():.3f}]")
    print(f"  max |diff| {worst:.2e}, mean |diff| {mean:.2e} (over bins > {FLOOR:g}); max |diff| over all bins "
          f"{float(diff.max()):.2e}")
    check(mask.mean() > 0.3, f"{name}: enough bins above {FLOOR:g} to mean something ({100 * mask.mean():.1f}%)")
    check(worst < TOL, f"{name}: max |castor - numpy| {worst:.2e} < {TOL:g}")


def chirp_and_noise(sr, seconds, seed):
    """A linear chirp 50 Hz -> 7.5 kHz at amplitude 0.5, a quiet 440 Hz tone, white noise at
    1e-3, and a silent (noise-only) half-second gap: a wide dynamic range."""
    t = np.arange(int(sr * seconds)) / sr
    f0, f1 = 50.0, 7500.0
    x = 0.5 * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / seconds * t ** 2))
    x += 0.05 * np.sin(2 * np.pi * 440.0 * t)
    x[int(sr * 1.0):int(sr * 1.5)] = 0.0
    x += 1e-3 * np.random.default_rng(seed).standard_normal(t.size)
    return x.astype(np.float32)


def main():
    torch.set_num_threads(1)
    tool = find_tool()
    print(f"castor_logmel_tool: {tool}")
    with tempfile.TemporaryDirectory(prefix="castor_logmel_") as tmp:
        # The numpy reference against torch.stft (Whisper's framing), both in float64.
        x = chirp_and_noise(16000, 3.0, seed=1)
        for cfg in (DEFAULT, OTHER):
            a = power_spectrum(x, cfg["n_fft"], cfg["win_length"], cfg["hop_length"])
            b = torch_power_spectrum(x, cfg)
            rel = float(np.abs(a - b).max() / np.abs(b).max())
            check(a.shape == b.shape and rel < 1e-10,
                  f"numpy STFT framing matches torch.stft (n_fft {cfg['n_fft']}, win {cfg['win_length']}, hop "
                  f"{cfg['hop_length']}): {a.shape} vs {b.shape}, max rel diff {rel:.1e}")

        # Synthetic chirp + noise, raw float32: both sides see the very same samples.
        raw = os.path.join(tmp, "chirp.f32")
        x.tofile(raw)
        for label, cfg in (("default", DEFAULT), ("n_fft 512 win 320 hop 128 40 mels f_max 7000", OTHER)):
            got = run_castor(tool, raw, cfg, os.path.join(tmp, "chirp.npy"), repeat=20)
            compare(f"chirp + noise, {label}", got, log_mel(x, cfg))

        # Shorter than n_fft/2 + 1: zero padding instead of reflection.
        short = (0.3 * np.random.default_rng(2).standard_normal(150)).astype(np.float32)
        raw_short = os.path.join(tmp, "short.f32")
        short.tofile(raw_short)
        got = run_castor(tool, raw_short, DEFAULT, os.path.join(tmp, "short.npy"))
        compare("150-sample clip (zero-padded), default", got, log_mel(short, DEFAULT))

        # Real speech.
        if os.path.exists(LIBRIVOX):
            sr, speech = read_wav_stdlib(LIBRIVOX)
            check(sr == 16000, f"LibriVox clip at {sr} Hz")
            print(f"LibriVox clip: {speech.size} samples, {speech.size / sr:.2f} s")
            got = run_castor(tool, LIBRIVOX, DEFAULT, os.path.join(tmp, "speech.npy"), repeat=20)
            compare("LibriVox WAV, default", got, log_mel(speech, DEFAULT))
        else:
            print(f"skip: {LIBRIVOX} not installed")
    finish()


if __name__ == "__main__":
    main()
