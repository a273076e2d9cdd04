// castor_bench_dense_s: times full training steps of the "dense-s" model on the cpu
// backend, built exactly as `castor train` builds it (launch/train.cpp): GPT-2 family,
// vocab 50257, d_model 384, 6 layers, 6 heads, max_seq_len 1024, micro-batch 4 x 256,
// fp32. Prints the median tokens/s and ms/step over the timed steps, MFU against the
// measured SGEMM peak, peak RSS and a per-phase breakdown. The last line,
// "RESULT key=value ...", is what bench/dense_s.sh and bench/moe_s.sh read. Not a test:
// no assertions. --moe builds "moe-s" instead: the same trunk with an MoE feed-forward in
// every layer (8 experts, top-2, expert hidden 2 x d_model: the active FLOPs of dense-s),
// and adds the MoE layers' per-phase times (router, plan, dispatch, experts, combine).
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/config.h"
#include "core/error.h"
#include "core/model.h"
#include "core/nn/moe.h"
#include "core/optimizer.h"
#include "core/param.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/lm_head_xent.h"
#include "launch/metrics.h"

namespace po = boost::program_options;
namespace kc = castor::kernels::cpu;

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kMiB = 1024.0 * 1024.0;

struct BenchOptions {
  int64_t steps = 20;  // timed steps
  int64_t warmup = 3;  // untimed steps first (page faults, thread pool start-up)
  int threads = 2;
  int64_t rss_every = 0;        // print RSS every K steps (0: never)
  std::string rss_at;           // comma-separated step numbers to print RSS at, e.g. 10,100,500,1000
  std::set<int64_t> rss_steps;  // rss_at parsed
  std::string family = "gpt2";
  bool kernels = false;    // also time the fused head and attention kernels on their own
  int peak_reps = 5;       // calls of measure_sgemm_peak; the best is the MFU reference
  double peak_gflops = 0;  // > 0: fixed MFU reference instead of the measurement
  uint64_t seed = 1337;
  bool moe = false;           // moe-s instead of dense-s
  double moe_capacity = 0.0;  // moe-s capacity factor (0: dropless)
  int64_t moe_experts = 8, moe_top_k = 2;
  bool digest = false;  // print a hash of the weights and gradients after the last step
};

// The dense-s benchmark shape.
constexpr int64_t kBatch = 4, kSeq = 256;

castor::ModelConfig dense_s_config(const std::string& family) {
  castor::ModelConfig mc;
  mc.family = castor::parse_family(family);
  mc.vocab_size = 50257;
  mc.d_model = 384;
  mc.n_layers = 6;
  mc.n_heads = 6;
  mc.max_seq_len = 1024;  // as GPT-2; the (1024, 384) position table is trained too
  return mc;
}

// moe-s: dense-s with an MoE feed-forward in every layer; with the default 8 experts and
// top-2, each expert's hidden size 2 x d_model (gpt2: half of the dense 4 x d_model) keeps
// the active FLOPs per token those of dense-s. In general F = dense F / k.
castor::ModelConfig moe_s_config(const BenchOptions& o) {
  castor::ModelConfig mc = dense_s_config(o.family);
  mc.moe_experts = o.moe_experts;
  mc.moe_top_k = o.moe_top_k;
  mc.moe_every = 1;
  mc.moe_d_ff = mc.ffn_dim() / o.moe_top_k;
  mc.moe_capacity = o.moe_capacity;
  mc.validate();
  return mc;
}

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Resident set size now (not the peak), from /proc/self/statm; -1 where unavailable.
int64_t current_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  if (!(f >> pages_total >> pages_resident)) return -1;
  return pages_resident * int64_t(sysconf(_SC_PAGESIZE));
}

std::set<int64_t> parse_step_list(const std::string& s) {
  std::set<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    int64_t v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    CASTOR_CHECK(used == item.size() && v > 0, "--rss-at: '", item, "' is not a positive step number");
    out.insert(v);
  }
  return out;
}

// Returns false when --help was printed.
bool parse_options(int argc, char** argv, BenchOptions& o) {
  po::options_description desc(
      "castor_bench_dense_s: training-step throughput of the dense-s model (batch 4 x 256, fp32)");
  auto add = desc.add_options();
  add("help,h", "print this help and exit");
  add("steps", po::value(&o.steps)->default_value(o.steps), "timed training steps");
  add("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed steps before the timed ones");
  add("threads", po::value(&o.threads)->default_value(o.threads), "OpenMP/OpenBLAS threads");
  add("rss-every", po::value(&o.rss_every)->default_value(o.rss_every),
      "print current and peak RSS every K steps (0: never)");
  add("rss-at", po::value(&o.rss_at)->default_value(o.rss_at),
      "comma-separated steps (counting warmup) to print RSS at, e.g. 10,100,500,1000");
  add("family", po::value(&o.family)->default_value(o.family), "gpt2 (the dense-s config) or llama (same sizes)");
  add("kernels", po::bool_switch(&o.kernels), "also time the fused LM head and attention kernels alone");
  add("peak-reps", po::value(&o.peak_reps)->default_value(o.peak_reps),
      "calls of measure_sgemm_peak (3 timed products each); the best is the MFU reference");
  add("peak-gflops", po::value(&o.peak_gflops)->default_value(o.peak_gflops),
      "fixed MFU reference in GFLOP/s (e.g. a quiet-machine SGEMM rate); 0: the measured SGEMM peak");
  add("seed", po::value(&o.seed)->default_value(o.seed), "parameter init and token seed");
  add("moe", po::bool_switch(&o.moe),
      "build moe-s instead of dense-s: MoE in every layer, 8 experts, top-2, expert hidden = dense hidden / top-k");
  add("moe-capacity", po::value(&o.moe_capacity)->default_value(o.moe_capacity),
      "moe-s capacity factor (0: dropless)");
  add("moe-experts", po::value(&o.moe_experts)->default_value(o.moe_experts), "moe-s experts");
  add("moe-top-k", po::value(&o.moe_top_k)->default_value(o.moe_top_k), "moe-s experts per token");
  add("digest", po::bool_switch(&o.digest),
      "print a hash of the weight and gradient arenas after the last step (bitwise reproducibility checks "
      "across thread counts and code changes)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return false;
  }
  po::notify(vm);
  CASTOR_CHECK(o.steps > 0, "--steps must be positive (got ", o.steps, ")");
  CASTOR_CHECK(o.warmup >= 0, "--warmup must be >= 0 (got ", o.warmup, ")");
  CASTOR_CHECK(o.threads > 0, "--threads must be positive (got ", o.threads, ")");
  CASTOR_CHECK(o.peak_reps > 0, "--peak-reps must be positive (got ", o.peak_reps, ")");
  CASTOR_CHECK(o.peak_gflops >= 0, "--peak-gflops must be >= 0 (got ", o.peak_gflops, ")");
  CASTOR_CHECK(o.rss_every >= 0, "--rss-every must be >= 0 (got ", o.rss_every, ")");
  o.rss_steps = parse_step_list(o.rss_at);
  castor::parse_family(o.family);  // throws on an unknown family before anything is built
  CASTOR_CHECK(o.moe_capacity >= 0, "--moe-capacity must be >= 0 (got ", o.moe_capacity, ")");
  CASTOR_CHECK(o.moe_experts > 0 && o.moe_top_k > 0 && o.moe_top_k <= o.moe_experts,
               "--moe-top-k must be in [1, --moe-experts]");
  return true;
}

// Median milliseconds of `reps` calls of fn after one untimed call.
template <typename Fn>
double time_ms(int reps, Fn&& fn) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    fn();
    t.push_back(ms_since(t0));
  }
  return median(t);
}

// The two kernels that dominate or are new: the fused head (3 GEMMs of N x C x V plus
// softmax) with the chunk size the model picks, and causal attention fwd/bwd.
// fwd_ms/bwd_ms: the step's phase medians, to split them into head and blocks.
void time_kernels(const castor::ModelConfig& mc, uint64_t seed, double fwd_ms, double bwd_ms) {
  const int64_t N = kBatch * kSeq, C = mc.d_model, V = mc.vocab_size;
  std::mt19937 rng{uint32_t(seed)};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> token(0, int32_t(V - 1));
  std::vector<float> x(size_t(N * C)), w(size_t(V * C)), dx(size_t(N * C)), dw(size_t(V * C), 0.0f);
  for (auto& v : x) v = normal(rng);
  for (auto& v : w) v = 0.02f * normal(rng);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (auto& t : targets) t = token(rng);
  const int64_t chunk = castor::Transformer::head_chunk_rows(N, V);  // the model's own choice
  std::vector<float> scratch(kc::lm_head_xent_scratch_floats(chunk, V));
  kc::XentResult r;
  const double head_train = time_ms(3, [&] {
    CASTOR_KERNEL_CHECK(kc::lm_head_xent(&r, x.data(), w.data(), targets.data(), N, C, V, 1.0f / float(N), dx.data(),
                                         dw.data(), scratch.data(), chunk));
  });
  const double head_eval = time_ms(3, [&] {
    CASTOR_KERNEL_CHECK(kc::lm_head_xent(&r, x.data(), w.data(), targets.data(), N, C, V, 0.0f, nullptr, nullptr,
                                         scratch.data(), chunk));
  });
  const double head_gflop = 3.0 * 2.0 * double(N) * double(C) * double(V) / 1e9;

  const kc::AttentionShape s{kBatch, kSeq, mc.n_heads, mc.kv_heads(), mc.head_dim()};
  const int64_t qkv_cols = (s.H + 2 * s.KVH) * s.D;
  std::vector<float> qkv(size_t(N * qkv_cols)), out(size_t(N * s.H * s.D)), dout(out.size()), dqkv(qkv.size());
  std::vector<float> lse(size_t(s.B * s.H * s.T));
  for (auto& v : qkv) v = normal(rng);
  for (auto& v : dout) v = normal(rng);
  const size_t attn_scratch_floats = kc::attention_scratch_floats(s, kc::num_threads());
  std::vector<float> attn_scratch(attn_scratch_floats);
  const double attn_fwd = time_ms(5, [&] {
    CASTOR_KERNEL_CHECK(
        kc::attention_forward(out.data(), lse.data(), qkv.data(), s, attn_scratch.data(), attn_scratch_floats));
  });
  const double attn_bwd = time_ms(5, [&] {
    CASTOR_KERNEL_CHECK(kc::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s,
                                               attn_scratch.data(), attn_scratch_floats));
  });

  std::printf("\nkernels alone (median, same shapes as one step):\n");
  std::printf("  lm_head_xent train (logits, dx, dW; chunk %lld rows)  %8.1f ms  (%.1f GFLOP/s)\n",
              static_cast<long long>(chunk), head_train, head_gflop / (head_train / 1e3));
  std::printf("  lm_head_xent eval  (logits + softmax only)          %8.1f ms\n", head_eval);
  std::printf("  attention forward, one layer (x%lld per step)         %8.2f ms\n", static_cast<long long>(mc.n_layers),
              attn_fwd);
  std::printf("  attention backward, one layer (x%lld per step)        %8.2f ms\n", static_cast<long long>(mc.n_layers),
              attn_bwd);
  std::printf("  => step forward minus head train (blocks + embeddings forward)  ~%.0f ms\n", fwd_ms - head_train);
  std::printf("  => step backward (blocks + embeddings backward; head grads were in forward)  %.0f ms\n", bwd_ms);
}

int run(const BenchOptions& o) {
  auto backend = castor::make_cpu_backend(o.threads);
  const castor::ModelConfig mc = o.moe ? moe_s_config(o) : dense_s_config(o.family);
  const char* config_name = o.moe ? "moe-s" : "dense-s";
  const castor::OptimConfig oc;  // defaults of `castor train`
  const int64_t B = kBatch, T = kSeq;

  castor::ParamStore store;
  castor::Transformer model(mc, store, *backend, B, T);
  store.allocate(*backend);
  store.initialize(o.seed);
  castor::AdamW optim(oc, store, *backend);

  // Best of several measurements: on a shared machine a single one is easily disturbed.
  double measured_peak = 0.0;
  std::string peaks;
  for (int i = 0; i < o.peak_reps; ++i) {
    const double p = castor::launch::measure_sgemm_peak();
    measured_peak = std::max(measured_peak, p);
    char item[32];
    std::snprintf(item, sizeof(item), i ? " %.1f" : "%.1f", p / 1e9);
    peaks += item;
  }
  const double peak_flops = o.peak_gflops > 0 ? o.peak_gflops * 1e9 : measured_peak;
  const double flops_per_token = castor::launch::model_flops_per_token(mc, T);
  // Active parameters: all but the experts a token does not use (non_embedding_params()
  // counts only the top-k experts; the embeddings are the same in both).
  const int64_t params_total = int64_t(store.numel());
  int64_t params_active = params_total;
  if (mc.moe_experts > 0) {
    const int64_t C = mc.d_model, F = mc.expert_ffn_dim();
    const int64_t expert = mc.family == castor::Family::kGpt2 ? 2 * C * F + F + C : 3 * C * F;
    params_active -= mc.moe_layers() * (mc.moe_experts - mc.moe_top_k) * expert;
  }
  std::printf(
      "castor %s: %s, %lld layers, d_model %lld, %lld heads, vocab %lld, max_seq_len %lld, "
      "%.2fM params (%.2fM active, %.2fM active non-embedding)\n",
      config_name, castor::family_name(mc.family).c_str(), static_cast<long long>(mc.n_layers),
      static_cast<long long>(mc.d_model), static_cast<long long>(mc.n_heads), static_cast<long long>(mc.vocab_size),
      static_cast<long long>(mc.max_seq_len), double(params_total) / 1e6, double(params_active) / 1e6,
      double(mc.non_embedding_params()) / 1e6);
  if (mc.moe_experts > 0) {
    char capacity[32] = "0 (dropless)";
    if (mc.moe_capacity > 0) std::snprintf(capacity, sizeof(capacity), "factor %g", mc.moe_capacity);
    std::printf("MoE in %lld of %lld layers: %lld experts, top-%lld, expert hidden %lld, capacity %s\n",
                static_cast<long long>(mc.moe_layers()), static_cast<long long>(mc.n_layers),
                static_cast<long long>(mc.moe_experts), static_cast<long long>(mc.moe_top_k),
                static_cast<long long>(mc.expert_ffn_dim()), capacity);
  }
  std::printf("batch %lld x %lld, fp32, threads %d; model FLOPs %.1f MFLOP/token, %.1f GFLOP/step\n",
              static_cast<long long>(B), static_cast<long long>(T), kc::num_threads(), flops_per_token / 1e6,
              flops_per_token * double(B * T) / 1e9);
  std::printf(
      "SGEMM peak (768^3, launch::measure_sgemm_peak) best of %d: %.1f GFLOP/s (each: %s); "
      "MFU reference %.1f GFLOP/s = %s\n",
      o.peak_reps, measured_peak / 1e9, peaks.c_str(), peak_flops / 1e9,
      o.peak_gflops > 0 ? "--peak-gflops" : "the measured SGEMM peak");
  std::printf("steps: %lld warmup + %lld timed\n", static_cast<long long>(o.warmup), static_cast<long long>(o.steps));
  std::fflush(stdout);

  // A fixed pool of random token windows of T + 1: ids = window[0, T), targets = [1, T].
  constexpr int kPool = 8;
  std::mt19937 rng{uint32_t(o.seed)};
  std::uniform_int_distribution<int32_t> token(0, int32_t(mc.vocab_size - 1));
  std::vector<std::vector<int32_t>> pool_ids(kPool), pool_targets(kPool);
  for (int p = 0; p < kPool; ++p) {
    pool_ids[p].resize(size_t(B * T));
    pool_targets[p].resize(size_t(B * T));
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int32_t> window(size_t(T + 1));
      for (auto& t : window) t = token(rng);
      std::copy(window.begin(), window.end() - 1, pool_ids[p].begin() + b * T);
      std::copy(window.begin() + 1, window.end(), pool_targets[p].begin() + b * T);
    }
  }

  const float grad_scale = 1.0f / float(B * T);
  const int64_t total = o.warmup + o.steps;
  std::vector<double> t_zero, t_fwd, t_bwd, t_opt, t_step;
  // MoE phases per step, summed over the MoE layers: forward then backward, in MoePhase order.
  enum MoePhase { kRoute, kPlan, kDispatch, kExperts, kCombine, kMoePhases };
  std::vector<double> t_moe[2][kMoePhases], t_moe_total[2];
  int64_t max_load = 0, min_load = INT64_MAX, dropped = 0, assignments = 0;
  double first_loss = std::nan(""), last_loss = std::nan("");
  for (int64_t step = 0; step < total; ++step) {
    const auto& ids = pool_ids[size_t(step % kPool)];
    const auto& targets = pool_targets[size_t(step % kPool)];
    const auto t0 = Clock::now();
    store.zero_grads();
    const auto t1 = Clock::now();
    const auto r = model.forward(ids.data(), targets.data(), B, T, &grad_scale);
    const auto t2 = Clock::now();
    model.backward();
    const auto t3 = Clock::now();
    const double norm = optim.grad_norm();
    optim.step(castor::learning_rate(oc, step, total), norm);
    const auto t4 = Clock::now();

    const double loss = r.loss_sum / double(r.count);
    CASTOR_CHECK(std::isfinite(loss), "loss is not finite at step ", step + 1, " (", loss, ")");
    if (step == 0) first_loss = loss;
    last_loss = loss;
    if (step >= o.warmup) {
      auto ms = [](Clock::time_point a, Clock::time_point b) {
        return std::chrono::duration<double, std::milli>(b - a).count();
      };
      t_zero.push_back(ms(t0, t1));
      t_fwd.push_back(ms(t1, t2));
      t_bwd.push_back(ms(t2, t3));
      t_opt.push_back(ms(t3, t4));
      t_step.push_back(ms(t0, t4));
      double sum[2][kMoePhases] = {}, total_sum[2] = {};
      for (const castor::nn::MoeStats* s : model.moe_stats()) {
        const castor::nn::MoeStats::Times* t[2] = {&s->fwd_ms, &s->bwd_ms};
        for (int d = 0; d < 2; ++d) {
          sum[d][kRoute] += t[d]->route;
          sum[d][kPlan] += t[d]->plan;
          sum[d][kDispatch] += t[d]->dispatch;
          sum[d][kExperts] += t[d]->experts;
          sum[d][kCombine] += t[d]->combine;
          total_sum[d] += t[d]->total();
        }
        max_load = std::max(max_load, s->max_load);
        min_load = std::min(min_load, s->min_load);
        dropped += s->dropped;
        assignments += s->assignments;
      }
      for (int d = 0; d < 2; ++d) {
        for (int p = 0; p < kMoePhases; ++p) t_moe[d][p].push_back(sum[d][p]);
        t_moe_total[d].push_back(total_sum[d]);
      }
    }
    const int64_t done = step + 1;
    if ((o.rss_every > 0 && done % o.rss_every == 0) || o.rss_steps.count(done)) {
      std::printf("step %6lld | loss %.4f | %.0f ms | RSS %.1f MiB | peak RSS %.1f MiB | backend allocated %.1f MiB\n",
                  static_cast<long long>(done), loss, ms_since(t0), double(current_rss_bytes()) / kMiB,
                  double(castor::launch::peak_rss_bytes()) / kMiB, double(backend->allocated_bytes()) / kMiB);
      std::fflush(stdout);
    }
  }

  const double step_ms = median(t_step);
  const double tokens_per_s = double(B * T) / (step_ms / 1e3);
  const double mfu = tokens_per_s * flops_per_token / peak_flops;
  const double peak_rss_mib = double(castor::launch::peak_rss_bytes()) / kMiB;
  const double zero_ms = median(t_zero), fwd_ms = median(t_fwd), bwd_ms = median(t_bwd), opt_ms = median(t_opt);
  const auto [min_it, max_it] = std::minmax_element(t_step.begin(), t_step.end());

  std::printf("loss: step 1 %.4f, step %lld %.4f (random tokens; ln V = %.4f)\n", first_loss,
              static_cast<long long>(total), last_loss, std::log(double(mc.vocab_size)));
  std::printf("\nphase (median ms over %lld steps)         ms   share\n", static_cast<long long>(o.steps));
  auto row = [&](const char* name, double ms) {
    std::printf("  %-34s %8.1f  %5.1f%%\n", name, ms, 100.0 * ms / step_ms);
  };
  row("zero_grads", zero_ms);
  row("forward (blocks + fused head/xent)", fwd_ms);
  row("backward (blocks + embeddings)", bwd_ms);
  row("optimizer (grad_norm + AdamW)", opt_ms);
  row("step (end to end)", step_ms);
  std::printf("  step min / max: %.1f / %.1f ms\n", *min_it, *max_it);
  std::printf(
      "\ntokens/s %.1f (best step %.1f) | ms/step %.1f | MFU %.1f%% | achieved %.1f GFLOP/s | peak RSS %.1f MiB "
      "(backend peak %.1f MiB)\n",
      tokens_per_s, double(B * T) / (*min_it / 1e3), step_ms, 100.0 * mfu, tokens_per_s * flops_per_token / 1e9,
      peak_rss_mib, double(backend->peak_bytes()) / kMiB);
  std::fflush(stdout);

  std::string moe_result;
  if (mc.moe_experts > 0) {
    static const char* names[kMoePhases] = {"route", "plan", "dispatch", "experts", "combine"};
    static const char* what[kMoePhases] = {
        "router GEMM, softmax/top-k, losses / their backward", "dispatch plan (counting sort)",
        "gather rows to experts / scatter-add back", "expert feed-forwards (GEMMs, bias, GELU)",
        "gated combine / its backward"};
    std::printf("\nMoE layers (median ms per step, summed over %lld layers)   forward  backward  share of step\n",
                static_cast<long long>(mc.moe_layers()));
    double routing = 0.0;
    for (int p = 0; p < kMoePhases; ++p) {
      const double f = median(t_moe[0][p]), b = median(t_moe[1][p]);
      if (p != kExperts) routing += f + b;
      std::printf("  %-8s %-52s %8.1f %8.1f  %5.1f%%\n", names[p], what[p], f, b, 100.0 * (f + b) / step_ms);
      char item[64];
      std::snprintf(item, sizeof(item), " moe_%s_fwd_ms=%.2f moe_%s_bwd_ms=%.2f", names[p], f, names[p], b);
      moe_result += item;
    }
    const double tf = median(t_moe_total[0]), tb = median(t_moe_total[1]);
    std::printf("  %-61s %8.1f %8.1f  %5.1f%%\n", "MoE layers in all", tf, tb, 100.0 * (tf + tb) / step_ms);
    std::printf("  %-61s %8.1f %8s  %5.1f%%\n", "routing overhead (all but experts), fwd + bwd", routing, "",
                100.0 * routing / step_ms);
    std::printf("  expert load (kept assignments per expert and layer, over the timed steps): min %lld, max %lld "
                "(uniform %lld); dropped %lld of %lld\n",
                static_cast<long long>(min_load), static_cast<long long>(max_load),
                static_cast<long long>(B * T * mc.moe_top_k / mc.moe_experts), static_cast<long long>(dropped),
                static_cast<long long>(assignments));
    char item[160];
    std::snprintf(item, sizeof(item), " moe_fwd_ms=%.2f moe_bwd_ms=%.2f moe_routing_ms=%.2f moe_dropped_share=%.4f", tf,
                  tb, routing, assignments > 0 ? double(dropped) / double(assignments) : 0.0);
    moe_result += item;
  }

  if (o.digest) {
    // FNV-1a over the bytes of both arenas: equal digests = bitwise-equal training.
    auto fnv = [](const float* p, size_t n) {
      uint64_t h = 1469598103934665603ull;
      const auto* b = reinterpret_cast<const unsigned char*>(p);
      for (size_t i = 0; i < n * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
      return h;
    };
    std::printf("DIGEST config=%s steps=%lld threads=%d weights=%016llx grads=%016llx last_loss=%.9g\n", config_name,
                static_cast<long long>(total), kc::num_threads(),
                static_cast<unsigned long long>(fnv(store.weights(), store.numel())),
                static_cast<unsigned long long>(fnv(store.grads(), store.numel())), last_loss);
  }

  if (o.kernels) time_kernels(mc, o.seed, fwd_ms, bwd_ms);

  std::printf(
      "RESULT impl=castor tokens_per_s=%.1f ms_per_step=%.2f best_ms_per_step=%.2f mfu=%.4f peak_rss_mib=%.1f "
      "sgemm_gflops=%.2f ref_gflops=%.2f zero_ms=%.2f fwd_ms=%.2f bwd_ms=%.2f opt_ms=%.2f config=%s "
      "params_total=%lld params_active=%lld%s\n",
      tokens_per_s, step_ms, *min_it, mfu, peak_rss_mib, measured_peak / 1e9, peak_flops / 1e9, zero_ms, fwd_ms, bwd_ms,
      opt_ms, config_name, static_cast<long long>(params_total), static_cast<long long>(params_active),
      moe_result.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    BenchOptions o;
    if (!parse_options(argc, argv, o)) return 0;
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "castor_bench_dense_s: error: %s\n", e.what());
    return 1;
  }
}
