// NcclComm (see nccl_comm.h): NCCL calls on one stream, completion through CUDA events,
// timeouts that abort the NCCL communicator.
#include "parallel/nccl/nccl_comm.h"

#include <chrono>
#include <thread>
#include <vector>

#include "core/error.h"

namespace castor::parallel {
namespace {

using Clock = std::chrono::steady_clock;

#define CASTOR_NCCL(call, ...)                                                                      \
  do {                                                                                              \
    const ncclResult_t castor_nccl_rc_ = (call);                                                    \
    if (castor_nccl_rc_ != ncclSuccess)                                                             \
      CASTOR_FAIL("NCCL ", #call, " failed: ", ncclGetErrorString(castor_nccl_rc_), " ", __VA_ARGS__); \
  } while (0)

#define CASTOR_CUDA(call, ...)                                                                     \
  do {                                                                                             \
    const cudaError_t castor_cuda_rc_ = (call);                                                    \
    if (castor_cuda_rc_ != cudaSuccess)                                                            \
      CASTOR_FAIL("CUDA ", #call, " failed: ", cudaGetErrorString(castor_cuda_rc_), " ", __VA_ARGS__); \
  } while (0)

ncclDataType_t to_nccl(CommType t) {
  switch (t) {
    case CommType::f32: return ncclFloat32;
    case CommType::f64: return ncclFloat64;
    case CommType::i32: return ncclInt32;
    case CommType::i64: return ncclInt64;
    case CommType::u8: return ncclUint8;
  }
  return ncclUint8;
}

ncclRedOp_t to_nccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
  }
  return ncclSum;
}

}  // namespace

class NcclComm::Request final : public CommRequest {
 public:
  Request(NcclComm& comm, const char* op, size_t bytes) : comm_(comm), op_(op), bytes_(bytes) {
    CASTOR_CUDA(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), op);
    CASTOR_CUDA(cudaEventRecord(done_, comm.stream_), op);
  }
  ~Request() override { cudaEventDestroy(done_); }

  void wait() override {
    if (wait_for(comm_.timeout_)) return;
    // Abort so that peers blocked in this collective fail too instead of hanging.
    if (!comm_.aborted_) ncclCommAbort(comm_.comm_);
    comm_.aborted_ = true;
    CASTOR_FAIL("NCCL ", op_, " timed out after ", comm_.timeout_, " s on group ", comm_.name_, " (rank ",
                comm_.rank_, " of ", comm_.size_, ", ", bytes_, " bytes); the NCCL communicator was aborted");
  }

  bool wait_for(double seconds) override {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    auto pause = std::chrono::microseconds(1);
    for (;;) {
      const cudaError_t rc = cudaEventQuery(done_);
      if (rc == cudaSuccess) return true;
      CASTOR_CHECK(rc == cudaErrorNotReady, "NCCL ", op_, " on group ", comm_.name_, " rank ", comm_.rank_, ": ",
                   cudaGetErrorString(rc));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_.comm_, &async);
      CASTOR_CHECK(async == ncclSuccess, "NCCL ", op_, " on group ", comm_.name_, " rank ", comm_.rank_, ": ",
                   ncclGetErrorString(async));
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

 private:
  NcclComm& comm_;
  const char* op_;
  size_t bytes_;
  cudaEvent_t done_ = nullptr;
};

NcclComm::NcclComm(MpiComm& group, int device, double timeout_seconds, cudaStream_t producer)
    : name_(group.name()), rank_(group.rank()), size_(group.size()), timeout_(timeout_seconds), producer_(producer) {
  CASTOR_CHECK(timeout_ > 0, "communicator timeout must be positive (got ", timeout_, " s)");
  CASTOR_CUDA(cudaSetDevice(device), "device ", device);
  ncclUniqueId id;
  if (rank_ == 0) CASTOR_NCCL(ncclGetUniqueId(&id), "on group ", name_);
  group.broadcast(reinterpret_cast<uint8_t*>(&id), sizeof(id), 0);
  CASTOR_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "group ", name_);
  CASTOR_NCCL(ncclCommInitRank(&comm_, size_, id, rank_), "group ", name_, " rank ", rank_);
  CASTOR_CUDA(cudaMalloc(&barrier_word_, sizeof(float)), "group ", name_);
  if (producer_) CASTOR_CUDA(cudaEventCreateWithFlags(&produced_, cudaEventDisableTiming), "group ", name_);
}

NcclComm::~NcclComm() {
  for (void* p : scratch_)
    if (p != nullptr) cudaFree(p);
  if (produced_ != nullptr) cudaEventDestroy(produced_);
  if (barrier_word_ != nullptr) cudaFree(barrier_word_);
  if (comm_ != nullptr && !aborted_) ncclCommDestroy(comm_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

CommHandle NcclComm::enqueued(const char* op, size_t bytes) { return std::make_unique<Request>(*this, op, bytes); }

void NcclComm::after_producer() {
  if (!producer_) return;
  CASTOR_CUDA(cudaEventRecord(produced_, producer_), "group ", name_);
  CASTOR_CUDA(cudaStreamWaitEvent(stream_, produced_, 0), "group ", name_);
}

namespace {
bool is_host(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return true;
  }
  return a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged;
}
}  // namespace

void* NcclComm::on_device(const void* p, size_t bytes, int slot, bool upload) {
  if (!is_host(p)) return const_cast<void*>(p);
  if (scratch_bytes_[slot] < bytes) {
    if (scratch_[slot] != nullptr) CASTOR_CUDA(cudaFree(scratch_[slot]), "group ", name_);
    scratch_[slot] = nullptr;
    CASTOR_CUDA(cudaMalloc(&scratch_[slot], bytes), "staging ", bytes, " bytes for group ", name_);
    scratch_bytes_[slot] = bytes;
  }
  if (upload) CASTOR_CUDA(cudaMemcpyAsync(scratch_[slot], p, bytes, cudaMemcpyHostToDevice, stream_), "group ", name_);
  return scratch_[slot];
}

void NcclComm::to_host(void* p, const void* device, size_t bytes) {
  if (device == p) return;
  CASTOR_CUDA(cudaMemcpyAsync(p, device, bytes, cudaMemcpyDeviceToHost, stream_), "group ", name_);
  CASTOR_CUDA(cudaStreamSynchronize(stream_), "group ", name_);
}

CommHandle NcclComm::iall_reduce(void* data, size_t count, CommType t, ReduceOp op) {
  after_producer();
  const size_t bytes = count * comm_type_size(t);
  void* d = on_device(data, bytes, 0, true);
  CASTOR_NCCL(ncclAllReduce(d, d, count, to_nccl(t), to_nccl(op), comm_, stream_), "group ", name_);
  to_host(data, d, bytes);
  return enqueued("all_reduce", bytes);
}

CommHandle NcclComm::ireduce_scatter(const void* send, void* recv, size_t recv_count, CommType t, ReduceOp op) {
  after_producer();
  CASTOR_CHECK(!is_host(recv), "reduce_scatter on NCCL group ", name_, " takes device buffers");
  if (!send) {  // in place: NCCL recognises recv == send + rank * count
    send = recv;
    recv = static_cast<char*>(recv) + size_t(rank_) * recv_count * comm_type_size(t);
  }
  CASTOR_NCCL(ncclReduceScatter(send, recv, recv_count, to_nccl(t), to_nccl(op), comm_, stream_), "group ", name_);
  return enqueued("reduce_scatter", recv_count * size_t(size_) * comm_type_size(t));
}

CommHandle NcclComm::iall_gather(const void* send, void* recv, size_t send_count, CommType t) {
  after_producer();
  const size_t part = send_count * comm_type_size(t), bytes = part * size_t(size_);
  // In place: NCCL recognises send == recv + rank * count.
  if (!send) send = static_cast<const char*>(recv) + size_t(rank_) * part;
  const bool host = is_host(recv);
  void* d_recv = on_device(recv, bytes, 1, false);
  const void* d_send = host ? on_device(send, part, 0, true) : send;
  CASTOR_NCCL(ncclAllGather(d_send, d_recv, send_count, to_nccl(t), comm_, stream_), "group ", name_);
  to_host(recv, d_recv, bytes);
  return enqueued("all_gather", bytes);
}

CommHandle NcclComm::iall_to_all_v(const void* send, std::span<const size_t> send_counts, void* recv,
                                   std::span<const size_t> recv_counts, CommType t) {
  CASTOR_CHECK(send_counts.size() == size_t(size_) && recv_counts.size() == size_t(size_), "all_to_all_v on group ",
               name_, ": ", send_counts.size(), " send and ", recv_counts.size(), " receive counts for ", size_,
               " ranks");
  after_producer();
  CASTOR_CHECK(!is_host(recv), "all_to_all_v on NCCL group ", name_, " takes device buffers");
  const size_t es = comm_type_size(t);
  size_t so = 0, ro = 0, bytes = 0;
  CASTOR_NCCL(ncclGroupStart(), "group ", name_);
  for (int q = 0; q < size_; ++q) {
    const size_t sc = send_counts[size_t(q)], rc = recv_counts[size_t(q)];
    if (sc > 0) CASTOR_NCCL(ncclSend(static_cast<const char*>(send) + so * es, sc, to_nccl(t), q, comm_, stream_), "");
    if (rc > 0) CASTOR_NCCL(ncclRecv(static_cast<char*>(recv) + ro * es, rc, to_nccl(t), q, comm_, stream_), "");
    so += sc;
    ro += rc;
    bytes += sc * es;
  }
  CASTOR_NCCL(ncclGroupEnd(), "group ", name_);
  return enqueued("all_to_all_v", bytes);
}

CommHandle NcclComm::ibroadcast(void* data, size_t count, CommType t, int root) {
  CASTOR_CHECK(root >= 0 && root < size_, "broadcast on group ", name_, ": root ", root, " outside [0, ", size_, ")");
  after_producer();
  const size_t bytes = count * comm_type_size(t);
  void* d = on_device(data, bytes, 0, true);
  CASTOR_NCCL(ncclBroadcast(d, d, count, to_nccl(t), root, comm_, stream_), "group ", name_);
  to_host(data, d, bytes);
  return enqueued("broadcast", bytes);
}

CommHandle NcclComm::isend(const void* data, size_t count, CommType t, int peer, int /*tag*/) {
  CASTOR_CHECK(peer >= 0 && peer < size_, "send on group ", name_, ": peer ", peer, " outside [0, ", size_, ")");
  CASTOR_CHECK(!is_host(data), "send on NCCL group ", name_, " takes device buffers");
  after_producer();
  CASTOR_NCCL(ncclSend(data, count, to_nccl(t), peer, comm_, stream_), "group ", name_);
  return enqueued("send", count * comm_type_size(t));
}

CommHandle NcclComm::irecv(void* data, size_t count, CommType t, int peer, int /*tag*/) {
  CASTOR_CHECK(peer >= 0 && peer < size_, "recv on group ", name_, ": peer ", peer, " outside [0, ", size_, ")");
  CASTOR_CHECK(!is_host(data), "recv on NCCL group ", name_, " takes device buffers");
  after_producer();
  CASTOR_NCCL(ncclRecv(data, count, to_nccl(t), peer, comm_, stream_), "group ", name_);
  return enqueued("recv", count * comm_type_size(t));
}

CommHandle NcclComm::ibarrier() {
  CASTOR_NCCL(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclFloat32, ncclSum, comm_, stream_), "group ", name_);
  return enqueued("barrier", 0);
}

ProcessGroups nccl_groups(const ProcessGroups& mpi, int device, cudaStream_t producer, double timeout_seconds) {
  ProcessGroups g = mpi;
  for (std::shared_ptr<Communicator>* c : {&g.world, &g.tp, &g.dp, &g.ep, &g.edp, &g.pp, &g.tp_dp, &g.tp_edp}) {
    auto* group = dynamic_cast<MpiComm*>(c->get());
    CASTOR_CHECK(group != nullptr, "nccl_groups: group ", (*c)->name(), " is not an MPI communicator");
    *c = std::make_shared<NcclComm>(*group, device, timeout_seconds, producer);
  }
  return g;
}

}  // namespace castor::parallel
