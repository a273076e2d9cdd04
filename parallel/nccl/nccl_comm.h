// NcclComm: Communicator over NCCL for device buffers, built only when CUDA and NCCL are
// found (target castor_nccl). The NCCL unique id travels from rank 0 of the group by an
// MPI broadcast. Operations are enqueued on the communicator's stream; a handle waits on
// a CUDA event recorded after them, polling until the timeout, and a timeout aborts the
// NCCL communicator (ncclCommAbort) before raising the error, so no peer stays blocked.
// With a producer stream (the backend's compute stream) each collective first waits, on the
// device, for the work queued there (an event), so gradients are complete when reduced.
// Host buffers (loss sums, norms) are staged through device memory; those calls return
// with the result in place. nccl_groups() builds one NcclComm per group of a ProcessGroups.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "parallel/mpi_comm.h"
#include "parallel/process_groups.h"

namespace castor::parallel {

class NcclComm final : public Communicator {
 public:
  // Collective over `group`: every rank of it builds its NcclComm at the same time.
  NcclComm(MpiComm& group, int device, double timeout_seconds = kDefaultCommTimeout,
           cudaStream_t producer = nullptr);
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
  void after_producer();                              // the stream waits for the producer's work
  // A device pointer for `bytes` of p: p itself, or (host memory) device scratch `slot`
  // holding a copy of p's bytes when `upload`.
  void* on_device(const void* p, size_t bytes, int slot, bool upload);
  // Host results: copies device scratch back into host p and waits for it.
  void to_host(void* p, const void* device, size_t bytes);

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::string name_;
  int rank_ = 0, size_ = 1;
  double timeout_;
  void* barrier_word_ = nullptr;  // one device float all-reduced by ibarrier
  bool aborted_ = false;
  cudaStream_t producer_ = nullptr;
  cudaEvent_t produced_ = nullptr;
  void* scratch_[2] = {nullptr, nullptr};  // staging of host send / receive buffers
  size_t scratch_bytes_[2] = {0, 0};
};

// Every group of `mpi` (world, tp, dp, ...) as an NcclComm on `device`, each waiting for the
// work of `producer` before its collectives. Collective over the world.
ProcessGroups nccl_groups(const ProcessGroups& mpi, int device, cudaStream_t producer,
                          double timeout_seconds = kDefaultCommTimeout);

}  // namespace castor::parallel
