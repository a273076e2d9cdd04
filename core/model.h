// Transformer: the dense decoder-only language model (GPT-2 or Llama family by config).
// ids (B, T) -> embeddings -> blocks -> final norm -> LM head fused with cross-entropy.
// The fused head produces its gradients during forward, so a training step is
// forward(ids, targets, grad_scale) then backward(); evaluation passes no grad_scale.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "core/config.h"
#include "core/nn/block.h"
#include "core/param.h"
#include "kernels/cpu/lm_head_xent.h"

namespace castor {

class Transformer {
 public:
  // Registers every parameter in `store` (allocation and init are the caller's:
  // store.allocate(backend); store.initialize(seed)).
  Transformer(const ModelConfig& cfg, ParamStore& store, Backend& backend, int64_t max_B, int64_t max_T);

  // Loss summed over targets >= 0 and their count. With grad_scale set, parameter
  // gradients of the head are accumulated (+=) scaled by *grad_scale, and backward()
  // must follow before the next forward.
  kernels::cpu::XentResult forward(const int32_t* ids, const int32_t* targets, int64_t B, int64_t T,
                                   const float* grad_scale);
  // grads_ready(offset), when given, is called as backward goes: every gradient at arena
  // offset >= offset is final (data parallelism starts reducing those buckets while the
  // rest of backward runs). Arena order is registration order: embeddings, blocks, final
  // norm, head; backward finishes it from the end.
  void backward(const std::function<void(size_t)>& grads_ready = nullptr);

  // Next-token logits (V floats) at the last position of each of the B rows.
  void last_logits(const int32_t* ids, int64_t B, int64_t T, float* logits);

  const ModelConfig& config() const { return cfg_; }
  // Rows per chunk of the fused LM head for a batch of `rows` rows (bench/NOTES.md).
  static int64_t head_chunk_rows(int64_t rows, int64_t vocab_size);

 private:
  Tensor trunk_forward(const nn::Pass& pass, const int32_t* ids);
  ModelConfig cfg_;
  int64_t max_B_, max_T_;
  Param* wte_ = nullptr;
  Param* wpe_ = nullptr;
  Param* head_ = nullptr;  // == wte_ when tied
  std::vector<std::unique_ptr<nn::Block>> blocks_;
  std::vector<size_t> block_offset_;  // arena offset of each block's first parameter
  size_t norm_offset_ = 0;            // ... of the final norm's
  std::unique_ptr<nn::Norm> norm_f_;
  Buffer emb_, dhidden_, head_scratch_;
  int64_t head_chunk_ = 0;
  const int32_t* ids_ = nullptr;
  nn::Pass pass_;
  bool pending_backward_ = false;
};

}  // namespace castor
