// AllToAllDispatcher: a LocalDispatcher plans and permutes this rank's tokens; all_to_all_v
// moves the rows to the experts' owners and back. Buffers hold at least one element: the
// kernels take no null rows even when every assignment was dropped.
#include "parallel/all_to_all_dispatcher.h"

#include <algorithm>

#include "core/error.h"

namespace castor::parallel {

AllToAllDispatcher::AllToAllDispatcher(Communicator& ep, int64_t experts)
    : comm_(ep), experts_(experts), local_(experts / ep.size()), local_plan_(experts) {
  CASTOR_CHECK(experts > 0 && experts % ep.size() == 0, "expert parallelism: ep=", ep.size(),
               " must divide the number of experts (", experts, ")");
  offsets_.assign(size_t(local_) + 1, 0);
  sent_by_expert_.assign(size_t(experts_), 0);
  recv_counts_.assign(size_t(ep.size() * local_), 0);
}

void AllToAllDispatcher::plan(const int32_t* expert, int64_t N, int64_t k, int64_t capacity, const int64_t* before) {
  N_ = N;
  k_ = k;
  local_plan_.plan(expert, N, k, capacity, before);  // the single-process plan of this rank's tokens
  const std::vector<int64_t>& off = local_plan_.expert_offsets();
  for (int64_t e = 0; e < experts_; ++e) sent_by_expert_[size_t(e)] = off[size_t(e) + 1] - off[size_t(e)];
  // Counts: local_ per destination rank out, local_ per source rank in.
  const int ranks = comm_.size();
  const std::vector<size_t> per_rank(static_cast<size_t>(ranks), static_cast<size_t>(local_));
  comm_.all_to_all_v(sent_by_expert_.data(), per_rank, recv_counts_.data(), per_rank);
  offsets_[0] = 0;
  for (int64_t e = 0; e < local_; ++e) {
    int64_t rows = 0;
    for (int s = 0; s < ranks; ++s) rows += recv_counts_[size_t(s * local_ + e)];
    offsets_[size_t(e) + 1] = offsets_[size_t(e)] + rows;
  }
}

void AllToAllDispatcher::exchange(const float* send, float* recv, int64_t C, bool forward) {
  const int ranks = comm_.size();
  send_floats_.assign(size_t(ranks), 0);
  recv_floats_.assign(size_t(ranks), 0);
  for (int r = 0; r < ranks; ++r) {
    for (int64_t e = 0; e < local_; ++e) {
      send_floats_[size_t(r)] += size_t(sent_by_expert_[size_t(r * local_ + e)] * C);  // to expert owner r
      recv_floats_[size_t(r)] += size_t(recv_counts_[size_t(r * local_ + e)] * C);     // from source r
    }
  }
  if (forward) {
    comm_.all_to_all_v(send, send_floats_, recv, recv_floats_);
  } else {
    comm_.all_to_all_v(send, recv_floats_, recv, send_floats_);
  }
}

void AllToAllDispatcher::regroup(const float* in, float* out, int64_t C, bool to_experts) const {
  const int ranks = comm_.size();
  int64_t src_row = 0;  // position in the (source, expert) grouping
  for (int s = 0; s < ranks; ++s) {
    for (int64_t e = 0; e < local_; ++e) {
      const int64_t rows = recv_counts_[size_t(s * local_ + e)];
      int64_t dst_row = offsets_[size_t(e)];  // position in the (expert, source) grouping
      for (int s2 = 0; s2 < s; ++s2) dst_row += recv_counts_[size_t(s2 * local_ + e)];
      const float* from = to_experts ? in + src_row * C : in + dst_row * C;
      float* to = to_experts ? out + dst_row * C : out + src_row * C;
      std::copy(from, from + rows * C, to);
      src_row += rows;
    }
  }
}

void AllToAllDispatcher::dispatch(const float* x, int64_t C, float* expert_in) {
  const int64_t M = local_plan_.expert_offsets().back(), R = offsets_.back();
  send_.resize(size_t(std::max<int64_t>(M * C, 1)));
  recv_.resize(size_t(std::max<int64_t>(R * C, 1)));
  local_plan_.dispatch(x, C, send_.data());
  exchange(send_.data(), recv_.data(), C, true);
  regroup(recv_.data(), expert_in, C, true);
}

void AllToAllDispatcher::combine(const float* expert_out, const float* gate, int64_t C, float* y) {
  const int64_t M = local_plan_.expert_offsets().back(), R = offsets_.back();
  recv_.resize(size_t(std::max<int64_t>(R * C, 1)));
  back_.resize(size_t(std::max<int64_t>(M * C, 1)));
  regroup(expert_out, recv_.data(), C, false);
  exchange(recv_.data(), back_.data(), C, false);
  local_plan_.combine(back_.data(), gate, C, y);  // kept for combine_backward: the outputs per token
}

void AllToAllDispatcher::combine_backward(const float* dy, const float*, const float* gate, int64_t C,
                                          float* d_expert_out, float* dgate) {
  const int64_t M = local_plan_.expert_offsets().back(), R = offsets_.back();
  dback_.resize(size_t(std::max<int64_t>(M * C, 1)));
  recv_.resize(size_t(std::max<int64_t>(R * C, 1)));
  local_plan_.combine_backward(dy, back_.data(), gate, C, dback_.data(), dgate);
  exchange(dback_.data(), recv_.data(), C, true);
  regroup(recv_.data(), d_expert_out, C, true);
}

void AllToAllDispatcher::dispatch_backward(const float* d_expert_in, int64_t C, float* dx) {
  const int64_t M = local_plan_.expert_offsets().back(), R = offsets_.back();
  recv_.resize(size_t(std::max<int64_t>(R * C, 1)));
  send_.resize(size_t(std::max<int64_t>(M * C, 1)));
  regroup(d_expert_in, recv_.data(), C, false);
  exchange(recv_.data(), send_.data(), C, false);
  local_plan_.dispatch_backward(send_.data(), C, dx);
}

}  // namespace castor::parallel
