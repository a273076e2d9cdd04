"""Independent numpy reference of castor's log-mel features (io/audio.h), in float64: the
Whisper/librosa convention. Reflect padding by n_fft/2 (zeros for clips too short to reflect),
periodic Hann window centred in n_fft, power spectrum by numpy.fft.rfft, Slaney mel filterbank
written here from its formula, log10 with a 1e-10 floor. Shared by test_logmel.py (which also
checks the framing against torch.stft) and test_shard_h5py.py. Also a stdlib WAV reader."""
import wave

import numpy as np

# castor's default LogMelConfig (io/audio.h): Whisper's 80-mel features at 16 kHz.
DEFAULT = dict(sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, f_min=0.0, f_max=8000.0)


def hz_to_mel(f):
    """Slaney: 3 mels per 200 Hz below 1 kHz, then log steps of ln(6.4)/27."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3.0)
    log = 15.0 + np.log(np.maximum(f, 1000.0) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f < 1000.0, lin, log)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3.0)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m < 15.0, lin, log)


def mel_filterbank(sr, n_fft, n_mels, f_min, f_max):
    """(n_mels, n_fft//2 + 1): triangles over n_mels + 2 mel-spaced points, area-normalised
    by 2 / (f[m+2] - f[m])."""
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rise = (freqs - lo) / (mid - lo)
        fall = (hi - freqs) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / (hi - lo))
    return fb


def window(n_fft, win_length):
    w = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    w[left:left + win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    return w


def power_spectrum(x, n_fft, win_length, hop_length):
    x = np.asarray(x, dtype=np.float64)
    pad = n_fft // 2
    xp = np.pad(x, pad, mode="reflect") if x.size > pad else np.pad(x, pad)
    frames = 1 + x.size // hop_length
    idx = hop_length * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]
    return np.abs(np.fft.rfft(xp[idx] * window(n_fft, win_length), axis=1)) ** 2


def log_mel(x, cfg):
    p = power_spectrum(x, cfg["n_fft"], cfg["win_length"], cfg["hop_length"])
    fb = mel_filterbank(cfg["sample_rate"], cfg["n_fft"], cfg["n_mels"], cfg["f_min"], cfg["f_max"])
    return np.log10(np.maximum(p @ fb.T, 1e-10))


def read_wav_stdlib(path):
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2, "the reference reads 16-bit PCM only"
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
        return w.getframerate(), data.reshape(-1, w.getnchannels()).mean(axis=1)
