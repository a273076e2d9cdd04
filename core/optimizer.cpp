// AdamW and the learning-rate schedule.
#include "core/optimizer.h"

#include <cmath>

#include "kernels/cpu/optim.h"

namespace castor {

namespace kc = kernels::cpu;

float learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps) {
  if (step < cfg.warmup_steps) return cfg.lr * float(step + 1) / float(cfg.warmup_steps);
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - cfg.warmup_steps);
  const double progress = std::min(1.0, double(step - cfg.warmup_steps) / double(decay_steps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return float(cfg.min_lr + (cfg.lr - cfg.min_lr) * cosine);
}

AdamW::AdamW(const OptimConfig& cfg, ParamStore& store, Backend& backend) : cfg_(cfg), store_(store) {
  cfg_.validate();
  m_ = Buffer(backend, store.numel() * sizeof(float));
  v_ = Buffer(backend, store.numel() * sizeof(float));
}

double AdamW::grad_norm() const {
  double ss = 0.0;
  CASTOR_KERNEL_CHECK(kc::sum_squares(&ss, store_.grads(), int64_t(store_.numel())));
  return std::sqrt(ss);
}

void AdamW::step(float lr, double grad_norm) {
  ++t_;
  float scale = 1.0f;
  if (cfg_.grad_clip > 0 && grad_norm > cfg_.grad_clip) scale = float(cfg_.grad_clip / grad_norm);
  for (const Param& p : store_.params()) {
    kc::AdamWHyper h{lr, cfg_.beta1, cfg_.beta2, cfg_.eps, p.decay ? cfg_.weight_decay : 0.0f, t_, scale};
    CASTOR_KERNEL_CHECK(kc::adamw_step(p.w, p.g, m_.f32() + p.offset, v_.f32() + p.offset, p.numel(), h));
  }
}

}  // namespace castor
