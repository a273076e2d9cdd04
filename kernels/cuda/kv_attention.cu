// attention_decode: the cached rows are the forward problem with the queries offset by
// `past`, so it validates as the CPU kernel does and hands the strided problem to
// attention_rows (attention.cu). matvec: one warp per row of A, 16-byte loads where rows
// and x are aligned, a fixed-order warp reduction.
#include "kernels/cuda/kv_attention.cuh"

#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {
namespace {

bool valid_shape(const cpu::KvAttentionShape& s) {
  return s.past >= 0 && s.n > 0 && s.H > 0 && s.KVH > 0 && s.D > 0 && s.H % s.KVH == 0 && s.past + s.n <= INT_MAX &&
         s.H * s.D <= INT_MAX;
}

// Sum of the products of 16 bytes of a and x (4 floats, 8 bf16 or 8 f16).
__device__ __forceinline__ float dot16(uint4 a, uint4 x, float acc, float /*tag*/) {
  const float4 fa = *reinterpret_cast<const float4*>(&a), fx = *reinterpret_cast<const float4*>(&x);
  acc = fmaf(fa.x, fx.x, acc);
  acc = fmaf(fa.y, fx.y, acc);
  acc = fmaf(fa.z, fx.z, acc);
  return fmaf(fa.w, fx.w, acc);
}
__device__ __forceinline__ float dot16(uint4 a, uint4 x, float acc, bf16 /*tag*/) {
  const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* px = reinterpret_cast<const __nv_bfloat162*>(&x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = __bfloat1622float2(pa[i]), fx = __bfloat1622float2(px[i]);
    acc = fmaf(fa.x, fx.x, acc);
    acc = fmaf(fa.y, fx.y, acc);
  }
  return acc;
}
__device__ __forceinline__ float dot16(uint4 a, uint4 x, float acc, f16 /*tag*/) {
  const __half2* pa = reinterpret_cast<const __half2*>(&a);
  const __half2* px = reinterpret_cast<const __half2*>(&x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = __half22float2(pa[i]), fx = __half22float2(px[i]);
    acc = fmaf(fa.x, fx.x, acc);
    acc = fmaf(fa.y, fx.y, acc);
  }
  return acc;
}

// y[row] = A[row, :] . x, one warp per row (grid-stride over rows). `vec`: A's rows and x
// are 16-byte aligned, so the first K / (16 / sizeof(T)) * (16 / sizeof(T)) columns go in
// 16-byte loads and the rest one element per lane.
template <typename T>
__global__ void matvec_kernel(float* __restrict__ y, const T* __restrict__ A, const T* __restrict__ x, int M, int K,
                              int64_t lda, bool vec) {
  constexpr int kPer = 16 / sizeof(T);
  const int lane = threadIdx.x & 31, warps_per_block = blockDim.x >> 5;
  for (int64_t row = int64_t(blockIdx.x) * warps_per_block + (threadIdx.x >> 5); row < M;
       row += int64_t(gridDim.x) * warps_per_block) {
    const T* a = A + row * lda;
    float acc = 0.0f;
    int tail = 0;
    if (vec) {
      const int chunks = K / kPer;
      const uint4* a4 = reinterpret_cast<const uint4*>(a);
      const uint4* x4 = reinterpret_cast<const uint4*>(x);
      for (int c = lane; c < chunks; c += 32) acc = dot16(a4[c], x4[c], acc, T{});
      tail = chunks * kPer;
    }
    for (int c = tail + lane; c < K; c += 32) acc = fmaf(to_float(a[c]), to_float(x[c]), acc);
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
  }
}

}  // namespace

size_t attention_decode_scratch_bytes(const cpu::KvAttentionShape& /*s*/) { return 0; }

template <typename T>
Status attention_decode(T* out, int64_t ldo, const T* q, int64_t ldq, const T* k, const T* v, int64_t ldkv,
                        const cpu::KvAttentionShape& s, void* /*scratch*/, size_t /*scratch_bytes*/,
                        const int32_t* key_begin, cudaStream_t stream) {
  if (!valid_shape(s)) return Status::kInvalidArgument;
  if (out == nullptr || q == nullptr || k == nullptr || v == nullptr) return Status::kInvalidArgument;
  if (ldo < s.H * s.D || ldq < s.H * s.D || ldkv < s.KVH * s.D || ldo > INT_MAX || ldq > INT_MAX || ldkv > INT_MAX)
    return Status::kInvalidArgument;
  AttentionRows<T> a;
  a.out = out;
  a.ldo = ldo;
  a.out_seq = 0;  // one sequence
  a.lse = nullptr;
  a.q = q;
  a.ldq = ldq;
  a.q_seq = 0;
  a.k = k;
  a.v = v;
  a.ldkv = ldkv;
  a.kv_seq = 0;
  a.key_begin = key_begin;
  a.B = 1;
  a.rows = s.n;
  a.past = s.past;
  a.H = s.H;
  a.KVH = s.KVH;
  a.D = s.D;
  return attention_rows(a, stream);
}

template <typename T>
Status matvec(float* y, const T* A, int64_t M, int64_t K, int64_t lda, const T* x, cudaStream_t stream) {
  if (M < 0 || K < 0 || lda < std::max<int64_t>(K, 1) || M > INT_MAX || K > INT_MAX || lda > INT_MAX)
    return Status::kInvalidArgument;
  if (M == 0) return Status::kOk;
  if (y == nullptr || (K > 0 && (A == nullptr || x == nullptr))) return Status::kInvalidArgument;
  if (K == 0)
    return cudaMemsetAsync(y, 0, size_t(M) * sizeof(float), stream) == cudaSuccess ? Status::kOk : Status::kDeviceError;
  constexpr int kPer = 16 / sizeof(T), kThreads = 256;
  const bool vec =
      reinterpret_cast<uintptr_t>(A) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && lda % kPer == 0;
  matvec_kernel<T><<<grid_blocks(M, kThreads / 32), kThreads, 0, stream>>>(y, A, x, int(M), int(K), lda, vec);
  return launched();
}

template Status attention_decode<float>(float*, int64_t, const float*, int64_t, const float*, const float*, int64_t,
                                        const cpu::KvAttentionShape&, void*, size_t, const int32_t*, cudaStream_t);
template Status attention_decode<bf16>(bf16*, int64_t, const bf16*, int64_t, const bf16*, const bf16*, int64_t,
                                       const cpu::KvAttentionShape&, void*, size_t, const int32_t*, cudaStream_t);
template Status attention_decode<f16>(f16*, int64_t, const f16*, int64_t, const f16*, const f16*, int64_t,
                                      const cpu::KvAttentionShape&, void*, size_t, const int32_t*, cudaStream_t);
template Status matvec<float>(float*, const float*, int64_t, int64_t, int64_t, const float*, cudaStream_t);
template Status matvec<bf16>(float*, const bf16*, int64_t, int64_t, int64_t, const bf16*, cudaStream_t);
template Status matvec<f16>(float*, const f16*, int64_t, int64_t, int64_t, const f16*, cudaStream_t);

}  // namespace castor::kernels::cuda
