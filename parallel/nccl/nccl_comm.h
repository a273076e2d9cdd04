// NcclComm: Communicator over NCCL for device buffers, built only when CUDA and NCCL are
// found (target castor_nccl). The NCCL unique id travels from rank 0 of the group by an
// MPI broadcast. Operations are enqueued on the communicator's stream; a handle waits on
// a CUDA event recorded after them, polling until the timeout, and a timeout aborts the
// NCCL communicator (ncclCommAbort) before raising the error, so no peer stays blocked.
// Run-time checks come with the GPU issue; here it compiles against the toolkit.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "parallel/mpi_comm.h"

namespace castor::parallel {

class NcclComm final : public Communicator {
 public:
  // Collective over `group`: every rank of it builds its NcclComm at the same time.
  NcclComm(MpiComm& group, int device, double timeout_seconds = kDefaultCommTimeout);
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  double timeout() const { return timeout_; }
  cudaStream_t stream() const { return stream_; }

  CommHandle iall_reduce(void* data, size_t count, CommType t, ReduceOp op) override;
  CommHandle ireduce_scatter(const void* send, void* recv, size_t recv_count, CommType t, ReduceOp op) override;
  CommHandle iall_gather(const void* send, void* recv, size_t send_count, CommType t) override;
  CommHandle iall_to_all_v(const void* send, std::span<const size_t> send_counts, void* recv,
                           std::span<const size_t> recv_counts, CommType t) override;
  CommHandle ibroadcast(void* data, size_t count, CommType t, int root) override;
  CommHandle isend(const void* data, size_t count, CommType t, int peer, int tag) override;
  CommHandle irecv(void* data, size_t count, CommType t, int peer, int tag) override;
  CommHandle ibarrier() override;

 private:
  class Request;
  CommHandle enqueued(const char* op, size_t bytes);  // records the event that ends op

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::string name_;
  int rank_ = 0, size_ = 1;
  double timeout_;
  void* barrier_word_ = nullptr;  // one device float all-reduced by ibarrier
  bool aborted_ = false;
};

}  // namespace castor::parallel
