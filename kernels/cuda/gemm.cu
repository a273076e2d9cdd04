// Row-major GEMM through cuBLASLt. cuBLASLt is column-major, so C (M x N, row-major) is
// computed as its transpose C^T = op(B)^T op(A)^T: our B is cuBLASLt's A, our A its B, and
// each row-major matrix is read as its column-major transpose without moving data.
// Descriptors and the heuristic's algorithm are cached per call shape (sizes, strides,
// types, epilogue, pointer alignments) so a training step pays the heuristic once per GEMM.
#include "kernels/cuda/gemm.cuh"

#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <new>

#include "kernels/cuda/common.cuh"

namespace castor::kernels::cuda {

// One cached call shape: the column-major descriptors and the algorithm chosen for them.
struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // cuBLASLt's A (our B), B (our A), C = D
  cublasLtMatmulAlgo_t algo{};

  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Key: trans_a, trans_b, M, N, K, lda, ldb, ldc, A/B type, C type, compute type, epilogue,
// alignment of A, B, C, bias, aux, and ld_aux (the heuristic depends on all of them).
using GemmPlanKey = std::array<int64_t, 18>;

struct GemmPlanCache {
  std::mutex mutex;  // guards plans and the per-call pointer attributes of their descriptors
  std::map<GemmPlanKey, std::unique_ptr<GemmPlan>> plans;
};

namespace {

constexpr size_t kMaxPlans = 512;  // a model has a few dozen shapes; beyond this, start over

enum class Epilogue : int64_t { kNone, kBias, kGeluBias, kGeluAuxBias };

// Everything one cuBLASLt call needs, in our row-major terms.
struct MatmulCall {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  float alpha = 1.0f, beta = 0.0f;
  const void* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  int64_t ldb = 0;
  void* C = nullptr;
  int64_t ldc = 0;
  cudaDataType_t ab_type = CUDA_R_32F, c_type = CUDA_R_32F;
  Epilogue epilogue = Epilogue::kNone;
  const void* bias = nullptr;
  void* aux = nullptr;  // GELU input (pre-activation), kGeluAuxBias only
  int64_t ld_aux = 0;
};

template <typename T>
constexpr cudaDataType_t data_type();
template <>
constexpr cudaDataType_t data_type<float>() {
  return CUDA_R_32F;
}
template <>
constexpr cudaDataType_t data_type<bf16>() {
  return CUDA_R_16BF;
}
template <>
constexpr cudaDataType_t data_type<f16>() {
  return CUDA_R_16F;
}

template <typename T, typename Tc>
MatmulCall make_call(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda,
                     const T* B, int64_t ldb, float beta, Tc* C, int64_t ldc) {
  MatmulCall c;
  c.trans_a = trans_a;
  c.trans_b = trans_b;
  c.M = M;
  c.N = N;
  c.K = K;
  c.alpha = alpha;
  c.beta = beta;
  c.A = A;
  c.lda = lda;
  c.B = B;
  c.ldb = ldb;
  c.C = C;
  c.ldc = ldc;
  c.ab_type = data_type<T>();
  c.c_type = data_type<Tc>();
  return c;
}

bool fits_int(int64_t v) { return v <= int64_t(INT_MAX); }

// cpu::gemm's checks in its order, then the context. *empty: valid, nothing to compute.
Status check_call(const GemmContext& ctx, const MatmulCall& c, bool* empty) {
  *empty = false;
  if (c.M < 0 || c.N < 0 || c.K < 0) return Status::kInvalidArgument;
  const int64_t a_cols = c.trans_a ? c.M : c.K;  // stored A: (M, K), or (K, M) transposed
  const int64_t b_cols = c.trans_b ? c.K : c.N;  // stored B: (K, N), or (N, K) transposed
  if (c.lda < std::max<int64_t>(1, a_cols) || c.ldb < std::max<int64_t>(1, b_cols) ||
      c.ldc < std::max<int64_t>(1, c.N)) {
    return Status::kInvalidArgument;
  }
  if (c.M == 0 || c.N == 0) {
    *empty = true;
    return Status::kOk;
  }
  if (c.C == nullptr) return Status::kInvalidArgument;
  if (c.K > 0 && (c.A == nullptr || c.B == nullptr)) return Status::kInvalidArgument;
  if (!fits_int(c.M) || !fits_int(c.N) || !fits_int(c.K) || !fits_int(c.lda) || !fits_int(c.ldb) || !fits_int(c.ldc)) {
    return Status::kNotSupported;
  }
  if (ctx.handle == nullptr || ctx.plans == nullptr) return Status::kInvalidArgument;
  return Status::kOk;
}

// Largest power of two (at most 256, cuBLASLt's default assumption) dividing the address.
int64_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return a == 0 ? 256 : int64_t(std::min<uintptr_t>(256, a & (~a + 1)));
}

Status to_status(cublasStatus_t s) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::kOk;
  return s == CUBLAS_STATUS_NOT_SUPPORTED ? Status::kNotSupported : Status::kDeviceError;
}

#define CASTOR_LT_TRY(expr)                                     \
  do {                                                          \
    const cublasStatus_t lt_status_ = (expr);                   \
    if (lt_status_ != CUBLAS_STATUS_SUCCESS) return lt_status_; \
  } while (0)

cublasComputeType_t compute_type(const GemmContext& ctx, const MatmulCall& c) {
  return c.ab_type == CUDA_R_32F && ctx.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

GemmPlanKey plan_key(const MatmulCall& c, cublasComputeType_t compute) {
  // clang-format off
  return {c.trans_a, c.trans_b, c.M, c.N, c.K, c.lda, c.ldb, c.ldc,
          int64_t(c.ab_type), int64_t(c.c_type), int64_t(compute), int64_t(c.epilogue),
          alignment(c.A), alignment(c.B), alignment(c.C), alignment(c.bias), alignment(c.aux), c.ld_aux};
  // clang-format on
}

cublasLtEpilogue_t lt_epilogue(Epilogue e) {
  switch (e) {
    case Epilogue::kNone:
      return CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::kBias:
      return CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::kGeluBias:
      return CUBLASLT_EPILOGUE_GELU_BIAS;
    case Epilogue::kGeluAuxBias:
      return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

// The bias and aux pointers change from call to call under one plan; set them each time.
cublasStatus_t set_pointers(const GemmPlan& p, const MatmulCall& c) {
  if (c.epilogue != Epilogue::kNone) {
    CASTOR_LT_TRY(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c.bias, sizeof c.bias));
  }
  if (c.epilogue == Epilogue::kGeluAuxBias) {
    CASTOR_LT_TRY(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &c.aux, sizeof c.aux));
  }
  return CUBLAS_STATUS_SUCCESS;
}

// The heuristic's best algorithm for the plan's descriptors, the actual pointer alignments
// and the context's workspace.
cublasStatus_t choose_algo(const GemmContext& ctx, const MatmulCall& c, GemmPlan* p) {
  struct Preference {
    cublasLtMatmulPreference_t h = nullptr;
    ~Preference() {
      if (h) cublasLtMatmulPreferenceDestroy(h);
    }
  } pref;
  CASTOR_LT_TRY(cublasLtMatmulPreferenceCreate(&pref.h));
  const uint64_t workspace = ctx.workspace_bytes;
  CASTOR_LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                     sizeof workspace));
  const uint32_t align_a = uint32_t(alignment(c.B)), align_b = uint32_t(alignment(c.A));  // swapped roles
  const uint32_t align_c = uint32_t(alignment(c.C));
  CASTOR_LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                     sizeof align_a));
  CASTOR_LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                     sizeof align_b));
  CASTOR_LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                     sizeof align_c));
  CASTOR_LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                     sizeof align_c));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  CASTOR_LT_TRY(cublasLtMatmulAlgoGetHeuristic(ctx.handle, p->op, p->a, p->b, p->c, p->c, pref.h, 1, &result, &found));
  if (found < 1) return CUBLAS_STATUS_NOT_SUPPORTED;
  p->algo = result.algo;
  return CUBLAS_STATUS_SUCCESS;
}

// Descriptors of C^T (N x M) = op(B)^T (N x K) op(A)^T (K x M) in column-major terms.
cublasStatus_t build_plan(const GemmContext& ctx, const MatmulCall& c, cublasComputeType_t compute, GemmPlan* p) {
  CASTOR_LT_TRY(cublasLtMatmulDescCreate(&p->op, compute, CUDA_R_32F));
  const cublasOperation_t op_a = c.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A is our B
  const cublasOperation_t op_b = c.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B is our A
  CASTOR_LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  CASTOR_LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  const cublasLtEpilogue_t epilogue = lt_epilogue(c.epilogue);
  CASTOR_LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  if (c.epilogue == Epilogue::kGeluAuxBias) {
    CASTOR_LT_TRY(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &c.ld_aux, sizeof c.ld_aux));
  }
  CASTOR_LT_TRY(set_pointers(*p, c));  // the heuristic reads their alignment
  // A row-major (r x k) matrix with stride ld is the column-major (k x r) one with the same ld.
  CASTOR_LT_TRY(cublasLtMatrixLayoutCreate(&p->a, c.ab_type, uint64_t(c.trans_b ? c.K : c.N),
                                           uint64_t(c.trans_b ? c.N : c.K), c.ldb));
  CASTOR_LT_TRY(cublasLtMatrixLayoutCreate(&p->b, c.ab_type, uint64_t(c.trans_a ? c.M : c.K),
                                           uint64_t(c.trans_a ? c.K : c.M), c.lda));
  CASTOR_LT_TRY(cublasLtMatrixLayoutCreate(&p->c, c.c_type, uint64_t(c.N), uint64_t(c.M), c.ldc));
  return choose_algo(ctx, c, p);
}

// Finds or builds the plan for this call and enqueues the matmul on the stream.
Status run_matmul(const GemmContext& ctx, const MatmulCall& c, cudaStream_t stream) {
  const cublasComputeType_t compute = compute_type(ctx, c);
  const GemmPlanKey key = plan_key(c, compute);
  std::lock_guard<std::mutex> lock(ctx.plans->mutex);
  auto& plans = ctx.plans->plans;
  auto it = plans.find(key);
  if (it == plans.end()) {
    std::unique_ptr<GemmPlan> plan(new (std::nothrow) GemmPlan());
    if (!plan) return Status::kDeviceError;
    const Status built = to_status(build_plan(ctx, c, compute, plan.get()));
    if (built != Status::kOk) return built;
    if (plans.size() >= kMaxPlans) plans.clear();
    try {
      it = plans.emplace(key, std::move(plan)).first;
    } catch (const std::bad_alloc&) {
      return Status::kDeviceError;
    }
  } else {
    const Status set = to_status(set_pointers(*it->second, c));
    if (set != Status::kOk) return set;
  }
  const GemmPlan& p = *it->second;
  const cublasStatus_t s = cublasLtMatmul(ctx.handle, p.op, &c.alpha, c.B, p.a, c.A, p.b, &c.beta, c.C, p.c, c.C, p.c,
                                          &p.algo, ctx.workspace, ctx.workspace_bytes, stream);
  if (s != CUBLAS_STATUS_SUCCESS) return to_status(s);
  return launched();
}

// K == 0: op(A) op(B) is zero, so C = beta * C, and beta == 0 writes zeros (NaN ignored).
template <typename Tc>
__global__ void scale_kernel(Tc* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  const int64_t n = M * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    Tc* p = C + (i / N) * ldc + i % N;
    *p = from_float<Tc>(beta == 0.0f ? 0.0f : beta * to_float(*p));
  }
}

template <typename Tc>
Status scale_c(Tc* C, int64_t M, int64_t N, int64_t ldc, float beta, cudaStream_t stream) {
  const int threads = 256;
  scale_kernel<Tc><<<grid_blocks(M * N, threads), threads, 0, stream>>>(C, M, N, ldc, beta);
  return launched();
}

}  // namespace

Status make_gemm_context(GemmContext* ctx, void* workspace, size_t workspace_bytes) {
  if (ctx == nullptr || (workspace == nullptr && workspace_bytes > 0) ||
      reinterpret_cast<uintptr_t>(workspace) % 256 != 0) {
    return Status::kInvalidArgument;
  }
  GemmContext out;
  out.workspace = workspace;
  out.workspace_bytes = workspace ? workspace_bytes : 0;
  out.plans = new (std::nothrow) GemmPlanCache();
  if (out.plans == nullptr) return Status::kDeviceError;
  cublasLtHandle_t handle = nullptr;
  if (cublasLtCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    delete out.plans;
    return Status::kDeviceError;
  }
  out.handle = handle;
  *ctx = out;
  return Status::kOk;
}

Status destroy_gemm_context(GemmContext* ctx) {
  if (ctx == nullptr) return Status::kInvalidArgument;
  delete ctx->plans;  // descriptors do not need the handle
  const cublasStatus_t s = ctx->handle ? cublasLtDestroy(ctx->handle) : CUBLAS_STATUS_SUCCESS;
  *ctx = GemmContext{};
  return s == CUBLAS_STATUS_SUCCESS ? Status::kOk : Status::kDeviceError;
}

template <typename T, typename Tc>
Status gemm(const GemmContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const T* A, int64_t lda, const T* B, int64_t ldb, float beta, Tc* C, int64_t ldc, cudaStream_t stream) {
  const MatmulCall c = make_call(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  bool empty = false;
  const Status s = check_call(ctx, c, &empty);
  if (s != Status::kOk || empty) return s;
  if (K == 0) return scale_c(C, M, N, ldc, beta, stream);
  return run_matmul(ctx, c, stream);
}

template <typename T>
Status gemm_bias(const GemmContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const T* A, int64_t lda, const T* B, int64_t ldb, float beta, T* C, int64_t ldc, const T* bias,
                 cudaStream_t stream) {
  MatmulCall c = make_call(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  c.epilogue = Epilogue::kBias;
  c.bias = bias;
  bool empty = false;
  const Status s = check_call(ctx, c, &empty);
  if (s != Status::kOk || empty) return s;
  if (bias == nullptr) return Status::kInvalidArgument;
  if (K == 0) return Status::kNotSupported;
  return run_matmul(ctx, c, stream);
}

template <typename T>
Status gemm_bias_gelu(const GemmContext& ctx, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const T* A, int64_t lda, const T* B, int64_t ldb, float beta, T* C, int64_t ldc, const T* bias,
                      T* pre_gelu, int64_t ld_pre, cudaStream_t stream) {
  MatmulCall c = make_call(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  c.epilogue = pre_gelu ? Epilogue::kGeluAuxBias : Epilogue::kGeluBias;
  c.bias = bias;
  c.aux = pre_gelu;
  c.ld_aux = pre_gelu ? ld_pre : 0;
  bool empty = false;
  const Status s = check_call(ctx, c, &empty);
  if (s != Status::kOk || empty) return s;
  if (bias == nullptr || (pre_gelu && ld_pre < N)) return Status::kInvalidArgument;
  if (pre_gelu && (ld_pre % 8 != 0 || !fits_int(ld_pre))) return Status::kNotSupported;
  if (K == 0) return Status::kNotSupported;
  return run_matmul(ctx, c, stream);
}

template Status gemm<float, float>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                   int64_t, const float*, int64_t, float, float*, int64_t, cudaStream_t);
template Status gemm<bf16, bf16>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const bf16*, int64_t,
                                 const bf16*, int64_t, float, bf16*, int64_t, cudaStream_t);
template Status gemm<bf16, float>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const bf16*,
                                  int64_t, const bf16*, int64_t, float, float*, int64_t, cudaStream_t);
template Status gemm<f16, f16>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const f16*, int64_t,
                               const f16*, int64_t, float, f16*, int64_t, cudaStream_t);
template Status gemm<f16, float>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const f16*, int64_t,
                                 const f16*, int64_t, float, float*, int64_t, cudaStream_t);
template Status gemm_bias<float>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                 int64_t, const float*, int64_t, float, float*, int64_t, const float*, cudaStream_t);
template Status gemm_bias<bf16>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const bf16*, int64_t,
                                const bf16*, int64_t, float, bf16*, int64_t, const bf16*, cudaStream_t);
template Status gemm_bias<f16>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const f16*, int64_t,
                               const f16*, int64_t, float, f16*, int64_t, const f16*, cudaStream_t);
template Status gemm_bias_gelu<float>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                      int64_t, const float*, int64_t, float, float*, int64_t, const float*, float*,
                                      int64_t, cudaStream_t);
template Status gemm_bias_gelu<bf16>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const bf16*,
                                     int64_t, const bf16*, int64_t, float, bf16*, int64_t, const bf16*, bf16*, int64_t,
                                     cudaStream_t);
template Status gemm_bias_gelu<f16>(const GemmContext&, bool, bool, int64_t, int64_t, int64_t, float, const f16*,
                                    int64_t, const f16*, int64_t, float, f16*, int64_t, const f16*, f16*, int64_t,
                                    cudaStream_t);

}  // namespace castor::kernels::cuda
