// MpiComm: Communicator over an MPI communicator, every operation on MPI's non-blocking
// calls (blocking forms wait on them). Waits poll MPI_Test until the timeout; a timeout
// is a castor::Error naming the operation, the group, the rank and the byte count, which
// launch/ turns into an abort of the whole job. Also the process-level MPI session.
#pragma once
#include <mpi.h>

#include <functional>
#include <memory>
#include <string>

#include "core/communicator.h"

namespace castor::parallel {

inline constexpr double kDefaultCommTimeout = 300.0;  // seconds

class MpiComm final : public Communicator {
 public:
  // Wraps comm (not owned). Errors are returned, not fatal, so they become castor::Error.
  MpiComm(MPI_Comm comm, std::string name, double timeout_seconds = kDefaultCommTimeout);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  double timeout() const { return timeout_; }
  MPI_Comm mpi() const { return comm_; }

  // A sub-group: ranks with the same color, ordered by key (MPI_Comm_split); owned.
  std::unique_ptr<MpiComm> split(int color, int key, std::string name) const;

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
  CommHandle start(CommOp kind, size_t bytes, const std::function<int(MPI_Request*)>& post);

  MPI_Comm comm_;
  bool owned_ = false;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  double timeout_;
};

// RAII MPI session: initialises MPI (thread level FUNNELED) unless already initialised,
// finalises on destruction. Works with and without mpirun (singleton init).
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int world_rank() const;
  int world_size() const;
  // Ends every rank of the job; used after an error has been printed.
  [[noreturn]] static void abort_job(int code);

 private:
  bool owns_ = false;
};

}  // namespace castor::parallel
