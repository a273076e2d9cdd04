// Linear forward/backward as three GEMMs: y = x W^T, dx = dy W, dW += dy^T x.
#include "core/nn/linear.h"

#include "core/ops.h"

namespace castor::nn {

Linear::Linear(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
               const std::vector<Piece>& pieces, float init_std, Split split)
    : ops_(backend.ops()) {
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
  y_ = act_buffer(backend, max_rows * out_);
  dx_ = act_buffer(backend, max_rows * in_);
}

Tensor Linear::forward(const Pass&, Tensor x) {
  const int64_t N = x.shape[0];
  x_ = ref(x);
  const Ref w = weights_.front()->cw();  // pieces are contiguous
  ops_.gemm(false, true, N, out_, in_, 1.0f, x_, in_, w, in_, 0.0f, y_.ref(), out_);
  if (has_bias_) ops_.bias_add_rows(y_.ref(), biases_.front()->cw(), N, out_);
  return y_.rows(N, out_);
}

Tensor Linear::backward(const Pass&, Tensor dy) {
  const int64_t N = dy.shape[0];
  const Ref d = ref(dy);
  ops_.gemm(false, false, N, in_, out_, 1.0f, d, out_, weights_.front()->cw(), in_, 0.0f, dx_.ref(), in_);
  ops_.gemm(true, false, out_, in_, N, 1.0f, d, out_, x_, in_, 1.0f, ref(weights_.front()->g), in_);
  if (has_bias_) ops_.bias_grad_accumulate(biases_.front()->g, d, N, out_);
  return dx_.rows(N, in_);
}

}  // namespace castor::nn
