// BucketLayout and GradientBuckets (see grad_sync.h).
#include "parallel/grad_sync.h"

#include "core/error.h"

namespace castor::parallel {

BucketLayout::BucketLayout(size_t first, size_t last, size_t bucket_elems, int ranks_, size_t shard_base)
    : ranks(ranks_) {
  CASTOR_CHECK(bucket_elems > 0, "gradient buckets must hold at least one element");
  CASTOR_CHECK(ranks > 0 && first <= last && (last - first) % size_t(ranks) == 0, "gradient arena of ",
               last - first, " elements does not split over ", ranks, " ranks (pad it)");
  const size_t r = size_t(ranks);
  const size_t step = (bucket_elems + r - 1) / r * r;
  for (size_t end = last; end > first;) {
    const size_t begin = end - first > step ? end - step : first;
    buckets.push_back({begin, end, (end - begin) / r, shard_base + shard_elems});
    shard_elems += (end - begin) / r;
    end = begin;
  }
}

ArenaShard BucketLayout::shard(int rank) const {
  ArenaShard s;
  for (const Bucket& b : buckets) {
    const size_t begin = b.begin + size_t(rank) * b.slice;
    s.ranges.push_back({begin, begin + b.slice, b.shard_offset});
  }
  s.elems = shard_elems;
  return s;
}

GradientBuckets::GradientBuckets(Communicator& dp, float* grads, const BucketLayout& layout)
    : dp_(dp), grads_(grads), layout_(layout) {}

GradientBuckets::GradientBuckets(Communicator& dp, float* grads, const BucketLayout& layout, float* shard,
                                 std::function<void(size_t)> on_reduced)
    : dp_(dp), grads_(grads), layout_(layout), scatter_(true), shard_(shard), on_reduced_(std::move(on_reduced)) {
  CASTOR_CHECK(layout.ranks == dp.size(), "GradientBuckets: layout for ", layout.ranks, " ranks on a group of ",
               dp.size());
}

GradientBuckets::GradientBuckets(Communicator& dp, float* grads, size_t n, size_t bucket_elems)
    : dp_(dp), grads_(grads), owned_layout_(n, bucket_elems, 1), layout_(owned_layout_) {}

void GradientBuckets::start(size_t k) {
  const BucketLayout::Bucket& b = layout_.buckets[k];
  if (scatter_ && shard_)
    pending_.emplace_back(k, dp_.ireduce_scatter(grads_ + b.begin, shard_ + b.shard_offset, b.slice, CommType::f32,
                                                 ReduceOp::kSum));
  else if (scatter_)
    pending_.emplace_back(k, dp_.ireduce_scatter(nullptr, grads_ + b.begin, b.slice, CommType::f32, ReduceOp::kSum));
  else
    pending_.emplace_back(k, dp_.iall_reduce(grads_ + b.begin, b.end - b.begin, CommType::f32, ReduceOp::kSum));
}

// MPI moves non-blocking collectives forward only inside MPI calls: poll the ones in
// flight so they progress while backward computes; completed ones are handed over.
void GradientBuckets::poll() {
  size_t kept = 0;
  for (auto& [k, h] : pending_) {
    if (h->wait_for(0.0)) {
      if (on_reduced_) on_reduced_(k);
    } else {
      pending_[kept++] = {k, std::move(h)};
    }
  }
  pending_.resize(kept);
}

void GradientBuckets::ready_from(size_t offset) {
  while (next_ < layout_.buckets.size() && layout_.buckets[next_].begin >= offset) {
    start(next_++);
    ++started_early_;
  }
  poll();
}

void GradientBuckets::finish() {
  while (next_ < layout_.buckets.size()) start(next_++);
  for (auto& [k, h] : pending_) {
    h->wait();
    if (on_reduced_) on_reduced_(k);
  }
  pending_.clear();
}

}  // namespace castor::parallel
