// MpiComm and MpiSession over the MPI C API. Every MPI error becomes a castor::Error
// naming the operation, the group and the rank.
#include "parallel/mpi_comm.h"

#include <cstdlib>

#include "core/error.h"

namespace castor::parallel {
namespace {

MPI_Op to_mpi(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kAvg: return MPI_SUM;  // divided afterwards
    case ReduceOp::kMax: return MPI_MAX;
  }
  return MPI_SUM;
}

void check_mpi(int rc, const char* what, const std::string& group, int rank) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  CASTOR_FAIL("MPI ", what, " failed on group ", group, " rank ", rank, ": ", std::string(msg, len));
}

template <typename T>
void all_reduce_impl(MPI_Comm comm, T* data, size_t count, ReduceOp op, MPI_Datatype type,
                     const std::string& name, int rank, int size) {
  CASTOR_CHECK(count <= size_t(INT32_MAX), "all_reduce of ", count, " elements exceeds MPI count limit");
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, int(count), type, to_mpi(op), comm), "all_reduce",
            name, rank);
  if (op == ReduceOp::kAvg)
    for (size_t i = 0; i < count; ++i) data[i] /= T(size);
}

}  // namespace

MpiComm::MpiComm(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

void MpiComm::all_reduce(float* data, size_t count, ReduceOp op) {
  all_reduce_impl(comm_, data, count, op, MPI_FLOAT, name_, rank_, size_);
}

void MpiComm::all_reduce(double* data, size_t count, ReduceOp op) {
  all_reduce_impl(comm_, data, count, op, MPI_DOUBLE, name_, rank_, size_);
}

void MpiComm::broadcast(void* data, size_t bytes, int root) {
  CASTOR_CHECK(bytes <= size_t(INT32_MAX), "broadcast of ", bytes, " bytes exceeds MPI count limit");
  check_mpi(MPI_Bcast(data, int(bytes), MPI_BYTE, root, comm_), "broadcast", name_, rank_);
}

void MpiComm::barrier() { check_mpi(MPI_Barrier(comm_), "barrier", name_, rank_); }

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    owns_ = true;
  }
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_ && !finalized) MPI_Finalize();
}

int MpiSession::world_rank() const {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int MpiSession::world_size() const {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

void MpiSession::abort_job(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

}  // namespace castor::parallel
