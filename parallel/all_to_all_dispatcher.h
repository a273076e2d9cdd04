// AllToAllDispatcher: the TokenDispatcher of expert parallelism. The E experts are spread
// over the ep group in contiguous blocks (rank r owns experts [r*E/ep, (r+1)*E/ep)). Each
// rank plans its own tokens exactly as the single-process LocalDispatcher does (the same
// capacity and drops), so its expert-sorted rows are also destination-sorted; the ranks
// exchange per-expert row counts, then the rows with all_to_all_v, and each rank's local
// experts see their rows grouped by expert (source ranks in order). Combine sends the
// outputs back with the reverse all-to-all and sums them per token locally, in the same
// order as LocalDispatcher. No communication happens in plan's pre or combine's post steps.
#pragma once
#include <cstdint>
#include <vector>

#include "core/communicator.h"
#include "core/nn/token_dispatcher.h"

namespace castor::parallel {

class AllToAllDispatcher final : public nn::TokenDispatcher {
 public:
  // experts: the total E; ep.size() must divide it.
  AllToAllDispatcher(Communicator& ep, int64_t experts);
  void plan(const int32_t* expert, int64_t N, int64_t k, int64_t capacity, const int64_t* before) override;
  int64_t local_experts() const override { return local_; }
  int64_t first_local_expert() const override { return int64_t(comm_.rank()) * local_; }
  const std::vector<int64_t>& expert_offsets() const override { return offsets_; }
  int64_t dropped() const override { return local_plan_.dropped(); }
  void dispatch(const float* x, int64_t C, float* expert_in) override;
  void combine(const float* expert_out, const float* gate, int64_t C, float* y) override;
  void combine_backward(const float* dy, const float* expert_out, const float* gate, int64_t C, float* d_expert_out,
                        float* dgate) override;
  void dispatch_backward(const float* d_expert_in, int64_t C, float* dx) override;

 private:
  // Rows between this rank's local-plan order (by destination) and the experts' order.
  void exchange(const float* send, float* recv, int64_t C, bool forward);
  // Received rows are grouped by source rank, then local expert; experts want them grouped
  // by local expert, then source. to_experts converts one way, and back the other.
  void regroup(const float* in, float* out, int64_t C, bool to_experts) const;

  Communicator& comm_;
  int64_t experts_, local_;
  nn::LocalDispatcher local_plan_;       // this rank's tokens, all E experts
  std::vector<int64_t> offsets_;         // local experts' rows in the experts' order
  std::vector<int64_t> sent_by_expert_;  // (E): rows this rank sends to each expert
  std::vector<int64_t> recv_counts_;     // (ep x local): rows from source s for local expert e
  std::vector<size_t> send_floats_, recv_floats_;
  std::vector<float> send_, recv_, back_, dback_;
  int64_t N_ = 0, k_ = 0;
};

}  // namespace castor::parallel
