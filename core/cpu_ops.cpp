// The cpu backend's Ops: each call runs the kernels/cpu kernel of the same name on f32
// operands. Kernel scratch (attention tiles, LM-head logits) is one backend buffer grown
// on demand, so memory reports count it.
#include "core/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"

namespace castor {

namespace kc = kernels::cpu;

namespace {
const float* cf(Ref r) { return r.p ? r.f32() : nullptr; }
}  // namespace

float* CpuOps::scratch(size_t floats) {
  if (scratch_.bytes() < floats * sizeof(float)) scratch_ = Buffer(backend_, floats * sizeof(float));
  return scratch_.f32();
}

void CpuOps::gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, Ref A, int64_t lda, Ref B,
                  int64_t ldb, float beta, Ref C, int64_t ldc) {
  CASTOR_KERNEL_CHECK(kc::gemm(ta, tb, M, N, K, alpha, cf(A), lda, cf(B), ldb, beta, C.f32(), ldc));
}

void CpuOps::add(Ref out, Ref a, Ref b, int64_t n) { CASTOR_KERNEL_CHECK(kc::add(out.f32(), cf(a), cf(b), n)); }

void CpuOps::bias_add_rows(Ref y, Ref bias, int64_t N, int64_t C) {
  CASTOR_KERNEL_CHECK(kc::bias_add_rows(y.f32(), cf(bias), N, C));
}

void CpuOps::bias_grad_accumulate(float* dbias, Ref dy, int64_t N, int64_t C) {
  CASTOR_KERNEL_CHECK(kc::bias_grad_accumulate(dbias, cf(dy), N, C));
}

void CpuOps::zero(Ref x, int64_t n) { std::fill(x.f32(), x.f32() + n, 0.0f); }

void CpuOps::convert(Ref out, Ref in, int64_t n) {
  if (out.t == in.t) {
    std::memcpy(out.p, in.p, size_t(n) * dtype_size(in.t));
  } else if (out.t == DType::bf16 && in.t == DType::f32) {
    uint16_t* o = static_cast<uint16_t*>(out.p);
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(in.f32()[i]);
  } else if (out.t == DType::f32 && in.t == DType::bf16) {
    const uint16_t* s = static_cast<const uint16_t*>(in.p);
    for (int64_t i = 0; i < n; ++i) out.f32()[i] = bf16_to_f32(s[i]);
  } else {
    CASTOR_CHECK(false, "convert from ", dtype_name(in.t), " to ", dtype_name(out.t), " is not supported");
  }
}

void CpuOps::gelu_forward(Ref y, Ref x, int64_t n) { CASTOR_KERNEL_CHECK(kc::gelu_forward(y.f32(), cf(x), n)); }

void CpuOps::gelu_backward(Ref dx, Ref dy, Ref x, int64_t n) {
  CASTOR_KERNEL_CHECK(kc::gelu_backward(dx.f32(), cf(dy), cf(x), n));
}

void CpuOps::swiglu_forward(Ref out, Ref in, int64_t N, int64_t F) {
  CASTOR_KERNEL_CHECK(kc::swiglu_forward(out.f32(), cf(in), N, F));
}

void CpuOps::swiglu_backward(Ref din, Ref dout, Ref in, int64_t N, int64_t F) {
  CASTOR_KERNEL_CHECK(kc::swiglu_backward(din.f32(), cf(dout), cf(in), N, F));
}

void CpuOps::layernorm_forward(Ref y, float* mean, float* rstd, Ref x, Ref w, Ref b, int64_t N, int64_t C,
                               float eps) {
  CASTOR_KERNEL_CHECK(kc::layernorm_forward(y.f32(), mean, rstd, cf(x), cf(w), cf(b), N, C, eps));
}

void CpuOps::layernorm_backward(Ref dx, float* dw, float* db, Ref dy, Ref x, Ref w, const float* mean,
                                const float* rstd, int64_t N, int64_t C) {
  CASTOR_KERNEL_CHECK(kc::layernorm_backward(dx.f32(), dw, db, cf(dy), cf(x), cf(w), mean, rstd, N, C));
}

void CpuOps::rmsnorm_forward(Ref y, float* rstd, Ref x, Ref w, int64_t N, int64_t C, float eps) {
  CASTOR_KERNEL_CHECK(kc::rmsnorm_forward(y.f32(), rstd, cf(x), cf(w), N, C, eps));
}

void CpuOps::rmsnorm_backward(Ref dx, float* dw, Ref dy, Ref x, Ref w, const float* rstd, int64_t N, int64_t C) {
  CASTOR_KERNEL_CHECK(kc::rmsnorm_backward(dx.f32(), dw, cf(dy), cf(x), cf(w), rstd, N, C));
}

void CpuOps::rope_apply(Ref x, const float* table, int64_t B, int64_t T, int64_t heads, int64_t D,
                        int64_t row_stride, bool inverse) {
  CASTOR_KERNEL_CHECK(kc::rope_apply(x.f32(), table, B, T, heads, D, row_stride, inverse));
}

void CpuOps::attention_forward(Ref out, float* lse, Ref qkv, const kc::AttentionShape& s,
                               const int32_t* key_begin) {
  const size_t floats = kc::attention_scratch_floats(s, kc::num_threads());
  CASTOR_KERNEL_CHECK(kc::attention_forward(out.f32(), lse, cf(qkv), s, scratch(floats), floats, key_begin));
}

void CpuOps::attention_backward(Ref dqkv, Ref dout, Ref qkv, Ref out, const float* lse, const kc::AttentionShape& s,
                                const int32_t* key_begin) {
  const size_t floats = kc::attention_scratch_floats(s, kc::num_threads());
  CASTOR_KERNEL_CHECK(kc::attention_backward(dqkv.f32(), cf(dout), cf(qkv), cf(out), lse, s, scratch(floats),
                                             floats, key_begin));
}

bool CpuOps::embedding_forward(Ref out, const int32_t* ids, Ref wte, Ref wpe, int64_t N, int64_t T, int64_t C,
                               int64_t V, int64_t v_begin, int64_t v_count) {
  const kernels::Status st = kc::embedding_forward(out.f32(), ids, cf(wte), cf(wpe), N, T, C, V, v_begin, v_count);
  if (st == kernels::Status::kOutOfRange) return false;
  CASTOR_KERNEL_CHECK(st);
  return true;
}

void CpuOps::embedding_backward(float* dwte, float* dwpe, Ref dout, const int32_t* ids, int64_t N, int64_t T,
                                int64_t C, int64_t V, int64_t v_begin, int64_t v_count) {
  CASTOR_KERNEL_CHECK(kc::embedding_backward(dwte, dwpe, cf(dout), ids, N, T, C, V, v_begin, v_count));
}

kc::XentResult CpuOps::lm_head_xent(Ref x, Ref w, const int32_t* targets, int64_t N, int64_t C, int64_t V,
                                    float grad_scale, Ref dx, float* dw, int64_t chunk_rows, const float* row_scale,
                                    double* row_losses) {
  kc::XentResult r;
  float* s = scratch(kc::lm_head_xent_scratch_floats(chunk_rows, V));
  CASTOR_KERNEL_CHECK(kc::lm_head_xent(&r, cf(x), cf(w), targets, N, C, V, grad_scale,
                                       dx.p ? dx.f32() : nullptr, dw, s, chunk_rows, row_scale, row_losses));
  return r;
}

void CpuOps::router_topk(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                         int32_t* expert, float* gate) {
  CASTOR_KERNEL_CHECK(kc::router_topk(logits, N, E, k, renormalize, probs, expert, gate));
}

void CpuOps::router_topk_backward(const float* probs, const int32_t* expert, const float* gate, const float* dgate,
                                  const float* dprobs_extra, int64_t N, int64_t E, int64_t k, bool renormalize,
                                  float* dlogits) {
  CASTOR_KERNEL_CHECK(kc::router_topk_backward(probs, expert, gate, dgate, dprobs_extra, N, E, k, renormalize, dlogits));
}

double CpuOps::moe_balance_loss(const float* probs, const int32_t* expert, int64_t N, int64_t E, int64_t k,
                                float scale, float* dprobs) {
  double loss = 0.0;
  CASTOR_KERNEL_CHECK(kc::moe_balance_loss(probs, expert, N, E, k, &loss, scale, dprobs, nullptr));
  return loss;
}

double CpuOps::router_z_loss(const float* logits, int64_t N, int64_t E, float scale, float* dlogits) {
  double loss = 0.0;
  CASTOR_KERNEL_CHECK(kc::router_z_loss(logits, N, E, &loss, scale, dlogits));
  return loss;
}

int64_t CpuOps::moe_plan(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t capacity, int64_t* offsets,
                         int32_t* slot, int32_t* token_of_slot) {
  int64_t dropped = 0;
  CASTOR_KERNEL_CHECK(kc::moe_plan(expert, N, E, k, capacity, offsets, slot, token_of_slot, &dropped));
  return dropped;
}

void CpuOps::moe_permute(Ref x_perm, Ref x, const int32_t* token_of_slot, int64_t M, int64_t C) {
  CASTOR_KERNEL_CHECK(kc::moe_permute(x_perm.f32(), cf(x), token_of_slot, M, C));
}

void CpuOps::moe_permute_backward(Ref dx, Ref dx_perm, const int32_t* slot, int64_t N, int64_t k, int64_t C) {
  CASTOR_KERNEL_CHECK(kc::moe_permute_backward(dx.f32(), cf(dx_perm), slot, N, k, C));
}

void CpuOps::moe_combine(Ref y, Ref y_perm, const float* gate, const int32_t* slot, int64_t N, int64_t k, int64_t C) {
  CASTOR_KERNEL_CHECK(kc::moe_combine(y.f32(), cf(y_perm), gate, slot, N, k, C));
}

void CpuOps::moe_combine_backward(Ref dy_perm, float* dgate, Ref dy, Ref y_perm, const float* gate,
                                  const int32_t* slot, int64_t N, int64_t k, int64_t C) {
  CASTOR_KERNEL_CHECK(kc::moe_combine_backward(dy_perm.f32(), dgate, cf(dy), cf(y_perm), gate, slot, N, k, C));
}

void CpuOps::adamw_step(float* w, const float* g, float* m, float* v, int64_t n, const kc::AdamWHyper& h) {
  CASTOR_KERNEL_CHECK(kc::adamw_step(w, g, m, v, n, h));
}

double CpuOps::sum_squares(const float* g, int64_t n) {
  double ss = 0.0;
  CASTOR_KERNEL_CHECK(kc::sum_squares(&ss, g, n));
  return ss;
}

bool CpuOps::unscale_and_check(float* g, int64_t n, float inv_scale) {
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    g[i] *= inv_scale;
    finite = finite && std::isfinite(g[i]);
  }
  return finite;
}

}  // namespace castor
