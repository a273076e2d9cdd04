// Linear: y = x W^T + b with W stored (out, in) as in torch.nn.Linear.
// W may be several named pieces stacked along `out` (e.g. Llama's q_proj, k_proj,
// v_proj, or gate_proj, up_proj): they are registered back to back, so the arena holds
// one contiguous (sum out, in) matrix and the layer runs a single GEMM over it.
// Tensor parallelism builds a Linear over this rank's slice of the weights (Split); the
// communication around it is the caller's (parallel/tensor_parallel.h).
#pragma once
#include <string>
#include <vector>

#include "core/nn/module.h"
#include "core/param.h"

namespace castor::nn {

// A linear layer as its users see it: the feature counts of its input and output here.
class LinearLayer : public Module {
 public:
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
};

// This rank's slice of a Linear's weights: output features (column-parallel; biases sliced
// alike) or input features (row-parallel; pieces must have no bias).
struct LinearSplit {
  enum class Dim { kNone, kOut, kIn } dim = Dim::kNone;
  int rank = 0, ranks = 1;
};

class Linear final : public LinearLayer {
 public:
  struct Piece {
    std::string weight_name;
    std::string bias_name;  // empty: no bias for this piece
    int64_t out = 0;
    // Split over tp by output rows: each segment of `out` separately (e.g. GPT-2's fused
    // c_attn is q, k, v); empty: one segment.
    std::vector<int64_t> segments = {};
  };
  using Split = LinearSplit;
  // in: the logical input features.
  Linear(ParamStore& store, Backend& backend, int64_t max_rows, int64_t in, const std::vector<Piece>& pieces,
         float init_std, Split split = {});

  Tensor forward(const Pass& pass, Tensor x) override;
  Tensor backward(const Pass& pass, Tensor dy) override;
  int64_t in_features() const override { return in_; }
  int64_t out_features() const override { return out_; }

 private:
  int64_t in_ = 0, out_ = 0;
  std::vector<Param*> weights_, biases_;
  bool has_bias_ = false;
  Ops& ops_;
  Buffer y_, dx_;
  Ref x_;  // cached input (owned by the previous layer)
};

}  // namespace castor::nn
