// The cuda Backend (see cuda_backend.h): the caching allocator and its accounting under one
// mutex, copies and memsets on the compute stream, events, and the choice of device from the
// local rank. Destructors never throw: their CUDA errors are ignored.
#include "core/cuda/cuda_backend.h"

#include "core/cuda/cuda_ops.h"

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace castor {
namespace {

constexpr size_t kSmallLimit = size_t(1) << 20;  // classes of 512 bytes up to here
constexpr size_t kSmallGranule = 512;
constexpr size_t kLargeGranule = size_t(2) << 20;

size_t round_up(size_t x, size_t granule) { return (x + granule - 1) / granule * granule; }

// The size class of a request (a zero-byte request still gets a distinct block).
size_t size_class(size_t bytes) {
  CASTOR_CHECK(bytes <= SIZE_MAX - kLargeGranule, "cuda backend: allocation of ", bytes, " bytes");
  if (bytes <= kSmallLimit) return round_up(bytes == 0 ? 1 : bytes, kSmallGranule);
  return round_up(bytes, kLargeGranule);
}

// Devices visible to this process; 0 (not an error) when there is no device or driver.
int device_count(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaSuccess) return count;
  (void)cudaGetLastError();
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
    *why = cudaGetErrorString(e);
    return 0;
  }
  throw Error(cuda_error_message(e, "cudaGetDeviceCount", __FILE__, __LINE__));
}

}  // namespace

std::string cuda_error_message(cudaError_t e, const char* expr, const char* file, int line) {
  return cat("CUDA error ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") in ", expr, " (", file, ":", line,
             ")");
}

// ---- CudaEvent ----

CudaEvent::CudaEvent() { CASTOR_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }

CudaEvent::~CudaEvent() {
  if (event_) (void)cudaEventDestroy(event_);
}

CudaEvent::CudaEvent(CudaEvent&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}

CudaEvent& CudaEvent::operator=(CudaEvent&& o) noexcept {
  if (this != &o) {
    if (event_) (void)cudaEventDestroy(event_);
    event_ = std::exchange(o.event_, nullptr);
  }
  return *this;
}

void CudaEvent::record(cudaStream_t stream) { CASTOR_CUDA_CHECK(cudaEventRecord(event_, stream)); }

void CudaEvent::wait(cudaStream_t stream) const { CASTOR_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }

bool CudaEvent::query() const {
  const cudaError_t e = cudaEventQuery(event_);
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError();  // "not ready" is an answer, not an error for later checks
    return false;
  }
  CASTOR_CUDA_CHECK(e);
  return true;
}

void CudaEvent::synchronize() const { CASTOR_CUDA_CHECK(cudaEventSynchronize(event_)); }

// ---- CudaBackend ----

CudaBackend::CudaBackend(int device, DType activations) : device_(device) {
  std::string why;
  const int count = device_count(&why);
  CASTOR_CHECK(device >= 0 && device < count, "cuda backend: device ", device, " requested but ", count,
               " CUDA devices are present", why.empty() ? "" : " (", why, why.empty() ? "" : ")");
  CASTOR_CUDA_CHECK(cudaSetDevice(device));
  // Lower numbers are higher priorities: collectives on comm_ are not starved by compute.
  int least = 0, greatest = 0;
  CASTOR_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  CASTOR_CUDA_CHECK(cudaStreamCreateWithPriority(&compute_, cudaStreamDefault, least));
  const cudaError_t e = cudaStreamCreateWithPriority(&comm_, cudaStreamDefault, greatest);
  if (e != cudaSuccess) {
    (void)cudaStreamDestroy(compute_);
    throw Error(cuda_error_message(e, "cudaStreamCreateWithPriority(comm)", __FILE__, __LINE__));
  }
  ops_ = std::make_unique<CudaOps>(*this, activations);
}

CudaBackend::~CudaBackend() {
  (void)cudaSetDevice(device_);
  ops_.reset();  // its buffers and cuBLASLt handle, while the streams still exist
  (void)cudaStreamSynchronize(compute_);
  (void)cudaStreamSynchronize(comm_);
  for (auto& [p, block] : live_) (void)cudaFree(p);  // leaked by their owners; ours to return
  for (auto& [cls, list] : free_lists_) {
    for (void* p : list) (void)cudaFree(p);
  }
  (void)cudaStreamDestroy(compute_);
  (void)cudaStreamDestroy(comm_);
}

void* CudaBackend::allocate(size_t bytes) {
  const size_t cls = size_class(bytes);
  CASTOR_CUDA_CHECK(cudaSetDevice(device_));  // the calling thread may have another current
  std::lock_guard<std::mutex> lock(mu_);
  void* p = take_or_malloc(cls, bytes);
  live_[p] = Block{cls, bytes};
  allocated_ += bytes;
  if (allocated_ > peak_) peak_ = allocated_;
  const cudaError_t e = bytes ? cudaMemsetAsync(p, 0, bytes, compute_) : cudaSuccess;
  if (e != cudaSuccess) {
    give_back(p);
    throw Error(cuda_error_message(e, "cudaMemsetAsync (zeroing a new block)", __FILE__, __LINE__));
  }
  return p;
}

void* CudaBackend::take_or_malloc(size_t class_bytes, size_t requested) {
  auto it = free_lists_.find(class_bytes);
  if (it != free_lists_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= class_bytes;
    return p;
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, class_bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky: keep it from later launch checks
    release_cached_locked();
    e = cudaMalloc(&p, class_bytes);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      CASTOR_FAIL("cuda backend: out of memory on device ", device_, " allocating ", requested, " bytes (", class_bytes,
                  " with rounding); ", allocated_, " bytes in use, ", reserved_, " reserved after returning the cache");
    }
  }
  if (e != cudaSuccess) throw Error(cuda_error_message(e, "cudaMalloc", __FILE__, __LINE__));
  reserved_ += class_bytes;
  return p;
}

void CudaBackend::give_back(void* p) {
  auto it = live_.find(p);
  CASTOR_CHECK(it != live_.end(), "cuda backend: free of ", p, ", which it did not allocate (or already freed)");
  allocated_ -= it->second.requested;
  free_lists_[it->second.class_bytes].push_back(p);
  cached_ += it->second.class_bytes;
  live_.erase(it);
}

void CudaBackend::free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  give_back(p);
}

void CudaBackend::release_cached_locked() {
  if (cached_ == 0) return;
  // Queued work may still use a cached block (free() does not wait for the streams).
  CASTOR_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto& [cls, list] : free_lists_) {
    while (!list.empty()) {
      CASTOR_CUDA_CHECK(cudaFree(list.back()));
      list.pop_back();
      reserved_ -= cls;
      cached_ -= cls;
    }
  }
}

void CudaBackend::release_cached() {
  CASTOR_CUDA_CHECK(cudaSetDevice(device_));
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CASTOR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, compute_));
}

void CudaBackend::discard(void* p, size_t bytes) {
  if (bytes == 0) return;
  CASTOR_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, compute_));
}

void CudaBackend::synchronize() { CASTOR_CUDA_CHECK(cudaStreamSynchronize(compute_)); }

size_t CudaBackend::allocated_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocated_;
}

size_t CudaBackend::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

size_t CudaBackend::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

size_t CudaBackend::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_;
}

// ---- device choice ----

std::unique_ptr<CudaBackend> make_cuda_backend(int device, DType activations) {
  return std::make_unique<CudaBackend>(device, activations);
}

int local_rank_from_env() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    const char* value = std::getenv(name);
    if (value == nullptr) continue;
    int rank = -1;
    const char* last = value + std::strlen(value);
    const auto [ptr, ec] = std::from_chars(value, last, rank);
    CASTOR_CHECK(ec == std::errc() && ptr == last && rank >= 0, "environment variable ", name, "=\"", value,
                 "\" is not a local rank");
    return rank;
  }
  return 0;
}

int cuda_device_for_local_rank(int local_rank) {
  if (local_rank < 0) local_rank = local_rank_from_env();
  std::string why;
  const int count = device_count(&why);
  CASTOR_CHECK(count > 0, "no CUDA device for local rank ", local_rank, ": cudaGetDeviceCount reports ", count,
               " devices", why.empty() ? "" : " (", why, why.empty() ? "" : ")");
  return local_rank % count;
}

}  // namespace castor
