// DataParallel (see data_parallel.h).
#include "parallel/data_parallel.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>

#include "core/error.h"

namespace castor::parallel {

ModelGroups allocate_for_layout(ParamStore& store, Backend& backend, const ProcessGroups& groups) {
  const MeshShape& shape = groups.shape;
  if (shape.tp == 1 && shape.ep == 1) {
    store.allocate(backend, DataParallel::arena_pad(shape.dp));
    return {};
  }
  Communicator* experts = shape.tp > 1 ? groups.tp_edp.get() : groups.edp.get();
  store.allocate(backend, {DataParallel::arena_pad(shape.dp), size_t(groups.tp_dp->size()), size_t(experts->size())},
                 [&](const Param& p) -> size_t { return p.expert && shape.ep > 1 ? 2 : p.token_split ? 1 : 0; });
  return {groups.tp.get(), groups.world.get(), {groups.tp_dp.get(), experts}};
}

DataParallel::DataParallel(Communicator& dp, ParamStore& store, Backend& backend, int zero_stage,
                           size_t bucket_elems, ModelGroups groups)
    : dp_(dp), groups_(groups), store_(store), backend_(backend), stage_(dp.size() > 1 ? zero_stage : 0) {
  CASTOR_CHECK(zero_stage >= 0 && zero_stage <= 2, "--parallel.zero ", zero_stage, ": expected 0, 1 or 2");
  CASTOR_CHECK(store.allocated() && store.regions() == groups_.regions.size() + 1,
               "DataParallel: the store has ", store.regions(), " arena regions, the layout ",
               groups_.regions.size() + 1);
  size_t shard_base = 0;
  for (size_t r = 0; r < store.regions(); ++r) {
    Communicator* comm = r == 0 ? &dp_ : groups_.regions[r - 1];
    const size_t begin = store.region_begin(r), end = store.region_begin(r + 1);
    CASTOR_CHECK(comm && (end - begin) % size_t(comm->size()) == 0, "DataParallel: arena region ", r,
                 " is not padded to its group's size");
    domains_.push_back({comm, BucketLayout(begin, end, bucket_elems, stage_ > 0 ? comm->size() : 1, shard_base)});
    shard_base += domains_.back().layout.shard_elems;
  }
  if (stage_ == 2) backend_.discard(store_.grads(), store_.arena_elems() * sizeof(float));  // resident while written
}

AdamW DataParallel::make_optimizer(const OptimConfig& cfg) const {
  if (stage_ == 0) return AdamW(cfg, store_, backend_);
  // The reduced slices are read where they lie in the gradient arena.
  ArenaShard shard;
  for (const Domain& d : domains_) {
    const ArenaShard part = d.layout.shard(d.comm->rank());
    shard.ranges.insert(shard.ranges.end(), part.ranges.begin(), part.ranges.end());
    shard.elems += d.layout.shard_elems;
  }
  return AdamW(cfg, store_, backend_, shard, nullptr);
}

void DataParallel::zero_grads() {
  if (stage_ == 2)
    backend_.discard(store_.grads(), store_.arena_elems() * sizeof(float));
  else
    store_.zero_grads();
}

// Reduces one domain's gradients over its group: during `model`'s backward when given (its
// grads_ready offsets start buckets), else now.
void DataParallel::reduce_domain(Domain& d, bool last_micro, Transformer* model) {
  Communicator& comm = *d.comm;
  const bool reduce = comm.size() > 1 && (last_micro || stage_ == 2);
  if (!reduce) {
    if (model) model->backward();
    return;
  }
  std::optional<GradientBuckets> buckets;
  if (stage_ == 0) {
    buckets.emplace(comm, store_.grads(), d.layout);
  } else if (stage_ == 1) {
    buckets.emplace(comm, store_.grads(), d.layout, nullptr, nullptr);  // in place: each rank's slice in the arena
  } else {
    // In place, and the rest of each reduced bucket goes back to the system at once. The
    // next micro-batch's backward adds onto this rank's reduced slice and onto zeros
    // elsewhere, so its reduce-scatter yields the sum over micro-batches.
    const int r = comm.rank();
    const BucketLayout& layout = d.layout;
    buckets.emplace(comm, store_.grads(), layout, nullptr, [this, r, &layout](size_t k) {
      const BucketLayout::Bucket& b = layout.buckets[k];
      float* g = store_.grads();
      const size_t mine = b.begin + size_t(r) * b.slice;
      backend_.discard(g + b.begin, (mine - b.begin) * sizeof(float));
      backend_.discard(g + mine + b.slice, (b.end - mine - b.slice) * sizeof(float));
    });
  }
  if (model) model->backward([&](size_t ready_from) { buckets->ready_from(ready_from); });
  buckets->finish();
}

void DataParallel::backward(Transformer& model, bool last_micro) {
  reduce_domain(domains_[0], last_micro, &model);  // overlapped with backward
  for (size_t i = 1; i < domains_.size(); ++i) reduce_domain(domains_[i], last_micro, nullptr);
}

double DataParallel::grad_norm(const AdamW& optim) {
  if (!groups_.world) {  // data parallelism alone: each rank holds the whole model or a dp slice
    double ss = optim.grad_sum_squares();
    if (stage_ >= 1) dp_.all_reduce(&ss, 1, ReduceOp::kSum);
    return std::sqrt(ss);
  }
  // Each element's square, divided by the number of ranks holding that element, summed over
  // every rank. Holders: its region's group when not ZeRO-sliced (it was reduced over it),
  // and in region 0 also each tp rank unless the param is a tp shard.
  const size_t regions = domains_.size();
  std::vector<double> sums(2 * regions, 0.0);
  optim.grad_sum_squares(
      [&](const Param& p) {
        size_t r = 0;
        while (r + 1 < regions && p.offset >= store_.region_begin(r + 1)) ++r;
        return 2 * r + size_t(p.shard.sharded());
      },
      sums);
  double ss = 0.0;
  const double tp = groups_.tp ? double(groups_.tp->size()) : 1.0;
  for (size_t c = 0; c < sums.size(); ++c) {
    const size_t r = c / 2;
    double holders = stage_ == 0 ? double(domains_[r].comm->size()) : 1.0;
    if (r == 0 && c % 2 == 0) holders *= tp;
    ss += sums[c] / holders;
  }
  groups_.world->all_reduce(&ss, 1, ReduceOp::kSum);
  return std::sqrt(ss);
}

void DataParallel::after_step() {
  if (stage_ == 0) return;
  std::vector<CommHandle> pending;
  for (const Domain& d : domains_)
    if (d.comm->size() > 1)
      for (const auto& b : d.layout.buckets)
        pending.push_back(d.comm->iall_gather(nullptr, store_.weights() + b.begin, b.slice, CommType::f32));
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
  for (const Domain& d : domains_) {
    for (const auto& b : d.layout.buckets) {
      pending.push_back(d.comm->iall_gather(optim.exp_avg() + b.shard_offset, moments_m_.f32() + b.begin, b.slice,
                                            CommType::f32));
      pending.push_back(d.comm->iall_gather(optim.exp_avg_sq() + b.shard_offset, moments_v_.f32() + b.begin, b.slice,
                                            CommType::f32));
    }
  }
  for (auto& h : pending) h->wait();
  return {moments_m_.f32(), moments_v_.f32()};
}

void DataParallel::scatter_moments(AdamW& optim, const ArenaMoments& whole) const {
  for (const auto& r : optim.shard().ranges) {
    const size_t n = r.arena_end - r.arena_begin;
    backend_.copy(optim.exp_avg() + r.shard_offset, whole.exp_avg + r.arena_begin, n * sizeof(float));
    backend_.copy(optim.exp_avg_sq() + r.shard_offset, whole.exp_avg_sq + r.arena_begin, n * sizeof(float));
  }
  backend_.synchronize();
}

StateMemory DataParallel::memory(const AdamW& optim) const {
  StateMemory m;
  m.weights = store_.arena_elems() * sizeof(float);
  m.grads = (stage_ == 2 ? optim.shard().elems : store_.arena_elems()) * sizeof(float);
  m.moments = 2 * optim.shard().elems * sizeof(float);
  return m;
}

std::string DataParallel::describe() const {
  char line[256];
  const BucketLayout& layout = domains_.front().layout;
  size_t buckets = 0;
  for (const Domain& d : domains_) buckets += d.layout.buckets.size();
  const double mb = double(layout.buckets.empty() ? 0 : layout.buckets[0].end - layout.buckets[0].begin) *
                    sizeof(float) / 1e6;
  static const char* what[] = {"all-reduced during backward; optimizer states replicated",
                               "reduce-scattered during backward; optimizer states sharded",
                               "reduce-scattered every micro-batch; gradients and optimizer states sharded"};
  std::snprintf(line, sizeof(line), "ZeRO stage %d: gradients in %zu buckets of up to %.3g MB, %s", stage_, buckets,
                mb, what[stage_]);
  std::string out = line;
  for (size_t r = 1; r < domains_.size(); ++r)
    if (store_.region_begin(r + 1) > store_.region_begin(r))
      out += "; " + std::to_string(store_.region_begin(r + 1) - store_.region_begin(r)) + " MoE gradient elements over " +
             domains_[r].comm->name() + "=" + std::to_string(domains_[r].comm->size());
  if (store_.arena_elems() != store_.numel())
    out += "; arena padded from " + std::to_string(store_.numel()) + " to " + std::to_string(store_.arena_elems()) +
           " elements";
  return out;
}

}  // namespace castor::parallel
