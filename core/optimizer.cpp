// AdamW and the learning-rate schedule.
#include "core/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/ops.h"

namespace castor {

namespace kc = kernels::cpu;

float learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps) {
  if (step < cfg.warmup_steps) return cfg.lr * float(step + 1) / float(cfg.warmup_steps);
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - cfg.warmup_steps);
  const double progress = std::min(1.0, double(step - cfg.warmup_steps) / double(decay_steps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return float(cfg.min_lr + (cfg.lr - cfg.min_lr) * cosine);
}

ArenaShard ArenaShard::whole(size_t arena_elems) {
  ArenaShard s;
  s.ranges.push_back({0, arena_elems, 0});
  s.elems = arena_elems;
  return s;
}

bool ArenaShard::is_whole(size_t arena_elems) const {
  return ranges.size() == 1 && ranges[0].arena_begin == 0 && ranges[0].arena_end == arena_elems &&
         ranges[0].shard_offset == 0;
}

AdamW::AdamW(const OptimConfig& cfg, ParamStore& store, Backend& backend, ArenaShard shard, const float* grads)
    : cfg_(cfg), store_(store), ops_(backend.ops()), shard_(std::move(shard)), grads_(grads) {
  cfg_.validate();
  CASTOR_CHECK(store.allocated(), "AdamW: allocate the ParamStore first");
  // Ranges in arena order, so that step() walks the params once.
  std::sort(shard_.ranges.begin(), shard_.ranges.end(),
            [](const auto& a, const auto& b) { return a.arena_begin < b.arena_begin; });
  for (const auto& r : shard_.ranges)
    CASTOR_CHECK(r.arena_begin <= r.arena_end && r.arena_end <= store.arena_elems() &&
                     r.shard_offset + (r.arena_end - r.arena_begin) <= shard_.elems,
                 "AdamW: shard range [", r.arena_begin, ", ", r.arena_end, ") does not fit the arena or the shard");
  m_ = Buffer(backend, shard_.elems * sizeof(float));
  v_ = Buffer(backend, shard_.elems * sizeof(float));
  // Params in arena order too (registration order differs when experts are placed apart).
  for (const Param& p : store.params()) by_offset_.push_back(&p);
  std::sort(by_offset_.begin(), by_offset_.end(), [](const Param* a, const Param* b) { return a->offset < b->offset; });
}

ArenaMoments AdamW::whole_moments() const {
  CASTOR_CHECK(shard_.is_whole(store_.arena_elems()), "AdamW: this optimizer holds a shard of the moments");
  return {m_.f32(), v_.f32()};
}

const float* AdamW::grad_at(const ArenaShard::Range& r) const {
  return grads_ ? grads_ + r.shard_offset : store_.grads() + r.arena_begin;
}

double AdamW::grad_sum_squares() const {
  double total = 0.0;
  for (const auto& r : shard_.ranges) {
    total += ops_.sum_squares(grad_at(r), int64_t(r.arena_end - r.arena_begin));
  }
  return total;
}

double AdamW::grad_norm() const { return std::sqrt(grad_sum_squares()); }

template <typename F>
void AdamW::for_each_part(F&& fn) const {
  const std::vector<const Param*>& params = by_offset_;
  size_t pi = 0;  // params and ranges are both in arena order
  for (const auto& r : shard_.ranges) {
    while (pi < params.size() && params[pi]->offset + size_t(params[pi]->numel()) <= r.arena_begin) ++pi;
    for (size_t k = pi; k < params.size() && params[k]->offset < r.arena_end; ++k) {
      const Param& p = *params[k];
      const size_t begin = std::max(r.arena_begin, p.offset);
      const size_t end = std::min(r.arena_end, p.offset + size_t(p.numel()));
      if (begin < end) fn(p, r, begin, end);
    }
  }
}

void AdamW::grad_sum_squares(const std::function<size_t(const Param&)>& group, std::span<double> sums) const {
  for_each_part([&](const Param& p, const ArenaShard::Range& r, size_t begin, size_t end) {
    const double ss = ops_.sum_squares(grad_at(r) + (begin - r.arena_begin), int64_t(end - begin));
    const size_t g = group(p);
    CASTOR_CHECK(g < sums.size(), "grad_sum_squares: group ", g, " out of range");
    sums[g] += ss;
  });
}

void AdamW::step(float lr, double grad_norm) {
  ++t_;
  float scale = 1.0f;
  if (cfg_.grad_clip > 0 && grad_norm > cfg_.grad_clip) scale = float(cfg_.grad_clip / grad_norm);
  for_each_part([&](const Param& p, const ArenaShard::Range& r, size_t begin, size_t end) {
    const size_t skip = begin - r.arena_begin, at = r.shard_offset + skip;
    kc::AdamWHyper h{lr, cfg_.beta1, cfg_.beta2, cfg_.eps, p.decay ? cfg_.weight_decay : 0.0f, t_, scale};
    ops_.adamw_step(store_.weights() + begin, grad_at(r) + skip, m_.f32() + at, v_.f32() + at, int64_t(end - begin), h);
  });
}

}  // namespace castor
