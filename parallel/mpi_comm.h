// MpiComm: Communicator over an MPI communicator (blocking collectives for now; the
// asynchronous forms, timeouts and sub-groups come with data parallelism). Also the
// process-level MPI session (init/finalize, abort) used by launch/.
#pragma once
#include <mpi.h>

#include <string>

#include "core/communicator.h"

namespace castor::parallel {

class MpiComm final : public Communicator {
 public:
  MpiComm(MPI_Comm comm, std::string name);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  void all_reduce(float* data, size_t count, ReduceOp op) override;
  void all_reduce(double* data, size_t count, ReduceOp op) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;

 private:
  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
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
