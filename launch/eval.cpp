// `castor eval`: a checkpoint on held-out shards. Windows of the position stream are read
// in order (as validation does); each micro-batch gives the loss terms of docs/model.md,
// the next-token perplexity over every text target, and, for multimodal data, the
// contrastive embeddings of every (media, caption) pair, ranked at the end against all
// distinct captions (retrieval top-1). Output: a table, or one JSON object (--json).
#include <algorithm>
#include <array>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/model.h"
#include "io/checkpoint.h"
#include "io/loader.h"
#include "launch/commands.h"
#include "launch/options.h"

namespace po = boost::program_options;

namespace castor::launch {
namespace {

// Fills `b` with windows [first, first + rows) in stream order (sample = window index).
void read_windows(const io::Loader& data, int64_t first, int64_t rows, int64_t T, io::Batch& b) {
  b.B = rows;
  b.T = T;
  const size_t n = size_t(rows * T);
  b.ids.resize(n);
  b.targets.resize(n);
  b.modality.resize(n);
  b.position.resize(n);
  b.doc.resize(n);
  b.segment_begin.resize(n);
  b.align.resize(n);
  b.sample.resize(size_t(rows));
  b.patch_dim = b.frame_dim = 0;
  b.patches.clear();
  b.patch_pos.clear();
  b.patch_grid.clear();
  b.frames.clear();
  b.frame_pos.clear();
  b.pairs.clear();
  for (int64_t r = 0; r < rows; ++r) {
    data.read_window(first + r, r, b);
    b.sample[size_t(r)] = first + r;
  }
}

// Media -> text retrieval over every pair of one media kind: each media embedding ranks
// every distinct text (token sequence); its own text must come first.
struct Retrieval {
  int64_t C = 0;
  std::vector<float> media;        // (items, C) L2-normalised
  std::vector<int32_t> item_text;  // distinct text of each item
  std::map<std::vector<int32_t>, int32_t> text_id;
  std::vector<std::vector<double>> text_sum;  // per distinct text: sum of its normalised embeddings

  static void normalise(const float* x, int64_t C, std::vector<double>& out) {
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) ss += double(x[c]) * double(x[c]);
    const double inv = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
    out.resize(size_t(C));
    for (int64_t c = 0; c < C; ++c) out[size_t(c)] = double(x[c]) * inv;
  }
  void add(const float* m, const float* t, std::vector<int32_t> tokens) {
    std::vector<double> u;
    normalise(m, C, u);
    for (double x : u) media.push_back(float(x));
    auto [it, inserted] = text_id.emplace(std::move(tokens), int32_t(text_sum.size()));
    if (inserted) text_sum.emplace_back(size_t(C), 0.0);
    item_text.push_back(it->second);
    normalise(t, C, u);
    std::vector<double>& sum = text_sum[size_t(it->second)];
    for (int64_t c = 0; c < C; ++c) sum[size_t(c)] += u[size_t(c)];
  }
  int64_t items() const { return int64_t(item_text.size()); }
  int64_t distinct() const { return int64_t(text_sum.size()); }
  // Items whose own text scores highest (cosine similarity; ties go to the lower text id).
  int64_t correct() const {
    const int64_t K = distinct();
    std::vector<double> texts(size_t(K * C));
    std::vector<double> u;
    for (int64_t k = 0; k < K; ++k) {
      std::vector<float> f(text_sum[size_t(k)].begin(), text_sum[size_t(k)].end());
      normalise(f.data(), C, u);
      std::copy(u.begin(), u.end(), texts.begin() + k * C);
    }
    int64_t right = 0;
    for (int64_t i = 0; i < items(); ++i) {
      int64_t best = 0;
      double best_score = -INFINITY;
      for (int64_t k = 0; k < K; ++k) {
        double sc = 0.0;
        for (int64_t c = 0; c < C; ++c) sc += double(media[size_t(i * C + c)]) * texts[size_t(k * C + c)];
        if (sc > best_score) {
          best_score = sc;
          best = k;
        }
      }
      right += best == item_text[size_t(i)];
    }
    return right;
  }
};

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

int eval_command(const std::vector<std::string>& args) {
  std::string checkpoint, data_path;
  int64_t seq_len = 0, batch = 4, batches = 0;
  int threads = 0;
  po::options_description desc(
      "castor eval: evaluate a checkpoint on corpus shards: perplexity, every loss term, and media -> text\n"
      "retrieval for image/caption and audio/transcript pairs.\n"
      "Usage: castor eval --checkpoint FILE --data SHARDS [options]");
  desc.add_options()("help,h", "print this help and exit")("checkpoint", po::value<std::string>(&checkpoint),
                                                           "castor checkpoint (.h5); the model config comes from it")(
      "data", po::value<std::string>(&data_path), "a shard file or a directory of *.h5 shards")(
      "seq-len", po::value<int64_t>(&seq_len)->default_value(0), "positions per window (0: min(256, max_seq_len))")(
      "batch", po::value<int64_t>(&batch)->default_value(batch), "windows per micro-batch")(
      "batches", po::value<int64_t>(&batches)->default_value(0),
      "evaluate the first N micro-batches (0: every window once, in order)")(
      "tokenizer-check", "require the data's vocabulary to be exactly the model's (same tokenizer)")(
      "json", "print one JSON object instead of the table")("threads", po::value<int>(&threads)->default_value(0),
                                                            "CPU threads (0 = all cores)");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm)) return 0;
  CASTOR_CHECK(!checkpoint.empty(), "--checkpoint is required (a castor checkpoint file)");
  CASTOR_CHECK(!data_path.empty(), "--data is required (a shard file or a directory of shards)");
  CASTOR_CHECK(batch > 0, "--batch must be positive (got ", batch, ")");
  CASTOR_CHECK(batches >= 0, "--batches must be >= 0 (got ", batches, ")");
  CASTOR_CHECK(seq_len >= 0, "--seq-len must be >= 0 (got ", seq_len, ")");

  const ModelConfig mc = io::read_model_config(checkpoint);
  const int64_t T = seq_len > 0 ? seq_len : std::min<int64_t>(256, mc.max_seq_len);
  CASTOR_CHECK(T <= mc.max_seq_len, "--seq-len ", T, " exceeds the model's context of ", mc.max_seq_len,
               " (model.max_seq_len)");
  io::LoaderOptions lo;
  lo.seq_len = T;
  lo.batch_size = batch;
  lo.shuffle = false;
  lo.prefetch = 0;
  lo.image_patch = mc.image_patch;  // 0: the loader refuses shards with images
  lo.audio_stack = mc.audio_stack;
  const io::Loader data(data_path, lo);
  CASTOR_CHECK(data.vocab_size() <= mc.vocab_size, data_path, ": the data's vocabulary (", data.vocab_size(),
               ", tokenizer ", data.tokenizer(), ") exceeds the model's (", mc.vocab_size, ")");
  CASTOR_CHECK(!vm.count("tokenizer-check") || data.vocab_size() == mc.vocab_size, data_path,
               ": the data's vocabulary (", data.vocab_size(), ", tokenizer ", data.tokenizer(),
               ") differs from the model's (", mc.vocab_size, ")");
  if (data.num_images() > 0) {
    CASTOR_CHECK(data.image_channels() == mc.image_channels, data_path, ": images have ", data.image_channels(),
                 " channels but the model takes ", mc.image_channels);
    CASTOR_CHECK(data.max_image_grid() <= mc.image_grid_size(), data_path, ": images span up to ",
                 data.max_image_grid(), " patches per side, more than the model's image_grid (", mc.image_grid_size(),
                 ")");
  }
  if (data.num_audio() > 0)
    CASTOR_CHECK(data.n_mels() == mc.n_mels, data_path, ": audio has ", data.n_mels(),
                 " log-mel bands but the model takes ", mc.n_mels);

  const int64_t W = data.windows_per_epoch();
  const int64_t windows = batches > 0 ? std::min(W, batches * batch) : W;

  auto backend = make_cpu_backend(threads);
  ParamStore store;
  Transformer model(mc, store, *backend, batch, T);
  store.allocate(*backend);
  io::load_checkpoint(checkpoint, mc, store, nullptr, nullptr);

  // Loss terms: lm, align, contrastive and the router terms from an unmasked pass (the
  // model sees every input, as in use); reconstruction from a pass with the training masks
  // (default mask_ratio, seed 0). Weights 1, distillation off.
  LossConfig plain;
  plain.lm = plain.align = plain.contrastive = plain.balance = plain.router_z = 1.0f;
  plain.reconstruction = plain.distill = 0.0f;
  LossConfig recon;
  recon.lm = recon.align = recon.contrastive = recon.balance = recon.router_z = recon.distill = 0.0f;
  recon.reconstruction = 1.0f;

  std::array<double, kLossTerms> term_sum{};
  std::array<int64_t, kLossTerms> term_batches{};
  double nll_sum = 0.0;
  int64_t targets = 0, micro = 0;
  Retrieval ret[2];  // image, audio
  ret[0].C = ret[1].C = mc.d_model;
  std::vector<float> media_emb, text_emb;
  io::Batch b;
  for (int64_t first = 0; first < windows; first += batch) {
    read_windows(data, first, std::min(batch, windows - first), T, b);
    const ModelInput in = b.view();
    auto record = [&](const LossValues& v, LossTerm t) {
      if (v.count(t) == 0) return;
      term_sum[size_t(t)] += v[t];
      term_batches[size_t(t)] += 1;
    };
    if (mc.multimodal() && in.n_patches + in.n_frames > 0) {
      const LossValues r = model.forward(in, recon, nullptr, 0);
      record(r, LossTerm::reconstruction);
    }
    const LossValues v = model.forward(in, plain, nullptr, 0);
    for (LossTerm t : {LossTerm::lm, LossTerm::align, LossTerm::contrastive, LossTerm::balance, LossTerm::router_z})
      record(v, t);
    nll_sum += v[LossTerm::lm] * double(v.count(LossTerm::lm)) + v[LossTerm::align] * double(v.count(LossTerm::align));
    targets += v.count(LossTerm::lm) + v.count(LossTerm::align);
    ++micro;
    if (mc.multimodal() && !in.pairs.empty()) {
      model.last_pair_embeddings(media_emb, text_emb);
      for (size_t i = 0; i < in.pairs.size(); ++i) {
        const MediaPair& p = in.pairs[i];
        const int32_t* ids = b.ids.data() + p.row * T;
        ret[p.media == Modality::image ? 0 : 1].add(media_emb.data() + i * size_t(mc.d_model),
                                                    text_emb.data() + i * size_t(mc.d_model),
                                                    std::vector<int32_t>(ids + p.text_begin, ids + p.text_end));
      }
    }
  }

  const double mean_nll = targets > 0 ? nll_sum / double(targets) : NAN;
  const double ppl = std::exp(mean_nll);
  const char* kinds[2] = {"image", "audio"};
  const char* texts[2] = {"caption", "transcript"};
  int64_t correct[2] = {0, 0};
  for (int k = 0; k < 2; ++k) correct[k] = ret[k].items() > 0 ? ret[k].correct() : 0;
  auto term_mean = [&](int t) { return term_sum[size_t(t)] / double(term_batches[size_t(t)]); };

  if (vm.count("json")) {
    std::string j = "{\"checkpoint\": " + json_string(checkpoint) + ", \"data\": " + json_string(data_path) +
                    ", \"seq_len\": " + std::to_string(T) + ", \"batch\": " + std::to_string(batch) +
                    ", \"batches\": " + std::to_string(micro) + ", \"windows\": " + std::to_string(windows) +
                    ", \"windows_total\": " + std::to_string(W) + ", \"text_targets\": " + std::to_string(targets) +
                    ", \"mean_nll\": " + json_number(mean_nll) + ", \"perplexity\": " + json_number(ppl) +
                    ", \"losses\": {";
    bool first = true;
    for (int t = 0; t < kLossTerms; ++t) {
      if (term_batches[size_t(t)] == 0) continue;
      j += std::string(first ? "" : ", ") + "\"" + loss_term_name(LossTerm(t)) + "\": " + json_number(term_mean(t));
      first = false;
    }
    j += "}, \"loss_batches\": {";
    first = true;
    for (int t = 0; t < kLossTerms; ++t) {
      if (term_batches[size_t(t)] == 0) continue;
      j += std::string(first ? "" : ", ") + "\"" + loss_term_name(LossTerm(t)) +
           "\": " + std::to_string(term_batches[size_t(t)]);
      first = false;
    }
    j += "}, \"retrieval\": {";
    first = true;
    for (int k = 0; k < 2; ++k) {
      if (ret[k].items() == 0) continue;
      const Retrieval& r = ret[k];
      j += std::string(first ? "" : ", ") + "\"" + kinds[k] +
           "\": {\"top1\": " + json_number(double(correct[k]) / double(r.items())) +
           ", \"correct\": " + std::to_string(correct[k]) + ", \"items\": " + std::to_string(r.items()) +
           ", \"distinct\": " + std::to_string(r.distinct()) +
           ", \"chance\": " + json_number(1.0 / double(r.distinct())) + "}";
      first = false;
    }
    j += "}}\n";
    std::fwrite(j.data(), 1, j.size(), stdout);
    return 0;
  }
  std::printf("checkpoint  %s (%s, %lld layers, d_model %lld, vocab %lld)\n", checkpoint.c_str(),
              family_name(mc.family).c_str(), static_cast<long long>(mc.n_layers), static_cast<long long>(mc.d_model),
              static_cast<long long>(mc.vocab_size));
  std::printf("data        %s: %lld of %lld windows of %lld positions, %lld micro-batches of up to %lld\n",
              data_path.c_str(), static_cast<long long>(windows), static_cast<long long>(W), static_cast<long long>(T),
              static_cast<long long>(micro), static_cast<long long>(batch));
  std::printf("perplexity  %.4f  (mean cross-entropy %.6f nats over %lld text targets)\n", ppl, mean_nll,
              static_cast<long long>(targets));
  for (int t = 0; t < kLossTerms; ++t) {
    if (term_batches[size_t(t)] == 0) continue;
    std::printf("loss        %-15s %.6f  (mean over %lld micro-batches)\n", loss_term_name(LossTerm(t)), term_mean(t),
                static_cast<long long>(term_batches[size_t(t)]));
  }
  for (int k = 0; k < 2; ++k) {
    if (ret[k].items() == 0) continue;
    const Retrieval& r = ret[k];
    std::printf("retrieval   %s -> %s: top-1 %.4f (%lld of %lld %s, %lld distinct %ss, chance %.4f)\n", kinds[k],
                texts[k], double(correct[k]) / double(r.items()), static_cast<long long>(correct[k]),
                static_cast<long long>(r.items()), k == 0 ? "images" : "clips", static_cast<long long>(r.distinct()),
                texts[k], 1.0 / double(r.distinct()));
  }
  return 0;
}

}  // namespace castor::launch
