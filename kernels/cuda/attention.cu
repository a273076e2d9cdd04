// Flash-attention kernels behind attention.cuh: forward, backward dK/dV and dQ passes, and
// delta = rowsum(dO * O). Each pass exists twice with the same tiling: on tensor cores
// (WMMA 16x16x16, fp32 accumulators; 64-row tiles, 4 warps of 16 rows) for bf16 and f16 with
// D in {16, 32, 64, 80, 96, 128} and 16-byte aligned rows, and in scalar fp32 FMA (32-row
// tiles, 8 warps of 4 rows) for float and every other D <= 128. Every output element is
// written once by one block (no atomics): results do not depend on scheduling.
#include "kernels/cuda/attention.cuh"

#include "kernels/cuda/attention_args.cuh"
#include "kernels/cuda/attention_scalar.cuh"
#include "kernels/cuda/attention_wmma.cuh"

namespace castor::kernels::cuda {
namespace {

// ---------------------------------------------------------------------------------------
// Host side.

bool valid_shape(const cpu::AttentionShape& s) {
  return s.B > 0 && s.T > 0 && s.H > 0 && s.KVH > 0 && s.D > 0 && s.H % s.KVH == 0 && s.T <= INT_MAX &&
         (s.H + 2 * s.KVH) * s.D <= INT_MAX;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Head dims with a tensor-core kernel (others run the scalar path).
bool wmma_head_dim(int64_t D) { return D == 16 || D == 32 || D == 64 || D == 80 || D == 96 || D == 128; }

// Launches `kernel` on `blocks` blocks; opts into more than 48 KiB of dynamic shared memory
// when it needs it. kNotSupported if the grid or the shared memory is too large.
template <typename Arg>
Status launch(void (*kernel)(Arg), int64_t blocks, int threads, size_t smem, cudaStream_t stream, const Arg& arg) {
  if (blocks < 1 || blocks > INT_MAX) return Status::kNotSupported;
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it so that later launches do not report it
    return Status::kNotSupported;
  }
  kernel<<<unsigned(blocks), threads, smem, stream>>>(arg);
  return launched();
}

template <typename T, int D>
Status launch_forward_wmma(const FwdArgs<T>& a, cudaStream_t stream) {
  return launch(forward_wmma<T, D>, int64_t(a.B) * a.H * ceil_div(a.rows, kWRows), kWThreads, WLayout<D>::fwd_bytes,
                stream, a);
}

template <typename T, int D>
Status launch_backward_wmma(const BwdArgs<T>& a, cudaStream_t stream) {
  const Status st = launch(dkdv_wmma<T, D>, int64_t(a.B) * a.KVH * ceil_div(a.len, kWRows), kWThreads,
                           WLayout<D>::kv_bytes, stream, a);
  if (st != Status::kOk) return st;
  return launch(dq_wmma<T, D>, int64_t(a.B) * a.H * ceil_div(a.len, kWRows), kWThreads, WLayout<D>::dq_bytes, stream,
                a);
}

template <typename T, int DC>
Status launch_forward_scalar(const FwdArgs<T>& a, cudaStream_t stream) {
  return launch(forward_scalar<T, DC>, int64_t(a.B) * a.H * ceil_div(a.rows, kSRows), kSThreads,
                scalar_smem_bytes(a.D, 3, 1, 1), stream, a);
}

template <typename T, int DC>
Status launch_backward_scalar(const BwdArgs<T>& a, cudaStream_t stream) {
  const Status st = launch(dkdv_scalar<T, DC>, int64_t(a.B) * a.KVH * ceil_div(a.len, kSRows), kSThreads,
                           scalar_smem_bytes(a.D, 4, 2, 3), stream, a);
  if (st != Status::kOk) return st;
  return launch(dq_scalar<T, DC>, int64_t(a.B) * a.H * ceil_div(a.len, kSRows), kSThreads,
                scalar_smem_bytes(a.D, 4, 1, 3), stream, a);
}

template <typename T>
Status run_forward(const FwdArgs<T>& a, bool tensor_cores, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
    if (tensor_cores) {
      switch (a.D) {
        case 16:
          return launch_forward_wmma<T, 16>(a, stream);
        case 32:
          return launch_forward_wmma<T, 32>(a, stream);
        case 64:
          return launch_forward_wmma<T, 64>(a, stream);
        case 80:
          return launch_forward_wmma<T, 80>(a, stream);
        case 96:
          return launch_forward_wmma<T, 96>(a, stream);
        case 128:
          return launch_forward_wmma<T, 128>(a, stream);
        default:
          break;
      }
    }
  }
  switch ((a.D + 31) / 32) {
    case 1:
      return launch_forward_scalar<T, 1>(a, stream);
    case 2:
      return launch_forward_scalar<T, 2>(a, stream);
    case 3:
      return launch_forward_scalar<T, 3>(a, stream);
    case 4:
      return launch_forward_scalar<T, 4>(a, stream);
    default:
      return Status::kNotSupported;
  }
}

template <typename T>
Status run_backward(const BwdArgs<T>& a, bool tensor_cores, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
    if (tensor_cores) {
      switch (a.D) {
        case 16:
          return launch_backward_wmma<T, 16>(a, stream);
        case 32:
          return launch_backward_wmma<T, 32>(a, stream);
        case 64:
          return launch_backward_wmma<T, 64>(a, stream);
        case 80:
          return launch_backward_wmma<T, 80>(a, stream);
        case 96:
          return launch_backward_wmma<T, 96>(a, stream);
        case 128:
          return launch_backward_wmma<T, 128>(a, stream);
        default:
          break;
      }
    }
  }
  switch ((a.D + 31) / 32) {
    case 1:
      return launch_backward_scalar<T, 1>(a, stream);
    case 2:
      return launch_backward_scalar<T, 2>(a, stream);
    case 3:
      return launch_backward_scalar<T, 3>(a, stream);
    case 4:
      return launch_backward_scalar<T, 4>(a, stream);
    default:
      return Status::kNotSupported;
  }
}

}  // namespace

size_t attention_scratch_bytes(const cpu::AttentionShape& s) {
  if (!valid_shape(s)) return 0;
  return size_t(s.B * s.H * s.T) * sizeof(float);
}

template <typename T>
Status attention_rows(const AttentionRows<T>& a, cudaStream_t stream) {
  if (a.B < 1 || a.rows < 1 || a.past < 0 || a.H < 1 || a.KVH < 1 || a.D < 1 || a.H % a.KVH != 0)
    return Status::kInvalidArgument;
  if (a.out == nullptr || a.q == nullptr || a.k == nullptr || a.v == nullptr) return Status::kInvalidArgument;
  if (a.ldo < a.H * a.D || a.ldq < a.H * a.D || a.ldkv < a.KVH * a.D || a.out_seq < 0 || a.q_seq < 0 || a.kv_seq < 0)
    return Status::kInvalidArgument;
  // Positions (and one tile past them) and column offsets are ints inside the kernels.
  if (a.past + a.rows > INT_MAX - 2 * kWRows || a.B > INT_MAX || a.H * a.D > INT_MAX) return Status::kInvalidArgument;
  if (a.D > kAttentionMaxHeadDim) return Status::kNotSupported;

  FwdArgs<T> f;
  f.out = a.out;
  f.lse = a.lse;
  f.q = a.q;
  f.k = a.k;
  f.v = a.v;
  f.key_begin = a.key_begin;
  f.ldo = a.ldo;
  f.ldq = a.ldq;
  f.ldkv = a.ldkv;
  f.out_seq = a.out_seq;
  f.q_seq = a.q_seq;
  f.kv_seq = a.kv_seq;
  f.B = int(a.B);
  f.H = int(a.H);
  f.group = int(a.H / a.KVH);
  f.D = int(a.D);
  f.rows = int(a.rows);
  f.past = int(a.past);
  f.scale_log2 = kLog2e / std::sqrt(static_cast<float>(a.D));
  // 16-byte tile loads need every row of every sequence 16-byte aligned: base pointers,
  // row strides and sequence strides (8 bf16 or f16 elements).
  const bool tensor_cores = wmma_head_dim(a.D) && aligned16(a.q) && aligned16(a.k) && aligned16(a.v) &&
                            a.ldq % 8 == 0 && a.ldkv % 8 == 0 && a.q_seq % 8 == 0 && a.kv_seq % 8 == 0;
  return run_forward(f, tensor_cores, stream);
}

template <typename T>
Status attention_forward(T* out, float* lse, const T* qkv, const cpu::AttentionShape& s, void* /*scratch*/,
                         size_t /*scratch_bytes*/, const int32_t* key_begin, cudaStream_t stream) {
  if (!valid_shape(s) || out == nullptr || lse == nullptr || qkv == nullptr) return Status::kInvalidArgument;
  const int64_t ld = (s.H + 2 * s.KVH) * s.D;  // qkv row stride
  AttentionRows<T> a;
  a.out = out;
  a.ldo = s.H * s.D;
  a.out_seq = s.T * a.ldo;
  a.lse = lse;
  a.q = qkv;
  a.k = qkv + s.H * s.D;
  a.v = qkv + (s.H + s.KVH) * s.D;
  a.ldq = a.ldkv = ld;
  a.q_seq = a.kv_seq = s.T * ld;
  a.key_begin = key_begin;
  a.B = s.B;
  a.rows = s.T;
  a.past = 0;
  a.H = s.H;
  a.KVH = s.KVH;
  a.D = s.D;
  return attention_rows(a, stream);
}

template <typename T>
Status attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                          const cpu::AttentionShape& s, void* scratch, size_t scratch_bytes, const int32_t* key_begin,
                          cudaStream_t stream) {
  if (!valid_shape(s)) return Status::kInvalidArgument;
  if (dqkv == nullptr || dout == nullptr || qkv == nullptr || out == nullptr || lse == nullptr || scratch == nullptr)
    return Status::kInvalidArgument;
  if (scratch_bytes < attention_scratch_bytes(s) || reinterpret_cast<uintptr_t>(scratch) % alignof(float) != 0)
    return Status::kInvalidArgument;
  if (s.T > INT_MAX - 2 * kWRows) return Status::kInvalidArgument;
  if (s.D > kAttentionMaxHeadDim) return Status::kNotSupported;

  float* delta = static_cast<float*>(scratch);
  const int64_t nrows = s.B * s.T * s.H;
  constexpr int kDeltaThreads = 256;
  delta_kernel<T><<<grid_blocks(nrows, kDeltaThreads / 32), kDeltaThreads, 0, stream>>>(delta, dout, out, nrows,
                                                                                        int(s.T), int(s.H), int(s.D));
  if (const Status st = launched(); st != Status::kOk) return st;

  BwdArgs<T> a;
  a.dqkv = dqkv;
  a.dout = dout;
  a.qkv = qkv;
  a.lse = lse;
  a.delta = delta;
  a.key_begin = key_begin;
  a.ld = (s.H + 2 * s.KVH) * s.D;
  a.B = int(s.B);
  a.len = int(s.T);
  a.H = int(s.H);
  a.KVH = int(s.KVH);
  a.group = int(s.H / s.KVH);
  a.D = int(s.D);
  a.scale = 1.0f / std::sqrt(static_cast<float>(s.D));
  a.scale_log2 = a.scale * kLog2e;
  const bool tensor_cores = wmma_head_dim(s.D) && aligned16(qkv) && aligned16(dout) && aligned16(dqkv);
  return run_backward(a, tensor_cores, stream);
}

template Status attention_rows<float>(const AttentionRows<float>&, cudaStream_t);
template Status attention_rows<bf16>(const AttentionRows<bf16>&, cudaStream_t);
template Status attention_rows<f16>(const AttentionRows<f16>&, cudaStream_t);
template Status attention_forward<float>(float*, float*, const float*, const cpu::AttentionShape&, void*, size_t,
                                         const int32_t*, cudaStream_t);
template Status attention_forward<bf16>(bf16*, float*, const bf16*, const cpu::AttentionShape&, void*, size_t,
                                        const int32_t*, cudaStream_t);
template Status attention_forward<f16>(f16*, float*, const f16*, const cpu::AttentionShape&, void*, size_t,
                                       const int32_t*, cudaStream_t);
template Status attention_backward<float>(float*, const float*, const float*, const float*, const float*,
                                          const cpu::AttentionShape&, void*, size_t, const int32_t*, cudaStream_t);
template Status attention_backward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, const float*,
                                         const cpu::AttentionShape&, void*, size_t, const int32_t*, cudaStream_t);
template Status attention_backward<f16>(f16*, const f16*, const f16*, const f16*, const float*,
                                        const cpu::AttentionShape&, void*, size_t, const int32_t*, cudaStream_t);

}  // namespace castor::kernels::cuda
