// Finite-difference gradient checking shared by kernel and module tests.
// The scalar probed is L = sum_i out_i * r_i for a fixed random r, evaluated in double;
// central differences on a sample of coordinates are compared with the analytic gradient.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace castor::testing {

inline std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// Dot product in double: the probe loss L = <out, r>.
inline double probe(const std::vector<float>& out, const std::vector<float>& r) {
  double s = 0.0;
  for (size_t i = 0; i < out.size(); ++i) s += double(out[i]) * double(r[i]);
  return s;
}

// Checks analytic[i] against (L(x + h e_i) - L(x - h e_i)) / 2h for up to `samples`
// coordinates of x. loss(x) must recompute L from scratch. Tolerance is mixed
// absolute/relative, sized for fp32 forward passes.
inline void expect_gradient_matches(std::vector<float>& x, const std::vector<float>& analytic,
                                    const std::function<double()>& loss, const char* what,
                                    int samples = 24, float h = 1e-2f, double rtol = 2e-2,
                                    double atol = 2e-3) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  std::mt19937_64 gen(1234);
  std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
  int n = std::min<int>(samples, static_cast<int>(x.size()));
  double max_abs = 0.0;
  for (float a : analytic) max_abs = std::max(max_abs, std::fabs(double(a)));
  for (int s = 0; s < n; ++s) {
    size_t i = x.size() <= size_t(samples) ? size_t(s) : pick(gen);
    float saved = x[i];
    x[i] = saved + h;
    double lp = loss();
    x[i] = saved - h;
    double lm = loss();
    x[i] = saved;
    double numeric = (lp - lm) / (2.0 * double(h));
    double err = std::fabs(numeric - double(analytic[i]));
    EXPECT_LE(err, atol * std::max(1.0, max_abs) + rtol * std::fabs(numeric))
        << what << "[" << i << "]: analytic " << analytic[i] << " numeric " << numeric;
  }
}

}  // namespace castor::testing
