// MpiComm and MpiSession over the MPI C API. Every MPI error becomes a castor::Error
// naming the operation, the group and the rank.
#include "parallel/mpi_comm.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "core/error.h"

namespace castor::parallel {
namespace {

using Clock = std::chrono::steady_clock;

MPI_Datatype to_mpi(CommType t) {
  switch (t) {
    case CommType::f32: return MPI_FLOAT;
    case CommType::f64: return MPI_DOUBLE;
    case CommType::i32: return MPI_INT32_T;
    case CommType::i64: return MPI_INT64_T;
    case CommType::u8: return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

MPI_Op to_mpi(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }  // kAvg: sum, then divide

std::string mpi_error(int rc) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  return std::string(msg, size_t(len));
}

// MPI counts are int: refuse larger ones naming the operation.
int mpi_count(size_t count, const char* op, const std::string& group) {
  CASTOR_CHECK(count <= size_t(INT32_MAX), "MPI ", op, " on group ", group, ": ", count,
               " elements exceed MPI's int count limit");
  return int(count);
}

// Divides n elements of type t by `by` in place (kAvg).
void divide(void* data, size_t n, CommType t, int by) {
  if (t == CommType::f32) {
    float* p = static_cast<float*>(data);
    for (size_t i = 0; i < n; ++i) p[i] /= float(by);
  } else {
    double* p = static_cast<double*>(data);
    for (size_t i = 0; i < n; ++i) p[i] /= double(by);
  }
}

}  // namespace

// One MPI request plus what its completion needs: the averaging step, the count arrays
// all_to_all_v must keep alive, and the words of a timeout message.
class MpiComm::Request final : public CommRequest {
 public:
  Request(MpiComm& comm, CommOp kind, size_t bytes)
      : comm_(comm), kind_(kind), op_(comm_op_name(kind)), bytes_(bytes) {
    comm.stats_.calls[int(kind)] += 1;
    comm.stats_.bytes[int(kind)] += bytes;
  }
  ~Request() override {
    // A request dropped while pending (an error is unwinding and the job is about to be
    // aborted) is left to MPI: freeing a pending collective is erroneous.
  }

  void wait() override {
    if (wait_for(comm_.timeout())) return;
    CASTOR_FAIL("MPI ", op_, " timed out after ", comm_.timeout(), " s on group ", comm_.name(), " (rank ",
                comm_.rank(), " of ", comm_.size(), ", ", bytes_,
                " bytes): a peer never arrived (dead, hung, or called another collective)");
  }

  bool wait_for(double seconds) override {
    if (done_) return true;
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    // MPI progresses only inside MPI_Test: spin on it for a short while (most waits end
    // there; a sleep costs ~80 us on a loaded VM), then poll with a growing pause so that
    // oversubscribed ranks (tests: 4 ranks on 2 cores) do not starve each other.
    const auto spin_until = std::min<Clock::time_point>(
        deadline, start + std::chrono::duration_cast<Clock::duration>(std::chrono::microseconds(200)));
    auto pause = std::chrono::microseconds(10);
    for (;;) {
      int flag = 0;
      const int rc = MPI_Test(&req_, &flag, MPI_STATUS_IGNORE);
      CASTOR_CHECK(rc == MPI_SUCCESS, "MPI ", op_, " failed on group ", comm_.name(), " rank ", comm_.rank(), ": ",
                   mpi_error(rc));
      if (flag) break;
      const auto now = Clock::now();
      if (now >= deadline) {
        comm_.stats_.wait_s[int(kind_)] += std::chrono::duration<double>(now - start).count();
        return false;
      }
      if (now < spin_until) continue;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(500));
    }
    done_ = true;
    comm_.stats_.wait_s[int(kind_)] += std::chrono::duration<double>(Clock::now() - start).count();
    if (on_done) on_done();
    return true;
  }

  MPI_Request req_ = MPI_REQUEST_NULL;
  std::function<void()> on_done;
  std::vector<int> counts;  // all_to_all_v: send counts, send displs, recv counts, recv displs

 private:
  MpiComm& comm_;
  CommOp kind_;
  const char* op_;
  size_t bytes_;
  bool done_ = false;
};

MpiComm::MpiComm(MPI_Comm comm, std::string name, double timeout_seconds)
    : comm_(comm), name_(std::move(name)), timeout_(timeout_seconds) {
  CASTOR_CHECK(timeout_ > 0, "communicator timeout must be positive (got ", timeout_, " s)");
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && !finalized) MPI_Comm_free(&comm_);
}

std::unique_ptr<MpiComm> MpiComm::split(int color, int key, std::string name) const {
  MPI_Comm sub = MPI_COMM_NULL;
  const int rc = MPI_Comm_split(comm_, color, key, &sub);
  CASTOR_CHECK(rc == MPI_SUCCESS, "MPI split of group ", name_, " into ", name, " failed on rank ", rank_, ": ",
               mpi_error(rc));
  auto out = std::make_unique<MpiComm>(sub, std::move(name), timeout_);
  out->owned_ = true;
  return out;
}

CommHandle MpiComm::start(CommOp kind, size_t bytes, const std::function<int(MPI_Request*)>& post) {
  const char* op = comm_op_name(kind);
  auto r = std::make_unique<Request>(*this, kind, bytes);
  const int rc = post(&r->req_);
  CASTOR_CHECK(rc == MPI_SUCCESS, "MPI ", op, " failed to start on group ", name_, " rank ", rank_, ": ",
               mpi_error(rc));
  return r;
}

CommHandle MpiComm::iall_reduce(void* data, size_t count, CommType t, ReduceOp op) {
  CASTOR_CHECK(op != ReduceOp::kAvg || t == CommType::f32 || t == CommType::f64,
               "all_reduce: average needs a floating type");
  const int n = mpi_count(count, "all_reduce", name_);
  auto r = start(CommOp::all_reduce, count * comm_type_size(t), [&](MPI_Request* req) {
    return MPI_Iallreduce(MPI_IN_PLACE, data, n, to_mpi(t), to_mpi(op), comm_, req);
  });
  if (op == ReduceOp::kAvg) static_cast<Request&>(*r).on_done = [=, this] { divide(data, count, t, size_); };
  return r;
}

CommHandle MpiComm::ireduce_scatter(const void* send, void* recv, size_t recv_count, CommType t, ReduceOp op) {
  CASTOR_CHECK(op != ReduceOp::kAvg || t == CommType::f32 || t == CommType::f64,
               "reduce_scatter: average needs a floating type");
  const int n = mpi_count(recv_count, "reduce_scatter", name_);
  auto r = start(CommOp::reduce_scatter, recv_count * size_t(size_) * comm_type_size(t), [&](MPI_Request* req) {
    return MPI_Ireduce_scatter_block(send ? send : MPI_IN_PLACE, recv, n, to_mpi(t), to_mpi(op), comm_, req);
  });
  // MPI leaves an in-place result at the start of recv; castor's contract is the rank's block.
  const size_t bytes = recv_count * comm_type_size(t);
  void* result = send ? recv : static_cast<char*>(recv) + size_t(rank_) * bytes;
  static_cast<Request&>(*r).on_done = [=, this] {
    if (result != recv) std::memmove(result, recv, bytes);
    if (op == ReduceOp::kAvg) divide(result, recv_count, t, size_);
  };
  return r;
}

CommHandle MpiComm::iall_gather(const void* send, void* recv, size_t send_count, CommType t) {
  const int n = mpi_count(send_count, "all_gather", name_);
  return start(CommOp::all_gather, send_count * size_t(size_) * comm_type_size(t), [&](MPI_Request* req) {
    return MPI_Iallgather(send ? send : MPI_IN_PLACE, n, to_mpi(t), recv, n, to_mpi(t), comm_, req);
  });
}

CommHandle MpiComm::iall_to_all_v(const void* send, std::span<const size_t> send_counts, void* recv,
                                  std::span<const size_t> recv_counts, CommType t) {
  CASTOR_CHECK(send_counts.size() == size_t(size_) && recv_counts.size() == size_t(size_), "all_to_all_v on group ",
               name_, ": ", send_counts.size(), " send and ", recv_counts.size(), " receive counts for ", size_,
               " ranks");
  size_t remote = 0;  // elements this rank sends to the others
  for (int i = 0; i < size_; ++i)
    if (i != rank_) remote += send_counts[size_t(i)];
  auto r = std::make_unique<Request>(*this, CommOp::all_to_all, remote * comm_type_size(t));
  // MPI reads the count arrays until completion: the request owns them.
  std::vector<int>& c = r->counts;
  c.resize(4 * size_t(size_));
  int* sc = c.data();
  int* sd = sc + size_;
  int* rc = sd + size_;
  int* rd = rc + size_;
  size_t s_total = 0, r_total = 0;
  for (int i = 0; i < size_; ++i) {
    sc[i] = mpi_count(send_counts[size_t(i)], "all_to_all_v", name_);
    rc[i] = mpi_count(recv_counts[size_t(i)], "all_to_all_v", name_);
    sd[i] = mpi_count(s_total, "all_to_all_v", name_);
    rd[i] = mpi_count(r_total, "all_to_all_v", name_);
    s_total += send_counts[size_t(i)];
    r_total += recv_counts[size_t(i)];
  }
  const int rc_start = MPI_Ialltoallv(send, sc, sd, to_mpi(t), recv, rc, rd, to_mpi(t), comm_, &r->req_);
  CASTOR_CHECK(rc_start == MPI_SUCCESS, "MPI all_to_all_v failed to start on group ", name_, " rank ", rank_, ": ",
               mpi_error(rc_start));
  return r;
}

CommHandle MpiComm::ibroadcast(void* data, size_t count, CommType t, int root) {
  CASTOR_CHECK(root >= 0 && root < size_, "broadcast on group ", name_, ": root ", root, " outside [0, ", size_, ")");
  const int n = mpi_count(count, "broadcast", name_);
  return start(CommOp::broadcast, count * comm_type_size(t),
               [&](MPI_Request* req) { return MPI_Ibcast(data, n, to_mpi(t), root, comm_, req); });
}

CommHandle MpiComm::isend(const void* data, size_t count, CommType t, int peer, int tag) {
  CASTOR_CHECK(peer >= 0 && peer < size_, "send on group ", name_, ": peer ", peer, " outside [0, ", size_, ")");
  const int n = mpi_count(count, "send", name_);
  return start(CommOp::send, count * comm_type_size(t),
               [&](MPI_Request* req) { return MPI_Isend(data, n, to_mpi(t), peer, tag, comm_, req); });
}

CommHandle MpiComm::irecv(void* data, size_t count, CommType t, int peer, int tag) {
  CASTOR_CHECK(peer >= 0 && peer < size_, "recv on group ", name_, ": peer ", peer, " outside [0, ", size_, ")");
  const int n = mpi_count(count, "recv", name_);
  return start(CommOp::recv, count * comm_type_size(t),
               [&](MPI_Request* req) { return MPI_Irecv(data, n, to_mpi(t), peer, tag, comm_, req); });
}

CommHandle MpiComm::ibarrier() {
  return start(CommOp::barrier, 0, [&](MPI_Request* req) { return MPI_Ibarrier(comm_, req); });
}

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Open MPI's non-blocking all-reduce allocates a message-sized temporary per call;
    // from mmap, every gradient bucket pays for fresh page faults (bench/NOTES.md,
    // data parallelism). Serve up to 32 MB from the heap and keep freed heap memory.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    // Its default schedule for large non-blocking all-reduces took 2x the ring's time
    // there; a value set by the user (environment or mpirun --mca) wins.
    setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0);
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
