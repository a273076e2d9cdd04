// LM head + softmax cross-entropy, a chunk of rows at a time: one multi-threaded sgemm
// forms the chunk's logits, an OpenMP loop over rows turns each into probabilities (in
// place) and then into dlogits, and two more sgemms push dlogits into dx and dW. Row
// losses are kept per row and summed serially in double, so the result depends only on
// the chunk size, never on the thread count.
#include "kernels/cpu/lm_head_xent.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

namespace castor::kernels::cpu {
namespace {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // the vector types never cross this file's boundary

// Lanes match the widest vector register the build targets.
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#elif defined(__AVX__)
constexpr int64_t kLanes = 8;
#else
constexpr int64_t kLanes = 4;
#endif
typedef float VecF __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t VecI __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline VecF load(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, VecF v) { std::memcpy(p, &v, sizeof v); }

// exp(x) lane-wise for x <= ~0: n = round(x / ln2) by truncation (valid for x <= 0.5),
// Cephes polynomial on the remainder (~1 ulp), times 2^n built in the exponent bits.
// Results below 2^-126 (x < -87.3) flush to 0; -inf gives 0.
inline VecF exp_nonpositive(VecF x) {
  x = x < -100.0f ? VecF{} - 100.0f : x;
  const VecI ni = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, VecI);
  const VecF n = __builtin_convertvector(ni, VecF);
  VecF r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  VecF p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const VecF y = p * r * r + r + 1.0f;
  VecI e = ni + 127;
  e = e < 0 ? VecI{} : e;
  return y * reinterpret_cast<VecF>(e << 23);
}

inline float row_max(const float* x, int64_t n) {
  VecF m = VecF{} - INFINITY;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const VecF v = load(x + j);
    m = v > m ? v : m;
  }
  float r = -INFINITY;
  for (int64_t i = 0; i < kLanes; ++i) r = std::max(r, m[i]);
  for (; j < n; ++j) r = std::max(r, x[j]);
  return r;
}

// x[j] = exp(x[j] - shift) for j < n; returns the sum of the new values (lane sums
// combined in a fixed order).
inline float exp_shift_sum(float* x, int64_t n, float shift) {
  VecF acc{};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const VecF e = exp_nonpositive(load(x + j) - shift);
    store(x + j, e);
    acc += e;
  }
  if (j < n) {  // tail through a padded vector so every element sees the same math
    float buf[kLanes];
    for (int64_t i = 0; i < kLanes; ++i) buf[i] = j + i < n ? x[j + i] : -INFINITY;
    const VecF e = exp_nonpositive(load(buf) - shift);
    store(buf, e);
    for (int64_t i = 0; j + i < n; ++i) x[j + i] = buf[i];
    acc += e;
  }
  float s = 0.0f;
  for (int64_t i = 0; i < kLanes; ++i) s += acc[i];
  return s;
}

#pragma GCC diagnostic pop

}  // namespace

// Logits/dlogits tile (chunk_rows x V), then one double per row for its loss.
size_t lm_head_xent_scratch_floats(int64_t chunk_rows, int64_t V) {
  if (chunk_rows <= 0 || V <= 0) return 0;
  return size_t(chunk_rows) * size_t(V) + 2 * size_t(chunk_rows);
}

Status lm_head_xent(XentResult* result, const float* x, const float* w, const int32_t* targets,
                    int64_t N, int64_t C, int64_t V, float grad_scale, float* dx, float* dw,
                    float* scratch, int64_t chunk_rows) {
  if (result == nullptr || N < 0 || C <= 0 || V <= 0 || chunk_rows <= 0) {
    return Status::kInvalidArgument;
  }
  if (C > INT_MAX || V > INT_MAX || chunk_rows > INT_MAX) return Status::kInvalidArgument;
  if (N > 0 && (x == nullptr || w == nullptr || targets == nullptr || scratch == nullptr)) {
    return Status::kInvalidArgument;
  }
  if (dx != nullptr && dw == nullptr) return Status::kInvalidArgument;
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] < -1 || targets[i] >= V) return Status::kOutOfRange;
  }

  const bool backward = dx != nullptr;
  float* logits = scratch;
  float* row_loss_bytes = scratch + chunk_rows * V;  // chunk_rows doubles, via memcpy
  double loss_sum = 0.0;
  int64_t count = 0;

  for (int64_t c0 = 0; c0 < N; c0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, N - c0);
    const float* xc = x + c0 * C;
    const int32_t* tc = targets + c0;

    // logits = x_chunk W^T  (rows x V); OpenBLAS threads this call itself.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(V), int(C), 1.0f, xc,
                int(C), w, int(C), 0.0f, logits, int(V));

#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* row = logits + r * V;
      const int32_t t = tc[r];
      double loss = 0.0;
      if (t < 0) {
        if (backward) std::memset(row, 0, size_t(V) * sizeof(float));
      } else {
        const float target_logit = row[t];
        const float m = row_max(row, V);
        const float sum = exp_shift_sum(row, V, m);  // row = exp(logit - m)
        loss = double(m) + std::log(double(sum)) - double(target_logit);
        if (backward) {  // dlogits = grad_scale * (p - onehot(t))
          const float k = grad_scale / sum;
          for (int64_t j = 0; j < V; ++j) row[j] *= k;
          row[t] -= grad_scale;
        }
      }
      std::memcpy(row_loss_bytes + 2 * r, &loss, sizeof loss);
    }

    for (int64_t r = 0; r < rows; ++r) {  // fixed order: independent of the thread count
      double loss;
      std::memcpy(&loss, row_loss_bytes + 2 * r, sizeof loss);
      loss_sum += loss;
      count += tc[r] >= 0;
    }

    if (backward) {
      // dx_chunk = dlogits W  (rows x C);  dW += dlogits^T x_chunk  (V x C)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(C), int(V), 1.0f,
                  logits, int(V), w, int(C), 0.0f, dx + c0 * C, int(C));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(V), int(C), int(rows), 1.0f,
                  logits, int(V), xc, int(C), 1.0f, dw, int(C));
    }
  }
  result->loss_sum = loss_sum;
  result->count = count;
  return Status::kOk;
}

}  // namespace castor::kernels::cpu
