// Run metrics: process peak memory, the CPU SGEMM peak measured for MFU, and the
// model-FLOPs-per-token formula of DESIGN.md section 6.
#pragma once
#include <cstdint>

#include "core/config.h"

namespace castor::launch {

// Peak resident set size of this process in bytes (getrusage).
int64_t peak_rss_bytes();
// Measured single-precision GEMM rate (FLOP/s) with the current thread pool.
double measure_sgemm_peak();
// 6 * N_non_embedding + 6 * d_model * vocab + 12 * n_layers * d_model * seq_len.
double model_flops_per_token(const ModelConfig& m, int64_t seq_len);

}  // namespace castor::launch
