// TokenGroup: the processes that each hold one block of a micro-batch's token rows in an
// MoE layer (tensor-parallel ranks split the layer's tokens between them). The router's
// statistics are summed over the group, so that the balance and z losses, the capacity
// drops and their gradients are exactly those of the whole micro-batch. The single-device
// group has one member and moves nothing; parallel/tensor_parallel.h implements tp > 1.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace castor::nn {

class TokenGroup {
 public:
  virtual ~TokenGroup() = default;
  virtual int size() const { return 1; }
  virtual int rank() const { return 0; }  // blocks are in rank order
  virtual void sum(double*, size_t) {}
  virtual void sum(int64_t*, size_t) {}
  // all[r * n + i] = member r's mine[i].
  virtual void all_gather(const int64_t* mine, int64_t* all, size_t n) { std::copy(mine, mine + n, all); }
};

// The one-member group (stateless).
inline TokenGroup& single_group() {
  static TokenGroup group;
  return group;
}

}  // namespace castor::nn
