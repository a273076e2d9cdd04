// Ops: the compute modules ask of their backend, one virtual call per kernel, so one model
// code runs on the cpu backend (kernels/cpu) and the cuda backend (kernels/cuda, on its
// compute stream). Operands are Refs: backend memory plus element type; activations and
// compute weights are act_dtype() (f32 on CPU; bf16 or f32 on GPU), gradients always f32.
// Small host-side inputs (token ids, targets, masks, row weights) and results (losses) stay
// host memory: the cuda ops stage them. Kernel scratch is the Ops object's own.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/lm_head_xent.h"
#include "kernels/cpu/optim.h"

namespace castor {

class Ops {
 public:
  virtual ~Ops() = default;
  virtual DType act_dtype() const = 0;

  // C = alpha op(A) op(B) + beta C, row-major (kernels/cpu/gemm.h). A, B: act_dtype (or f32);
  // C: act_dtype, or f32 for weight gradients accumulated with beta = 1.
  virtual void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, Ref A, int64_t lda,
                    Ref B, int64_t ldb, float beta, Ref C, int64_t ldc) = 0;
  // Element-wise (kernels/cpu/elementwise.h, activation.h).
  virtual void add(Ref out, Ref a, Ref b, int64_t n) = 0;
  virtual void bias_add_rows(Ref y, Ref bias, int64_t N, int64_t C) = 0;
  virtual void bias_grad_accumulate(float* dbias, Ref dy, int64_t N, int64_t C) = 0;
  virtual void zero(Ref x, int64_t n) = 0;
  // out = in converted element-wise between f32 and bf16 (or copied).
  virtual void convert(Ref out, Ref in, int64_t n) = 0;
  virtual void gelu_forward(Ref y, Ref x, int64_t n) = 0;
  virtual void gelu_backward(Ref dx, Ref dy, Ref x, int64_t n) = 0;
  virtual void swiglu_forward(Ref out, Ref in, int64_t N, int64_t F) = 0;
  virtual void swiglu_backward(Ref din, Ref dout, Ref in, int64_t N, int64_t F) = 0;
  // Norms (kernels/cpu/norm.h): mean, rstd per row in f32; b/db may be null (RMSNorm).
  virtual void layernorm_forward(Ref y, float* mean, float* rstd, Ref x, Ref w, Ref b, int64_t N, int64_t C,
                                 float eps) = 0;
  virtual void layernorm_backward(Ref dx, float* dw, float* db, Ref dy, Ref x, Ref w, const float* mean,
                                  const float* rstd, int64_t N, int64_t C) = 0;
  virtual void rmsnorm_forward(Ref y, float* rstd, Ref x, Ref w, int64_t N, int64_t C, float eps) = 0;
  virtual void rmsnorm_backward(Ref dx, float* dw, Ref dy, Ref x, Ref w, const float* rstd, int64_t N,
                                int64_t C) = 0;
  // RoPE in place (kernels/cpu/rope.h); the table is f32 backend memory.
  virtual void rope_apply(Ref x, const float* table, int64_t B, int64_t T, int64_t heads, int64_t D,
                          int64_t row_stride, bool inverse) = 0;
  // Causal attention (kernels/cpu/attention.h); key_begin: host (B*T) or null.
  virtual void attention_forward(Ref out, float* lse, Ref qkv, const kernels::cpu::AttentionShape& s,
                                 const int32_t* key_begin) = 0;
  virtual void attention_backward(Ref dqkv, Ref dout, Ref qkv, Ref out, const float* lse,
                                  const kernels::cpu::AttentionShape& s, const int32_t* key_begin) = 0;
  // Embedding (kernels/cpu/embedding.h); ids: host. Forward returns false when an id is
  // outside [0, V) (the caller names the vocabulary).
  virtual bool embedding_forward(Ref out, const int32_t* ids, Ref wte, Ref wpe, int64_t N, int64_t T, int64_t C,
                                 int64_t V, int64_t v_begin, int64_t v_count) = 0;
  virtual void embedding_backward(float* dwte, float* dwpe, Ref dout, const int32_t* ids, int64_t N, int64_t T,
                                  int64_t C, int64_t V, int64_t v_begin, int64_t v_count) = 0;
  // Fused LM head + cross-entropy (kernels/cpu/lm_head_xent.h); targets, row_scale and
  // row_losses are host arrays; chunk_rows rows of logits at a time.
  virtual kernels::cpu::XentResult lm_head_xent(Ref x, Ref w, const int32_t* targets, int64_t N, int64_t C,
                                                int64_t V, float grad_scale, Ref dx, float* dw, int64_t chunk_rows,
                                                const float* row_scale, double* row_losses) = 0;
  // Mixture-of-experts (kernels/cpu/moe.h) for one process holding the whole batch: router
  // arrays f32, expert / slot / token arrays int32, all backend memory; the losses come
  // back to the host. moe_plan writes the E + 1 expert offsets to host memory and returns
  // the dropped assignments.
  virtual void router_topk(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                           int32_t* expert, float* gate) = 0;
  virtual void router_topk_backward(const float* probs, const int32_t* expert, const float* gate, const float* dgate,
                                    const float* dprobs_extra, int64_t N, int64_t E, int64_t k, bool renormalize,
                                    float* dlogits) = 0;
  virtual double moe_balance_loss(const float* probs, const int32_t* expert, int64_t N, int64_t E, int64_t k,
                                  float scale, float* dprobs) = 0;
  virtual double router_z_loss(const float* logits, int64_t N, int64_t E, float scale, float* dlogits) = 0;
  virtual int64_t moe_plan(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t capacity, int64_t* offsets,
                           int32_t* slot, int32_t* token_of_slot) = 0;
  virtual void moe_permute(Ref x_perm, Ref x, const int32_t* token_of_slot, int64_t M, int64_t C) = 0;
  virtual void moe_permute_backward(Ref dx, Ref dx_perm, const int32_t* slot, int64_t N, int64_t k, int64_t C) = 0;
  virtual void moe_combine(Ref y, Ref y_perm, const float* gate, const int32_t* slot, int64_t N, int64_t k,
                           int64_t C) = 0;
  virtual void moe_combine_backward(Ref dy_perm, float* dgate, Ref dy, Ref y_perm, const float* gate,
                                    const int32_t* slot, int64_t N, int64_t k, int64_t C) = 0;
  // Optimizer over f32 arena ranges (kernels/cpu/optim.h).
  virtual void adamw_step(float* w, const float* g, float* m, float* v, int64_t n,
                          const kernels::cpu::AdamWHyper& h) = 0;
  virtual double sum_squares(const float* g, int64_t n) = 0;
  // g[i] *= inv_scale (fp16 loss scaling); false if any result is inf or NaN.
  virtual bool unscale_and_check(float* g, int64_t n, float inv_scale) = 0;
};

}  // namespace castor
