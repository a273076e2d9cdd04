// GradientBuckets: data-parallel gradient reduction that overlaps backward. The gradient
// arena is cut into buckets from its end (where backward finishes first); as backward
// reports that every gradient from some arena offset on is final, the buckets inside that
// range start their asynchronous all-reduce (sum) at once, while the rest of backward
// runs. finish() starts what is left and waits for all. Every rank starts the same
// buckets in the same order, as MPI requires.
#pragma once
#include <cstddef>
#include <vector>

#include "core/communicator.h"

namespace castor::parallel {

class GradientBuckets {
 public:
  GradientBuckets(Communicator& dp, float* grads, size_t n, size_t bucket_elems);
  // Gradients [offset, n) are final: start every bucket lying inside that range.
  void ready_from(size_t offset);
  // Starts the remaining buckets and waits for every one (the communicator's timeout).
  void finish();
  size_t num_buckets() const { return begin_.size(); }
  size_t started_before_finish() const { return started_early_; }

 private:
  Communicator& dp_;
  float* grads_;
  std::vector<size_t> begin_, end_;  // bucket k covers [begin_[k], end_[k]); k = 0 ends the arena
  std::vector<CommHandle> pending_;
  size_t next_ = 0;                  // the next bucket to start
  size_t started_early_ = 0;
};

}  // namespace castor::parallel
