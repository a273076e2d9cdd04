// WAV I/O through libsndfile, polyphase Kaiser-sinc resampling, and the log-mel front end
// (dense real DFT and mel filterbank as two SGEMMs over blocks of frames).
// libsndfile is opened on file descriptors we own, so errors come from errno and the
// per-handle sf_strerror(sf): its global "last open error" is shared between threads.
#include "io/audio.h"

#include <fcntl.h>
#include <sndfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <memory>
#include <numbers>
#include <numeric>
#include <system_error>

#include "core/error.h"
#include "kernels/cpu/gemm.h"

namespace castor::io {

namespace {

constexpr int64_t kMaxSamples = int64_t{1} << 31;

// ---------------------------------------------------------------------------- WAV files

// A file descriptor closed on destruction.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports failure (a write error may only show up at close).
  bool close() {
    const int fd = fd_;
    fd_ = -1;
    return fd < 0 || ::close(fd) == 0;
  }

 private:
  int fd_;
};

struct SndfileCloser {
  void operator()(SNDFILE* sf) const { sf_close(sf); }
};
using Sndfile = std::unique_ptr<SNDFILE, SndfileCloser>;

std::string errno_message() { return std::generic_category().message(errno); }

// "AIFF (Apple/SGI)" etc. from libsndfile's static format table.
std::string container_name(int major) {
  SF_FORMAT_INFO info{};
  info.format = major;
  if (sf_command(nullptr, SFC_GET_FORMAT_INFO, &info, sizeof(info)) == 0 && info.name != nullptr) return info.name;
  return cat("format 0x", std::hex, major);
}

}  // namespace

AudioClip read_wav(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    CASTOR_CHECK(errno != ENOENT, path, ": no such file");
    CASTOR_FAIL(path, ": cannot open: ", errno_message());
  }
  struct stat st {};
  CASTOR_CHECK(::fstat(fd.get(), &st) == 0, path, ": cannot stat: ", errno_message());
  CASTOR_CHECK(S_ISREG(st.st_mode), path, ": not a regular file, not a WAV file");
  CASTOR_CHECK(st.st_size > 0, path, ": empty file, not a WAV file");

  SF_INFO info{};
  Sndfile sf(sf_open_fd(fd.get(), SFM_READ, &info, SF_FALSE));
  CASTOR_CHECK(sf != nullptr, path, ": not a WAV file (libsndfile recognises no audio format in it)");
  // libsndfile opens AIFF, FLAC, Ogg, ... just as readily: the container must be checked.
  const int major = info.format & SF_FORMAT_TYPEMASK;
  CASTOR_CHECK(major == SF_FORMAT_WAV || major == SF_FORMAT_WAVEX, path, ": not a WAV file (", container_name(major),
               " container)");
  CASTOR_CHECK(info.channels >= 1, path, ": WAV header has ", info.channels, " channels");
  CASTOR_CHECK(info.samplerate >= 1, path, ": WAV header has sample rate ", info.samplerate);
  CASTOR_CHECK(info.frames > 0, path, ": empty audio (0 frames)");
  CASTOR_CHECK(info.frames <= kMaxSamples, path, ": ", info.frames, " frames, more than 2^31 samples");

  AudioClip clip;
  clip.sample_rate = info.samplerate;
  clip.samples.resize(static_cast<size_t>(info.frames));
  const int64_t channels = info.channels;
  constexpr int64_t kBlock = 4096;  // frames per read: bounds the interleaved buffer
  std::vector<float> buf(static_cast<size_t>(kBlock * channels));
  for (int64_t f0 = 0; f0 < info.frames; f0 += kBlock) {
    const int64_t want = std::min<int64_t>(kBlock, info.frames - f0);
    const int64_t got = sf_readf_float(sf.get(), buf.data(), want);
    CASTOR_CHECK(got == want, path, ": truncated or damaged WAV: read ", f0 + std::max<int64_t>(got, 0), " of ",
                 info.frames, " frames (", sf_strerror(sf.get()), ")");
    for (int64_t i = 0; i < want; ++i) {
      double sum = 0.0;  // double: the mean of a few channels is then exact to float rounding
      for (int64_t c = 0; c < channels; ++c) sum += buf[static_cast<size_t>(i * channels + c)];
      CASTOR_CHECK(std::isfinite(sum), path, ": non-finite sample at frame ", f0 + i);
      clip.samples[static_cast<size_t>(f0 + i)] = static_cast<float>(sum / static_cast<double>(channels));
    }
  }
  return clip;
}

void write_wav(const std::string& path, const AudioClip& clip) {
  CASTOR_CHECK(clip.sample_rate >= 1 && clip.sample_rate < (int64_t{1} << 31), path,
               ": sample rate must be in [1, 2^31) (got ", clip.sample_rate, ")");
  // The RIFF data chunk size is 32-bit: at 2 bytes per sample, at most ~2^31 samples.
  CASTOR_CHECK(clip.samples.size() < (size_t{1} << 31) - 64, path, ": ", clip.samples.size(),
               " samples do not fit a WAV file");
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  CASTOR_CHECK(fd.get() >= 0, path, ": cannot create: ", errno_message());

  SF_INFO info{};
  info.samplerate = static_cast<int>(clip.sample_rate);
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  Sndfile sf(sf_open_fd(fd.get(), SFM_WRITE, &info, SF_FALSE));
  CASTOR_CHECK(sf != nullptr, path, ": libsndfile cannot create a 16-bit PCM WAV here");
  // Our own quantisation (libsndfile's float path does not clip by default and wraps).
  constexpr size_t kBlock = 4096;
  std::vector<short> buf(kBlock);
  for (size_t i0 = 0; i0 < clip.samples.size(); i0 += kBlock) {
    const size_t n = std::min(kBlock, clip.samples.size() - i0);
    for (size_t i = 0; i < n; ++i) {
      const float x = clip.samples[i0 + i];
      CASTOR_CHECK(std::isfinite(x), path, ": non-finite sample at index ", i0 + i);
      buf[i] = static_cast<short>(std::lrint(std::clamp(x, -1.0f, 1.0f) * 32767.0f));
    }
    const sf_count_t put = sf_writef_short(sf.get(), buf.data(), static_cast<sf_count_t>(n));
    CASTOR_CHECK(put == static_cast<sf_count_t>(n), path, ": write failed (", sf_strerror(sf.get()), ")");
  }
  const int rc = sf_close(sf.release());  // writes the final header sizes
  CASTOR_CHECK(rc == 0, path, ": write failed: ", sf_error_number(rc));
  CASTOR_CHECK(fd.close(), path, ": close failed: ", errno_message());
}

// ---------------------------------------------------------------------------- resampling

namespace {

constexpr double kResampleCutoff = 0.95;  // of the lower Nyquist frequency
constexpr int64_t kResampleSpan = 24;     // lower-rate periods on each side of the kernel
constexpr double kKaiserBeta = 7.857;     // 0.1102 * (A - 8.7) for A = 80 dB

// Modified Bessel function of the first kind, order 0 (power series; converges for all x).
double bessel_i0(double x) {
  const double q = 0.25 * x * x;
  double term = 1.0, sum = 1.0;
  for (int k = 1; k < 500 && term > 1e-17 * sum; ++k) {
    term *= q / (static_cast<double>(k) * static_cast<double>(k));
    sum += term;
  }
  return sum;
}

// The low-pass kernel evaluated at the taps of one output position. Output time t = i0 + frac
// (in input samples, frac in [0, 1)) takes taps k = i0 + m, m in [1 - K, K], at distance
// d = frac - m; the taps are normalised to sum 1 so every phase passes DC exactly.
struct ResampleKernel {
  double fc;  // cutoff in cycles per input sample
  double hw;  // half width in input samples
  int64_t K;  // taps per side
  double inv_i0_beta;

  ResampleKernel(int64_t L, int64_t M) {
    const double r = std::min(1.0, static_cast<double>(L) / static_cast<double>(M));
    fc = 0.5 * kResampleCutoff * r;
    hw = static_cast<double>(kResampleSpan) / r;
    K = static_cast<int64_t>(std::ceil(hw));
    inv_i0_beta = 1.0 / bessel_i0(kKaiserBeta);
  }

  void taps(double frac, double* out) const {
    double sum = 0.0;
    for (int64_t m = 1 - K; m <= K; ++m) {
      const double d = frac - static_cast<double>(m);
      double h = 0.0;
      if (std::abs(d) < hw) {
        const double x = 2.0 * fc * d;
        const double sinc = x == 0.0 ? 1.0 : std::sin(std::numbers::pi * x) / (std::numbers::pi * x);
        const double u = d / hw;
        h = 2.0 * fc * sinc * bessel_i0(kKaiserBeta * std::sqrt(1.0 - u * u)) * inv_i0_beta;
      }
      out[m - (1 - K)] = h;
      sum += h;
    }
    for (int64_t i = 0; i < 2 * K; ++i) out[i] /= sum;
  }
};

}  // namespace

std::vector<float> resample(std::span<const float> in, int64_t from_rate, int64_t to_rate) {
  CASTOR_CHECK(from_rate >= 1 && to_rate >= 1 && from_rate < (int64_t{1} << 31) && to_rate < (int64_t{1} << 31),
               "resample: sample rates must be in [1, 2^31) (got ", from_rate, " -> ", to_rate, ")");
  const int64_t n = static_cast<int64_t>(in.size());
  CASTOR_CHECK(n <= kMaxSamples, "resample: ", n, " input samples, more than 2^31");
  if (from_rate == to_rate) return {in.begin(), in.end()};
  const int64_t g = std::gcd(from_rate, to_rate);
  const int64_t L = to_rate / g, M = from_rate / g;  // output j sits at input time j * M / L
  // n * L < 2^62: n <= 2^31, L < 2^31.
  const int64_t out_len = (n * L + M - 1) / M;
  CASTOR_CHECK(out_len <= kMaxSamples, "resample: ", n, " samples at ", from_rate, " Hz give ", out_len, " at ",
               to_rate, " Hz, more than 2^31");
  std::vector<float> out(static_cast<size_t>(out_len));
  if (out_len == 0) return out;

  const ResampleKernel kernel(L, M);
  const int64_t K = kernel.K, taps = 2 * K;
  // One row of taps per phase (p / L) when the table is small (common rates: L <= a few
  // hundred); otherwise the taps are evaluated per output sample, with identical values.
  const bool table = L * taps <= (int64_t{1} << 20);
  std::vector<double> h(static_cast<size_t>(table ? L * taps : taps));
  if (table) {
    for (int64_t p = 0; p < L; ++p) {
      kernel.taps(static_cast<double>(p) / static_cast<double>(L), h.data() + p * taps);
    }
  }
  for (int64_t j = 0; j < out_len; ++j) {
    const int64_t pos = j * M;
    const int64_t i0 = pos / L, p = pos % L;
    const double* w = h.data();
    if (table) {
      w += p * taps;
    } else {
      kernel.taps(static_cast<double>(p) / static_cast<double>(L), h.data());
    }
    // Taps k = i0 + m, m in [1 - K, K]; outside [0, n) the signal is zero.
    const int64_t k_lo = std::max<int64_t>(i0 + 1 - K, 0), k_hi = std::min<int64_t>(i0 + K, n - 1);
    double acc = 0.0;
    for (int64_t k = k_lo; k <= k_hi; ++k) acc += w[k - (i0 + 1 - K)] * static_cast<double>(in[static_cast<size_t>(k)]);
    out[static_cast<size_t>(j)] = static_cast<float>(acc);
  }
  return out;
}

// ---------------------------------------------------------------------------- log-mel

namespace {

constexpr int64_t kMaxFft = 4096;  // the DFT is a dense (n_fft, n_fft + 2) matrix: 64 MiB at 4096
constexpr int64_t kMaxMels = 4096;

// Slaney's mel scale (librosa htk=False): linear below 1 kHz, logarithmic above.
constexpr double kMelLinearHz = 200.0 / 3.0;  // Hz per mel below 1 kHz
constexpr double kMelBreakHz = 1000.0;
constexpr double kMelBreak = kMelBreakHz / kMelLinearHz;  // 15 mels
const double kMelLogStep = std::log(6.4) / 27.0;

double hz_to_mel(double hz) {
  return hz < kMelBreakHz ? hz / kMelLinearHz : kMelBreak + std::log(hz / kMelBreakHz) / kMelLogStep;
}

double mel_to_hz(double mel) {
  return mel < kMelBreak ? mel * kMelLinearHz : kMelBreakHz * std::exp(kMelLogStep * (mel - kMelBreak));
}

// (num_bins, n_mels) = librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False,
// norm="slaney") transposed: triangles between consecutive mel points, each scaled by
// 2 / (upper - lower edge in Hz) so that filters have equal area.
std::vector<double> slaney_filterbank(const LogMelConfig& cfg) {
  const int64_t nb = cfg.n_fft / 2 + 1, nm = cfg.n_mels;
  const double mel_lo = hz_to_mel(cfg.f_min), mel_hi = hz_to_mel(cfg.f_max);
  std::vector<double> hz(static_cast<size_t>(nm + 2));
  for (int64_t i = 0; i < nm + 2; ++i) {
    hz[static_cast<size_t>(i)] =
        mel_to_hz(mel_lo + (mel_hi - mel_lo) * static_cast<double>(i) / static_cast<double>(nm + 1));
  }
  std::vector<double> fb(static_cast<size_t>(nb * nm), 0.0);
  for (int64_t m = 0; m < nm; ++m) {
    const double lo = hz[static_cast<size_t>(m)], mid = hz[static_cast<size_t>(m + 1)],
                 hi = hz[static_cast<size_t>(m + 2)];
    const double enorm = 2.0 / (hi - lo);
    for (int64_t k = 0; k < nb; ++k) {
      const double f = static_cast<double>(k) * static_cast<double>(cfg.sample_rate) / static_cast<double>(cfg.n_fft);
      const double w = std::min((f - lo) / (mid - lo), (hi - f) / (hi - mid));
      if (w > 0.0) fb[static_cast<size_t>(k * nm + m)] = w * enorm;
    }
  }
  return fb;
}

}  // namespace

void LogMelConfig::validate() const {
  CASTOR_CHECK(sample_rate >= 1 && sample_rate < (int64_t{1} << 31), "audio.sample_rate must be in [1, 2^31) (got ",
               sample_rate, ")");
  CASTOR_CHECK(n_fft >= 2 && n_fft <= kMaxFft && n_fft % 2 == 0, "audio.n_fft must be even and in [2, ", kMaxFft,
               "] (got ", n_fft, ")");
  CASTOR_CHECK(win_length >= 1 && win_length <= n_fft, "audio.win_length must be in [1, audio.n_fft = ", n_fft,
               "] (got ", win_length, ")");
  CASTOR_CHECK(hop_length >= 1, "audio.hop_length must be >= 1 (got ", hop_length, ")");
  CASTOR_CHECK(n_mels >= 1, "audio.n_mels must be >= 1 (got ", n_mels, ")");
  CASTOR_CHECK(n_mels <= kMaxMels, "audio.n_mels must be <= ", kMaxMels, " (got ", n_mels, ")");
  CASTOR_CHECK(std::isfinite(f_min) && f_min >= 0.0, "audio.f_min must be >= 0 (got ", f_min, ")");
  const double nyquist = static_cast<double>(sample_rate) / 2.0;
  CASTOR_CHECK(std::isfinite(f_max) && f_max > f_min && f_max <= nyquist,
               "audio.f_max must be in (audio.f_min, audio.sample_rate / 2] = (", f_min, ", ", nyquist, "] (got ",
               f_max, ")");
}

int64_t log_mel_frames(int64_t num_samples, const LogMelConfig& cfg) {
  CASTOR_CHECK(num_samples >= 0, "log_mel: negative sample count ", num_samples);
  CASTOR_CHECK(cfg.hop_length >= 1, "audio.hop_length must be >= 1 (got ", cfg.hop_length, ")");
  return 1 + num_samples / cfg.hop_length;
}

LogMel::LogMel(const LogMelConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  const int64_t n_fft = cfg_.n_fft, win = cfg_.win_length, nb = num_bins();
  win_offset_ = (n_fft - win) / 2;  // librosa's pad_center
  // Only the win_length non-zero window taps enter the DFT, so the basis has win rows: the
  // frame is read from win_offset_ on. Angles use (n * k) mod n_fft, exact in integers.
  basis_.resize(static_cast<size_t>(win * 2 * nb));
  for (int64_t i = 0; i < win; ++i) {
    const double w = 0.5 - 0.5 * std::cos(2.0 * std::numbers::pi * static_cast<double>(i) / static_cast<double>(win));
    const int64_t n = win_offset_ + i;
    float* row = basis_.data() + i * 2 * nb;
    for (int64_t k = 0; k < nb; ++k) {
      const double angle = 2.0 * std::numbers::pi * static_cast<double>((n * k) % n_fft) / static_cast<double>(n_fft);
      row[k] = static_cast<float>(w * std::cos(angle));
      row[nb + k] = static_cast<float>(-w * std::sin(angle));
    }
  }
  const std::vector<double> fb = slaney_filterbank(cfg_);
  mel_.assign(fb.begin(), fb.end());
}

std::vector<float> LogMel::compute(std::span<const float> samples, int64_t* frames) const {
  const int64_t nf = this->frames(static_cast<int64_t>(samples.size()));
  std::vector<float> out(static_cast<size_t>(nf * cfg_.n_mels));
  compute(samples, out.data());
  if (frames != nullptr) *frames = nf;
  return out;
}

void LogMel::compute(std::span<const float> samples, float* out) const {
  const int64_t n = static_cast<int64_t>(samples.size());
  CASTOR_CHECK(n <= kMaxSamples, "log_mel: ", n, " samples, more than 2^31");
  const int64_t nf = frames(n), pad = cfg_.n_fft / 2, nb = num_bins(), nm = cfg_.n_mels;
  const int64_t win = cfg_.win_length, hop = cfg_.hop_length;

  // Centred frames: padded[pad + i] = samples[i]; reflection needs n >= pad + 1.
  std::vector<float> padded(static_cast<size_t>(n + 2 * pad), 0.0f);
  std::copy(samples.begin(), samples.end(), padded.begin() + pad);
  if (n >= pad + 1) {
    for (int64_t i = 1; i <= pad; ++i) {
      padded[static_cast<size_t>(pad - i)] = samples[static_cast<size_t>(i)];
      padded[static_cast<size_t>(pad + n - 1 + i)] = samples[static_cast<size_t>(n - 1 - i)];
    }
  }

  constexpr int64_t kBlock = 128;  // frames per GEMM
  std::vector<float> frame_block(static_cast<size_t>(kBlock * win));
  std::vector<float> spec(static_cast<size_t>(kBlock * 2 * nb));
  std::vector<float> power(static_cast<size_t>(kBlock * nb));
  for (int64_t t0 = 0; t0 < nf; t0 += kBlock) {
    const int64_t rows = std::min(kBlock, nf - t0);
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = padded.data() + (t0 + r) * hop + win_offset_;
      std::copy(src, src + win, frame_block.data() + r * win);
    }
    // spec = frames @ basis: (rows, win) x (win, 2 nb) -> [Re | Im] per frame.
    CASTOR_KERNEL_CHECK(kernels::cpu::gemm(false, false, rows, 2 * nb, win, 1.0f, frame_block.data(), win,
                                           basis_.data(), 2 * nb, 0.0f, spec.data(), 2 * nb));
    for (int64_t r = 0; r < rows; ++r) {
      const float* re = spec.data() + r * 2 * nb;
      const float* im = re + nb;
      float* p = power.data() + r * nb;
      for (int64_t k = 0; k < nb; ++k) p[k] = re[k] * re[k] + im[k] * im[k];
    }
    // mel = power @ filterbank: (rows, nb) x (nb, n_mels), straight into the output rows.
    float* dst = out + t0 * nm;
    CASTOR_KERNEL_CHECK(
        kernels::cpu::gemm(false, false, rows, nm, nb, 1.0f, power.data(), nb, mel_.data(), nm, 0.0f, dst, nm));
    for (int64_t i = 0; i < rows * nm; ++i) dst[i] = std::log10(std::max(dst[i], 1e-10f));
  }
}

std::vector<float> log_mel(std::span<const float> samples, const LogMelConfig& cfg, int64_t* frames) {
  return LogMel(cfg).compute(samples, frames);
}

}  // namespace castor::io
