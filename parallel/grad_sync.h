// Data-parallel gradient reduction that overlaps backward. BucketLayout cuts the gradient
// arena into buckets from its end (where backward finishes first); GradientBuckets starts
// each bucket's asynchronous reduction as soon as backward reports that every gradient
// from some arena offset on is final, while the rest of backward runs. A bucket is either
// all-reduced in place (replicated optimizer) or reduce-scattered into this rank's shard
// (ZeRO). Every rank starts the same buckets in the same order, as MPI requires.
#pragma once
#include <cstddef>
#include <functional>
#include <vector>

#include "core/communicator.h"
#include "core/optimizer.h"

namespace castor::parallel {

struct BucketLayout {
  struct Bucket {
    size_t begin = 0, end = 0;  // arena range
    size_t slice = 0;           // (end - begin) / ranks: each rank's part under ZeRO
    size_t shard_offset = 0;    // where this rank's slice sits in its shard arrays
  };
  // n: arena length, a multiple of `ranks`; buckets hold up to bucket_elems, rounded up to
  // a multiple of `ranks` so that every bucket splits evenly.
  BucketLayout(size_t n, size_t bucket_elems, int ranks) : BucketLayout(0, n, bucket_elems, ranks, 0) {}
  // Buckets over the arena range [begin, end) only, their shard offsets from shard_base
  // (a second range's shards follow the first's in the shard arrays).
  BucketLayout(size_t begin, size_t end, size_t bucket_elems, int ranks, size_t shard_base);
  std::vector<Bucket> buckets;  // buckets[0] ends the arena
  int ranks = 1;
  size_t shard_elems = 0;       // (end - begin) / ranks

  // Rank r's ZeRO shard: slice r of every bucket.
  ArenaShard shard(int rank) const;
};

class GradientBuckets {
 public:
  // All-reduce (sum) each bucket of grads in place.
  GradientBuckets(Communicator& dp, float* grads, const BucketLayout& layout);
  // Reduce-scatter (sum) each bucket: into this rank's shard array `shard`
  // (layout.shard_elems), or with shard == nullptr in place, leaving this rank's summed
  // slice where it lies in grads. on_reduced(k), when given, runs once bucket k is done.
  GradientBuckets(Communicator& dp, float* grads, const BucketLayout& layout, float* shard,
                  std::function<void(size_t)> on_reduced);
  // Convenience: all-reduce over buckets of up to bucket_elems.
  GradientBuckets(Communicator& dp, float* grads, size_t n, size_t bucket_elems);
  GradientBuckets(const GradientBuckets&) = delete;  // holds a reference to its own layout
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // Gradients [offset, n) are final: start every bucket lying inside that range.
  void ready_from(size_t offset);
  // Starts the remaining buckets and waits for every one (the communicator's timeout).
  void finish();
  size_t num_buckets() const { return layout_.buckets.size(); }
  size_t started_before_finish() const { return started_early_; }

 private:
  void start(size_t k);
  void poll();

  Communicator& dp_;
  float* grads_;
  BucketLayout owned_layout_{0, 1, 1};  // the convenience constructor's layout
  const BucketLayout& layout_;
  bool scatter_ = false;    // reduce-scatter (else all-reduce)
  float* shard_ = nullptr;  // reduce-scatter target; nullptr: in place
  std::function<void(size_t)> on_reduced_;
  std::vector<std::pair<size_t, CommHandle>> pending_;  // bucket, request
  size_t next_ = 0;                                      // the next bucket to start
  size_t started_early_ = 0;
};

}  // namespace castor::parallel
