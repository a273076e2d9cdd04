// castor_bench_model_parallel: training steps of dense-s / moe-s (or a smaller config) under
// `mpirun -np N` in a tp / sp / ep layout, built as `castor train` builds it. Prints, per rank,
// the bytes and calls each group's communicator counted per step (CommStats, reset after the
// warm-up) next to an analytic formula from the config and the batch (bench/README.md, "Model
// parallelism"), and a step-time breakdown: step, wait per group and operation, compute. The
// last line, "RESULT key=value ...", is what bench/model_parallel.sh reads. Not a test.
#include <mpi.h>

#include <algorithm>
#include <array>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/config.h"
#include "core/error.h"
#include "core/model.h"
#include "core/nn/layer_builder.h"
#include "core/optimizer.h"
#include "core/param.h"
#include "kernels/cpu/gemm.h"
#include "launch/loss_log.h"
#include "parallel/data_parallel.h"
#include "parallel/mesh.h"
#include "parallel/mpi_comm.h"
#include "parallel/process_groups.h"
#include "parallel/tensor_parallel.h"

namespace po = boost::program_options;
using castor::CommOp;
using castor::CommStats;

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int64_t steps = 3, warmup = 2;
  int threads = 1;
  std::string model = "moe-s";  // dense-s | moe-s
  std::string family = "gpt2";
  int tp = 1, ep = 1, zero = 0;
  bool sp = false;
  double bucket_mb = 25.0;
  int64_t batch = 4, seq_len = 256;
  // Overrides of the preset (0: keep it); vocab is padded to a multiple of 64 x tp when tp does not divide it.
  int64_t layers = 0, d_model = 0, heads = 0, kv_heads = 0, vocab = 0, max_seq_len = 0;
  int64_t experts = 8, top_k = 2, moe_every = 1;
  double capacity = 0.0;
  uint64_t seed = 1337;
};

bool parse_options(int argc, char** argv, Options& o, bool lead) {
  po::options_description desc(
      "castor_bench_model_parallel: training steps under a tp/sp/ep layout (mpirun -np N); communication volume "
      "per group and operation against an analytic formula, and a step-time breakdown");
  auto add = desc.add_options();
  add("help,h", "print this help and exit");
  add("steps", po::value(&o.steps)->default_value(o.steps), "timed steps (CommStats counted over these)");
  add("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed steps first");
  add("threads", po::value(&o.threads)->default_value(o.threads), "OpenMP/OpenBLAS threads per rank");
  add("model", po::value(&o.model)->default_value(o.model), "preset: dense-s or moe-s (bench/README.md)");
  add("family", po::value(&o.family)->default_value(o.family), "gpt2 or llama (same sizes)");
  add("tp", po::value(&o.tp)->default_value(o.tp), "tensor-parallel degree");
  add("ep", po::value(&o.ep)->default_value(o.ep), "expert-parallel degree (divides dp = ranks / tp)");
  add("sp", po::bool_switch(&o.sp), "sequence parallelism (with tp > 1)");
  add("zero", po::value(&o.zero)->default_value(o.zero), "ZeRO stage 0, 1 or 2 (as --parallel.zero)");
  add("bucket-mb", po::value(&o.bucket_mb)->default_value(o.bucket_mb), "gradient bucket size in MB (1e6 bytes)");
  add("batch", po::value(&o.batch)->default_value(o.batch), "micro-batch rows per dp rank");
  add("seq-len", po::value(&o.seq_len)->default_value(o.seq_len), "sequence length");
  add("layers", po::value(&o.layers)->default_value(o.layers), "override: layers (0: preset)");
  add("d-model", po::value(&o.d_model)->default_value(o.d_model), "override: d_model (0: preset)");
  add("heads", po::value(&o.heads)->default_value(o.heads), "override: attention heads (0: preset)");
  add("kv-heads", po::value(&o.kv_heads)->default_value(o.kv_heads), "override: key/value heads (0: = heads)");
  add("vocab", po::value(&o.vocab)->default_value(o.vocab), "override: vocabulary (0: preset, 50257)");
  add("max-seq-len", po::value(&o.max_seq_len)->default_value(o.max_seq_len), "override: max_seq_len (0: 1024)");
  add("experts", po::value(&o.experts)->default_value(o.experts), "moe-s: experts");
  add("top-k", po::value(&o.top_k)->default_value(o.top_k), "moe-s: experts per token");
  add("moe-every", po::value(&o.moe_every)->default_value(o.moe_every), "moe-s: every k-th layer is MoE");
  add("capacity", po::value(&o.capacity)->default_value(o.capacity), "moe-s: capacity factor (0: dropless)");
  add("seed", po::value(&o.seed)->default_value(o.seed), "init seed; tokens: seed + dp rank");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help")) {
    if (lead) std::cout << desc << "\n";
    return false;
  }
  po::notify(vm);
  CASTOR_CHECK(o.steps > 0 && o.warmup >= 0 && o.threads > 0, "--steps, --threads must be positive, --warmup >= 0");
  CASTOR_CHECK(o.model == "dense-s" || o.model == "moe-s", "--model: '", o.model, "' (expected dense-s or moe-s)");
  CASTOR_CHECK(o.tp >= 1 && o.ep >= 1, "--tp and --ep must be >= 1");
  CASTOR_CHECK(o.batch > 0 && o.seq_len > 0 && o.bucket_mb > 0, "--batch, --seq-len, --bucket-mb must be positive");
  return true;
}

// dense-s (bench/dense_s_step.cpp) or moe-s (its --moe: expert hidden = dense hidden / top-k),
// with the overrides; the vocabulary padded when tp does not divide it (as check_layout asks).
castor::ModelConfig model_config(const Options& o) {
  castor::ModelConfig mc;
  mc.family = castor::parse_family(o.family);
  mc.vocab_size = o.vocab > 0 ? o.vocab : 50257;
  mc.d_model = o.d_model > 0 ? o.d_model : 384;
  mc.n_layers = o.layers > 0 ? o.layers : 6;
  mc.n_heads = o.heads > 0 ? o.heads : 6;
  mc.n_kv_heads = o.kv_heads;
  mc.max_seq_len = o.max_seq_len > 0 ? o.max_seq_len : 1024;
  if (mc.vocab_size % o.tp != 0) {
    const int64_t multiple = 64 * o.tp;
    mc.vocab_size = (mc.vocab_size + multiple - 1) / multiple * multiple;
  }
  if (o.model == "moe-s") {
    mc.moe_experts = o.experts;
    mc.moe_top_k = o.top_k;
    mc.moe_every = o.moe_every;
    mc.moe_d_ff = mc.ffn_dim() / o.top_k;
    mc.moe_capacity = o.capacity;
  }
  mc.validate();
  return mc;
}

// ---- Routing counts, taken from the router's choices before the dispatcher sees them ----

// Per MoE layer, this rank's assignments by (choice j, expert e) in its last forward.
struct RoutingLog {
  std::vector<std::vector<int64_t>> choices;  // [moe layer][j * E + e]
};

// A TokenDispatcher that counts the router's choices of this rank's rows, then hands over to
// the real one. What is kept (capacity) is worked out later from every rank's counts.
class CountingDispatcher final : public castor::nn::TokenDispatcher {
 public:
  CountingDispatcher(std::unique_ptr<castor::nn::TokenDispatcher> inner, std::vector<int64_t>& choices, int64_t E)
      : inner_(std::move(inner)), choices_(choices), E_(E) {}
  void plan(const int32_t* expert, int64_t N, int64_t k, int64_t capacity, const int64_t* before) override {
    choices_.assign(size_t(k * E_), 0);
    for (int64_t a = 0; a < N * k; ++a) choices_[size_t((a % k) * E_ + expert[a])] += 1;  // a = n * k + j
    inner_->plan(expert, N, k, capacity, before);
  }
  int64_t local_experts() const override { return inner_->local_experts(); }
  int64_t first_local_expert() const override { return inner_->first_local_expert(); }
  const std::vector<int64_t>& expert_offsets() const override { return inner_->expert_offsets(); }
  int64_t dropped() const override { return inner_->dropped(); }
  void dispatch(const float* x, int64_t C, float* expert_in) override { inner_->dispatch(x, C, expert_in); }
  void combine(const float* expert_out, const float* gate, int64_t C, float* y) override {
    inner_->combine(expert_out, gate, C, y);
  }
  void combine_backward(const float* dy, const float* expert_out, const float* gate, int64_t C, float* d_expert_out,
                        float* dgate) override {
    inner_->combine_backward(dy, expert_out, gate, C, d_expert_out, dgate);
  }
  void dispatch_backward(const float* d_expert_in, int64_t C, float* dx) override {
    inner_->dispatch_backward(d_expert_in, C, dx);
  }

 private:
  std::unique_ptr<castor::nn::TokenDispatcher> inner_;
  std::vector<int64_t>& choices_;
  int64_t E_;
};

// The layout's LayerBuilder, unchanged, except that each MoE layer's dispatcher is wrapped in
// a CountingDispatcher (blocks ask for them in layer order).
class CountingBuilder final : public castor::nn::LayerBuilder {
 public:
  CountingBuilder(castor::nn::LayerBuilder& inner, RoutingLog& log, int64_t moe_layers) : inner_(inner), log_(log) {
    log_.choices.reserve(size_t(moe_layers));  // the dispatchers keep references into it
  }
  int tp_size() const override { return inner_.tp_size(); }
  int tp_rank() const override { return inner_.tp_rank(); }
  bool sequence_parallel() const override { return inner_.sequence_parallel(); }
  std::unique_ptr<castor::nn::LinearLayer> column(castor::ParamStore& s, castor::Backend& b, int64_t rows, int64_t in,
                                                  const std::vector<castor::nn::Linear::Piece>& pieces,
                                                  float init_std) override {
    return inner_.column(s, b, rows, in, pieces, init_std);
  }
  std::unique_ptr<castor::nn::LinearLayer> row(castor::ParamStore& s, castor::Backend& b, int64_t rows, int64_t in,
                                               const castor::nn::Linear::Piece& piece, float init_std) override {
    return inner_.row(s, b, rows, in, piece, init_std);
  }
  std::unique_ptr<castor::nn::Module> norm(castor::ParamStore& s, castor::Backend& b, int64_t rows, int64_t C,
                                           castor::Family f, const std::string& prefix, float eps) override {
    return inner_.norm(s, b, rows, C, f, prefix, eps);
  }
  std::unique_ptr<castor::nn::Module> region(castor::nn::Region kind, castor::Backend& b, int64_t rows,
                                             int64_t C) override {
    return inner_.region(kind, b, rows, C);
  }
  castor::ParamShard vocab_shard() const override { return inner_.vocab_shard(); }
  std::unique_ptr<castor::nn::VocabHead> vocab_head(castor::Backend& b, int64_t chunk, int64_t C, int64_t V) override {
    return inner_.vocab_head(b, chunk, C, V);
  }
  std::unique_ptr<castor::nn::TokenDispatcher> dispatcher(int64_t experts) override {
    CASTOR_CHECK(log_.choices.size() < log_.choices.capacity(), "more MoE dispatchers than MoE layers");
    log_.choices.emplace_back();
    return std::make_unique<CountingDispatcher>(inner_.dispatcher(experts), log_.choices.back(), experts);
  }
  castor::nn::TokenGroup* token_group() override { return inner_.token_group(); }
  std::unique_ptr<castor::nn::Module> split_tokens(std::unique_ptr<castor::nn::Module> layer,
                                                   std::vector<castor::Param*> params, castor::Backend& b, int64_t rows,
                                                   int64_t C) override {
    return inner_.split_tokens(std::move(layer), std::move(params), b, rows, C);
  }

 private:
  castor::nn::LayerBuilder& inner_;
  RoutingLog& log_;
};

// Every rank's choice counts after the run, and what they imply: the kept assignments per
// expert of a rank's rows and the rows its dispatcher moves over ep.
struct Routing {
  std::vector<int64_t> choices;  // [rank][timed step][moe layer][j][e]
  int64_t steps, M, k, E;
  int64_t capacity;  // per expert over the micro-batch (docs/model.md), -1: dropless
  const castor::parallel::Mesh* mesh;

  int64_t at(int rank, int64_t s, int64_t l, int64_t j, int64_t e) const {
    return choices[size_t((((rank * steps + s) * M + l) * k + j) * E + e)];
  }
  // Kept assignments per expert of rank r's rows. Under tp the micro-batch's rows are split
  // over the tp group in rank order and the capacity counts the whole batch choice by choice
  // (kernels/cpu/moe.h moe_plan): expert e keeps the first `capacity` of the j = 0
  // assignments of block 0, block 1, ..., then of the j = 1 ones, and so on.
  std::vector<int64_t> kept(int r, int64_t s, int64_t l) const {
    std::vector<int64_t> out(size_t(E), 0);
    const std::vector<int> tp_group = mesh->groups(r).tp;
    for (int64_t e = 0; e < E; ++e) {
      int64_t before = 0;  // the batch's assignments to e ahead of rank r's current choice
      for (int64_t j = 0; j < k; ++j) {
        for (int q : tp_group) {
          if (q == r) {
            const int64_t n = at(r, s, l, j, e);
            out[size_t(e)] += capacity < 0 ? n : std::min(n, std::max<int64_t>(0, capacity - before));
          }
          before += at(q, s, l, j, e);
        }
      }
    }
    return out;
  }
};

// ---- The analytic formula ----

enum Group { kTp, kDp, kEp, kEdp, kTpDp, kTpEdp, kWorld, kGroups };
constexpr const char* kGroupName[kGroups] = {"tp", "dp", "ep", "edp", "tp_dp", "tp_edp", "world"};

// Expected calls and bytes per (group, operation), summed over the timed steps, with the
// terms that make them up.
struct Expected {
  struct Entry {
    int64_t calls = 0, bytes = 0;
    std::string terms;
  };
  std::map<std::pair<int, int>, Entry> entries;
  void add(Group g, CommOp op, int64_t calls, int64_t bytes, const std::string& term) {
    Entry& e = entries[{int(g), int(op)}];
    e.calls += calls;
    e.bytes += bytes;
    if (!term.empty()) e.terms += (e.terms.empty() ? "" : " + ") + term;
  }
};

struct Dims {
  int64_t N, C, L, M, D, V, E, k, K;  // rows, d_model, layers, MoE / dense layers, vocab, experts, top-k, head chunks
  int64_t Pn;                         // params of one norm: 2C (LayerNorm) or C (RMSNorm)
  bool bias;                          // gpt2: row-parallel layers have a (replicated) bias
};

Dims dims_of(const castor::ModelConfig& mc, int64_t B, int64_t T) {
  Dims d;
  d.N = B * T;
  d.C = mc.d_model;
  d.L = mc.n_layers;
  d.M = mc.moe_layers();
  d.D = d.L - d.M;
  d.V = mc.vocab_size;
  d.E = mc.moe_experts;
  d.k = mc.moe_top_k;
  const int64_t chunk = castor::Transformer::head_chunk_rows(d.N, d.V);
  d.K = (d.N + chunk - 1) / chunk;
  d.bias = mc.family == castor::Family::kGpt2;  // gpt2 also means LayerNorm
  d.Pn = d.bias ? 2 * d.C : d.C;
  return d;
}

// Parameters of one expert (gpt2: up and down weights and biases; llama: w1, w3, w2).
int64_t expert_params(const castor::ModelConfig& mc) {
  const int64_t C = mc.d_model, F = mc.expert_ffn_dim();
  return mc.family == castor::Family::kGpt2 ? 2 * C * F + F + C : 3 * C * F;
}

// Parameters of one MoE layer on a rank: router, its E/ep experts, the shared expert.
int64_t moe_layer_params(const castor::ModelConfig& mc, int ep) {
  return mc.moe_experts * mc.d_model + (mc.moe_experts / ep + (mc.moe_shared_expert ? 1 : 0)) * expert_params(mc);
}

// Parameters one rank holds, from the config: [0] all but the experts, [1] its experts.
std::array<int64_t, 2> local_params(const castor::ModelConfig& mc, int tp, int ep) {
  const bool gpt2 = mc.family == castor::Family::kGpt2;
  const int64_t C = mc.d_model, V = mc.vocab_size, hd = mc.head_dim(), H = mc.n_heads, KVH = mc.kv_heads();
  const int64_t F = mc.ffn_dim(), norm = gpt2 ? 2 * C : C;
  int64_t dense = V / tp * C + (gpt2 ? mc.max_seq_len * C : 0) + norm;  // embeddings, final norm
  if (!gpt2) dense += V / tp * C;                                       // untied LM head
  int64_t experts = 0;
  for (int64_t l = 0; l < mc.n_layers; ++l) {
    dense += 2 * norm + (H + 2 * KVH) * hd * C / tp + H * hd * C / tp;  // norms, qkv, out projection
    if (gpt2) dense += (H + 2 * KVH) * hd / tp + C;                     // their biases (out: replicated)
    if (mc.is_moe_layer(l)) {
      dense += mc.moe_experts * C + (mc.moe_shared_expert ? expert_params(mc) : 0);  // router, shared expert
      experts += mc.moe_experts / ep * expert_params(mc);
    } else {
      dense += gpt2 ? 2 * C * F / tp + F / tp + C : 3 * C * F / tp;
    }
  }
  return {dense, experts};
}

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Tensor parallelism per step. Regions around the split attention and dense MLPs (4NC bytes
// each), the vocabulary-parallel head (per chunk a max of 4 bytes and two sums of 8 bytes per
// row). (Under SP the norms' and row-parallel biases' partial gradients go with the MoE
// layers' to the tp x dp reduction: expect_dp.) MoE layers: each rank routes N/tp rows; per layer the router statistics (choice counts
// all-gathered, losses and loads summed), and without SP its output and input gradient
// all-gathered back to every row. (The layer's partial gradients are reduced with the
// data-parallel ones, over tp x dp: expect_dp.)
void expect_tp(Expected& x, const Dims& d, bool sp, int tp, int ep, int64_t steps) {
  const int64_t act = 4 * d.N * d.C;
  auto add = [&](CommOp op, int64_t calls, int64_t bytes, const std::string& term) {
    x.add(kTp, op, calls * steps, bytes * steps, term);
  };
  if (!sp) {
    // Forward: embedding (kReduce) + L attention + D MLP exits; backward: head entry + L + D entries.
    add(CommOp::all_reduce, 2 + 2 * (d.L + d.D), (2 + 2 * (d.L + d.D)) * act, "(2+2(L+D))*4NC");
    add(CommOp::all_gather, 2 * d.M, 2 * d.M * act, "2M*4NC");
  } else {
    // kEnter fwd and kExit bwd per attention and dense MLP, head entry fwd, embedding kScatter bwd.
    add(CommOp::all_gather, 2 * (d.L + d.D) + 2, (2 * (d.L + d.D) + 2) * act, "(2(L+D)+2)*4NC");
    // kExit fwd and kEnter bwd per attention and dense MLP, head entry bwd.
    add(CommOp::reduce_scatter, 2 * (d.L + d.D) + 1, (2 * (d.L + d.D) + 1) * act, "(2(L+D)+1)*4NC");
    add(CommOp::all_reduce, 1, act, "4NC");  // the embedding's kReduce: a full all-reduce
  }
  add(CommOp::all_reduce, 2 * d.K, 20 * d.N, "20N");
  if (d.M == 0) return;
  add(CommOp::all_gather, d.M, d.M * 8 * d.k * d.E * tp, "M*8kE*tp");
  add(CommOp::all_reduce, 2 * d.M, d.M * (16 + 8 * (d.E / ep + 1)), "M*(16+8(E/ep+1))");
}

// Gradient buckets of one arena domain over a group of `ranks` (stage 0: all-reduce; 1, 2:
// reduce-scatter, then the updated weights all-gathered).
void expect_buckets(Expected& x, Group g, int64_t arena, int ranks, int stage, int64_t bucket_elems, int64_t steps) {
  if (ranks == 1 || arena == 0) return;
  const int64_t step = round_up(bucket_elems, stage > 0 ? ranks : 1);
  const int64_t buckets = (arena + step - 1) / step;
  const std::string term = "4*" + std::to_string(arena);
  if (stage == 0) {
    x.add(g, CommOp::all_reduce, buckets * steps, 4 * arena * steps, term);
  } else {
    x.add(g, CommOp::reduce_scatter, buckets * steps, 4 * arena * steps, term);
    x.add(g, CommOp::all_gather, buckets * steps, 4 * arena * steps, term);
  }
}

struct Layout {
  int tp, dp, ep, edp, stage;
  bool sp;
  int64_t bucket_elems;
};

// Data parallelism per step: gradient buckets by arena region (parallel/data_parallel.h
// allocate_for_layout): the dense params over dp; with tp > 1 the MoE layers' router and
// shared expert (and the experts without ep) over tp x dp; under ep the experts over the ranks
// holding them (edp, or tp x edp with tp > 1). Then the loss log's sums (18 + 4M doubles over
// dp) and the grad norm's sum (over every rank with tp or ep, else over dp under ZeRO).
void expect_dp(Expected& x, const castor::ModelConfig& mc, const Dims& d, const Layout& l, int64_t steps) {
  auto [dense, experts] = local_params(mc, l.tp, l.ep);
  int64_t token_split = 0;  // region 1: computed by tp ranks from their blocks of the rows
  if (l.tp > 1) {
    token_split = d.M * (mc.moe_experts * mc.d_model + (mc.moe_shared_expert ? expert_params(mc) : 0));
    if (l.sp) token_split += (2 * d.L + 1) * d.Pn + (d.bias ? (d.L + d.D) * d.C : 0);  // norms, row biases
    dense -= token_split;
    if (l.ep == 1) token_split += experts;
  }
  const bool split = l.tp > 1 || l.ep > 1;
  const int stage = l.dp > 1 ? l.stage : 0;  // DataParallel's effective stage
  expect_buckets(x, kDp, round_up(split || l.ep > 1 ? dense : dense + experts, l.dp), l.dp, stage, l.bucket_elems,
                 steps);
  if (l.tp > 1) expect_buckets(x, kTpDp, round_up(token_split, l.tp * l.dp), l.tp * l.dp, stage, l.bucket_elems, steps);
  if (l.ep > 1) {
    const int holders = l.tp * l.edp;
    expect_buckets(x, l.tp > 1 ? kTpEdp : kEdp, round_up(experts, holders), holders, stage, l.bucket_elems, steps);
  }
  if (l.dp > 1) x.add(kDp, CommOp::all_reduce, steps, 8 * (4 + 2 * castor::kLossTerms + 4 * d.M) * steps, "8(18+4M)");
  if (split)
    x.add(kWorld, CommOp::all_reduce, steps, 8 * steps, "8");
  else if (stage > 0)
    x.add(kDp, CommOp::all_reduce, steps, 8 * steps, "8");
}

struct RowsMoved {
  int64_t out = 0, in = 0;  // rows this rank sends to / receives from other ep ranks
};

// Expert parallelism for rank r, MoE layer l of timed step s: rows of its tokens kept for
// experts on other ep ranks (out), and of the other ranks' tokens for its experts (in).
RowsMoved rows_moved(const Routing& routing, int r, int64_t s, int64_t l) {
  const std::vector<int> ep_group = routing.mesh->groups(r).ep;
  const int ep = int(ep_group.size());
  const int me = int(std::find(ep_group.begin(), ep_group.end(), r) - ep_group.begin());
  const int64_t per = routing.E / ep, first = me * per;
  RowsMoved m;
  const std::vector<int64_t> mine = routing.kept(r, s, l);
  for (int64_t e = 0; e < routing.E; ++e)
    if (e < first || e >= first + per) m.out += mine[size_t(e)];
  for (int q : ep_group) {
    if (q == r) continue;
    const std::vector<int64_t> theirs = routing.kept(q, s, l);
    for (int64_t e = first; e < first + per; ++e) m.in += theirs[size_t(e)];
  }
  return m;
}

// Per MoE layer: the count exchange (E/ep int64 to each other rank), then dispatch and
// combine's backward send the out rows, combine and dispatch's backward the in rows (4C each).
void expect_ep(Expected& x, const Routing& routing, const Dims& d, int r) {
  const int64_t ep = int64_t(routing.mesh->groups(r).ep.size());
  if (ep == 1) return;
  for (int64_t s = 0; s < routing.steps; ++s) {
    for (int64_t l = 0; l < d.M; ++l) {
      const RowsMoved m = rows_moved(routing, r, s, l);
      x.add(kEp, CommOp::all_to_all, 5, 8 * (d.E / ep) * (ep - 1) + 8 * d.C * (m.out + m.in), "");
    }
  }
  x.entries[{int(kEp), int(CommOp::all_to_all)}].terms = "sum over M layers: 8(E/ep)(ep-1) + 8C(out+in)";
}

// ---- Measurement, gathering, printing ----

// Per rank, flattened for MPI: measured totals, per-step step time and waits.
struct RankData {
  std::vector<uint64_t> calls, bytes;  // [group][op], over the timed steps
  std::vector<double> step_ms;         // [step]
  std::vector<double> wait_ms;         // [group][op][step]
};

std::vector<CommStats> snapshot(const std::array<castor::Communicator*, kGroups>& comms) {
  std::vector<CommStats> s;
  for (auto* c : comms) s.push_back(c->stats());
  return s;
}

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <typename T>
std::vector<T> gather_all(const std::vector<T>& mine, MPI_Datatype type, int ranks) {
  std::vector<T> all(mine.size() * size_t(ranks));
  MPI_Allgather(mine.data(), int(mine.size()), type, all.data(), int(mine.size()), type, MPI_COMM_WORLD);
  return all;
}

std::string num(double v) {
  char s[48];
  if (v == std::floor(v))
    std::snprintf(s, sizeof s, "%.0f", v);
  else
    std::snprintf(s, sizeof s, "%.1f", v);
  return s;
}

// Table 1: per rank, group and operation: measured against formula, per step.
bool print_volume(const std::vector<RankData>& data, const std::vector<Expected>& expected, int64_t steps) {
  std::printf(
      "\n| rank | group | operation | calls/step measured | calls/step formula | bytes/step measured | "
      "bytes/step formula | MB/step | measured / formula | formula (bytes per step) |\n");
  std::printf("|---:|---|---|---:|---:|---:|---:|---:|---:|---|\n");
  bool all_match = true;
  for (size_t r = 0; r < data.size(); ++r) {
    for (int g = 0; g < kGroups; ++g) {
      for (int op = 0; op < castor::kCommOps; ++op) {
        const size_t i = size_t(g * castor::kCommOps + op);
        const auto it = expected[r].entries.find({g, op});
        const Expected::Entry e = it == expected[r].entries.end() ? Expected::Entry{} : it->second;
        const uint64_t calls = data[r].calls[i], bytes = data[r].bytes[i];
        if (calls == 0 && e.calls == 0) continue;
        const bool match = calls == uint64_t(e.calls) && bytes == uint64_t(e.bytes);
        all_match = all_match && match;
        char ratio[32];
        if (e.bytes > 0)
          std::snprintf(ratio, sizeof ratio, "%.6f%s", double(bytes) / double(e.bytes), match ? "" : " (!)");
        else
          std::snprintf(ratio, sizeof ratio, "%s", match ? "-" : "- (!)");
        std::printf("| %zu | %s | %s | %s | %s | %s | %s | %.3f | %s | %s |\n", r, kGroupName[g],
                    castor::comm_op_name(CommOp(op)), num(double(calls) / double(steps)).c_str(),
                    num(double(e.calls) / double(steps)).c_str(), num(double(bytes) / double(steps)).c_str(),
                    num(double(e.bytes) / double(steps)).c_str(), double(bytes) / double(steps) / 1e6, ratio,
                    e.terms.c_str());
      }
    }
  }
  return all_match;
}

// Table 2: per rank, medians over the timed steps: step, each wait, compute = step - waits.
struct TimeSummary {
  double step_ms = 0, compute_ms = 0, wait_ms = 0;  // slowest rank's step, its compute, its waits
};
TimeSummary print_times(const std::vector<RankData>& data, int64_t steps) {
  std::vector<size_t> cols;  // (group, op) with any wait or call on any rank
  for (size_t i = 0; i < size_t(kGroups * castor::kCommOps); ++i)
    for (const RankData& d : data)
      if (d.calls[i] > 0 && std::find(cols.begin(), cols.end(), i) == cols.end()) cols.push_back(i);
  std::printf("\n| rank | step ms |");
  for (size_t c : cols)
    std::printf(" wait %s %s ms |", kGroupName[c / castor::kCommOps],
                castor::comm_op_name(CommOp(c % castor::kCommOps)));
  std::printf(" waits ms | compute ms | waits / step |\n|---:|---:|");
  for (size_t k = 0; k < cols.size(); ++k) std::printf("---:|");
  std::printf("---:|---:|---:|\n");
  TimeSummary worst;
  for (size_t r = 0; r < data.size(); ++r) {
    const RankData& d = data[r];
    std::vector<double> waits(static_cast<size_t>(steps), 0.0), compute(static_cast<size_t>(steps));
    for (size_t i = 0; i < size_t(kGroups * castor::kCommOps); ++i)
      for (int64_t s = 0; s < steps; ++s) waits[size_t(s)] += d.wait_ms[i * size_t(steps) + size_t(s)];
    for (int64_t s = 0; s < steps; ++s) compute[size_t(s)] = d.step_ms[size_t(s)] - waits[size_t(s)];
    const double step = median(d.step_ms), wait = median(waits), comp = median(compute);
    std::printf("| %zu | %.1f |", r, step);
    for (size_t c : cols) {
      const auto first = d.wait_ms.begin() + std::ptrdiff_t(c * size_t(steps));
      std::printf(" %.1f |", median(std::vector<double>(first, first + steps)));
    }
    std::printf(" %.1f | %.1f | %.1f%% |\n", wait, comp, 100.0 * wait / step);
    if (step > worst.step_ms) worst = {step, comp, wait};
  }
  return worst;
}

// Routing summary: per rank, rows per step sent to / received from other ep ranks, by layer.
void print_routing(const Routing& routing, int ranks) {
  std::printf(
      "\nexpert parallelism: rows per step (mean over the timed steps) moved by each rank's dispatcher, from "
      "the router's kept assignments (out: its tokens for experts on other ep ranks; in: other ranks' "
      "tokens for its experts)\n\n| rank |");
  for (int64_t l = 0; l < routing.M; ++l) std::printf(" MoE layer %lld out / in |", static_cast<long long>(l));
  std::printf(" all layers out / in |\n|---:|");
  for (int64_t l = 0; l <= routing.M; ++l) std::printf("---:|");
  std::printf("\n");
  const double steps = double(routing.steps);
  for (int r = 0; r < ranks; ++r) {
    RowsMoved total;
    std::printf("| %d |", r);
    for (int64_t l = 0; l < routing.M; ++l) {
      RowsMoved sum;
      for (int64_t s = 0; s < routing.steps; ++s) {
        const RowsMoved m = rows_moved(routing, r, s, l);
        sum.out += m.out;
        sum.in += m.in;
      }
      total.out += sum.out;
      total.in += sum.in;
      std::printf(" %s / %s |", num(double(sum.out) / steps).c_str(), num(double(sum.in) / steps).c_str());
    }
    std::printf(" %s / %s |\n", num(double(total.out) / steps).c_str(), num(double(total.in) / steps).c_str());
  }
}

// Kept assignments of each tp group's rows (from the choice counts) against what the MoE
// layers reported (MoeStats: assignments - dropped, summed over the tp group); the number of
// (rank, step, layer) that disagree.
int check_routing(const Routing& routing, const std::vector<int64_t>& reported, int ranks) {
  int bad = 0;
  for (int r = 0; r < ranks; ++r)
    for (int64_t s = 0; s < routing.steps; ++s)
      for (int64_t l = 0; l < routing.M; ++l) {
        int64_t kept = 0;
        for (int q : routing.mesh->groups(r).tp)
          for (int64_t n : routing.kept(q, s, l)) kept += n;
        bad += kept != reported[size_t((r * routing.steps + s) * routing.M + l)];
      }
  return bad;
}

std::string layout_name(const Layout& l) {
  std::string s = "tp" + std::to_string(l.tp) + (l.sp ? "+sp" : "") + " dp" + std::to_string(l.dp) + " ep" +
                  std::to_string(l.ep) + " edp" + std::to_string(l.edp);
  if (l.stage > 0) s += " zero" + std::to_string(l.stage);
  return s;
}

// Short label for the RESULT line: the degrees above 1, e.g. "tp2+sp" or "dp2+ep2".
std::string layout_label(const Layout& l) {
  std::string s;
  auto part = [&](const std::string& p) { s += (s.empty() ? "" : "+") + p; };
  if (l.tp > 1) part("tp" + std::to_string(l.tp));
  if (l.sp) part("sp");
  if (l.dp > 1) part("dp" + std::to_string(l.dp));
  if (l.ep > 1) part("ep" + std::to_string(l.ep));
  if (l.stage > 0) part("zero" + std::to_string(l.stage));
  return s.empty() ? "single" : s;
}

// The random token windows of one dp rank: ids = window[0, T), targets = window[1, T].
struct TokenPool {
  std::vector<std::vector<int32_t>> ids, targets;
  TokenPool(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
    constexpr int kPool = 8;
    std::mt19937 rng{uint32_t(seed)};
    std::uniform_int_distribution<int32_t> token(0, int32_t(vocab - 1));
    for (int p = 0; p < kPool; ++p) {
      ids.emplace_back(size_t(B * T));
      targets.emplace_back(size_t(B * T));
      for (int64_t b = 0; b < B; ++b) {
        int32_t next = token(rng);
        for (int64_t t = 0; t < T; ++t) {
          ids.back()[size_t(b * T + t)] = next;
          next = token(rng);
          targets.back()[size_t(b * T + t)] = next;
        }
      }
    }
  }
};

// What runs: model, layout, the formula's inputs, params per rank (formula and store).
void print_setup(const Options& o, const castor::ModelConfig& mc, const Dims& d, const Layout& layout, int ranks,
                 size_t store_numel, const std::string& sync_described) {
  const auto params = local_params(mc, o.tp, o.ep);
  std::printf(
      "castor %s (%s): %lld layers (%lld MoE), d_model %lld, heads %lld/%lld, vocab %lld, batch %lld x %lld "
      "per dp rank; layout %s on %d ranks, %d thread(s) per rank\n",
      o.model.c_str(), castor::family_name(mc.family).c_str(), static_cast<long long>(mc.n_layers),
      static_cast<long long>(d.M), static_cast<long long>(mc.d_model), static_cast<long long>(mc.n_heads),
      static_cast<long long>(mc.kv_heads()), static_cast<long long>(mc.vocab_size), static_cast<long long>(o.batch),
      static_cast<long long>(o.seq_len), layout_name(layout).c_str(), ranks, castor::kernels::cpu::num_threads());
  if (mc.moe_experts > 0)
    std::printf("MoE: %lld experts, top-%lld, expert hidden %lld, %s\n", static_cast<long long>(mc.moe_experts),
                static_cast<long long>(mc.moe_top_k), static_cast<long long>(mc.expert_ffn_dim()),
                mc.moe_capacity > 0 ? ("capacity factor " + num(mc.moe_capacity)).c_str() : "dropless");
  std::printf(
      "formula inputs: N = B*T = %lld rows, C = %lld, L = %lld, M = %lld, D = L-M = %lld, V = %lld, head "
      "chunk %lld rows -> K = %lld chunks, Pn = %lld (%s), row-parallel biases: %s, E = %lld, k = %lld, "
      "Pm = %lld (params of one MoE layer on a rank)\n",
      static_cast<long long>(d.N), static_cast<long long>(d.C), static_cast<long long>(d.L),
      static_cast<long long>(d.M), static_cast<long long>(d.D), static_cast<long long>(d.V),
      static_cast<long long>(castor::Transformer::head_chunk_rows(d.N, d.V)), static_cast<long long>(d.K),
      static_cast<long long>(d.Pn), d.bias ? "LayerNorm" : "RMSNorm", d.bias ? "yes" : "no",
      static_cast<long long>(d.E), static_cast<long long>(d.k),
      static_cast<long long>(d.M > 0 ? moe_layer_params(mc, o.ep) : 0));
  std::printf("params per rank: formula %lld (+ %lld expert), store %zu; %s\n", static_cast<long long>(params[0]),
              static_cast<long long>(params[1]), store_numel, sync_described.c_str());
  std::printf("steps: %lld warm-up + %lld timed (CommStats reset after the warm-up)\n",
              static_cast<long long>(o.warmup), static_cast<long long>(o.steps));
  std::fflush(stdout);
}

// Rank 0, with every rank's numbers: the volume table against the formula, the routing
// check and summary, the time table, and the RESULT line.
void report(const Options& o, const castor::ModelConfig& mc, const Dims& d, const Layout& layout,
            const std::vector<uint64_t>& calls, const std::vector<uint64_t>& bytes, const std::vector<double>& step_ms,
            const std::vector<double>& wait_ms, const Routing& routing, const std::vector<int64_t>& reported,
            int ranks) {
  const size_t G = size_t(kGroups * castor::kCommOps), S = size_t(o.steps);
  const int64_t B = o.batch, T = o.seq_len;
  std::vector<RankData> data(static_cast<size_t>(ranks));
  std::vector<Expected> expected(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    auto part = [&](const auto& v, size_t n) {
      using V = std::decay_t<decltype(v)>;
      return V(v.begin() + std::ptrdiff_t(size_t(r) * n), v.begin() + std::ptrdiff_t(size_t(r + 1) * n));
    };
    data[size_t(r)] = {part(calls, G), part(bytes, G), part(step_ms, S), part(wait_ms, G * S)};
    if (o.tp > 1) expect_tp(expected[size_t(r)], d, layout.sp, o.tp, o.ep, o.steps);
    expect_dp(expected[size_t(r)], mc, d, layout, o.steps);
    if (d.M > 0) expect_ep(expected[size_t(r)], routing, d, r);
  }
  std::printf(
      "\ncommunication per step per rank, counted by the communicators (CommStats over %lld timed steps, "
      "divided by %lld) against the formula\n",
      static_cast<long long>(o.steps), static_cast<long long>(o.steps));
  const bool match = print_volume(data, expected, o.steps);
  std::printf("\nmeasured %s the formula exactly (calls and bytes, every rank, group and operation)\n",
              match ? "EQUALS" : "DIFFERS FROM");
  if (d.M > 0)
    std::printf(
        "routing counts (kept per expert, from the router's choices) against MoeStats' assignments - "
        "dropped: %d mismatching (rank, step, layer) of %lld\n",
        check_routing(routing, reported, ranks), static_cast<long long>(ranks * o.steps * d.M));
  if (d.M > 0 && o.ep > 1) print_routing(routing, ranks);
  std::printf(
      "\nstep time per rank, medians over %lld timed steps (each after a barrier); waits: CommStats wait_s, "
      "time blocked in a wait; compute = step - waits (median of the per-step difference)\n",
      static_cast<long long>(o.steps));
  const TimeSummary t = print_times(data, o.steps);
  uint64_t group_bytes[kGroups] = {};
  for (int g = 0; g < kGroups; ++g)
    for (int op = 0; op < castor::kCommOps; ++op) group_bytes[g] += data[0].bytes[size_t(g * castor::kCommOps + op)];
  const int64_t tokens = layout.dp * B * T;  // per step, over the job
  std::printf("\ntokens per step %lld (dp %d x %lld x %lld): %.1f tokens/s at the slowest rank's median step\n",
              static_cast<long long>(tokens), layout.dp, static_cast<long long>(B), static_cast<long long>(T),
              double(tokens) / (t.step_ms / 1e3));
  std::printf(
      "RESULT layout=%s model=%s tokens_per_s=%.1f step_ms=%.1f compute_ms=%.1f wait_ms=%.1f tp_bytes=%.0f "
      "ep_bytes=%.0f dp_bytes=%.0f edp_bytes=%.0f match=%d\n",
      layout_label(layout).c_str(), o.model.c_str(), double(tokens) / (t.step_ms / 1e3), t.step_ms, t.compute_ms,
      t.wait_ms, double(group_bytes[kTp]) / double(o.steps), double(group_bytes[kEp]) / double(o.steps),
      double(group_bytes[kDp] + group_bytes[kTpDp] + group_bytes[kWorld]) / double(o.steps),
      double(group_bytes[kEdp] + group_bytes[kTpEdp]) / double(o.steps), match ? 1 : 0);
}

int run(const Options& o) {
  castor::parallel::MpiComm world(MPI_COMM_WORLD, "world");
  const int ranks = world.size();
  const bool lead = world.rank() == 0;
  const castor::parallel::Mesh mesh({o.tp, 0, 1, o.ep}, ranks);
  const castor::parallel::ProcessGroups groups = castor::parallel::ProcessGroups::build(mesh, world);
  const Layout layout{o.tp,
                      mesh.shape().dp,
                      o.ep,
                      mesh.shape().edp(),
                      mesh.shape().dp > 1 ? o.zero : 0,
                      o.sp && o.tp > 1,
                      std::max<int64_t>(1, int64_t(o.bucket_mb * 1e6 / sizeof(float)))};
  const castor::ModelConfig mc = model_config(o);
  const int64_t B = o.batch, T = o.seq_len;
  castor::parallel::TensorParallel::check_layout(mc, o.tp, o.ep, layout.sp, B, T);

  // Built as launch/train.cpp builds it, with the dispatchers counted.
  auto backend = castor::make_cpu_backend(o.threads);
  std::unique_ptr<castor::nn::LayerBuilder> split;
  if (o.tp > 1 || o.ep > 1)
    split = std::make_unique<castor::parallel::TensorParallel>(*groups.tp, layout.sp, groups.ep.get());
  RoutingLog routing_log;
  CountingBuilder builder(split ? *split : castor::nn::single_device(), routing_log, mc.moe_layers());
  castor::ParamStore store;
  castor::Transformer model(mc, store, *backend, B, T, builder);
  using castor::parallel::DataParallel;
  const castor::parallel::ModelGroups model_groups = castor::parallel::allocate_for_layout(store, *backend, groups);
  store.initialize(o.seed);
  DataParallel sync(*groups.dp, store, *backend, o.zero, size_t(layout.bucket_elems), model_groups);
  const castor::OptimConfig oc;
  castor::AdamW optim = sync.make_optimizer(oc);
  const castor::LossConfig losses;  // castor train's defaults: lm + balance + router_z
  const Dims d = dims_of(mc, B, T);

  if (lead) print_setup(o, mc, d, layout, ranks, store.numel(), sync.describe());

  // tp ranks of one dp rank read the same tokens; dp ranks different ones.
  const TokenPool pool(B, T, mc.vocab_size, o.seed + uint64_t(groups.coord.dp));
  const std::array<castor::Communicator*, kGroups> comms = {groups.tp.get(),    groups.dp.get(),     groups.ep.get(),
                                                            groups.edp.get(),   groups.tp_dp.get(),  groups.tp_edp.get(),
                                                            groups.world.get()};
  const float micro_scale = 1.0f / float(layout.dp);
  const int64_t total = o.warmup + o.steps;
  const size_t G = size_t(kGroups * castor::kCommOps), S = size_t(o.steps);
  RankData mine{std::vector<uint64_t>(G), std::vector<uint64_t>(G), {}, std::vector<double>(G * S, 0.0)};
  std::vector<int64_t> choices;   // [timed step][moe layer][j][e]
  std::vector<int64_t> reported;  // [timed step][moe layer]: MoeStats assignments - dropped
  for (int64_t step = 0; step < total; ++step) {
    if (step == o.warmup)
      for (auto* c : comms) c->reset_stats();
    MPI_Barrier(MPI_COMM_WORLD);  // not a counted communicator; waits measure this step only
    const std::vector<CommStats> before = snapshot(comms);
    const auto t0 = Clock::now();
    castor::ModelInput in;
    in.B = B;
    in.T = T;
    in.ids = pool.ids[size_t(step) % pool.ids.size()].data();
    in.targets = pool.targets[size_t(step) % pool.ids.size()].data();
    sync.zero_grads();
    castor::launch::LossLog log;
    log.add(model.forward(in, losses, &micro_scale, o.seed), model.moe_stats());
    sync.backward(model, true);
    log.all_reduce(*groups.dp);
    const double norm = sync.grad_norm(optim);
    optim.step(castor::learning_rate(oc, step, total), norm);
    sync.after_step();
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    CASTOR_CHECK(std::isfinite(log.loss()), "loss is not finite at step ", step + 1);
    if (step < o.warmup) continue;
    const std::vector<CommStats> after = snapshot(comms);
    mine.step_ms.push_back(ms);
    for (int g = 0; g < kGroups; ++g)
      for (int op = 0; op < castor::kCommOps; ++op)
        mine.wait_ms[size_t(g * castor::kCommOps + op) * S + size_t(step - o.warmup)] =
            1e3 * (after[size_t(g)].wait_s[op] - before[size_t(g)].wait_s[op]);
    for (const auto& layer : routing_log.choices) choices.insert(choices.end(), layer.begin(), layer.end());
    for (const castor::nn::MoeStats* st : model.moe_stats()) reported.push_back(st->assignments - st->dropped);
  }
  for (int g = 0; g < kGroups; ++g)
    for (int op = 0; op < castor::kCommOps; ++op) {
      mine.calls[size_t(g * castor::kCommOps + op)] = comms[size_t(g)]->stats().calls[op];
      mine.bytes[size_t(g * castor::kCommOps + op)] = comms[size_t(g)]->stats().bytes[op];
    }

  // Every rank's numbers to every rank (plain MPI on the world: not a counted communicator).
  const auto calls = gather_all(mine.calls, MPI_UINT64_T, ranks), bytes = gather_all(mine.bytes, MPI_UINT64_T, ranks);
  const auto step_ms = gather_all(mine.step_ms, MPI_DOUBLE, ranks),
             wait_ms = gather_all(mine.wait_ms, MPI_DOUBLE, ranks);
  const int64_t capacity =
      mc.moe_capacity > 0 ? int64_t(std::ceil(mc.moe_capacity * double(d.N * d.k) / double(std::max<int64_t>(d.E, 1))))
                          : -1;
  const Routing routing{gather_all(choices, MPI_INT64_T, ranks), o.steps, d.M, d.k, d.E, capacity, &mesh};
  const std::vector<int64_t> all_reported = gather_all(reported, MPI_INT64_T, ranks);
  if (!lead) return 0;

  report(o, mc, d, layout, calls, bytes, step_ms, wait_ms, routing, all_reported, ranks);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  castor::parallel::MpiSession session(&argc, &argv);
  const bool lead = session.world_rank() == 0;
  try {
    Options o;
    if (!parse_options(argc, argv, o, lead)) return 0;
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "castor_bench_model_parallel: rank %d: error: %s\n", session.world_rank(), e.what());
    castor::parallel::MpiSession::abort_job(1);
  }
}
