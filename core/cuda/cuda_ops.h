// CudaOps: Ops over kernels/cuda for the cuda backend, on its compute stream. Activations
// and compute weights are f32, bf16 or f16 (chosen at construction), accumulation f32,
// weight gradients f32. Host-side inputs (ids, targets, masks, row weights) are staged into
// device buffers (ids and targets range-checked on the host first); host-side results
// (losses, the gradient norm, MoE offsets) are copied back, which synchronises the stream.
#pragma once
#include <memory>

#include "core/backend.h"
#include "core/ops.h"
#include "kernels/cuda/gemm.cuh"

namespace castor {

class CudaBackend;

class CudaOps final : public Ops {
 public:
  CudaOps(CudaBackend& backend, DType activations);
  ~CudaOps() override;
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  DType act_dtype() const override { return act_; }
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, Ref A, int64_t lda, Ref B,
            int64_t ldb, float beta, Ref C, int64_t ldc) override;
  void add(Ref out, Ref a, Ref b, int64_t n) override;
  void bias_add_rows(Ref y, Ref bias, int64_t N, int64_t C) override;
  void bias_grad_accumulate(float* dbias, Ref dy, int64_t N, int64_t C) override;
  void zero(Ref x, int64_t n) override;
  void convert(Ref out, Ref in, int64_t n) override;
  void gelu_forward(Ref y, Ref x, int64_t n) override;
  void gelu_backward(Ref dx, Ref dy, Ref x, int64_t n) override;
  void swiglu_forward(Ref out, Ref in, int64_t N, int64_t F) override;
  void swiglu_backward(Ref din, Ref dout, Ref in, int64_t N, int64_t F) override;
  void layernorm_forward(Ref y, float* mean, float* rstd, Ref x, Ref w, Ref b, int64_t N, int64_t C,
                         float eps) override;
  void layernorm_backward(Ref dx, float* dw, float* db, Ref dy, Ref x, Ref w, const float* mean, const float* rstd,
                          int64_t N, int64_t C) override;
  void rmsnorm_forward(Ref y, float* rstd, Ref x, Ref w, int64_t N, int64_t C, float eps) override;
  void rmsnorm_backward(Ref dx, float* dw, Ref dy, Ref x, Ref w, const float* rstd, int64_t N, int64_t C) override;
  void rope_apply(Ref x, const float* table, int64_t B, int64_t T, int64_t heads, int64_t D, int64_t row_stride,
                  bool inverse) override;
  void attention_forward(Ref out, float* lse, Ref qkv, const kernels::cpu::AttentionShape& s,
                         const int32_t* key_begin) override;
  void attention_backward(Ref dqkv, Ref dout, Ref qkv, Ref out, const float* lse,
                          const kernels::cpu::AttentionShape& s, const int32_t* key_begin) override;
  bool embedding_forward(Ref out, const int32_t* ids, Ref wte, Ref wpe, int64_t N, int64_t T, int64_t C, int64_t V,
                         int64_t v_begin, int64_t v_count) override;
  void embedding_backward(float* dwte, float* dwpe, Ref dout, const int32_t* ids, int64_t N, int64_t T, int64_t C,
                          int64_t V, int64_t v_begin, int64_t v_count) override;
  kernels::cpu::XentResult lm_head_xent(Ref x, Ref w, const int32_t* targets, int64_t N, int64_t C, int64_t V,
                                        float grad_scale, Ref dx, float* dw, int64_t chunk_rows,
                                        const float* row_scale, double* row_losses) override;
  void router_topk(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                           int32_t* expert, float* gate) override;
  void router_topk_backward(const float* probs, const int32_t* expert, const float* gate, const float* dgate,
                                    const float* dprobs_extra, int64_t N, int64_t E, int64_t k, bool renormalize,
                                    float* dlogits) override;
  double moe_balance_loss(const float* probs, const int32_t* expert, int64_t N, int64_t E, int64_t k,
                                  float scale, float* dprobs) override;
  double router_z_loss(const float* logits, int64_t N, int64_t E, float scale, float* dlogits) override;
  int64_t moe_plan(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t capacity, int64_t* offsets,
                           int32_t* slot, int32_t* token_of_slot) override;
  void moe_permute(Ref x_perm, Ref x, const int32_t* token_of_slot, int64_t M, int64_t C) override;
  void moe_permute_backward(Ref dx, Ref dx_perm, const int32_t* slot, int64_t N, int64_t k, int64_t C) override;
  void moe_combine(Ref y, Ref y_perm, const float* gate, const int32_t* slot, int64_t N, int64_t k,
                           int64_t C) override;
  void moe_combine_backward(Ref dy_perm, float* dgate, Ref dy, Ref y_perm, const float* gate,
                                    const int32_t* slot, int64_t N, int64_t k, int64_t C) override;
  void adamw_step(float* w, const float* g, float* m, float* v, int64_t n,
                  const kernels::cpu::AdamWHyper& h) override;
  double sum_squares(const float* g, int64_t n) override;
  bool unscale_and_check(float* g, int64_t n, float inv_scale) override;

 private:
  // A device buffer that grows to the largest request (contents not kept).
  struct Staging {
    Buffer buffer;
    void* get(Backend& backend, size_t bytes);
  };
  // Copies n host values into staging `s` (nullptr for a null host pointer).
  template <typename T>
  const T* stage(Staging& s, const T* host, int64_t n);
  void to_host(void* host, const void* device, size_t bytes);  // synchronises

  CudaBackend& backend_;
  DType act_;
  Buffer gemm_workspace_;
  kernels::cuda::GemmContext gemm_;
  Staging ids_, targets_, key_begin_, row_scale_, row_losses_, result_, scratch_, flag_;
};

}  // namespace castor
