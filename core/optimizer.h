// AdamW over a shard of the ParamStore's arenas: fp32 first/second moments for the arena
// ranges this rank updates (the whole arena, or its ZeRO slices), decoupled weight decay
// on params marked `decay` (matrices, embeddings), gradient-norm clipping, and the
// warmup + cosine learning-rate schedule.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/config.h"
#include "core/ops.h"
#include "core/param.h"

namespace castor {

// Linear warmup from 0 to lr over warmup_steps, then cosine decay to min_lr at
// total_steps. step is 0-based (the step about to be taken).
float learning_rate(const OptimConfig& cfg, int64_t step, int64_t total_steps);

// The arena ranges one optimizer updates, laid back to back in shard coordinates:
// moments (and, under ZeRO, the reduced gradients) are shard-sized arrays.
struct ArenaShard {
  struct Range {
    size_t arena_begin = 0, arena_end = 0;  // [begin, end) of the weight/grad arenas
    size_t shard_offset = 0;                // where the range starts in shard arrays
  };
  std::vector<Range> ranges;
  size_t elems = 0;  // total length of the shard arrays

  static ArenaShard whole(size_t arena_elems);
  bool is_whole(size_t arena_elems) const;
};

// AdamW moments in whole-arena layout: what checkpoints store, by parameter name.
struct ArenaMoments {
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
};

class AdamW {
 public:
  // grads: the gradients in shard coordinates, or nullptr: the store's gradient arena
  // (read at the ranges' arena positions).
  AdamW(const OptimConfig& cfg, ParamStore& store, Backend& backend, ArenaShard shard, const float* grads);
  AdamW(const OptimConfig& cfg, ParamStore& store, Backend& backend)
      : AdamW(cfg, store, backend, ArenaShard::whole(store.arena_elems()), nullptr) {}

  // Sum of squared gradients over this shard (the global norm sums it over shards).
  double grad_sum_squares() const;
  // The same split by param: sums[group(p)] += the squares of p's gradients in this shard
  // (group(p) < sums.size()), for norms over params held by different sets of ranks.
  void grad_sum_squares(const std::function<size_t(const Param&)>& group, std::span<double> sums) const;
  double grad_norm() const;  // of this shard alone
  // One update with learning rate lr; clips to cfg.grad_clip using the given global norm.
  void step(float lr, double grad_norm);

  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  const ArenaShard& shard() const { return shard_; }
  float* exp_avg() const { return m_.f32(); }     // shard coordinates
  float* exp_avg_sq() const { return v_.f32(); }
  // The moments in arena layout when this optimizer holds the whole arena (else the
  // shards must be gathered first: parallel/data_parallel.h).
  ArenaMoments whole_moments() const;

 private:
  OptimConfig cfg_;
  ParamStore& store_;
  Ops& ops_;
  ArenaShard shard_;
  const float* grads_;    // nullptr: the gradient arena
  const float* grad_at(const ArenaShard::Range& r) const;  // the range's first gradient
  // fn(param, range, arena begin, arena end) for each part of a param inside a range.
  template <typename F>
  void for_each_part(F&& fn) const;
  Buffer m_, v_;
  int64_t t_ = 0;
  std::vector<const Param*> by_offset_;  // the store's params in arena order
};

}  // namespace castor
