// LossScaler (loss_scale.h): the halve-on-overflow, double-after-a-clean-window policy.
#include "core/loss_scale.h"

#include <algorithm>

#include "core/error.h"

namespace castor {

namespace {
constexpr float kMaxScale = 16777216.0f;  // 2^24
}  // namespace

LossScaler::LossScaler(bool enabled, float initial_scale, int64_t growth_interval)
    : enabled_(enabled), scale_(enabled ? initial_scale : 1.0f), growth_interval_(growth_interval) {
  CASTOR_CHECK(!enabled || (initial_scale >= 1.0f && initial_scale <= kMaxScale), "--train.loss_scale ",
               initial_scale, ": expected a value in [1, 2^24]");
  CASTOR_CHECK(!enabled || growth_interval > 0, "--train.loss_scale_window must be positive (got ", growth_interval,
               ")");
}

bool LossScaler::unscale(Ops& ops, float* g, int64_t n) const {
  if (!enabled_) return true;
  return ops.unscale_and_check(g, n, 1.0f / scale_);
}

void LossScaler::restore(float scale, int64_t clean_steps) {
  CASTOR_CHECK(enabled_, "loss scale restored on a run without loss scaling");
  CASTOR_CHECK(scale >= 1.0f && scale <= kMaxScale && clean_steps >= 0 && clean_steps < growth_interval_,
               "loss scale ", scale, " with ", clean_steps, " clean steps does not fit this run's settings");
  scale_ = scale;
  clean_ = clean_steps;
}

void LossScaler::update(bool finite) {
  if (!enabled_) return;
  if (!finite) {
    scale_ = std::max(1.0f, scale_ / 2.0f);
    clean_ = 0;
    ++overflows_;
    return;
  }
  if (++clean_ == growth_interval_) {
    scale_ = std::min(kMaxScale, scale_ * 2.0f);
    clean_ = 0;
  }
}

}  // namespace castor
