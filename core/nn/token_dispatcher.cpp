// LocalDispatcher over the permutation kernels of kernels/cpu/moe.h.
#include "core/nn/token_dispatcher.h"

#include "core/error.h"
#include "kernels/cpu/moe.h"

namespace castor::nn {

namespace kc = kernels::cpu;

void LocalDispatcher::plan(const int32_t* expert, int64_t N, int64_t k, int64_t capacity, const int64_t* before) {
  N_ = N;
  k_ = k;
  slot_.resize(size_t(N * k));
  token_of_slot_.resize(size_t(N * k));
  CASTOR_KERNEL_CHECK(kc::moe_plan(expert, N, experts_, k, capacity, offsets_.data(), slot_.data(),
                                   token_of_slot_.data(), &dropped_, before));
}

void LocalDispatcher::dispatch(const float* x, int64_t C, float* expert_in) {
  CASTOR_KERNEL_CHECK(kc::moe_permute(expert_in, x, token_of_slot_.data(), offsets_.back(), C));
}

void LocalDispatcher::combine(const float* expert_out, const float* gate, int64_t C, float* y) {
  CASTOR_KERNEL_CHECK(kc::moe_combine(y, expert_out, gate, slot_.data(), N_, k_, C));
}

void LocalDispatcher::combine_backward(const float* dy, const float* expert_out, const float* gate, int64_t C,
                                       float* d_expert_out, float* dgate) {
  CASTOR_KERNEL_CHECK(kc::moe_combine_backward(d_expert_out, dgate, dy, expert_out, gate, slot_.data(), N_, k_, C));
}

void LocalDispatcher::dispatch_backward(const float* d_expert_in, int64_t C, float* dx) {
  CASTOR_KERNEL_CHECK(kc::moe_permute_backward(dx, d_expert_in, slot_.data(), N_, k_, C));
}

}  // namespace castor::nn
