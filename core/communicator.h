// Communicator: the collective-communication interface the model and trainer see.
// Implementations live in parallel/ (MpiComm now, NcclComm with the GPU work); core
// code only holds a reference. Buffers are fp32 or raw bytes; sizes in elements.
#pragma once
#include <cstddef>
#include <string>

namespace castor {

enum class ReduceOp { kSum, kAvg, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // e.g. "world", "dp"
  // In-place reduction over all ranks of the group.
  virtual void all_reduce(float* data, size_t count, ReduceOp op) = 0;
  virtual void all_reduce(double* data, size_t count, ReduceOp op) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
};

}  // namespace castor
