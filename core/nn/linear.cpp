// Linear forward/backward as three GEMMs: y = x W^T, dx = dy W, dW += dy^T x.
#include "core/nn/linear.h"

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"

namespace castor::nn {

namespace kc = kernels::cpu;

Linear::Linear(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
               const std::vector<Piece>& pieces, float init_std, Split split) {
  auto shard = [&](const Piece& p, int dim) {
    ParamShard s;
    if (split.ranks > 1) s = {dim, split.rank, split.ranks, dim == 0 ? p.segments : std::vector<int64_t>{}};
    return s;
  };
  const bool by_out = split.dim == Split::Dim::kOut, by_in = split.dim == Split::Dim::kIn;
  for (const Piece& p : pieces) {
    Param* w = store.add(p.weight_name, {p.out, in}, Init::normal(init_std), true,
                         by_out ? shard(p, 0) : by_in ? shard(p, 1) : ParamShard{});
    weights_.push_back(w);
    out_ += w->local[0];
    in_ = w->local[1];
    has_bias_ = has_bias_ || !p.bias_name.empty();
  }
  if (has_bias_) {
    CASTOR_CHECK(!by_in, "linear ", pieces.front().weight_name, ": a row-parallel layer adds its bias itself");
    for (const Piece& p : pieces) {
      CASTOR_CHECK(!p.bias_name.empty(), "linear ", p.weight_name, ": bias on some pieces only");
      biases_.push_back(store.add(p.bias_name, {p.out}, Init::zeros(), false, by_out ? shard(p, 0) : ParamShard{}));
    }
  }
  y_ = Buffer(backend, size_t(max_rows * out_) * sizeof(float));
  dx_ = Buffer(backend, size_t(max_rows * in_) * sizeof(float));
}

Tensor Linear::forward(const Pass&, Tensor x) {
  const int64_t N = x.shape[0];
  x_ = x.f32();
  const float* w = weights_.front()->w;  // pieces are contiguous
  CASTOR_KERNEL_CHECK(kc::gemm(false, true, N, out_, in_, 1.0f, x_, in_, w, in_, 0.0f, y_.f32(), out_));
  if (has_bias_) CASTOR_KERNEL_CHECK(kc::bias_add_rows(y_.f32(), biases_.front()->w, N, out_));
  return rows_view(y_.f32(), N, out_);
}

Tensor Linear::backward(const Pass&, Tensor dy) {
  const int64_t N = dy.shape[0];
  const float* d = dy.f32();
  const float* w = weights_.front()->w;
  float* dw = weights_.front()->g;
  CASTOR_KERNEL_CHECK(kc::gemm(false, false, N, in_, out_, 1.0f, d, out_, w, in_, 0.0f, dx_.f32(), in_));
  CASTOR_KERNEL_CHECK(kc::gemm(true, false, out_, in_, N, 1.0f, d, out_, x_, in_, 1.0f, dw, in_));
  if (has_bias_) CASTOR_KERNEL_CHECK(kc::bias_grad_accumulate(biases_.front()->g, d, N, out_));
  return rows_view(dx_.f32(), N, in_);
}

}  // namespace castor::nn
