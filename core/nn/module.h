// Module: the explicit forward/backward contract every layer follows.
// forward(pass, x) -> y caches what backward needs; backward(pass, dy) -> dx overwrites
// (=) the input gradient and accumulates (+=) parameter gradients into the ParamStore's
// grad arena. Outputs are views into buffers the module owns, sized at construction for
// at most max_rows = micro_batch * seq_len rows, valid until the next forward/backward.
#pragma once
#include <cstdint>
#include <vector>

#include "core/backend.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace castor::nn {

// Keys and values of earlier positions of one sequence, for generation: per layer,
// `capacity` rows of kv_dim = KVH * D floats each (post-RoPE keys), of which the first
// `length` are filled. Transformer::start_generation sizes it; each cached pass appends.
struct KvCache {
  int64_t capacity = 0;  // positions the buffers hold
  int64_t length = 0;    // positions stored so far
  int64_t kv_dim = 0;    // floats per position per layer (k and v each)
  std::vector<std::vector<float>> k, v;  // per layer: capacity x kv_dim
};

// One pass over a (B, T) batch of token rows, and what its modules need to know about it.
struct Pass {
  int64_t B = 0;
  int64_t T = 0;
  const int32_t* key_begin = nullptr;  // (B, T) first key each query attends to; nullptr: causal
  float balance_scale = 0.0f;          // gradient weights of the MoE router losses (training)
  float z_scale = 0.0f;
  // Generation (B = 1): attention reads and extends `cache`; the T rows of this pass are
  // positions past .. past + T - 1 (key_begin then holds absolute key positions).
  KvCache* cache = nullptr;
  int64_t past = 0;
  int64_t rows() const { return B * T; }
};

class Module {
 public:
  virtual ~Module() = default;
  virtual Tensor forward(const Pass& pass, Tensor x) = 0;
  virtual Tensor backward(const Pass& pass, Tensor dy) = 0;
};

// Buffer of rows x cols floats viewed as a 2-D tensor of the given rows.
inline Tensor rows_view(float* data, int64_t rows, int64_t cols) { return f32_tensor(data, {rows, cols}); }
// An activation buffer of `elems` elements in the backend's activation type.
inline Buffer act_buffer(Backend& backend, int64_t elems) { return Buffer(backend, backend.ops().act_dtype(), elems); }

}  // namespace castor::nn
