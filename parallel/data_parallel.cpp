// DataParallel (see data_parallel.h).
#include "parallel/data_parallel.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>

#include "core/error.h"

namespace castor::parallel {

DataParallel::DataParallel(Communicator& dp, ParamStore& store, Backend& backend, int zero_stage,
                           size_t bucket_elems, Communicator* tp)
    : dp_(dp),
      tp_(tp && tp->size() > 1 ? tp : nullptr),
      store_(store),
      backend_(backend),
      stage_(dp.size() > 1 ? zero_stage : 0),
      layout_(store.arena_elems(), bucket_elems, stage_ > 0 ? dp.size() : 1) {
  CASTOR_CHECK(zero_stage >= 0 && zero_stage <= 2, "--parallel.zero ", zero_stage, ": expected 0, 1 or 2");
  CASTOR_CHECK(store.allocated() && store.arena_elems() % arena_pad(dp.size()) == 0,
               "DataParallel: allocate the ParamStore with pad_to = ", arena_pad(dp.size()));
  if (stage_ == 2) backend_.discard(store_.grads(), store_.arena_elems() * sizeof(float));  // resident while written
}

AdamW DataParallel::make_optimizer(const OptimConfig& cfg) const {
  if (stage_ == 0) return AdamW(cfg, store_, backend_);
  // The reduced slices are read where they lie in the gradient arena.
  return AdamW(cfg, store_, backend_, layout_.shard(dp_.rank()), nullptr);
}

void DataParallel::zero_grads() {
  if (stage_ == 2)
    backend_.discard(store_.grads(), store_.arena_elems() * sizeof(float));
  else
    store_.zero_grads();
}

void DataParallel::backward(Transformer& model, bool last_micro) {
  const bool reduce = dp_.size() > 1 && (last_micro || stage_ == 2);
  if (!reduce) {
    model.backward();
    return;
  }
  std::optional<GradientBuckets> buckets;
  if (stage_ == 0) {
    buckets.emplace(dp_, store_.grads(), layout_);
  } else if (stage_ == 1) {
    buckets.emplace(dp_, store_.grads(), layout_, nullptr, nullptr);  // in place: each rank's slice in the arena
  } else {
    // In place, and the rest of each reduced bucket goes back to the system at once. The
    // next micro-batch's backward adds onto this rank's reduced slice and onto zeros
    // elsewhere, so its reduce-scatter yields the sum over micro-batches.
    const int r = dp_.rank();
    buckets.emplace(dp_, store_.grads(), layout_, nullptr, [this, r](size_t k) {
      const BucketLayout::Bucket& b = layout_.buckets[k];
      float* g = store_.grads();
      const size_t mine = b.begin + size_t(r) * b.slice;
      backend_.discard(g + b.begin, (mine - b.begin) * sizeof(float));
      backend_.discard(g + mine + b.slice, (b.end - mine - b.slice) * sizeof(float));
    });
  }
  model.backward([&](size_t ready_from) { buckets->ready_from(ready_from); });
  buckets->finish();
}

double DataParallel::grad_norm(const AdamW& optim) {
  double ss = 0.0;
  if (tp_) {  // tp-sharded params: each rank holds a part; replicated ones: every rank all
    double sums[2] = {0.0, 0.0};
    optim.grad_sum_squares([](const Param& p) { return size_t(p.shard.sharded()); }, sums);
    tp_->all_reduce(&sums[1], 1, ReduceOp::kSum);
    ss = sums[0] + sums[1];
  } else {
    ss = optim.grad_sum_squares();
  }
  if (stage_ >= 1) dp_.all_reduce(&ss, 1, ReduceOp::kSum);
  return std::sqrt(ss);
}

void DataParallel::after_step() {
  if (stage_ == 0) return;
  std::vector<CommHandle> pending;
  for (const auto& b : layout_.buckets)
    pending.push_back(dp_.iall_gather(nullptr, store_.weights() + b.begin, b.slice, CommType::f32));
  for (auto& h : pending) h->wait();
}

ArenaMoments DataParallel::gather_moments(const AdamW& optim) {
  if (stage_ == 0) return optim.whole_moments();
  const size_t bytes = store_.arena_elems() * sizeof(float);
  if (moments_m_.bytes() != bytes) {
    moments_m_ = Buffer(backend_, bytes);
    moments_v_ = Buffer(backend_, bytes);
  }
  std::vector<CommHandle> pending;
  for (const auto& b : layout_.buckets) {
    pending.push_back(dp_.iall_gather(optim.exp_avg() + b.shard_offset, moments_m_.f32() + b.begin, b.slice,
                                      CommType::f32));
    pending.push_back(dp_.iall_gather(optim.exp_avg_sq() + b.shard_offset, moments_v_.f32() + b.begin, b.slice,
                                      CommType::f32));
  }
  for (auto& h : pending) h->wait();
  return {moments_m_.f32(), moments_v_.f32()};
}

void DataParallel::scatter_moments(AdamW& optim, const ArenaMoments& whole) const {
  for (const auto& r : optim.shard().ranges) {
    const size_t n = r.arena_end - r.arena_begin;
    std::memcpy(optim.exp_avg() + r.shard_offset, whole.exp_avg + r.arena_begin, n * sizeof(float));
    std::memcpy(optim.exp_avg_sq() + r.shard_offset, whole.exp_avg_sq + r.arena_begin, n * sizeof(float));
  }
}

StateMemory DataParallel::memory(const AdamW& optim) const {
  StateMemory m;
  m.weights = store_.arena_elems() * sizeof(float);
  m.grads = (stage_ == 2 ? layout_.shard_elems : store_.arena_elems()) * sizeof(float);
  m.moments = 2 * optim.shard().elems * sizeof(float);
  return m;
}

std::string DataParallel::describe() const {
  char line[256];
  const double mb = double(layout_.buckets.empty() ? 0 : layout_.buckets[0].end - layout_.buckets[0].begin) *
                    sizeof(float) / 1e6;
  static const char* what[] = {"all-reduced during backward; optimizer states replicated",
                               "reduce-scattered during backward; optimizer states sharded",
                               "reduce-scattered every micro-batch; gradients and optimizer states sharded"};
  std::snprintf(line, sizeof(line), "ZeRO stage %d: gradients in %zu buckets of up to %.3g MB, %s", stage_,
                layout_.buckets.size(), mb, what[stage_]);
  std::string out = line;
  if (store_.arena_elems() != store_.numel())
    out += "; arena padded from " + std::to_string(store_.numel()) + " to " + std::to_string(store_.arena_elems()) +
           " elements";
  return out;
}

}  // namespace castor::parallel
