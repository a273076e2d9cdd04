// Communicator: the collective-communication interface the model and trainer see.
// Implementations live in parallel/ (MpiComm; NcclComm with the GPU work); core code only
// holds a reference. Every operation has an asynchronous form returning a CommHandle and
// a blocking form (start + wait). Waits time out: a peer that never arrives becomes an
// error naming the operation, the group, the rank and the byte count, never a hang.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>

namespace castor {

enum class ReduceOp { kSum, kAvg, kMax };

// Element types the collectives move: tensors (f32), statistics (f64, i64), ids (i32),
// raw bytes (u8).
enum class CommType : uint8_t { f32, f64, i32, i64, u8 };

constexpr size_t comm_type_size(CommType t) {
  switch (t) {
    case CommType::f32: return 4;
    case CommType::f64: return 8;
    case CommType::i32: return 4;
    case CommType::i64: return 8;
    case CommType::u8: return 1;
  }
  return 0;
}

template <typename T>
constexpr CommType comm_type_of() {
  if constexpr (std::is_same_v<T, float>) return CommType::f32;
  else if constexpr (std::is_same_v<T, double>) return CommType::f64;
  else if constexpr (std::is_same_v<T, int32_t>) return CommType::i32;
  else if constexpr (std::is_same_v<T, int64_t>) return CommType::i64;
  else if constexpr (std::is_same_v<T, uint8_t>) return CommType::u8;
  else static_assert(sizeof(T) == 0, "unsupported element type for a collective");
}

// What a communicator has done since its last reset_stats(), per kind of operation: calls,
// payload bytes and seconds this rank spent waiting for completion. Payload: all_reduce and
// broadcast the buffer; reduce_scatter its whole input (size() blocks); all_gather its whole
// output (size() blocks); all_to_all_v what this rank sends to the other ranks; send/recv
// the message.
enum class CommOp : uint8_t { all_reduce, reduce_scatter, all_gather, all_to_all, broadcast, send, recv, barrier };
inline constexpr int kCommOps = 8;
struct CommStats {
  uint64_t calls[kCommOps] = {};
  uint64_t bytes[kCommOps] = {};
  double wait_s[kCommOps] = {};
  uint64_t total_bytes() const {
    uint64_t n = 0;
    for (uint64_t b : bytes) n += b;
    return n;
  }
};

// A started operation. Its buffers must stay alive and untouched until it completes.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  // Waits up to the communicator's timeout; throws castor::Error on timeout (the
  // operation stays pending) or failure.
  virtual void wait() = 0;
  // Waits up to `seconds`; false if still pending.
  virtual bool wait_for(double seconds) = 0;
};
using CommHandle = std::unique_ptr<CommRequest>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // e.g. "world", "dp"
  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

  // In place over all ranks; kAvg divides the sum by size() (floating types only).
  virtual CommHandle iall_reduce(void* data, size_t count, CommType t, ReduceOp op) = 0;
  // send holds size() blocks of recv_count; rank r receives the reduction of block r.
  // send == nullptr: in place, recv holds the size() input blocks and this rank's result is
  // left in its own block, recv + rank() * recv_count (the other blocks are clobbered).
  virtual CommHandle ireduce_scatter(const void* send, void* recv, size_t recv_count, CommType t, ReduceOp op) = 0;
  // recv receives size() blocks of send_count, block r from rank r. send == nullptr: in
  // place, this rank's block already sits at recv + rank() * send_count.
  virtual CommHandle iall_gather(const void* send, void* recv, size_t send_count, CommType t) = 0;
  // send_counts[r] elements go to rank r (blocks contiguous in send, in rank order);
  // recv_counts[r] elements arrive from rank r (contiguous in recv, in rank order).
  virtual CommHandle iall_to_all_v(const void* send, std::span<const size_t> send_counts, void* recv,
                                   std::span<const size_t> recv_counts, CommType t) = 0;
  virtual CommHandle ibroadcast(void* data, size_t count, CommType t, int root) = 0;
  virtual CommHandle isend(const void* data, size_t count, CommType t, int peer, int tag) = 0;
  virtual CommHandle irecv(void* data, size_t count, CommType t, int peer, int tag) = 0;
  virtual CommHandle ibarrier() = 0;

  // Blocking forms.
  template <typename T>
  void all_reduce(T* data, size_t count, ReduceOp op) {
    iall_reduce(data, count, comm_type_of<T>(), op)->wait();
  }
  template <typename T>
  void reduce_scatter(const T* send, T* recv, size_t recv_count, ReduceOp op) {
    ireduce_scatter(send, recv, recv_count, comm_type_of<T>(), op)->wait();
  }
  template <typename T>
  void all_gather(const T* send, T* recv, size_t send_count) {
    iall_gather(send, recv, send_count, comm_type_of<T>())->wait();
  }
  template <typename T>
  void all_to_all_v(const T* send, std::span<const size_t> send_counts, T* recv, std::span<const size_t> recv_counts) {
    iall_to_all_v(send, send_counts, recv, recv_counts, comm_type_of<T>())->wait();
  }
  template <typename T>
  void broadcast(T* data, size_t count, int root) {
    ibroadcast(data, count, comm_type_of<T>(), root)->wait();
  }
  template <typename T>
  void send(const T* data, size_t count, int peer, int tag = 0) {
    isend(data, count, comm_type_of<T>(), peer, tag)->wait();
  }
  template <typename T>
  void recv(T* data, size_t count, int peer, int tag = 0) {
    irecv(data, count, comm_type_of<T>(), peer, tag)->wait();
  }
  void barrier() { ibarrier()->wait(); }

 protected:
  CommStats stats_;
};

inline const char* comm_op_name(CommOp op) {
  static const char* names[kCommOps] = {"all_reduce", "reduce_scatter", "all_gather", "all_to_all",
                                        "broadcast",  "send",           "recv",       "barrier"};
  return names[int(op)];
}

}  // namespace castor
