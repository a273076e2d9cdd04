// Audio side of data preparation: WAV reading/writing (libsndfile), band-limited rational
// resampling, and log-mel spectrograms in the Whisper/librosa convention.
// Samples are mono float, nominally in [-1, 1]. Everything here is free of global mutable
// state: a LogMel object is immutable after construction and may be shared by threads.
// Errors throw castor::Error; file errors start with the path.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace castor::io {

struct AudioClip {
  int64_t sample_rate = 0;
  std::vector<float> samples;  // (num_samples,) mono, nominally in [-1, 1]
};

// Reads a WAV file (RIFF/WAVEX container, any sample encoding libsndfile decodes: PCM,
// float, u-law, ...). Integer PCM maps to [-1, 1) (x / 2^(bits-1)); channels are averaged
// to mono. Refuses, with one line starting with the path: a missing or unreadable file, an
// empty file, a file that is not a WAV (other containers libsndfile can open included),
// zero frames, more than 2^31 samples, and non-finite samples (float WAVs).
AudioClip read_wav(const std::string& path);

// Writes a 16-bit PCM mono WAV: round(clamp(x, -1, 1) * 32767). Refuses a sample rate
// outside [1, 2^31) and non-finite samples.
void write_wav(const std::string& path, const AudioClip& clip);

// Band-limited resampling by the rational factor to_rate / from_rate (reduced by their gcd)
// with a Kaiser-windowed sinc low-pass at 0.95 * min(from_rate, to_rate) / 2, about 80 dB
// stop-band attenuation, spanning 24 periods of the lower rate on each side. The signal is
// taken as zero outside [0, n), so about 24 lower-rate samples at each edge are tapered.
// Output length ceil(n * to_rate / from_rate); output j is the input at time j / to_rate.
// Deterministic; a plain copy when the rates are equal.
std::vector<float> resample(std::span<const float> in, int64_t from_rate, int64_t to_rate);

struct LogMelConfig {
  int64_t sample_rate = 16000;
  int64_t n_fft = 400;       // FFT size, even, <= 4096 (25 ms at 16 kHz)
  int64_t win_length = 400;  // periodic Hann window, zero-padded centrally to n_fft if shorter
  int64_t hop_length = 160;  // 10 ms
  int64_t n_mels = 80;
  double f_min = 0.0;
  double f_max = 8000.0;  // <= sample_rate / 2

  // Throws castor::Error naming the bad field, e.g. "audio.n_mels must be >= 1 (got 0)".
  void validate() const;
};

// Frames of a clip of num_samples samples: 1 + num_samples / hop_length.
int64_t log_mel_frames(int64_t num_samples, const LogMelConfig& cfg);

// Log-mel spectrogram, the convention of Whisper / librosa:
//   1. centred frames: the clip is padded by n_fft/2 on both sides by reflection (numpy's
//      "reflect", edge not repeated); a clip shorter than n_fft/2 + 1 samples cannot be
//      reflected and is zero-padded instead;
//   2. frame t = padded[t * hop, t * hop + n_fft) times the periodic Hann window;
//   3. power spectrum |rfft|^2 over n_fft/2 + 1 bins (a dense real DFT through SGEMM, since
//      n_fft need not be a power of two);
//   4. Slaney mel filterbank (librosa.filters.mel(htk=False, norm="slaney")), built in double;
//   5. log10(max(mel, 1e-10)) — no further clamping or scaling.
// Output is (frames, n_mels) row-major. The constructor validates the config and builds the
// DFT and filterbank matrices once; compute() is const and allocates its own scratch, so
// one object can serve several threads. Samples must be finite (read_wav guarantees it).
class LogMel {
 public:
  explicit LogMel(const LogMelConfig& cfg);

  const LogMelConfig& config() const { return cfg_; }
  int64_t num_bins() const { return cfg_.n_fft / 2 + 1; }
  int64_t frames(int64_t num_samples) const { return log_mel_frames(num_samples, cfg_); }

  // Returns the (frames, n_mels) spectrogram; stores the frame count in *frames if non-null.
  std::vector<float> compute(std::span<const float> samples, int64_t* frames = nullptr) const;
  // Writes frames(samples.size()) * n_mels values to out.
  void compute(std::span<const float> samples, float* out) const;

  // (num_bins, n_mels) Slaney filterbank as applied (float), for inspection and tests.
  const std::vector<float>& filterbank() const { return mel_; }

 private:
  LogMelConfig cfg_;
  int64_t win_offset_ = 0;    // first non-zero sample of the centrally padded window
  std::vector<float> basis_;  // (win_length, 2 * num_bins): window * [cos | sin] of the DFT
  std::vector<float> mel_;    // (num_bins, n_mels)
};

// One-shot wrapper: LogMel(cfg).compute(samples, frames). Prep threads should build one
// LogMel each (or share one) instead, since building the matrices dominates short clips.
std::vector<float> log_mel(std::span<const float> samples, const LogMelConfig& cfg, int64_t* frames);

}  // namespace castor::io
