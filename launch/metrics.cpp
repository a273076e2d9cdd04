// Peak RSS, SGEMM peak measurement (a few large square products, best of three) and
// model FLOPs per token.
#include "launch/metrics.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace castor::launch {

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return int64_t(u.ru_maxrss) * 1024;
}

double measure_sgemm_peak() {
  const int64_t n = 768;
  std::vector<float> a(size_t(n * n), 0.5f), b(size_t(n * n), 0.25f), c(size_t(n * n), 0.0f);
  double best = 0.0;
  for (int rep = 0; rep < 4; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    kernels::cpu::gemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) best = std::max(best, 2.0 * double(n) * double(n) * double(n) / s);
  }
  return best;
}

double model_flops_per_token(const ModelConfig& m, int64_t seq_len) {
  return 6.0 * double(m.non_embedding_params()) + 6.0 * double(m.d_model) * double(m.vocab_size) +
         12.0 * double(m.n_layers) * double(m.d_model) * double(seq_len);
}

}  // namespace castor::launch
