// TokenDispatcher: moves routed tokens to their experts and back, the phase structure
// route -> dispatch -> compute -> combine of an MoE layer. plan() turns the router's
// choices into a permutation (with capacity dropping); dispatch() gathers each local
// expert's rows contiguously; combine() weights expert outputs by their gates and sums
// them per token. LocalDispatcher keeps every expert in this process; expert parallelism
// supplies an all-to-all dispatcher with the same contract.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace castor::nn {

class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;
  // expert: (N, k) chosen experts per token; capacity < 0: dropless. before (k x E, may be
  // nullptr): these tokens are one block of a batch split over processes (kernels/cpu/moe.h
  // moe_plan), so that capacity applies to the whole batch.
  virtual void plan(const int32_t* expert, int64_t N, int64_t k, int64_t capacity, const int64_t* before) = 0;
  virtual int64_t local_experts() const = 0;
  // The global index of local expert 0 (this process holds [first, first + local_experts())).
  virtual int64_t first_local_expert() const { return 0; }
  // Rows of dispatch()'s output: local expert e owns [offsets[e], offsets[e + 1]).
  virtual const std::vector<int64_t>& expert_offsets() const = 0;
  virtual int64_t dropped() const = 0;  // assignments dropped by the capacity (this process)
  // x (N, C) -> expert_in (rows, C);  combine: expert_out (rows, C), gate (N, k) -> y (N, C), =.
  virtual void dispatch(const float* x, int64_t C, float* expert_in) = 0;
  virtual void combine(const float* expert_out, const float* gate, int64_t C, float* y) = 0;
  // Backward of combine: d_expert_out (=) and dgate (=); of dispatch: dx (=).
  virtual void combine_backward(const float* dy, const float* expert_out, const float* gate, int64_t C,
                                float* d_expert_out, float* dgate) = 0;
  virtual void dispatch_backward(const float* d_expert_in, int64_t C, float* dx) = 0;
};

class LocalDispatcher final : public TokenDispatcher {
 public:
  explicit LocalDispatcher(int64_t experts) : experts_(experts), offsets_(size_t(experts) + 1, 0) {}
  void plan(const int32_t* expert, int64_t N, int64_t k, int64_t capacity, const int64_t* before) override;
  int64_t local_experts() const override { return experts_; }
  const std::vector<int64_t>& expert_offsets() const override { return offsets_; }
  int64_t dropped() const override { return dropped_; }
  void dispatch(const float* x, int64_t C, float* expert_in) override;
  void combine(const float* expert_out, const float* gate, int64_t C, float* y) override;
  void combine_backward(const float* dy, const float* expert_out, const float* gate, int64_t C, float* d_expert_out,
                        float* dgate) override;
  void dispatch_backward(const float* d_expert_in, int64_t C, float* dx) override;

 private:
  int64_t experts_, N_ = 0, k_ = 0, dropped_ = 0;
  std::vector<int64_t> offsets_;
  std::vector<int32_t> slot_, token_of_slot_;  // kernels/cpu/moe.h moe_plan
};

}  // namespace castor::nn
