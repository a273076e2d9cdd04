// AdamW over the ParamStore's arenas: fp32 first/second moments laid out like the
// weights, decoupled weight decay on params marked `decay` (matrices, embeddings),
// global gradient-norm clipping, and the warmup + cosine learning-rate schedule.
#pragma once
#include <cstdint>

#include "core/config.h"
#include "core/param.h"

namespace castor {

// Linear warmup from 0 to lr over warmup_steps, then cosine decay to min_lr at
// total_steps. step is 0-based (the step about to be taken).
float learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps);

class AdamW {
 public:
  AdamW(const OptimConfig& cfg, ParamStore& store, Backend& backend);

  // Global L2 norm of the gradient arena.
  double grad_norm() const;
  // One update with learning rate lr; clips to cfg.grad_clip using the given norm.
  void step(float lr, double grad_norm);

  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  float* exp_avg() const { return m_.f32(); }     // same layout as the weight arena
  float* exp_avg_sq() const { return v_.f32(); }

 private:
  OptimConfig cfg_;
  ParamStore& store_;
  Buffer m_, v_;
  int64_t t_ = 0;
};

}  // namespace castor
