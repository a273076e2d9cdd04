// GradientBuckets (see grad_sync.h).
#include "parallel/grad_sync.h"

#include "core/error.h"

namespace castor::parallel {

GradientBuckets::GradientBuckets(Communicator& dp, float* grads, size_t n, size_t bucket_elems)
    : dp_(dp), grads_(grads) {
  CASTOR_CHECK(bucket_elems > 0, "gradient buckets must hold at least one element");
  for (size_t end = n; end > 0;) {
    const size_t begin = end > bucket_elems ? end - bucket_elems : 0;
    begin_.push_back(begin);
    end_.push_back(end);
    end = begin;
  }
}

void GradientBuckets::ready_from(size_t offset) {
  while (next_ < begin_.size() && begin_[next_] >= offset) {
    pending_.push_back(dp_.iall_reduce(grads_ + begin_[next_], end_[next_] - begin_[next_], CommType::f32,
                                       ReduceOp::kSum));
    ++next_;
    ++started_early_;
  }
  // MPI moves non-blocking collectives forward only inside MPI calls: poll the ones in
  // flight so they progress while backward computes.
  for (auto& h : pending_) h->wait_for(0.0);
}

void GradientBuckets::finish() {
  while (next_ < begin_.size()) {
    pending_.push_back(dp_.iall_reduce(grads_ + begin_[next_], end_[next_] - begin_[next_], CommType::f32,
                                       ReduceOp::kSum));
    ++next_;
  }
  for (auto& h : pending_) h->wait();
  pending_.clear();
}

}  // namespace castor::parallel
