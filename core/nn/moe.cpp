// Moe: expert parameters are registered expert by expert (Mixtral / GPT-2 style names,
// docs/model.md), so each expert's [gate | up] matrix is contiguous and runs as one GEMM.
#include "core/nn/moe.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"

namespace castor::nn {

namespace kc = kernels::cpu;

namespace {

// Phase stopwatch for MoeStats::Times: lap(t) stores the ms since the previous lap in t.
class Laps {
 public:
  Laps() : t_(std::chrono::steady_clock::now()) {}
  void lap(double& into) {
    const auto now = std::chrono::steady_clock::now();
    into = std::chrono::duration<double, std::milli>(now - t_).count();
    t_ = now;
  }

 private:
  std::chrono::steady_clock::time_point t_;
};

// OpenBLAS (and castor's OpenMP default) single-threaded for a scope, restored on exit.
// The router's GEMMs are a few MFLOP (N x E x C with E = 8): a 2-thread fork/join costs
// more than it saves, and much more when another process holds a core (bench/NOTES.md).
class SerialBlas {
 public:
  SerialBlas() : threads_(kc::num_threads()) { kc::set_num_threads(1); }
  ~SerialBlas() { kc::set_num_threads(threads_); }
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;
  int threads() const { return threads_; }

 private:
  int threads_;
};

}  // namespace

Moe::Moe(ParamStore& store, Backend& backend, const ModelConfig& cfg, int64_t max_rows, const std::string& prefix,
         float down_init_std, std::unique_ptr<TokenDispatcher> dispatcher, TokenGroup* group, bool ops_path)
    : backend_(backend),
      ops_(backend.ops()),
      ops_path_(ops_path || backend.device() != Device::kCpu),
      group_(group ? *group : single_group()),
      swiglu_(cfg.family == Family::kLlama),
      C_(cfg.d_model),
      F_(cfg.expert_ffn_dim()),
      E_(cfg.moe_experts),
      k_(cfg.moe_top_k),
      capacity_factor_(cfg.moe_capacity),
      dispatcher_(dispatcher ? std::move(dispatcher) : std::make_unique<LocalDispatcher>(cfg.moe_experts)) {
  const float std = cfg.init_std;
  const size_t registered = store.params().size();
  router_ = store.add(prefix + (swiglu_ ? ".gate.weight" : ".router.weight"), {E_, C_}, Init::normal(std), true);
  // Expert parallelism: this process holds the dispatcher's local experts only.
  const int64_t first = dispatcher_->first_local_expert();
  for (int64_t e = first; e < first + dispatcher_->local_experts(); ++e) {
    const std::string p = prefix + ".experts." + std::to_string(e);
    if (swiglu_) {  // w1 (gate) and w3 (up) back to back: one (2F, C) matrix
      up_w_.push_back(store.add(p + ".w1.weight", {F_, C_}, Init::normal(std), true));
      store.add(p + ".w3.weight", {F_, C_}, Init::normal(std), true);
      down_w_.push_back(store.add(p + ".w2.weight", {C_, F_}, Init::normal(down_init_std), true));
    } else {
      up_w_.push_back(store.add(p + ".c_fc.weight", {F_, C_}, Init::normal(std), true));
      up_b_.push_back(store.add(p + ".c_fc.bias", {F_}, Init::zeros(), false));
      down_w_.push_back(store.add(p + ".c_proj.weight", {C_, F_}, Init::normal(down_init_std), true));
      down_b_.push_back(store.add(p + ".c_proj.bias", {C_}, Init::zeros(), false));
    }
  }
  for (Param* p : store.added_since(registered)) p->expert = p != router_;  // all but the router
  if (cfg.moe_shared_expert) {
    const std::string p = prefix + ".shared_expert";
    if (swiglu_) {
      shared_ = std::make_unique<Mlp>(store, backend, single_device(), cfg, max_rows,
                                      std::vector<Linear::Piece>{{p + ".gate_proj.weight", "", F_},
                                                                 {p + ".up_proj.weight", "", F_}},
                                      Linear::Piece{p + ".down_proj.weight", "", C_}, down_init_std);
    } else {
      shared_ = std::make_unique<Mlp>(store, backend, single_device(), cfg, max_rows,
                                      std::vector<Linear::Piece>{{p + ".c_fc.weight", p + ".c_fc.bias", F_}},
                                      Linear::Piece{p + ".c_proj.weight", p + ".c_proj.bias", C_}, down_init_std);
    }
  }
  const int64_t N = max_rows, M = max_rows * k_;
  logits_ = floats(N * E_);
  probs_ = floats(N * E_);
  dlogits_ = floats(N * E_);
  dprobs_ = floats(N * E_);
  gate_ = floats(N * k_);
  dgate_ = floats(N * k_);
  expert_.resize(size_t(N * k_));
  reserve_rows(M);
  y_ = acts(N * C_);
  dx_ = acts(N * C_);
  if (ops_path_) {
    CASTOR_CHECK(group_.size() == 1 && dispatcher_->local_experts() == E_ && dispatcher_->first_local_expert() == 0,
                 prefix, ": MoE on the ", backend.name(), " backend holds the whole batch and every expert (no "
                 "tensor or expert parallelism yet)");
    expert_dev_ = Buffer(backend, DType::i32, std::max<int64_t>(M, 1));
    slot_ = Buffer(backend, DType::i32, std::max<int64_t>(M, 1));
    token_of_slot_ = Buffer(backend, DType::i32, std::max<int64_t>(M, 1));
    dlogits_act_ = acts(N * E_);
    offsets_.assign(size_t(E_) + 1, 0);
  }
}

// Per-assignment buffers for `rows` expert rows. This process's own tokens give at most N * k;
// under expert parallelism a rank receives every rank's rows for its experts, up to ep
// times that when dropless, so the buffers grow to the largest pass seen.
void Moe::reserve_rows(int64_t rows) {
  if (rows <= reserved_rows_) return;
  const int64_t U = swiglu_ ? 2 * F_ : F_;
  xin_ = acts(rows * C_);
  hup_ = acts(rows * U);
  act_ = acts(rows * F_);
  out_ = acts(rows * C_);
  dout_ = acts(rows * C_);
  dact_ = acts(rows * F_);
  dhup_ = acts(rows * U);
  dxin_ = acts(rows * C_);
  reserved_rows_ = rows;
}

Buffer Moe::floats(int64_t n) const { return Buffer(backend_, size_t(std::max<int64_t>(n, 1)) * sizeof(float)); }

Buffer Moe::acts(int64_t n) const { return act_buffer(backend_, std::max<int64_t>(n, 1)); }

// Blocks of expert work. Row blocks of at most kRowBlock rows and weight-gradient blocks
// of at most kColBlock output rows/columns, split evenly; the split depends only on the
// expert loads, never on the thread count, and every block writes its own outputs.
constexpr int64_t kRowBlock = 256;
constexpr int64_t kColBlock = 256;

// Returns the first non-kOk status of a kernel call from the enclosing Status function.
#define MOE_TRY(expr)                                                       \
  do {                                                                      \
    if (kernels::Status s_ = (expr); s_ != kernels::Status::kOk) return s_; \
  } while (0)

kernels::Status Moe::expert_forward(int64_t e, int64_t r0, int64_t rows) {
  const int64_t U = swiglu_ ? 2 * F_ : F_;
  float* h = hup_.f32() + r0 * U;
  float* a = act_.f32() + r0 * F_;
  float* o = out_.f32() + r0 * C_;
  MOE_TRY(kc::gemm(false, true, rows, U, C_, 1.0f, xin_.f32() + r0 * C_, C_, up_w_[size_t(e)]->w, C_, 0.0f, h, U));
  if (swiglu_) {
    MOE_TRY(kc::swiglu_forward(a, h, rows, F_));
  } else {
    MOE_TRY(kc::bias_add_rows(h, up_b_[size_t(e)]->w, rows, F_));
    MOE_TRY(kc::gelu_forward(a, h, rows * F_));
  }
  MOE_TRY(kc::gemm(false, true, rows, C_, F_, 1.0f, a, F_, down_w_[size_t(e)]->w, F_, 0.0f, o, C_));
  if (!swiglu_) MOE_TRY(kc::bias_add_rows(o, down_b_[size_t(e)]->w, rows, C_));
  return kernels::Status::kOk;
}

kernels::Status Moe::expert_backward_in(int64_t e, int64_t r0, int64_t rows) {
  const int64_t U = swiglu_ ? 2 * F_ : F_;
  float* da = dact_.f32() + r0 * F_;
  float* dh = dhup_.f32() + r0 * U;
  const float* h = hup_.f32() + r0 * U;
  MOE_TRY(kc::gemm(false, false, rows, F_, C_, 1.0f, dout_.f32() + r0 * C_, C_, down_w_[size_t(e)]->w, F_, 0.0f, da,
                   F_));
  if (swiglu_) {
    MOE_TRY(kc::swiglu_backward(dh, da, h, rows, F_));
  } else {
    MOE_TRY(kc::gelu_backward(dh, da, h, rows * F_));
  }
  return kernels::Status::kOk;
}

kernels::Status Moe::expert_backward_out(int64_t e, int64_t r0, int64_t rows) {
  const int64_t U = swiglu_ ? 2 * F_ : F_;
  return kc::gemm(false, false, rows, C_, U, 1.0f, dhup_.f32() + r0 * U, U, up_w_[size_t(e)]->w, C_, 0.0f,
                  dxin_.f32() + r0 * C_, C_);
}

kernels::Status Moe::expert_grad_down(int64_t e, int64_t c0, int64_t n) {
  const std::vector<int64_t>& off = dispatcher_->expert_offsets();
  const int64_t r0 = off[size_t(e)], rows = off[size_t(e) + 1] - r0;
  const float* d = dout_.f32() + r0 * C_;
  MOE_TRY(kc::gemm(true, false, C_, n, rows, 1.0f, d, C_, act_.f32() + r0 * F_ + c0, F_, 1.0f,
                   down_w_[size_t(e)]->g + c0, F_));
  if (!swiglu_ && c0 == 0) MOE_TRY(kc::bias_grad_accumulate(down_b_[size_t(e)]->g, d, rows, C_));
  return kernels::Status::kOk;
}

kernels::Status Moe::expert_grad_up(int64_t e, int64_t u0, int64_t n) {
  const std::vector<int64_t>& off = dispatcher_->expert_offsets();
  const int64_t U = swiglu_ ? 2 * F_ : F_;
  const int64_t r0 = off[size_t(e)], rows = off[size_t(e) + 1] - r0;
  const float* dh = dhup_.f32() + r0 * U;
  MOE_TRY(kc::gemm(true, false, n, C_, rows, 1.0f, dh + u0, U, xin_.f32() + r0 * C_, C_, 1.0f,
                   up_w_[size_t(e)]->g + u0 * C_, C_));
  if (!swiglu_ && u0 == 0) MOE_TRY(kc::bias_grad_accumulate(up_b_[size_t(e)]->g, dh, rows, F_));
  return kernels::Status::kOk;
}

#undef MOE_TRY

// Row blocks of every expert with rows; a block's cost is rows x per_row (its GEMMs'
// multiply-adds per row, divided by C).
void Moe::add_row_tasks(std::vector<Task>& tasks, Work work, int64_t per_row) {
  const std::vector<int64_t>& off = dispatcher_->expert_offsets();
  for (int64_t e = 0; e < dispatcher_->local_experts(); ++e) {
    const int64_t r0 = off[size_t(e)], rows = off[size_t(e) + 1] - r0;
    const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = rows * b / blocks, end = rows * (b + 1) / blocks;
      tasks.push_back({(end - begin) * per_row, work, int32_t(e), r0 + begin, end - begin});
    }
  }
}

// Output blocks of every expert's weight gradient (cols output rows/columns in all).
void Moe::add_grad_tasks(std::vector<Task>& tasks, Work work, int64_t cols) {
  const std::vector<int64_t>& off = dispatcher_->expert_offsets();
  const int64_t blocks = (cols + kColBlock - 1) / kColBlock;
  for (int64_t e = 0; e < dispatcher_->local_experts(); ++e) {
    const int64_t rows = off[size_t(e) + 1] - off[size_t(e)];
    if (rows == 0) continue;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = cols * b / blocks, end = cols * (b + 1) / blocks;
      tasks.push_back({rows * (end - begin), work, int32_t(e), begin, end - begin});
    }
  }
}

kernels::Status Moe::run_task(const Task& t) {
  switch (t.work) {
    case Work::kForward: return expert_forward(t.e, t.begin, t.count);
    case Work::kBackwardIn: return expert_backward_in(t.e, t.begin, t.count);
    case Work::kGradDown: return expert_grad_down(t.e, t.begin, t.count);
    case Work::kBackwardOut: return expert_backward_out(t.e, t.begin, t.count);
    case Work::kGradUp: return expert_grad_up(t.e, t.begin, t.count);
  }
  return kernels::Status::kInvalidArgument;
}

// Runs the phases in order (a barrier between them), each phase's tasks largest first over
// the OpenMP threads. OpenBLAS is set to one thread meanwhile: inside a parallel region its
// OpenMP build (0.3.21) otherwise still takes its multi-threaded path, which gives results
// that depend on the thread count once K > 320 and ran slower here (bench/NOTES.md).
void Moe::run_tasks(std::vector<Task>* phases, int n_phases) {
  for (int p = 0; p < n_phases; ++p) {
    std::stable_sort(phases[p].begin(), phases[p].end(), [](const Task& a, const Task& b) { return a.cost > b.cost; });
  }
  kernels::Status status = kernels::Status::kOk;
  const SerialBlas serial;
#pragma omp parallel num_threads(serial.threads())
  for (int p = 0; p < n_phases; ++p) {
    const std::vector<Task>& tasks = phases[p];
#pragma omp for schedule(dynamic, 1)
    for (size_t i = 0; i < tasks.size(); ++i) {
      const kernels::Status s = run_task(tasks[i]);
      if (s != kernels::Status::kOk) {
#pragma omp critical(castor_moe_status)
        if (status == kernels::Status::kOk) status = s;
      }
    }
  }
  CASTOR_KERNEL_CHECK(status);
}

// The batch-wide router statistics when this process holds one block of the batch's rows:
// assignment counts per (choice, expert) of every block give the per-expert totals (balance
// loss) and what precedes this block in the capacity order (moe_plan's `before`).
void Moe::group_statistics() {
  const int G = group_.size(), me = group_.rank();
  const size_t kE = size_t(k_ * E_);
  choice_counts_.resize(kE);
  group_counts_.resize(kE * size_t(G));
  CASTOR_KERNEL_CHECK(kc::moe_count_assignments(expert_.data(), rows_, E_, k_, choice_counts_.data()));
  group_.all_gather(choice_counts_.data(), group_counts_.data(), kE);
  expert_totals_.assign(size_t(E_), 0);
  before_.assign(kE, 0);
  for (int r = 0; r < G; ++r) {
    const int64_t* c = group_counts_.data() + size_t(r) * kE;
    for (int64_t j = 0; j < k_; ++j)
      for (int64_t e = 0; e < E_; ++e) {
        const int64_t n = c[j * E_ + e];
        expert_totals_[size_t(e)] += n;
        for (int64_t later = j + 1; later < k_; ++later) before_[size_t(later * E_ + e)] += n;  // earlier choices
        if (r < me) before_[size_t(j * E_ + e)] += n;                                          // earlier blocks
      }
  }
}

Tensor Moe::forward(const Pass& pass, Tensor x) {
  if (ops_path_) return forward_ops(pass, x);
  const int64_t N = x.shape[0];  // this process's block of the batch's rows
  rows_ = N;
  total_rows_ = N * group_.size();
  x_ = x.f32();
  MoeStats::Times& t = stats_.fwd_ms;
  t = {};
  Laps laps;
  const bool split = group_.size() > 1;
  {  // route
    const SerialBlas serial;
    CASTOR_KERNEL_CHECK(kc::gemm(false, true, N, E_, C_, 1.0f, x_, C_, router_->w, C_, 0.0f, logits_.f32(), E_));
    CASTOR_KERNEL_CHECK(
        kc::router_topk(logits_.f32(), N, E_, k_, k_ >= 2, probs_.f32(), expert_.data(), gate_.f32()));
    if (split) group_statistics();
    double losses[2];
    CASTOR_KERNEL_CHECK(kc::moe_balance_loss(probs_.f32(), expert_.data(), N, E_, k_, &losses[0], 0.0f, nullptr,
                                             nullptr, total_rows_, split ? expert_totals_.data() : nullptr));
    CASTOR_KERNEL_CHECK(kc::router_z_loss(logits_.f32(), N, E_, &losses[1], 0.0f, nullptr, total_rows_));
    group_.sum(losses, 2);  // each block's share of the batch's losses
    stats_.balance = losses[0];
    stats_.router_z = losses[1];
  }
  laps.lap(t.route);
  const int64_t capacity =
      capacity_factor_ > 0 ? int64_t(std::ceil(capacity_factor_ * double(total_rows_ * k_) / double(E_))) : -1;
  dispatcher_->plan(expert_.data(), N, k_, capacity, split && capacity >= 0 ? before_.data() : nullptr);
  reserve_rows(dispatcher_->expert_offsets().back());
  laps.lap(t.plan);
  // dispatch -> compute -> combine
  dispatcher_->dispatch(x_, C_, xin_.f32());
  laps.lap(t.dispatch);
  const std::vector<int64_t>& off = dispatcher_->expert_offsets();
  std::vector<int64_t>& counts = load_counts_;  // loads, then dropped assignments
  counts.assign(size_t(dispatcher_->local_experts()) + 1, 0);
  for (int64_t e = 0; e < dispatcher_->local_experts(); ++e) counts[size_t(e)] = off[size_t(e) + 1] - off[size_t(e)];
  counts.back() = dispatcher_->dropped();
  group_.sum(counts.data(), counts.size());  // over the batch's blocks
  stats_.min_load = *std::min_element(counts.begin(), counts.end() - 1);
  stats_.max_load = *std::max_element(counts.begin(), counts.end() - 1);
  tasks_[0].clear();
  add_row_tasks(tasks_[0], Work::kForward, (swiglu_ ? 3 : 2) * F_);
  run_tasks(tasks_, 1);
  laps.lap(t.experts);
  stats_.assignments = total_rows_ * k_;
  stats_.dropped = counts.back();
  dispatcher_->combine(out_.f32(), gate_.f32(), C_, y_.f32());
  laps.lap(t.combine);
  if (shared_) {
    Tensor s = shared_->forward(pass, x);
    CASTOR_KERNEL_CHECK(kc::add(y_.f32(), y_.f32(), s.f32(), N * C_));
    laps.lap(t.shared);
  }
  return rows_view(y_.f32(), N, C_);
}

Tensor Moe::backward(const Pass& pass, Tensor dy) {
  if (ops_path_) return backward_ops(pass, dy);
  const int64_t N = rows_;
  MoeStats::Times& t = stats_.bwd_ms;
  t = {};
  Laps laps;
  dispatcher_->combine_backward(dy.f32(), out_.f32(), gate_.f32(), C_, dout_.f32(), dgate_.f32());
  laps.lap(t.combine);
  // Phase 0: d act and d hidden per row block, the down weights' gradient per block of its
  // columns; phase 1 (needs all of d hidden): d input per row block, the up weights' gradient.
  const int64_t U = swiglu_ ? 2 * F_ : F_;
  tasks_[0].clear();
  tasks_[1].clear();
  add_row_tasks(tasks_[0], Work::kBackwardIn, F_);
  add_grad_tasks(tasks_[0], Work::kGradDown, F_);
  add_row_tasks(tasks_[1], Work::kBackwardOut, U);
  add_grad_tasks(tasks_[1], Work::kGradUp, U);
  run_tasks(tasks_, 2);
  laps.lap(t.experts);
  dispatcher_->dispatch_backward(dxin_.f32(), C_, dx_.f32());
  laps.lap(t.dispatch);
  {  // Router: gates, balance loss (through the probabilities) and z-loss (through the logits).
    const SerialBlas serial;
    std::fill(dprobs_.f32(), dprobs_.f32() + N * E_, 0.0f);
    double unused = 0.0;
    const bool split = group_.size() > 1;
    CASTOR_KERNEL_CHECK(kc::moe_balance_loss(probs_.f32(), expert_.data(), N, E_, k_, &unused, pass.balance_scale,
                                             dprobs_.f32(), nullptr, total_rows_,
                                             split ? expert_totals_.data() : nullptr));
    CASTOR_KERNEL_CHECK(kc::router_topk_backward(probs_.f32(), expert_.data(), gate_.f32(), dgate_.f32(),
                                                 dprobs_.f32(), N, E_, k_, k_ >= 2, dlogits_.f32()));
    CASTOR_KERNEL_CHECK(kc::router_z_loss(logits_.f32(), N, E_, &unused, pass.z_scale, dlogits_.f32(), total_rows_));
    CASTOR_KERNEL_CHECK(kc::gemm(true, false, E_, C_, N, 1.0f, dlogits_.f32(), E_, x_, C_, 1.0f, router_->g, C_));
    CASTOR_KERNEL_CHECK(
        kc::gemm(false, false, N, C_, E_, 1.0f, dlogits_.f32(), E_, router_->w, C_, 1.0f, dx_.f32(), C_));
  }
  laps.lap(t.route);
  if (shared_) {
    Tensor ds = shared_->backward(pass, dy);
    CASTOR_KERNEL_CHECK(kc::add(dx_.f32(), dx_.f32(), ds.f32(), N * C_));
    laps.lap(t.shared);
  }
  return rows_view(dx_.f32(), N, C_);
}

template <typename F>
void Moe::for_experts(F&& f) const {
  for (int64_t e = 0; e < E_; ++e) {
    const int64_t r0 = offsets_[size_t(e)], rows = offsets_[size_t(e) + 1] - r0;
    if (rows > 0) f(e, r0, rows);
  }
}

Tensor Moe::forward_ops(const Pass& pass, Tensor x) {
  const int64_t N = x.shape[0], U = swiglu_ ? 2 * F_ : F_;
  rows_ = total_rows_ = N;
  x_ref_ = ref(x);
  MoeStats::Times& t = stats_.fwd_ms;
  t = {};
  Laps laps;
  float* logits = logits_.f32();
  auto* expert = static_cast<int32_t*>(expert_dev_.data());
  auto* slot = static_cast<int32_t*>(slot_.data());
  auto* token = static_cast<int32_t*>(token_of_slot_.data());
  ops_.gemm(false, true, N, E_, C_, 1.0f, x_ref_, C_, router_->cw(), C_, 0.0f, ref(logits), E_);
  ops_.router_topk(logits, N, E_, k_, k_ >= 2, probs_.f32(), expert, gate_.f32());
  stats_.balance = ops_.moe_balance_loss(probs_.f32(), expert, N, E_, k_, 0.0f, nullptr);
  stats_.router_z = ops_.router_z_loss(logits, N, E_, 0.0f, nullptr);
  laps.lap(t.route);
  const int64_t capacity = capacity_factor_ > 0 ? int64_t(std::ceil(capacity_factor_ * double(N * k_) / double(E_))) : -1;
  const int64_t dropped = ops_.moe_plan(expert, N, E_, k_, capacity, offsets_.data(), slot, token);
  const int64_t M = offsets_.back();
  laps.lap(t.plan);
  ops_.moe_permute(xin_.ref(), x_ref_, token, M, C_);
  laps.lap(t.dispatch);
  // Each expert's rows: up (+ bias), activation over every row at once, down (+ bias).
  const Ref xin = xin_.ref(), hup = hup_.ref(), act = act_.ref(), out = out_.ref();
  for_experts([&](int64_t e, int64_t r0, int64_t rows) {
    ops_.gemm(false, true, rows, U, C_, 1.0f, xin.at(r0 * C_), C_, up_w_[size_t(e)]->cw(), C_, 0.0f, hup.at(r0 * U), U);
    if (!swiglu_) ops_.bias_add_rows(hup.at(r0 * U), up_b_[size_t(e)]->cw(), rows, F_);
  });
  if (swiglu_) {
    ops_.swiglu_forward(act, hup, M, F_);
  } else {
    ops_.gelu_forward(act, hup, M * F_);
  }
  for_experts([&](int64_t e, int64_t r0, int64_t rows) {
    ops_.gemm(false, true, rows, C_, F_, 1.0f, act.at(r0 * F_), F_, down_w_[size_t(e)]->cw(), F_, 0.0f, out.at(r0 * C_),
              C_);
    if (!swiglu_) ops_.bias_add_rows(out.at(r0 * C_), down_b_[size_t(e)]->cw(), rows, C_);
  });
  laps.lap(t.experts);
  ops_.moe_combine(y_.ref(), out, gate_.f32(), slot, N, k_, C_);
  laps.lap(t.combine);
  stats_.assignments = N * k_;
  stats_.dropped = dropped;
  stats_.min_load = stats_.max_load = offsets_[1] - offsets_[0];
  for (int64_t e = 0; e < E_; ++e) {
    const int64_t load = offsets_[size_t(e) + 1] - offsets_[size_t(e)];
    stats_.min_load = std::min(stats_.min_load, load);
    stats_.max_load = std::max(stats_.max_load, load);
  }
  if (shared_) {
    Tensor s = shared_->forward(pass, x);
    ops_.add(y_.ref(), y_.ref(), ref(s), N * C_);
    laps.lap(t.shared);
  }
  return y_.rows(N, C_);
}

Tensor Moe::backward_ops(const Pass& pass, Tensor dy) {
  const int64_t N = rows_, U = swiglu_ ? 2 * F_ : F_, M = offsets_.back();
  MoeStats::Times& t = stats_.bwd_ms;
  t = {};
  Laps laps;
  const auto* expert = static_cast<const int32_t*>(expert_dev_.data());
  const auto* slot = static_cast<const int32_t*>(slot_.data());
  const Ref xin = xin_.ref(), hup = hup_.ref(), act = act_.ref(), out = out_.ref();
  const Ref dout = dout_.ref(), dact = dact_.ref(), dhup = dhup_.ref(), dxin = dxin_.ref();
  ops_.moe_combine_backward(dout, dgate_.f32(), ref(dy), out, gate_.f32(), slot, N, k_, C_);
  laps.lap(t.combine);
  for_experts([&](int64_t e, int64_t r0, int64_t rows) {  // down: d act, its weight (and bias) gradient
    ops_.gemm(false, false, rows, F_, C_, 1.0f, dout.at(r0 * C_), C_, down_w_[size_t(e)]->cw(), F_, 0.0f,
              dact.at(r0 * F_), F_);
    ops_.gemm(true, false, C_, F_, rows, 1.0f, dout.at(r0 * C_), C_, act.at(r0 * F_), F_, 1.0f,
              ref(down_w_[size_t(e)]->g), F_);
    if (!swiglu_) ops_.bias_grad_accumulate(down_b_[size_t(e)]->g, dout.at(r0 * C_), rows, C_);
  });
  if (swiglu_) {
    ops_.swiglu_backward(dhup, dact, hup, M, F_);
  } else {
    ops_.gelu_backward(dhup, dact, hup, M * F_);
  }
  for_experts([&](int64_t e, int64_t r0, int64_t rows) {  // up: d input, its weight (and bias) gradient
    ops_.gemm(false, false, rows, C_, U, 1.0f, dhup.at(r0 * U), U, up_w_[size_t(e)]->cw(), C_, 0.0f,
              dxin.at(r0 * C_), C_);
    ops_.gemm(true, false, U, C_, rows, 1.0f, dhup.at(r0 * U), U, xin.at(r0 * C_), C_, 1.0f,
              ref(up_w_[size_t(e)]->g), C_);
    if (!swiglu_) ops_.bias_grad_accumulate(up_b_[size_t(e)]->g, dhup.at(r0 * U), rows, F_);
  });
  laps.lap(t.experts);
  ops_.moe_permute_backward(dx_.ref(), dxin, slot, N, k_, C_);
  laps.lap(t.dispatch);
  // Router: gates, balance loss (through the probabilities) and z-loss (through the logits);
  // its GEMMs take the logits' gradient in the activation type.
  ops_.zero(ref(dprobs_.f32()), N * E_);
  ops_.moe_balance_loss(probs_.f32(), expert, N, E_, k_, pass.balance_scale, dprobs_.f32());
  ops_.router_topk_backward(probs_.f32(), expert, gate_.f32(), dgate_.f32(), dprobs_.f32(), N, E_, k_, k_ >= 2,
                            dlogits_.f32());
  ops_.router_z_loss(logits_.f32(), N, E_, pass.z_scale, dlogits_.f32());
  const Ref dlogits = dlogits_act_.ref();
  ops_.convert(dlogits, ref(dlogits_.f32()), N * E_);
  ops_.gemm(true, false, E_, C_, N, 1.0f, dlogits, E_, x_ref_, C_, 1.0f, ref(router_->g), C_);
  ops_.gemm(false, false, N, C_, E_, 1.0f, dlogits, E_, router_->cw(), C_, 1.0f, dx_.ref(), C_);
  laps.lap(t.route);
  if (shared_) {
    Tensor ds = shared_->backward(pass, dy);
    ops_.add(dx_.ref(), dx_.ref(), ref(ds), N * C_);
    laps.lap(t.shared);
  }
  return dx_.rows(N, C_);
}

}  // namespace castor::nn
