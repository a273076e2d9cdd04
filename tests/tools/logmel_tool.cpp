// logmel_tool: computes what tests/python/test_logmel.py compares against numpy.
// Reads --input (a WAV through io::read_wav, or raw float32 samples at --input-rate when the
// name does not end in .wav), resamples to --sample-rate if needed, and writes the
// (frames, n_mels) log-mel spectrogram to --out as .npy (by extension) or raw float32.
// --repeat N computes it N times and prints the speed (seconds of audio per second).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/audio.h"

using namespace castor;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<float> read_raw_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  CASTOR_CHECK(in, path, ": cannot open");
  const auto bytes = static_cast<size_t>(in.tellg());
  CASTOR_CHECK(bytes % sizeof(float) == 0, path, ": size ", bytes, " is not a multiple of 4 (raw float32)");
  std::vector<float> v(bytes / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(bytes));
  CASTOR_CHECK(in, path, ": read failed");
  return v;
}

// NPY format 1.0: magic, header length, a Python dict literal padded to 64 bytes, then data.
void write_output(const std::string& path, const std::vector<float>& data, int64_t rows, int64_t cols) {
  std::ofstream out(path, std::ios::binary);
  CASTOR_CHECK(out, path, ": cannot create");
  if (ends_with(path, ".npy")) {
    std::string header = cat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows, ", ", cols, "), }");
    const size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    const auto len = static_cast<uint16_t>(header.size());
    out.write("\x93NUMPY\x01\x00", 8);
    const char len_le[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
    out.write(len_le, 2);
    out << header;
  }
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float)));
  CASTOR_CHECK(out, path, ": write failed");
}

}  // namespace

int main(int argc, char** argv) {
  std::string input, out_path;
  int64_t input_rate = 0, repeat = 1;
  io::LogMelConfig cfg;
  try {
    for (int i = 1; i < argc; i += 2) {
      const std::string k = argv[i];
      CASTOR_CHECK(i + 1 < argc, "option ", k, " needs a value");
      const std::string v = argv[i + 1];
      if (k == "--input")
        input = v;
      else if (k == "--out")
        out_path = v;
      else if (k == "--input-rate")
        input_rate = std::stoll(v);
      else if (k == "--repeat")
        repeat = std::stoll(v);
      else if (k == "--sample-rate")
        cfg.sample_rate = std::stoll(v);
      else if (k == "--n-fft")
        cfg.n_fft = std::stoll(v);
      else if (k == "--win-length")
        cfg.win_length = std::stoll(v);
      else if (k == "--hop-length")
        cfg.hop_length = std::stoll(v);
      else if (k == "--n-mels")
        cfg.n_mels = std::stoll(v);
      else if (k == "--f-min")
        cfg.f_min = std::stod(v);
      else if (k == "--f-max")
        cfg.f_max = std::stod(v);
      else
        CASTOR_FAIL("unknown option ", k);
    }
    CASTOR_CHECK(!input.empty() && !out_path.empty(),
                 "usage: logmel_tool --input FILE.wav|FILE.f32 --out FILE[.npy] [--input-rate R] [--repeat N] "
                 "[--sample-rate R --n-fft N --win-length N --hop-length N --n-mels N --f-min F --f-max F]");
    CASTOR_CHECK(repeat >= 1, "--repeat must be >= 1");

    io::AudioClip clip;
    if (ends_with(input, ".wav")) {
      clip = io::read_wav(input);
    } else {
      clip.sample_rate = input_rate > 0 ? input_rate : cfg.sample_rate;
      clip.samples = read_raw_f32(input);
    }
    std::vector<float> samples = clip.samples;
    if (clip.sample_rate != cfg.sample_rate) samples = io::resample(clip.samples, clip.sample_rate, cfg.sample_rate);

    const io::LogMel mel(cfg);
    int64_t frames = 0;
    std::vector<float> spec;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t r = 0; r < repeat; ++r) spec = mel.compute(samples, &frames);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    write_output(out_path, spec, frames, cfg.n_mels);

    const double audio_s = static_cast<double>(samples.size()) / static_cast<double>(cfg.sample_rate);
    std::printf("input %s: %lld samples at %lld Hz; %lld samples at %lld Hz -> %lld frames x %lld mels\n",
                input.c_str(), static_cast<long long>(clip.samples.size()), static_cast<long long>(clip.sample_rate),
                static_cast<long long>(samples.size()), static_cast<long long>(cfg.sample_rate),
                static_cast<long long>(frames), static_cast<long long>(cfg.n_mels));
    if (repeat > 1) {
      std::printf("log_mel: %lld x %.3f s of audio in %.4f s: %.0f s of audio per s\n", static_cast<long long>(repeat),
                  audio_s, secs, audio_s * static_cast<double>(repeat) / secs);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "logmel_tool: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
