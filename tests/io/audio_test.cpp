// Tests of io/audio.h: WAV round trips (16-bit quantisation), channel averaging, garbage
// files refused with the path in the message, resampling against analytic sines (and the
// anti-aliasing of an out-of-band tone), log-mel frame counts, tones landing in their mel
// band, config validation, thread sharing, and a real LibriVox clip from pocketsphinx.
#include "io/audio.h"

#include <gtest/gtest.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numbers>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/testing.h"

namespace castor::io {
namespace {

using castor::testing::error_of;
using castor::testing::TempDirTest;

constexpr double kPi = std::numbers::pi;

std::vector<float> sine(double freq, double rate, int64_t n, double amp = 0.9) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<size_t>(i)] = static_cast<float>(amp * std::sin(2 * kPi * freq * i / rate));
  return v;
}

double rms(std::span<const float> v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

// Writes interleaved frames with libsndfile in the given format (not through write_wav).
void write_sndfile(const std::string& path, int format, int channels, int rate, const std::vector<float>& interleaved) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  SNDFILE* sf = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(sf, nullptr) << path << ": " << sf_strerror(nullptr);
  const sf_count_t frames = static_cast<sf_count_t>(interleaved.size()) / channels;
  EXPECT_EQ(sf_writef_float(sf, interleaved.data(), frames), frames);
  EXPECT_EQ(sf_close(sf), 0);
}

// ---------------------------------------------------------------------------- WAV

class AudioWavTest : public TempDirTest {};

TEST_F(AudioWavTest, RoundTripWithin16BitQuantisation) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  AudioClip clip{22050, {}};
  for (int i = 0; i < 10000; ++i) clip.samples.push_back(u(rng));
  clip.samples.insert(clip.samples.end(), {1.0f, -1.0f, 0.0f, 1.5f, -3.0f});  // the last two clip
  const std::string path = file("clip.wav");
  write_wav(path, clip);
  const AudioClip back = read_wav(path);
  EXPECT_EQ(back.sample_rate, 22050);
  ASSERT_EQ(back.samples.size(), clip.samples.size());
  double worst = 0;
  for (size_t i = 0; i < clip.samples.size(); ++i) {
    const double want = std::clamp(clip.samples[i], -1.0f, 1.0f);
    worst = std::max(worst, std::abs(back.samples[i] - want));
  }
  // round(x * 32767) read back as q / 32768: half a step plus the 32767/32768 scale.
  EXPECT_LE(worst, 0.5 / 32767 + 1.0 / 32768);
  EXPECT_EQ(back.samples[10000 + 2], 0.0f);
}

TEST_F(AudioWavTest, StereoIsAveragedToMono) {
  const int64_t n = 4000;
  const std::vector<float> left = sine(440, 16000, n, 0.5), right = sine(1000, 16000, n, 0.25);
  std::vector<float> interleaved;
  for (int64_t i = 0; i < n; ++i) interleaved.insert(interleaved.end(), {left[size_t(i)], right[size_t(i)]});
  const std::string path = file("stereo.wav");
  write_sndfile(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 2, 16000, interleaved);
  const AudioClip clip = read_wav(path);
  EXPECT_EQ(clip.sample_rate, 16000);
  ASSERT_EQ(clip.samples.size(), size_t(n));
  double worst = 0;
  for (int64_t i = 0; i < n; ++i)
    worst = std::max(worst, std::abs(clip.samples[size_t(i)] - 0.5 * (left[size_t(i)] + right[size_t(i)])));
  EXPECT_LE(worst, 1.0 / 32768);
}

TEST_F(AudioWavTest, FloatWavexWithThreeChannelsIsRead) {
  const std::vector<float> interleaved = {0.3f, -0.6f, 0.9f, 1.25f, 0.5f, 0.75f};  // float WAVs may exceed 1
  const std::string path = file("float.wav");
  write_sndfile(path, SF_FORMAT_WAVEX | SF_FORMAT_FLOAT, 3, 48000, interleaved);
  const AudioClip clip = read_wav(path);
  EXPECT_EQ(clip.sample_rate, 48000);
  ASSERT_EQ(clip.samples.size(), 2u);
  EXPECT_NEAR(clip.samples[0], 0.2f, 1e-7);
  EXPECT_NEAR(clip.samples[1], 2.5f / 3, 1e-7);
}

TEST_F(AudioWavTest, RejectsGarbageNamingTheFile) {
  const std::string missing = file("missing.wav");
  EXPECT_EQ(error_of([&] { read_wav(missing); }), missing + ": no such file");

  const std::string empty = file("empty.wav");
  std::ofstream(empty).close();
  EXPECT_CONTAINS(error_of([&] { read_wav(empty); }), empty + ": empty file");

  const std::string random = file("random.wav");
  {
    std::mt19937 rng(3);
    std::ofstream out(random, std::ios::binary);
    for (int i = 0; i < 5000; ++i) out.put(static_cast<char>(rng()));
  }
  EXPECT_CONTAINS(error_of([&] { read_wav(random); }), random + ": not a WAV file");

  const std::string text = file("text.wav");
  dir_.write("text.wav", "RIFF is not enough to make a WAV file, nor is this sentence.\n");
  EXPECT_CONTAINS(error_of([&] { read_wav(text); }), text + ": not a WAV file");

  const std::string zero = file("zero.wav");
  write_wav(zero, AudioClip{16000, {}});
  EXPECT_GT(std::filesystem::file_size(zero), 0u);
  EXPECT_EQ(error_of([&] { read_wav(zero); }), zero + ": empty audio (0 frames)");

  // A perfectly good AIFF (which libsndfile opens) is still not a WAV.
  const std::string aiff = file("tone.wav");
  write_sndfile(aiff, SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 1, 16000, sine(440, 16000, 1000));
  const std::string aiff_msg = error_of([&] { read_wav(aiff); });
  EXPECT_CONTAINS(aiff_msg, aiff + ": not a WAV file");
  EXPECT_CONTAINS(aiff_msg, "AIFF");

  // Headerless PCM (what libsndfile writes as SF_FORMAT_RAW) has nothing to recognise.
  const std::string raw = file("tone.raw");
  write_sndfile(raw, SF_FORMAT_RAW | SF_FORMAT_PCM_16, 1, 16000, sine(440, 16000, 1000));
  EXPECT_CONTAINS(error_of([&] { read_wav(raw); }), raw + ": not a WAV file");

  const std::string nan = file("nan.wav");
  write_sndfile(nan, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 1, 16000, {0.0f, 0.5f, std::nanf(""), 0.0f});
  EXPECT_EQ(error_of([&] { read_wav(nan); }), nan + ": non-finite sample at frame 2");

  EXPECT_CONTAINS(error_of([&] { read_wav(dir_.str()); }), dir_.str() + ": not a regular file");
}

TEST_F(AudioWavTest, WriteRejectsBadClips) {
  const std::string path = file("bad.wav");
  EXPECT_CONTAINS(error_of([&] { write_wav(path, AudioClip{0, {0.0f}}); }), path + ": sample rate");
  EXPECT_EQ(error_of([&] {
              write_wav(path, AudioClip{16000, {0.0f, INFINITY}});
            }),
            path + ": non-finite sample at index 1");
  const std::string nodir = file("no/such/dir.wav");
  EXPECT_CONTAINS(error_of([&] { write_wav(nodir, AudioClip{16000, {0.0f}}); }), nodir + ": cannot create");
}

// ---------------------------------------------------------------------------- resample

struct RatePair {
  int64_t from, to;
};
void PrintTo(const RatePair& r, std::ostream* os) { *os << r.from << " -> " << r.to << " Hz"; }

class AudioResampleSineTest : public ::testing::TestWithParam<RatePair> {};

// A sine resampled matches the sine sampled at the new rate away from the edges, where the
// kernel (24 lower-rate periods per side) meets the zeros outside the clip: 50 output
// samples, or 24 lower-rate periods when that is more (16 -> 44.1 kHz: 67).
TEST_P(AudioResampleSineTest, MatchesAnalyticSine) {
  const auto [from, to] = GetParam();
  for (double freq : {440.0, 3000.0}) {
    const int64_t n = from / 2;  // half a second
    const std::vector<float> out = resample(sine(freq, double(from), n), from, to);
    ASSERT_EQ(int64_t(out.size()), (n * to + from - 1) / from);
    const std::vector<float> want = sine(freq, double(to), int64_t(out.size()));
    const size_t kEdge = std::max<size_t>(50, size_t(24 * to / std::min(from, to) + 1));
    double worst = 0;
    for (size_t j = kEdge; j + kEdge < out.size(); ++j) worst = std::max(worst, std::abs(double(out[j]) - want[j]));
    EXPECT_LT(worst, 1e-3) << from << " -> " << to << " Hz, tone " << freq << " Hz";
    std::printf("resample %lld -> %lld Hz, %g Hz tone: max abs error %.2e\n", static_cast<long long>(from),
                static_cast<long long>(to), freq, worst);
  }
}

INSTANTIATE_TEST_SUITE_P(Rates, AudioResampleSineTest,
                         ::testing::Values(RatePair{22050, 16000}, RatePair{48000, 16000}, RatePair{8000, 16000},
                                           RatePair{44100, 16000}, RatePair{16000, 44100},
                                           // L = 44101 phases: taps computed per sample, not tabled
                                           RatePair{44100, 44101}),
                         [](const auto& info) {
                           return std::to_string(info.param.from) + "_to_" + std::to_string(info.param.to);
                         });

TEST(AudioResample, RemovesToneAboveTheNewNyquist) {
  const std::vector<float> in = sine(10000, 44100, 44100);
  const std::vector<float> out = resample(in, 44100, 16000);
  ASSERT_EQ(out.size(), 16000u);
  const std::span<const float> interior(out.data() + 100, out.size() - 200);
  EXPECT_LT(rms(interior), 1e-2 * rms(in)) << "rms in " << rms(in) << ", out " << rms(interior);
  std::printf("10 kHz tone 44100 -> 16000 Hz: rms ratio %.2e\n", rms(interior) / rms(in));
}

TEST(AudioResample, LengthsIdentityAndErrors) {
  const std::vector<float> x = sine(100, 16000, 1001);
  EXPECT_EQ(resample(x, 16000, 16000), x);
  EXPECT_TRUE(resample({}, 22050, 16000).empty());
  for (int64_t n : {1, 2, 3, 440, 441, 442}) {
    const std::vector<float> in(static_cast<size_t>(n), 0.25f);
    EXPECT_EQ(int64_t(resample(in, 22050, 16000).size()), (n * 16000 + 22049) / 22050) << n;
    EXPECT_EQ(int64_t(resample(in, 8000, 48000).size()), n * 6) << n;
  }
  // Deterministic, and DC passes unchanged in the interior.
  const std::vector<float> dc(2000, 0.5f);
  const std::vector<float> a = resample(dc, 22050, 16000), b = resample(dc, 22050, 16000);
  EXPECT_EQ(a, b);
  for (size_t j = 50; j + 50 < a.size(); ++j) ASSERT_NEAR(a[j], 0.5f, 1e-6) << j;
  EXPECT_CONTAINS(error_of([&] { resample(x, 0, 16000); }), "resample: sample rates must be in [1, 2^31)");
  EXPECT_CONTAINS(error_of([&] { resample(x, 16000, -1); }), "resample: sample rates must be in [1, 2^31)");
}

// ---------------------------------------------------------------------------- log-mel

TEST(AudioLogMel, FrameCount) {
  LogMelConfig cfg;
  EXPECT_EQ(log_mel_frames(0, cfg), 1);
  EXPECT_EQ(log_mel_frames(159, cfg), 1);
  EXPECT_EQ(log_mel_frames(160, cfg), 2);
  EXPECT_EQ(log_mel_frames(16000, cfg), 101);
  EXPECT_EQ(log_mel_frames(480000, cfg), 3001);  // Whisper's 30 s window
  const LogMel mel(cfg);
  // Including clips too short to reflect (< n_fft/2 + 1 = 201 samples): zero padding.
  for (int64_t n : {0, 1, 2, 150, 200, 201, 202, 399, 400, 401, 1601}) {
    const std::vector<float> x = sine(440, 16000, n);
    int64_t frames = -1;
    const std::vector<float> out = mel.compute(x, &frames);
    EXPECT_EQ(frames, 1 + n / 160) << n;
    ASSERT_EQ(int64_t(out.size()), frames * 80) << n;
    for (float v : out) ASSERT_TRUE(std::isfinite(v) && v >= -10.0f) << n;
  }
  cfg.hop_length = 128;
  EXPECT_EQ(log_mel_frames(1000, cfg), 8);
}

TEST(AudioLogMel, SilenceIsTheFloor) {
  const std::vector<float> out = log_mel(std::vector<float>(3200, 0.0f), LogMelConfig{}, nullptr);
  ASSERT_EQ(out.size(), 21u * 80);
  for (float v : out) ASSERT_EQ(v, -10.0f);
}

// Slaney mel edges as in librosa (linear below 1 kHz, log above), for the checks below.
double test_mel_to_hz(double m) { return m < 15 ? m * 200.0 / 3 : 1000 * std::exp(std::log(6.4) / 27 * (m - 15)); }
double test_hz_to_mel(double f) { return f < 1000 ? f * 3 / 200.0 : 15 + std::log(f / 1000) / (std::log(6.4) / 27); }

TEST(AudioLogMel, ToneLandsInItsMelBand) {
  for (const LogMelConfig& cfg : {LogMelConfig{}, LogMelConfig{16000, 512, 320, 128, 40, 0.0, 7000.0}}) {
    const LogMel mel(cfg);
    const double mel_hi = test_hz_to_mel(cfg.f_max);
    for (double freq : {300.0, 1000.0, 2500.0, 5500.0}) {
      int64_t frames = 0;
      const std::vector<float> out = mel.compute(sine(freq, 16000, 16000, 0.5), &frames);
      // Mean over interior frames (the edges see the reflection).
      std::vector<double> mean(size_t(cfg.n_mels), 0.0);
      for (int64_t t = 5; t < frames - 5; ++t)
        for (int64_t m = 0; m < cfg.n_mels; ++m)
          mean[size_t(m)] += out[size_t(t * cfg.n_mels + m)] / double(frames - 10);
      const int64_t best = std::max_element(mean.begin(), mean.end()) - mean.begin();
      // Filter m spans mel points m .. m + 2, peaking at m + 1.
      const double lo = test_mel_to_hz(mel_hi * double(best) / double(cfg.n_mels + 1));
      const double hi = test_mel_to_hz(mel_hi * double(best + 2) / double(cfg.n_mels + 1));
      EXPECT_TRUE(lo < freq && freq < hi)
          << freq << " Hz peaks in mel band " << best << " = (" << lo << ", " << hi << ") Hz, n_mels " << cfg.n_mels;
      // A loud tone: power ~ (0.5 * n_win / 4)^2 spread over the band. Bands far away hold
      // only window leakage, orders of magnitude lower.
      EXPECT_GT(mean[size_t(best)], 0.0) << freq;
      for (int64_t m = 0; m < cfg.n_mels; ++m) {
        if (std::abs(m - best) > 6) {
          EXPECT_LT(mean[size_t(m)], mean[size_t(best)] - 3.0) << freq << " Hz, band " << m;
        }
      }
    }
  }
}

// Slaney normalisation gives each filter unit area in Hz; wide filters sample it well.
TEST(AudioLogMel, FilterbankHasUnitAreaFilters) {
  const LogMelConfig cfg;
  const LogMel mel(cfg);
  const std::vector<float>& fb = mel.filterbank();
  ASSERT_EQ(int64_t(fb.size()), mel.num_bins() * cfg.n_mels);
  const double bin_hz = double(cfg.sample_rate) / double(cfg.n_fft);
  int checked = 0;
  for (int64_t m = 0; m < cfg.n_mels; ++m) {
    double area = 0;
    for (int64_t k = 0; k < mel.num_bins(); ++k) {
      ASSERT_GE(fb[size_t(k * cfg.n_mels + m)], 0.0f);
      area += fb[size_t(k * cfg.n_mels + m)] * bin_hz;
    }
    const double width = test_mel_to_hz(test_hz_to_mel(8000) * double(m + 2) / 81) -
                         test_mel_to_hz(test_hz_to_mel(8000) * double(m) / 81);
    if (width > 5 * bin_hz) {
      EXPECT_NEAR(area, 1.0, 0.02) << "filter " << m;
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

TEST(AudioLogMel, ValidateRejectsBadConfigs) {
  struct Case {
    std::function<void(LogMelConfig&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](LogMelConfig& c) { c.n_mels = 0; }, "audio.n_mels must be >= 1 (got 0)"},
      {[](LogMelConfig& c) { c.n_mels = 100000; }, "audio.n_mels must be <= 4096"},
      {[](LogMelConfig& c) { c.sample_rate = 0; }, "audio.sample_rate must be in [1, 2^31)"},
      {[](LogMelConfig& c) { c.n_fft = 401; }, "audio.n_fft must be even"},
      {[](LogMelConfig& c) { c.n_fft = 0; }, "audio.n_fft must be even"},
      {[](LogMelConfig& c) { c.n_fft = 8192; }, "audio.n_fft must be even and in [2, 4096]"},
      {[](LogMelConfig& c) { c.win_length = 401; }, "audio.win_length must be in [1, audio.n_fft = 400]"},
      {[](LogMelConfig& c) { c.win_length = 0; }, "audio.win_length"},
      {[](LogMelConfig& c) { c.hop_length = 0; }, "audio.hop_length must be >= 1"},
      {[](LogMelConfig& c) { c.f_min = -1; }, "audio.f_min must be >= 0"},
      {[](LogMelConfig& c) { c.f_min = NAN; }, "audio.f_min must be >= 0"},
      {[](LogMelConfig& c) { c.f_max = 8001; }, "audio.f_max must be in (audio.f_min, audio.sample_rate / 2]"},
      {[](LogMelConfig& c) { c.f_max = 0; }, "audio.f_max"},
      {[](LogMelConfig& c) { c.f_min = 8000; }, "audio.f_max"},
  };
  LogMelConfig{}.validate();
  for (const Case& c : cases) {
    LogMelConfig cfg;
    c.change(cfg);
    EXPECT_CONTAINS(error_of([&] { cfg.validate(); }), c.message);
    EXPECT_CONTAINS(error_of([&] { LogMel m(cfg); }), c.message);
    EXPECT_CONTAINS(error_of([&] { log_mel(std::vector<float>(10), cfg, nullptr); }), c.message);
  }
}

// One LogMel shared by several threads gives each exactly the single-threaded result.
TEST(AudioLogMel, SharedAcrossThreads) {
  const LogMel mel(LogMelConfig{});
  std::mt19937 rng(5);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  std::vector<std::vector<float>> clips(4);
  for (size_t c = 0; c < clips.size(); ++c) {
    clips[c] = sine(200.0 * double(c + 1), 16000, 8000 + int64_t(c) * 997);
    for (float& x : clips[c]) x += noise(rng);
  }
  std::vector<std::vector<float>> want, got(clips.size());
  for (const auto& c : clips) want.push_back(mel.compute(c));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < clips.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < 3; ++r) got[i] = mel.compute(clips[i]);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < clips.size(); ++i) EXPECT_EQ(got[i], want[i]) << i;
  EXPECT_EQ(log_mel(clips[0], LogMelConfig{}, nullptr), want[0]);
}

// ---------------------------------------------------------------------------- real data

TEST(AudioRealData, LibriVoxClipFromPocketsphinx) {
  const std::string path = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not installed (Debian package pocketsphinx-en-us)";
  const AudioClip clip = read_wav(path);
  EXPECT_EQ(clip.sample_rate, 16000);
  const double seconds = double(clip.samples.size()) / double(clip.sample_rate);
  EXPECT_GT(seconds, 1.0);
  EXPECT_LT(seconds, 60.0);
  EXPECT_GT(rms(clip.samples), 1e-3) << "speech, not silence";
  for (float x : clip.samples) ASSERT_TRUE(x >= -1.0f && x < 1.0f);

  int64_t frames = 0;
  const std::vector<float> spec = log_mel(clip.samples, LogMelConfig{}, &frames);
  EXPECT_EQ(frames, 1 + int64_t(clip.samples.size()) / 160);
  const float peak = *std::max_element(spec.begin(), spec.end());
  EXPECT_GT(peak, -2.0f);
  EXPECT_LT(peak, 4.0f);
  for (float v : spec) ASSERT_TRUE(std::isfinite(v) && v >= -10.0f);

  // Resampled to 8 kHz and back, the speech stays close below 3.8 kHz: check the RMS.
  const std::vector<float> down = resample(clip.samples, 16000, 8000);
  EXPECT_EQ(down.size(), (clip.samples.size() + 1) / 2);
  EXPECT_NEAR(rms(resample(down, 8000, 16000)) / rms(clip.samples), 1.0, 0.1);
}

}  // namespace
}  // namespace castor::io
