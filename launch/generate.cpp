// `castor generate`: sample a continuation from a checkpoint. The prompt is laid out as one
// sequence [image patches][audio positions][prompt tokens] (docs/generate.md), run once
// through the model (prefill) into a KV cache; each new token then runs alone against the
// cache (Transformer::decode). Sampling (temperature, top-k, top-p) draws from its own
// std::mt19937_64 stream, so a seed gives the same text on every platform.
#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/model.h"
#include "io/audio.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/tokenizer.h"
#include "launch/commands.h"
#include "launch/options.h"

namespace po = boost::program_options;

namespace castor::launch {
namespace {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
};

// A uniform double in [0, 1) from the top 53 bits of one draw.
double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

// The next token from V logits. Greedy picks the largest logit (lowest id on ties).
// Otherwise: z = logits / temperature; keep the top_k largest (ties to the lower id); keep
// the smallest prefix of those, by descending probability, whose mass reaches top_p; draw
// one in proportion to exp(z - max z) with one uniform draw.
int32_t sample_token(const float* logits, int64_t V, const SamplingOptions& s, std::mt19937_64& rng,
                     std::vector<int32_t>& order, std::vector<double>& weight) {
  if (s.temperature == 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  const float zmax = *std::max_element(logits, logits + V);
  const double inv_t = 1.0 / double(s.temperature);
  order.resize(size_t(V));
  std::iota(order.begin(), order.end(), 0);
  int64_t n = V;
  auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  const bool filter = (s.top_k > 0 && s.top_k < V) || s.top_p < 1.0f;
  if (filter) {
    if (s.top_k > 0 && s.top_k < V) {
      n = s.top_k;
      std::partial_sort(order.begin(), order.begin() + n, order.end(), before);
    } else {
      std::sort(order.begin(), order.end(), before);
    }
  }
  weight.resize(size_t(n));
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i)
    total += weight[size_t(i)] = std::exp((double(logits[order[size_t(i)]]) - zmax) * inv_t);
  if (s.top_p < 1.0f) {
    double mass = 0.0;
    int64_t keep = 0;
    while (keep < n && (keep == 0 || mass < double(s.top_p) * total)) mass += weight[size_t(keep++)];
    n = keep;
    total = mass;
  }
  const double target = uniform01(rng) * total;
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    acc += weight[size_t(i)];
    if (acc > target) return order[size_t(i)];
  }
  return order[size_t(n - 1)];
}

// The prompt: one row (B = 1) that grows by add(); view() is the ModelInput of the whole row.
struct Prompt : ModelInputData {
  int64_t image_positions = 0, audio_positions = 0, text_positions = 0;
  std::string image_note;  // e.g. "image 28x28 -> 7x7 patches"

  Prompt() { B = 1; }
  void add(int32_t id, Modality m, int32_t begin) {
    ids.push_back(id);
    modality.push_back(uint8_t(m));
    segment_begin.push_back(begin);
    T = int64_t(ids.size());
  }
};

// gray <-> RGB as io::fit_image converts (ITU-R 601 luma, rounded).
io::Image convert_channels(const io::Image& in, int64_t channels) {
  if (in.channels == channels) return in;
  io::Image out{in.height, in.width, channels, std::vector<uint8_t>(size_t(in.height * in.width * channels))};
  const int64_t n = in.height * in.width;
  const uint8_t* s = in.pixels.data();
  uint8_t* d = out.pixels.data();
  for (int64_t i = 0; i < n; ++i) {
    if (channels == 3)
      d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
    else
      d[i] = uint8_t((299 * s[3 * i] + 587 * s[3 * i + 1] + 114 * s[3 * i + 2] + 500) / 1000);
  }
  return out;
}

// Image positions: the PNG fitted to the model, cut into P x P patches in row-major grid
// order, values / 255 (as the loader does).
void add_image(Prompt& p, const ModelConfig& mc, const std::string& path, int64_t size, int32_t eot) {
  CASTOR_CHECK(mc.image_patch > 0, path, ": the model has no image adapter (its checkpoint has model.image_patch 0)");
  const int64_t P = mc.image_patch, G = mc.image_grid_size(), Ch = mc.image_channels;
  io::Image img = io::read_png(path);
  const int64_t H0 = img.height, W0 = img.width;
  if (size > 0) {
    CASTOR_CHECK(size % P == 0 && size / P <= G, "--image-size ", size,
                 " must be a multiple of the model's patch size ", P, " and at most ", P * G, " (image_grid ", G,
                 " patches)");
    img = io::fit_image(img, size, Ch);
  } else if (H0 % P == 0 && W0 % P == 0 && H0 / P <= G && W0 / P <= G) {
    img = convert_channels(img, Ch);
  } else {  // the largest square of whole patches the grid holds, at most the shorter side
    const int64_t s = std::clamp<int64_t>(std::min(H0, W0) / P * P, P, P * G);
    img = io::fit_image(img, s, Ch);
  }
  const int64_t H = img.height, W = img.width, gh = H / P, gw = W / P;
  const int32_t begin = int32_t(p.ids.size());
  p.patches.reserve(size_t(gh * gw * P * P * Ch));
  for (int64_t gy = 0; gy < gh; ++gy)
    for (int64_t gx = 0; gx < gw; ++gx) {
      for (int64_t py = 0; py < P; ++py) {
        const uint8_t* src = img.pixels.data() + ((gy * P + py) * W + gx * P) * Ch;
        for (int64_t j = 0; j < P * Ch; ++j) p.patches.push_back(float(src[j]) * (1.0f / 255.0f));
      }
      p.patch_pos.push_back(int32_t(p.ids.size()));
      p.patch_grid.push_back(int32_t(gy));
      p.patch_grid.push_back(int32_t(gx));
      p.add(eot, Modality::image, begin);
    }
  p.image_positions = gh * gw;
  p.image_note = "image " + std::to_string(H0) + "x" + std::to_string(W0) +
                 (H0 != H || W0 != W ? " resized to " + std::to_string(H) + "x" + std::to_string(W) : std::string()) +
                 " -> " + std::to_string(gh) + "x" + std::to_string(gw) + " patches";
}

// Audio positions: log-mel features (the default LogMelConfig with the model's n_mels) of
// the clip resampled to 16 kHz, audio_stack frames per position, zeros past the end.
void add_audio(Prompt& p, const ModelConfig& mc, const std::string& path, int32_t eot) {
  CASTOR_CHECK(mc.audio_stack > 0, path, ": the model has no audio adapter (its checkpoint has model.audio_stack 0)");
  const io::AudioClip clip = io::read_wav(path);
  io::LogMelConfig cfg;
  cfg.n_mels = mc.n_mels;
  const std::vector<float> samples = clip.sample_rate == cfg.sample_rate
                                         ? clip.samples
                                         : io::resample(clip.samples, clip.sample_rate, cfg.sample_rate);
  CASTOR_CHECK(!samples.empty(), path, ": no samples after resampling to ", cfg.sample_rate, " Hz");
  int64_t F = 0;
  const std::vector<float> mel = io::LogMel(cfg).compute(samples, &F);
  const int64_t K = mc.audio_stack, M = mc.n_mels, n = (F + K - 1) / K;
  p.frames.assign(size_t(n * K * M), 0.0f);
  std::copy(mel.begin(), mel.end(), p.frames.begin());
  const int32_t begin = int32_t(p.ids.size());
  for (int64_t k = 0; k < n; ++k) {
    p.frame_pos.push_back(int32_t(p.ids.size()));
    p.add(eot, Modality::audio, begin);
  }
  p.audio_positions = n;
}

using Clock = std::chrono::steady_clock;

}  // namespace

int generate_command(const std::vector<std::string>& args) {
  std::string checkpoint, prompt_text, image, audio, tokenizer = "gpt2", data_dir;
  int64_t image_size = 0, max_new = 64;
  SamplingOptions s;
  uint64_t seed = 0;
  bool stop_at_eot = true;
  int threads = 0;
  po::options_description desc(
      "castor generate: continue a prompt (text, optionally after an image and/or an audio clip) with a\n"
      "trained checkpoint. Prints the continuation on stdout; one summary line on stderr.\n"
      "Usage: castor generate --checkpoint FILE [--prompt TEXT] [--image F.png] [--audio F.wav] [options]");
  desc.add_options()("help,h", "print this help and exit")("checkpoint", po::value<std::string>(&checkpoint),
                                                           "castor checkpoint (.h5); the model config comes from it")(
      "prompt", po::value<std::string>(&prompt_text), "prompt text (default: empty)")(
      "image", po::value<std::string>(&image), "PNG placed before the text (needs a model with an image adapter)")(
      "image-size", po::value<int64_t>(&image_size)->default_value(0),
      "resize and centre-crop the image to S x S (a multiple of the patch size); 0: the image's own size if "
      "its sides are whole patches within the grid, else the largest square that fits")(
      "audio", po::value<std::string>(&audio), "WAV placed before the text (needs a model with an audio adapter)")(
      "tokenizer", po::value<std::string>(&tokenizer)->default_value(tokenizer),
      "gpt2 or byte (its vocabulary must be the checkpoint's)")(
      "data-dir", po::value<std::string>(&data_dir), "tokenizer files directory (default: the bundled data/)")(
      "max-new-tokens", po::value<int64_t>(&max_new)->default_value(max_new), "stop after this many new tokens")(
      "temperature", po::value<float>(&s.temperature)->default_value(s.temperature, "1"),
      "softmax temperature; 0 = greedy (argmax)")("top-k", po::value<int64_t>(&s.top_k)->default_value(0),
                                                  "sample among the K most likely tokens (0 = off)")(
      "top-p", po::value<float>(&s.top_p)->default_value(s.top_p, "1"),
      "nucleus sampling: the smallest set of tokens with probability >= P (1 = off)")(
      "seed", po::value<uint64_t>(&seed)->default_value(0), "sampling seed (same seed, same text)")(
      "stop-at-eot", po::value<bool>(&stop_at_eot)->default_value(true, "true")->implicit_value(true, "true"),
      "stop at the end-of-text token (false: keep sampling past it)")(
      "echo", "print the prompt text before the continuation")("threads", po::value<int>(&threads)->default_value(0),
                                                               "CPU threads (0 = all cores)");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  CASTOR_CHECK(!checkpoint.empty(), "--checkpoint is required (a castor checkpoint file)");
  CASTOR_CHECK(std::isfinite(s.temperature) && s.temperature >= 0.0f, "--temperature must be >= 0 (got ", s.temperature,
               ")");
  CASTOR_CHECK(s.top_p > 0.0f && s.top_p <= 1.0f, "--top-p must be in (0, 1] (got ", s.top_p, ")");
  CASTOR_CHECK(s.top_k >= 0, "--top-k must be >= 0 (got ", s.top_k, ")");
  CASTOR_CHECK(max_new >= 0, "--max-new-tokens must be >= 0 (got ", max_new, ")");
  CASTOR_CHECK(image_size >= 0, "--image-size must be >= 0 (got ", image_size, ")");
  CASTOR_CHECK(image_size == 0 || !image.empty(), "--image-size without --image");

  const ModelConfig mc = io::read_model_config(checkpoint);
  auto tok = io::make_tokenizer(tokenizer, data_dir.empty() ? io::default_data_dir() : data_dir);
  if (mc.vocab_size != tok->vocab_size()) {
    std::string hint;
    if (mc.vocab_size == 257) hint = " (try --tokenizer byte)";
    if (mc.vocab_size == 50257) hint = " (try --tokenizer gpt2)";
    CASTOR_FAIL(checkpoint, ": the model's vocabulary (", mc.vocab_size, ") differs from the ", tok->name(),
                " tokenizer's (", tok->vocab_size(), ")", hint);
  }
  const int32_t eot = tok->eot_id();

  Prompt prompt;
  if (!image.empty()) add_image(prompt, mc, image, image_size, eot);
  if (!audio.empty()) add_audio(prompt, mc, audio, eot);
  const std::vector<int32_t> text = tok->encode(prompt_text);
  const int32_t text_begin = int32_t(prompt.ids.size());
  for (int32_t id : text) prompt.add(id, Modality::text, text_begin);
  if (prompt.ids.empty()) prompt.add(eot, Modality::text, 0);  // unconditional: start after end-of-text
  prompt.text_positions = int64_t(prompt.ids.size()) - prompt.image_positions - prompt.audio_positions;
  const int64_t positions = int64_t(prompt.ids.size());
  CASTOR_CHECK(positions <= mc.max_seq_len, "the prompt takes ", positions, " positions (", prompt.image_positions,
               " image, ", prompt.audio_positions, " audio, ", prompt.text_positions,
               " text), more than the model's context of ", mc.max_seq_len, " (model.max_seq_len)");

  auto backend = make_cpu_backend(threads);
  ParamStore store;
  Transformer model(mc, store, *backend, 1, mc.max_seq_len);
  store.allocate(*backend);
  io::load_checkpoint(checkpoint, mc, store, nullptr, nullptr);

  if (vm.count("echo")) {
    std::fwrite(prompt_text.data(), 1, prompt_text.size(), stdout);
    std::fflush(stdout);
  }
  const auto t0 = Clock::now();
  KvCache cache;
  model.start_generation(cache);
  const int64_t V = mc.vocab_size;
  std::vector<float> logits(static_cast<size_t>(V));
  model.prefill(prompt.view(), cache, logits.data());
  const double prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();

  std::mt19937_64 rng(seed);
  std::vector<int32_t> order;
  std::vector<double> weight;
  int64_t produced = 0;
  std::string stopped = "max new tokens";
  const auto t1 = Clock::now();
  while (true) {
    if (produced == max_new) break;
    const int32_t id = sample_token(logits.data(), V, s, rng, order, weight);
    ++produced;
    if (id == eot && stop_at_eot) {
      stopped = "end of text";
      break;
    }
    const std::string piece = tok->decode(std::span<const int32_t>(&id, 1));
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (produced == max_new) break;
    if (cache.length == cache.capacity) {
      stopped = "context full (" + std::to_string(cache.capacity) + " positions, model.max_seq_len)";
      break;
    }
    model.decode(&id, 1, cache, logits.data());
  }
  const double gen_s = std::chrono::duration<double>(Clock::now() - t1).count();
  if (stopped == "end of text") --produced;  // the end-of-text token is not part of the text
  std::fputc('\n', stdout);
  std::fflush(stdout);
  std::string media;
  if (!prompt.image_note.empty()) media += ", " + prompt.image_note;
  if (prompt.audio_positions > 0) media += ", audio " + std::to_string(prompt.audio_positions) + " positions";
  std::fprintf(stderr,
               "castor generate: prompt %lld positions (%lld text%s), prefill %.1f ms; %lld new tokens in %.3f s "
               "(%.1f tokens/s); stopped: %s\n",
               static_cast<long long>(positions), static_cast<long long>(prompt.text_positions), media.c_str(),
               prefill_s * 1e3, static_cast<long long>(produced), gen_s, gen_s > 0 ? double(produced) / gen_s : 0.0,
               stopped.c_str());
  return 0;
}

}  // namespace castor::launch
