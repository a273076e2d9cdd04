// TensorParallel (see tensor_parallel.h): regions, column/row-parallel linears, norms whose
// gradients are summed over tp under sequence parallelism, the vocabulary-parallel head.
#include "parallel/tensor_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/nn/norm.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/vec_math.h"
#include "parallel/all_to_all_dispatcher.h"

namespace castor::parallel {

namespace kc = kernels::cpu;
using nn::Pass;
using nn::Region;
using nn::rows_view;

namespace {

// Row blocks of a pass over the tp group: rank r's block is rows [r * n, (r + 1) * n).
struct RowBlocks {
  Communicator& tp;
  int64_t C;
  int64_t split(int64_t rows) const {
    CASTOR_CHECK(rows % tp.size() == 0, "tensor parallelism: ", rows, " token rows do not split over ", tp.size(),
                 " ranks");
    return rows / tp.size();
  }
  Tensor gather(Tensor x, Buffer& buf) const {
    const int64_t rows = x.shape[0];
    tp.all_gather(x.f32(), buf.f32(), size_t(rows * C));
    return rows_view(buf.f32(), rows * tp.size(), C);
  }
  Tensor reduce_scatter(Tensor x, Buffer& buf) const {
    const int64_t mine = split(x.shape[0]);
    tp.reduce_scatter(x.f32(), buf.f32(), size_t(mine * C), ReduceOp::kSum);
    return rows_view(buf.f32(), mine, C);
  }
  Tensor own_rows(Tensor x) const {
    const int64_t mine = split(x.shape[0]);
    return rows_view(x.f32() + tp.rank() * mine * C, mine, C);
  }
  Tensor all_reduce(Tensor x) const {  // in place, on the buffer of the layer next to the region
    tp.all_reduce(x.f32(), size_t(x.numel()), ReduceOp::kSum);
    return x;
  }
};

// One region of nn::Region, over this rank's buffers.
class TpRegion final : public nn::Module {
 public:
  TpRegion(Region kind, Communicator& tp, bool sp, Backend& backend, int64_t max_rows, int64_t C)
      : kind_(kind), sp_(sp), rows_{tp, C} {
    if (sp_) buf_ = Buffer(backend, size_t(max_rows * C) * sizeof(float));
  }

  Tensor forward(const Pass&, Tensor x) override {
    switch (kind_) {
      case Region::kEnter: return sp_ ? rows_.gather(x, buf_) : x;
      case Region::kExit: return sp_ ? rows_.reduce_scatter(x, buf_) : rows_.all_reduce(x);
      case Region::kReduce: return rows_.all_reduce(x);
      case Region::kScatter: return sp_ ? rows_.own_rows(x) : x;
    }
    return x;
  }
  Tensor backward(const Pass&, Tensor dy) override {
    switch (kind_) {
      case Region::kEnter: return sp_ ? rows_.reduce_scatter(dy, buf_) : rows_.all_reduce(dy);
      case Region::kExit: return sp_ ? rows_.gather(dy, buf_) : dy;
      case Region::kReduce: return dy;
      case Region::kScatter: return sp_ ? rows_.gather(dy, buf_) : dy;
    }
    return dy;
  }

 private:
  Region kind_;
  bool sp_;
  RowBlocks rows_;
  Buffer buf_;
};

// The router statistics of an MoE layer summed over the tp ranks' blocks of rows.
class TpTokenGroup final : public nn::TokenGroup {
 public:
  explicit TpTokenGroup(Communicator& tp) : tp_(tp) {}
  int size() const override { return tp_.size(); }
  int rank() const override { return tp_.rank(); }
  void sum(double* v, size_t n) override { tp_.all_reduce(v, n, ReduceOp::kSum); }
  void sum(int64_t* v, size_t n) override { tp_.all_reduce(v, n, ReduceOp::kSum); }
  void all_gather(const int64_t* mine, int64_t* all, size_t n) override { tp_.all_gather(mine, all, n); }

 private:
  Communicator& tp_;
};

// Params replicated over tp whose gradients each tp rank computes from its block of the
// rows alone: partial sums, which data parallelism reduces over tp x dp
// (parallel/data_parallel.h allocate_for_layout).
void mark_token_split(const std::vector<Param*>& params) {
  for (Param* p : params) p->token_split = true;
}

// An MoE layer on this rank's block of the rows. Without SP it takes its block of the
// (replicated) input and all-gathers the outputs, and the reverse in backward; under SP the
// residual's rows are already the block. The layer's params see only the block's tokens:
// their gradients are partial sums, which data parallelism reduces over tp x dp (they are
// marked token_split, parallel/data_parallel.h).
class SplitTokensLayer final : public nn::Module {
 public:
  SplitTokensLayer(std::unique_ptr<nn::Module> inner, Communicator& tp, bool sp, Backend& backend, int64_t max_rows,
                   int64_t C)
      : inner_(std::move(inner)), sp_(sp), rows_{tp, C} {
    if (!sp_) {
      y_ = Buffer(backend, size_t(max_rows * C) * sizeof(float));
      dx_ = Buffer(backend, size_t(max_rows * C) * sizeof(float));
    }
  }
  Tensor forward(const Pass& pass, Tensor x) override {
    if (sp_) return inner_->forward(pass, x);
    return rows_.gather(inner_->forward(pass, rows_.own_rows(x)), y_);
  }
  Tensor backward(const Pass& pass, Tensor dy) override {
    Tensor block = sp_ ? dy : rows_.own_rows(dy);  // without SP dy is whole and equal on every rank
    Tensor dx = inner_->backward(pass, block);
    return sp_ ? dx : rows_.gather(dx, dx_);
  }

 private:
  std::unique_ptr<nn::Module> inner_;
  bool sp_;
  RowBlocks rows_;
  Buffer y_, dx_;
};

class ColumnParallelLinear final : public nn::LinearLayer {
 public:
  ColumnParallelLinear(std::unique_ptr<nn::Module> enter, std::unique_ptr<nn::Linear> linear)
      : enter_(std::move(enter)), linear_(std::move(linear)) {}
  Tensor forward(const Pass& pass, Tensor x) override { return linear_->forward(pass, enter_->forward(pass, x)); }
  Tensor backward(const Pass& pass, Tensor dy) override { return enter_->backward(pass, linear_->backward(pass, dy)); }
  int64_t in_features() const override { return linear_->in_features(); }
  int64_t out_features() const override { return linear_->out_features(); }

 private:
  std::unique_ptr<nn::Module> enter_;
  std::unique_ptr<nn::Linear> linear_;
};

class RowParallelLinear final : public nn::LinearLayer {
 public:
  RowParallelLinear(std::unique_ptr<nn::Linear> linear, std::unique_ptr<nn::Module> exit, Param* bias)
      : linear_(std::move(linear)), exit_(std::move(exit)), bias_(bias) {}
  Tensor forward(const Pass& pass, Tensor x) override {
    Tensor y = exit_->forward(pass, linear_->forward(pass, x));
    if (bias_) CASTOR_KERNEL_CHECK(kc::bias_add_rows(y.f32(), bias_->w, y.shape[0], bias_->numel()));
    return y;
  }
  Tensor backward(const Pass& pass, Tensor dy) override {
    // Under SP from this rank's rows only (the bias is then marked token_split).
    if (bias_) CASTOR_KERNEL_CHECK(kc::bias_grad_accumulate(bias_->g, dy.f32(), dy.shape[0], bias_->numel()));
    return linear_->backward(pass, exit_->backward(pass, dy));
  }
  int64_t in_features() const override { return linear_->in_features(); }
  int64_t out_features() const override { return linear_->out_features(); }

 private:
  std::unique_ptr<nn::Linear> linear_;
  std::unique_ptr<nn::Module> exit_;
  Param* bias_;
};

// LM head + cross-entropy over this rank's V/tp vocabulary rows, a chunk of rows at a time:
// local logits, then the row maxima (max over ranks), then the shifted exponential sums and
// the target logits (summed over ranks, in double), then probabilities and gradients.
class VocabParallelHead final : public nn::VocabHead {
 public:
  VocabParallelHead(Communicator& tp, int64_t chunk_rows, int64_t C, int64_t V)
      : tp_(tp), chunk_(chunk_rows), C_(C), Vl_(V / tp.size()), v0_(tp.rank() * (V / tp.size())) {
    logits_.resize(size_t(chunk_ * Vl_));
    max_.resize(size_t(chunk_));
    sums_.resize(size_t(2 * chunk_));
  }

  // f32 operands (cpu backend).
  kc::XentResult xent(Ref h_ref, Ref w_ref, const int32_t* targets, int64_t N, Ref dh_ref, float* dw,
                      const float* row_scale, double* row_losses) override {
    kc::XentResult result;
    const float* h = h_ref.f32();
    const float* w = w_ref.f32();
    float* dh = dh_ref.p ? dh_ref.f32() : nullptr;
    const bool backward = dh != nullptr;
    float* logits = logits_.data();
    for (int64_t c0 = 0; c0 < N; c0 += chunk_) {
      const int64_t rows = std::min(chunk_, N - c0);
      const int32_t* tc = targets + c0;
      CASTOR_KERNEL_CHECK(kc::gemm(false, true, rows, Vl_, C_, 1.0f, h + c0 * C_, C_, w, C_, 0.0f, logits, Vl_));
      for (int64_t r = 0; r < rows; ++r) max_[size_t(r)] = kc::vec::row_max(logits + r * Vl_, Vl_);
      tp_.all_reduce(max_.data(), size_t(rows), ReduceOp::kMax);
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        float* row = logits + r * Vl_;
        const int64_t t = int64_t(tc[r]) - v0_;
        const bool mine = t >= 0 && t < Vl_;
        sums_[size_t(2 * r + 1)] = mine ? double(row[t]) : 0.0;
        sums_[size_t(2 * r)] = tc[r] < 0 ? 0.0 : double(kc::vec::exp_shift_sum(row, Vl_, max_[size_t(r)]));
      }
      tp_.all_reduce(sums_.data(), size_t(2 * rows), ReduceOp::kSum);
      for (int64_t r = 0; r < rows; ++r) {
        double loss = 0.0;
        if (tc[r] >= 0) {
          loss = double(max_[size_t(r)]) + std::log(sums_[size_t(2 * r)]) - sums_[size_t(2 * r + 1)];
          result.loss_sum += loss;
          result.count += 1;
        }
        if (row_losses) row_losses[c0 + r] = loss;
      }
      if (!backward) continue;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {  // dlogits = scale * (p - onehot(t)) on this rank's columns
        float* row = logits + r * Vl_;
        if (tc[r] < 0) {
          std::memset(row, 0, size_t(Vl_) * sizeof(float));
          continue;
        }
        const float g = row_scale ? row_scale[c0 + r] : 1.0f;
        const float k = float(double(g) / sums_[size_t(2 * r)]);
        for (int64_t j = 0; j < Vl_; ++j) row[j] *= k;
        const int64_t t = int64_t(tc[r]) - v0_;
        if (t >= 0 && t < Vl_) row[t] -= g;
      }
      CASTOR_KERNEL_CHECK(kc::gemm(false, false, rows, C_, Vl_, 1.0f, logits, Vl_, w, C_, 0.0f, dh + c0 * C_, C_));
      CASTOR_KERNEL_CHECK(kc::gemm(true, false, Vl_, C_, rows, 1.0f, logits, Vl_, h + c0 * C_, C_, 1.0f, dw, C_));
    }
    return result;
  }

 private:
  Communicator& tp_;
  int64_t chunk_, C_, Vl_, v0_;
  std::vector<float> logits_, max_;
  std::vector<double> sums_;  // per row: sum of exp(logit - max), target logit
};

}  // namespace

TensorParallel::TensorParallel(Communicator& tp, bool sequence_parallel, Communicator* ep)
    : tp_(tp), sp_(sequence_parallel), ep_(ep), token_group_(std::make_unique<TpTokenGroup>(tp)) {}

TensorParallel::~TensorParallel() = default;

nn::TokenGroup* TensorParallel::token_group() { return tp_.size() > 1 ? token_group_.get() : nullptr; }

std::unique_ptr<nn::Module> TensorParallel::split_tokens(std::unique_ptr<nn::Module> layer, std::vector<Param*> params,
                                                         Backend& backend, int64_t max_rows, int64_t C) {
  if (tp_.size() == 1) return layer;
  mark_token_split(params);
  return std::make_unique<SplitTokensLayer>(std::move(layer), tp_, sp_, backend, max_rows, C);
}

std::unique_ptr<nn::LinearLayer> TensorParallel::column(ParamStore& store, Backend& backend, int64_t max_rows,
                                                        int64_t in, const std::vector<nn::Linear::Piece>& pieces,
                                                        float init_std) {
  if (tp_.size() == 1) return LayerBuilder::column(store, backend, max_rows, in, pieces, init_std);
  const nn::Linear::Split split{nn::Linear::Split::Dim::kOut, tp_.rank(), tp_.size()};
  return std::make_unique<ColumnParallelLinear>(region(Region::kEnter, backend, max_rows, in),
                                                std::make_unique<nn::Linear>(store, backend, max_rows, in, pieces,
                                                                             init_std, split));
}

std::unique_ptr<nn::LinearLayer> TensorParallel::row(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
                                                     const nn::Linear::Piece& piece, float init_std) {
  if (tp_.size() == 1) return LayerBuilder::row(store, backend, max_rows, in, piece, init_std);
  const nn::Linear::Split split{nn::Linear::Split::Dim::kIn, tp_.rank(), tp_.size()};
  nn::Linear::Piece weight = piece;
  weight.bias_name.clear();
  auto linear = std::make_unique<nn::Linear>(store, backend, max_rows, in, std::vector<nn::Linear::Piece>{weight},
                                             init_std, split);
  Param* bias = piece.bias_name.empty() ? nullptr : store.add(piece.bias_name, {piece.out}, Init::zeros(), false);
  if (bias && sp_) mark_token_split({bias});
  return std::make_unique<RowParallelLinear>(std::move(linear), region(Region::kExit, backend, max_rows, piece.out),
                                             bias);
}

std::unique_ptr<nn::Module> TensorParallel::norm(ParamStore& store, Backend& backend, int64_t max_rows, int64_t C,
                                                 Family family, const std::string& prefix, float eps) {
  const size_t first = store.params().size();
  auto norm = std::make_unique<nn::Norm>(store, backend, max_rows, C, family, prefix, eps);
  if (sp_ && tp_.size() > 1) mark_token_split(store.added_since(first));  // else every rank has every row
  return norm;
}

std::unique_ptr<nn::Module> TensorParallel::region(Region kind, Backend& backend, int64_t max_rows, int64_t C) {
  if (tp_.size() == 1) return LayerBuilder::region(kind, backend, max_rows, C);
  return std::make_unique<TpRegion>(kind, tp_, sp_, backend, max_rows, C);
}

ParamShard TensorParallel::vocab_shard() const {
  if (tp_.size() == 1) return {};
  return {0, tp_.rank(), tp_.size(), {}};
}

std::unique_ptr<nn::VocabHead> TensorParallel::vocab_head(Backend& backend, int64_t chunk_rows, int64_t C, int64_t V) {
  if (tp_.size() == 1) return LayerBuilder::vocab_head(backend, chunk_rows, C, V);
  return std::make_unique<VocabParallelHead>(tp_, chunk_rows, C, V);
}

std::unique_ptr<nn::TokenDispatcher> TensorParallel::dispatcher(int64_t experts) {
  if (ep_ && ep_->size() > 1) return std::make_unique<AllToAllDispatcher>(*ep_, experts);
  return std::make_unique<nn::LocalDispatcher>(experts);
}

void TensorParallel::check_layout(const ModelConfig& cfg, int tp, int ep, bool sequence_parallel,
                                  int64_t micro_batch, int64_t seq_len) {
  if (ep > 1) {
    CASTOR_CHECK(cfg.moe_experts > 0, "--parallel.ep ", ep, " needs an MoE model (--model.moe_experts > 0)");
    CASTOR_CHECK(cfg.moe_experts % ep == 0, "--parallel.ep ", ep, " does not divide --model.moe_experts (",
                 cfg.moe_experts, ")");
  }
  if (tp == 1) return;
  if (cfg.moe_experts > 0)
    CASTOR_CHECK(micro_batch * seq_len % tp == 0, "--parallel.tp ", tp, " does not divide the ", micro_batch * seq_len,
                 " token rows of a micro-batch (micro_batch x seq_len), which MoE layers split over tp");
  auto divides = [&](int64_t n, const char* what) {
    CASTOR_CHECK(n % tp == 0, "--parallel.tp ", tp, " does not divide ", what, " (", n, ")");
  };
  divides(cfg.n_heads, "--model.n_heads");
  divides(cfg.kv_heads(), "--model.n_kv_heads");
  divides(cfg.ffn_dim(), "--model.d_ff");
  if (cfg.vocab_size % tp != 0) {
    const int64_t multiple = 64 * tp, padded = (cfg.vocab_size + multiple - 1) / multiple * multiple;
    CASTOR_FAIL("--parallel.tp ", tp, " does not divide the vocabulary (", cfg.vocab_size,
                " rows): pad it, e.g. --model.vocab_size ", padded);
  }
  if (sequence_parallel)
    CASTOR_CHECK(micro_batch * seq_len % tp == 0, "--parallel.sequence_parallel: --parallel.tp ", tp,
                 " does not divide the ", micro_batch * seq_len, " token rows of a micro-batch (micro_batch x seq_len)");
}

}  // namespace castor::parallel
