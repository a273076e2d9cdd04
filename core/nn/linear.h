// Linear: y = x W^T + b with W stored (out, in) as in torch.nn.Linear.
// W may be several named pieces stacked along `out` (e.g. Llama's q_proj, k_proj,
// v_proj, or gate_proj, up_proj): they are registered back to back, so the arena holds
// one contiguous (sum out, in) matrix and the layer runs a single GEMM over it.
#pragma once
#include <string>
#include <vector>

#include "core/nn/module.h"
#include "core/param.h"

namespace castor::nn {

class Linear final : public Module {
 public:
  struct Piece {
    std::string weight_name;
    std::string bias_name;  // empty: no bias for this piece
    int64_t out = 0;
  };
  Linear(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in,
         const std::vector<Piece>& pieces, float init_std);

  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  int64_t in_ = 0, out_ = 0;
  std::vector<Param*> weights_, biases_;
  bool has_bias_ = false;
  Buffer y_, dx_;
  const float* x_ = nullptr;  // cached input (owned by the previous layer)
};

}  // namespace castor::nn
