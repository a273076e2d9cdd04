// CudaOps (cuda_ops.h): each call checks its operands' types, picks the kernels/cuda
// instantiation (f32 or bf16 storage) and launches it on the backend's compute stream.
#include "core/cuda/cuda_ops.h"

#include <algorithm>
#include <vector>

#include "core/cuda/cuda_backend.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/lm_head_xent.cuh"
#include "kernels/cuda/moe.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/optim.cuh"
#include "kernels/cuda/rope.cuh"

namespace castor {

namespace kg = kernels::cuda;
namespace kc = kernels::cpu;

namespace {

constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's recommendation for Hopper

// Calls f(T{}) with T the storage type of `t` (f32, bf16 or f16).
template <typename F>
void with_type(DType t, F&& f) {
  if (t == DType::f32) {
    f(float{});
  } else if (t == DType::bf16) {
    f(kg::bf16{});
  } else {
    CASTOR_CHECK(t == DType::f16, "cuda ops: ", dtype_name(t), " operands are not supported");
    f(kg::f16{});
  }
}

void same_type(std::initializer_list<Ref> refs) {
  const DType t = refs.begin()->t;
  for (const Ref& r : refs)
    CASTOR_CHECK(r.p == nullptr || r.t == t, "cuda ops: mixed operand types ", dtype_name(t), " and ",
                 dtype_name(r.t));
}

template <typename T>
T* as(Ref r) {
  return static_cast<T*>(r.p);
}

}  // namespace

void* CudaOps::Staging::get(Backend& backend, size_t bytes) {
  if (buffer.bytes() < bytes) buffer = Buffer(backend, std::max<size_t>(bytes, 256));
  return buffer.data();
}

template <typename T>
const T* CudaOps::stage(Staging& s, const T* host, int64_t n) {
  if (host == nullptr || n <= 0) return nullptr;
  void* d = s.get(backend_, size_t(n) * sizeof(T));
  backend_.copy(d, host, size_t(n) * sizeof(T));
  return static_cast<const T*>(d);
}

void CudaOps::to_host(void* host, const void* device, size_t bytes) {
  backend_.copy(host, device, bytes);
  backend_.synchronize();
}

CudaOps::CudaOps(CudaBackend& backend, DType activations) : backend_(backend), act_(activations) {
  CASTOR_CHECK(act_ == DType::f32 || act_ == DType::bf16 || act_ == DType::f16,
               "cuda backend: activations must be f32, bf16 or f16, not ", dtype_name(act_));
  gemm_workspace_ = Buffer(backend, kGemmWorkspaceBytes);
  CASTOR_KERNEL_CHECK(kg::make_gemm_context(&gemm_, gemm_workspace_.data(), kGemmWorkspaceBytes));
}

CudaOps::~CudaOps() { (void)kg::destroy_gemm_context(&gemm_); }

void CudaOps::gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, Ref A, int64_t lda, Ref B,
                   int64_t ldb, float beta, Ref C, int64_t ldc) {
  same_type({A, B});
  cudaStream_t s = backend_.compute_stream();
  with_type(A.t, [&](auto tag) {
    using T = decltype(tag);
    if (C.t == A.t) {
      CASTOR_KERNEL_CHECK((kg::gemm<T, T>(gemm_, ta, tb, M, N, K, alpha, as<T>(A), lda, as<T>(B), ldb, beta,
                                          as<T>(C), ldc, s)));
    } else {
      CASTOR_CHECK(C.t == DType::f32, "cuda gemm: ", dtype_name(A.t), " inputs into ", dtype_name(C.t));
      if constexpr (!std::is_same_v<T, float>)
        CASTOR_KERNEL_CHECK((kg::gemm<T, float>(gemm_, ta, tb, M, N, K, alpha, as<T>(A), lda, as<T>(B), ldb, beta,
                                                as<float>(C), ldc, s)));
    }
  });
}

void CudaOps::add(Ref out, Ref a, Ref b, int64_t n) {
  same_type({out, a, b});
  with_type(out.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::add<T>(as<T>(out), as<T>(a), as<T>(b), n, backend_.compute_stream()));
  });
}

void CudaOps::bias_add_rows(Ref y, Ref bias, int64_t N, int64_t C) {
  same_type({y, bias});
  with_type(y.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::bias_add_rows<T>(as<T>(y), as<T>(bias), N, C, backend_.compute_stream()));
  });
}

void CudaOps::bias_grad_accumulate(float* dbias, Ref dy, int64_t N, int64_t C) {
  with_type(dy.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::bias_grad_accumulate<T>(dbias, as<T>(dy), N, C, backend_.compute_stream()));
  });
}

void CudaOps::zero(Ref x, int64_t n) { backend_.discard(x.p, size_t(n) * dtype_size(x.t)); }

void CudaOps::convert(Ref out, Ref in, int64_t n) {
  cudaStream_t s = backend_.compute_stream();
  if (out.t == in.t) {
    backend_.copy(out.p, in.p, size_t(n) * dtype_size(in.t));
  } else if (in.t == DType::f32) {  // into a 16-bit type
    with_type(out.t, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (!std::is_same_v<T, float>)
        CASTOR_KERNEL_CHECK((kg::convert<T, float>(as<T>(out), as<float>(in), n, s)));
    });
  } else {
    CASTOR_CHECK(out.t == DType::f32, "cuda convert from ", dtype_name(in.t), " to ", dtype_name(out.t),
                 " is not supported");
    with_type(in.t, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (!std::is_same_v<T, float>)
        CASTOR_KERNEL_CHECK((kg::convert<float, T>(as<float>(out), as<T>(in), n, s)));
    });
  }
}

void CudaOps::gelu_forward(Ref y, Ref x, int64_t n) {
  same_type({y, x});
  with_type(y.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::gelu_forward<T>(as<T>(y), as<T>(x), n, backend_.compute_stream()));
  });
}

void CudaOps::gelu_backward(Ref dx, Ref dy, Ref x, int64_t n) {
  same_type({dx, dy, x});
  with_type(dx.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::gelu_backward<T>(as<T>(dx), as<T>(dy), as<T>(x), n, backend_.compute_stream()));
  });
}

void CudaOps::swiglu_forward(Ref out, Ref in, int64_t N, int64_t F) {
  same_type({out, in});
  with_type(out.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::swiglu_forward<T>(as<T>(out), as<T>(in), N, F, backend_.compute_stream()));
  });
}

void CudaOps::swiglu_backward(Ref din, Ref dout, Ref in, int64_t N, int64_t F) {
  same_type({din, dout, in});
  with_type(din.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::swiglu_backward<T>(as<T>(din), as<T>(dout), as<T>(in), N, F, backend_.compute_stream()));
  });
}

void CudaOps::layernorm_forward(Ref y, float* mean, float* rstd, Ref x, Ref w, Ref b, int64_t N, int64_t C,
                                float eps) {
  same_type({y, x, w, b});
  with_type(y.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::layernorm_forward<T>(as<T>(y), mean, rstd, as<T>(x), as<T>(w), as<T>(b), N, C, eps,
                                                 backend_.compute_stream()));
  });
}

void CudaOps::layernorm_backward(Ref dx, float* dw, float* db, Ref dy, Ref x, Ref w, const float* mean,
                                 const float* rstd, int64_t N, int64_t C) {
  same_type({dx, dy, x, w});
  with_type(dx.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::layernorm_backward<T>(as<T>(dx), dw, db, as<T>(dy), as<T>(x), as<T>(w), mean, rstd, N, C,
                                                  backend_.compute_stream()));
  });
}

void CudaOps::rmsnorm_forward(Ref y, float* rstd, Ref x, Ref w, int64_t N, int64_t C, float eps) {
  same_type({y, x, w});
  with_type(y.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(
        kg::rmsnorm_forward<T>(as<T>(y), rstd, as<T>(x), as<T>(w), N, C, eps, backend_.compute_stream()));
  });
}

void CudaOps::rmsnorm_backward(Ref dx, float* dw, Ref dy, Ref x, Ref w, const float* rstd, int64_t N, int64_t C) {
  same_type({dx, dy, x, w});
  with_type(dx.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::rmsnorm_backward<T>(as<T>(dx), dw, as<T>(dy), as<T>(x), as<T>(w), rstd, N, C,
                                                backend_.compute_stream()));
  });
}

void CudaOps::rope_apply(Ref x, const float* table, int64_t B, int64_t T, int64_t heads, int64_t D,
                         int64_t row_stride, bool inverse) {
  with_type(x.t, [&](auto tag) {
    using S = decltype(tag);
    CASTOR_KERNEL_CHECK(
        kg::rope_apply<S>(as<S>(x), table, B, T, heads, D, row_stride, inverse, backend_.compute_stream()));
  });
}

void CudaOps::attention_forward(Ref out, float* lse, Ref qkv, const kc::AttentionShape& s, const int32_t* key_begin) {
  same_type({out, qkv});
  const int32_t* kb = stage(key_begin_, key_begin, s.B * s.T);
  const size_t bytes = kg::attention_scratch_bytes(s);
  void* scratch = scratch_.get(backend_, bytes);
  with_type(out.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::attention_forward<T>(as<T>(out), lse, as<T>(qkv), s, scratch, bytes, kb,
                                                 backend_.compute_stream()));
  });
}

void CudaOps::attention_backward(Ref dqkv, Ref dout, Ref qkv, Ref out, const float* lse, const kc::AttentionShape& s,
                                 const int32_t* key_begin) {
  same_type({dqkv, dout, qkv, out});
  const int32_t* kb = stage(key_begin_, key_begin, s.B * s.T);
  const size_t bytes = kg::attention_scratch_bytes(s);
  void* scratch = scratch_.get(backend_, bytes);
  with_type(dqkv.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::attention_backward<T>(as<T>(dqkv), as<T>(dout), as<T>(qkv), as<T>(out), lse, s, scratch,
                                                  bytes, kb, backend_.compute_stream()));
  });
}

bool CudaOps::embedding_forward(Ref out, const int32_t* ids, Ref wte, Ref wpe, int64_t N, int64_t T, int64_t C,
                                int64_t V, int64_t v_begin, int64_t v_count) {
  same_type({out, wte, wpe});
  // The ids are host memory: checked here, so the kernel needs no flag and nothing waits.
  for (int64_t i = 0; i < N; ++i)
    if (ids[i] < 0 || ids[i] >= V) return false;
  const int32_t* d_ids = stage(ids_, ids, N);
  with_type(out.t, [&](auto tag) {
    using S = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::embedding_forward<S>(as<S>(out), d_ids, as<S>(wte), as<S>(wpe), N, T, C, V, v_begin,
                                                 v_count, nullptr, backend_.compute_stream()));
  });
  return true;
}

void CudaOps::embedding_backward(float* dwte, float* dwpe, Ref dout, const int32_t* ids, int64_t N, int64_t T,
                                 int64_t C, int64_t V, int64_t v_begin, int64_t v_count) {
  const int32_t* d_ids = stage(ids_, ids, N);  // forward checked them
  with_type(dout.t, [&](auto tag) {
    using S = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::embedding_backward<S>(dwte, dwpe, as<S>(dout), d_ids, N, T, C, V, v_begin, v_count,
                                                  nullptr, backend_.compute_stream()));
  });
}

kc::XentResult CudaOps::lm_head_xent(Ref x, Ref w, const int32_t* targets, int64_t N, int64_t C, int64_t V,
                                     float grad_scale, Ref dx, float* dw, int64_t chunk_rows, const float* row_scale,
                                     double* row_losses) {
  same_type({x, w, dx});
  // The kernel only turns a bad target into a NaN loss (it cannot report it without a sync);
  // the targets are host memory here, so fail as cpu::lm_head_xent does, before any write.
  if (targets != nullptr) {
    for (int64_t i = 0; i < N; ++i) {
      if (targets[i] < -1 || targets[i] >= V) CASTOR_KERNEL_CHECK(kernels::Status::kOutOfRange);
    }
  }
  const int32_t* d_targets = stage(targets_, targets, N);
  const float* d_scale = stage(row_scale_, row_scale, N);
  auto* d_losses = row_losses ? static_cast<double*>(row_losses_.get(backend_, size_t(N) * sizeof(double))) : nullptr;
  auto* d_result = static_cast<kg::XentDeviceResult*>(result_.get(backend_, sizeof(kg::XentDeviceResult)));
  const size_t bytes = kg::lm_head_xent_scratch_bytes(chunk_rows, V, dtype_size(x.t));
  void* scratch = scratch_.get(backend_, bytes);
  with_type(x.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::lm_head_xent<T>(gemm_, d_result, as<T>(x), as<T>(w), d_targets, N, C, V, grad_scale,
                                            as<T>(dx), dw, scratch, chunk_rows, d_scale, d_losses,
                                            backend_.compute_stream()));
  });
  if (row_losses) backend_.copy(row_losses, d_losses, size_t(N) * sizeof(double));
  kg::XentDeviceResult host{};
  to_host(&host, d_result, sizeof host);
  return {host.loss_sum, host.count};
}

void CudaOps::router_topk(const float* logits, int64_t N, int64_t E, int64_t k, bool renormalize, float* probs,
                          int32_t* expert, float* gate) {
  CASTOR_KERNEL_CHECK(
      kg::router_topk(logits, N, E, k, renormalize, probs, expert, gate, backend_.compute_stream()));
}

void CudaOps::router_topk_backward(const float* probs, const int32_t* expert, const float* gate, const float* dgate,
                                   const float* dprobs_extra, int64_t N, int64_t E, int64_t k, bool renormalize,
                                   float* dlogits) {
  CASTOR_KERNEL_CHECK(kg::router_topk_backward(probs, expert, gate, dgate, dprobs_extra, N, E, k, renormalize,
                                               dlogits, backend_.compute_stream()));
}

double CudaOps::moe_balance_loss(const float* probs, const int32_t* expert, int64_t N, int64_t E, int64_t k,
                                 float scale, float* dprobs) {
  const size_t bytes = kg::moe_loss_scratch_bytes(E);
  void* scratch = scratch_.get(backend_, bytes);
  auto* d_loss = static_cast<double*>(result_.get(backend_, sizeof(double)));
  CASTOR_KERNEL_CHECK(kg::moe_balance_loss(probs, expert, N, E, k, d_loss, scale, dprobs, nullptr, 0, nullptr, scratch,
                                           bytes, backend_.compute_stream()));
  double loss = 0.0;
  to_host(&loss, d_loss, sizeof loss);
  return loss;
}

double CudaOps::router_z_loss(const float* logits, int64_t N, int64_t E, float scale, float* dlogits) {
  const size_t bytes = kg::moe_loss_scratch_bytes(E);
  void* scratch = scratch_.get(backend_, bytes);
  auto* d_loss = static_cast<double*>(result_.get(backend_, sizeof(double)));
  CASTOR_KERNEL_CHECK(
      kg::router_z_loss(logits, N, E, d_loss, scale, dlogits, 0, scratch, bytes, backend_.compute_stream()));
  double loss = 0.0;
  to_host(&loss, d_loss, sizeof loss);
  return loss;
}

int64_t CudaOps::moe_plan(const int32_t* expert, int64_t N, int64_t E, int64_t k, int64_t capacity,
                          int64_t* offsets, int32_t* slot, int32_t* token_of_slot) {
  const size_t bytes = kg::moe_plan_scratch_bytes(N, E, k);
  void* scratch = scratch_.get(backend_, bytes);
  // offsets (E + 1) then dropped, in one device array copied back at once
  auto* d_out = static_cast<int64_t*>(result_.get(backend_, size_t(E + 2) * sizeof(int64_t)));
  CASTOR_KERNEL_CHECK(kg::moe_plan(expert, N, E, k, capacity, d_out, slot, token_of_slot, d_out + E + 1, nullptr,
                                   scratch, bytes, backend_.compute_stream()));
  std::vector<int64_t> host(size_t(E + 2));
  to_host(host.data(), d_out, host.size() * sizeof(int64_t));
  std::copy(host.begin(), host.begin() + E + 1, offsets);
  return host.back();
}

void CudaOps::moe_permute(Ref x_perm, Ref x, const int32_t* token_of_slot, int64_t M, int64_t C) {
  same_type({x_perm, x});
  with_type(x.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::moe_permute<T>(as<T>(x_perm), as<T>(x), token_of_slot, M, C, backend_.compute_stream()));
  });
}

void CudaOps::moe_permute_backward(Ref dx, Ref dx_perm, const int32_t* slot, int64_t N, int64_t k, int64_t C) {
  same_type({dx, dx_perm});
  with_type(dx.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(
        kg::moe_permute_backward<T>(as<T>(dx), as<T>(dx_perm), slot, N, k, C, backend_.compute_stream()));
  });
}

void CudaOps::moe_combine(Ref y, Ref y_perm, const float* gate, const int32_t* slot, int64_t N, int64_t k,
                          int64_t C) {
  same_type({y, y_perm});
  with_type(y.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(
        kg::moe_combine<T>(as<T>(y), as<T>(y_perm), gate, slot, N, k, C, backend_.compute_stream()));
  });
}

void CudaOps::moe_combine_backward(Ref dy_perm, float* dgate, Ref dy, Ref y_perm, const float* gate,
                                   const int32_t* slot, int64_t N, int64_t k, int64_t C) {
  same_type({dy_perm, dy, y_perm});
  with_type(dy.t, [&](auto tag) {
    using T = decltype(tag);
    CASTOR_KERNEL_CHECK(kg::moe_combine_backward<T>(as<T>(dy_perm), dgate, as<T>(dy), as<T>(y_perm), gate, slot, N, k,
                                                    C, backend_.compute_stream()));
  });
}

void CudaOps::adamw_step(float* w, const float* g, float* m, float* v, int64_t n, const kc::AdamWHyper& h) {
  CASTOR_KERNEL_CHECK(kg::adamw_step(w, g, m, v, n, h, backend_.compute_stream()));
}

double CudaOps::sum_squares(const float* g, int64_t n) {
  const size_t bytes = kg::sum_squares_scratch_bytes(n);
  void* scratch = scratch_.get(backend_, bytes);
  auto* d_out = static_cast<double*>(result_.get(backend_, sizeof(double)));
  CASTOR_KERNEL_CHECK(kg::sum_squares(d_out, g, n, scratch, bytes, backend_.compute_stream()));
  double out = 0.0;
  to_host(&out, d_out, sizeof out);
  return out;
}

bool CudaOps::unscale_and_check(float* g, int64_t n, float inv_scale) {
  auto* found = static_cast<int32_t*>(flag_.get(backend_, sizeof(int32_t)));
  backend_.discard(found, sizeof(int32_t));
  CASTOR_KERNEL_CHECK(kg::unscale_and_check(g, n, inv_scale, found, backend_.compute_stream()));
  int32_t host = 0;
  to_host(&host, found, sizeof host);
  return host == 0;
}

}  // namespace castor
