// Dynamic loss scaling for fp16 mixed precision: backward runs on the loss times scale()
// so that small gradients survive fp16; unscale() then divides the f32 gradients by it and
// says whether they are all finite. update() records the outcome: an overflow (the caller
// skips that optimizer step) halves the scale, `growth_interval` clean steps in a row double
// it (capped at 2^24). Disabled (f32, bf16), the scale is 1 and nothing is checked.
#pragma once
#include <cstdint>

#include "core/ops.h"

namespace castor {

class LossScaler {
 public:
  LossScaler(bool enabled, float initial_scale, int64_t growth_interval);
  bool enabled() const { return enabled_; }
  float scale() const { return scale_; }
  // Gradients g (n f32 in backend memory) /= scale(); false if any is inf or NaN.
  bool unscale(Ops& ops, float* g, int64_t n) const;
  void update(bool finite);
  int64_t overflows() const { return overflows_; }  // steps skipped so far
  // Clean steps since the scale last changed; restore() continues a checkpointed run.
  int64_t clean_steps() const { return clean_; }
  void restore(float scale, int64_t clean_steps);

 private:
  bool enabled_;
  float scale_;
  int64_t growth_interval_, clean_ = 0, overflows_ = 0;
};

}  // namespace castor
