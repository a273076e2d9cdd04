// The cuda Backend (core/backend.h on one CUDA device): device memory from a caching
// allocator, copies and zeroing queued on a compute stream, a second (high-priority) stream
// for communication and CudaEvent to order the two. The cpu backend is its oracle. One device
// per process: cuda_device_for_local_rank picks it. Host C++ on the CUDA runtime API; every
// CUDA call is checked (CASTOR_CUDA_CHECK throws castor::Error naming call and error).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/backend.h"
#include "core/error.h"

namespace castor {

// "CUDA error cudaErrorX (description) in <expr> (file:line)".
std::string cuda_error_message(cudaError_t e, const char* expr, const char* file, int line);

}  // namespace castor

#define CASTOR_CUDA_CHECK(expr)                                                                         \
  do {                                                                                                  \
    const cudaError_t castor_cuda_err_ = (expr);                                                        \
    if (castor_cuda_err_ != cudaSuccess)                                                                \
      throw ::castor::Error(::castor::cuda_error_message(castor_cuda_err_, #expr, __FILE__, __LINE__)); \
  } while (0)

namespace castor {

// A CUDA event without timing, created on the current device; orders work across streams:
// record() on the producing stream, wait() on the consuming one. Move-only.
class CudaEvent {
 public:
  CudaEvent();
  ~CudaEvent();
  CudaEvent(CudaEvent&& o) noexcept;
  CudaEvent& operator=(CudaEvent&& o) noexcept;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  void record(cudaStream_t stream);      // captures the work queued on `stream` so far
  void wait(cudaStream_t stream) const;  // later work on `stream` waits for that work
  bool query() const;                    // true once the captured work has finished
  void synchronize() const;              // the host waits for it
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// Memory: requests are rounded up to a size class (512 bytes up to 1 MiB, 2 MiB above);
// freed blocks stay cached in per-class free lists and are reused; cudaMalloc runs only on a
// miss (on out-of-memory the cache is returned to the device and the cudaMalloc retried
// once). A freed block is reused in compute-stream order: memory last used on another stream
// must be ordered before the compute stream (a CudaEvent) before it is freed.
// copy() and discard() are asynchronous on the compute stream: synchronize() before reading
// host memory a device-to-host copy writes (pageable destinations are complete on return,
// pinned ones are not).
class CudaBackend final : public Backend {
 public:
  // Makes `device` current on the calling thread; activations: f32, bf16 or f16 (mixed precision).
  explicit CudaBackend(int device, DType activations = DType::f32);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  void* allocate(size_t bytes) override;  // zeroed (on the compute stream), 256-byte aligned
  void free(void* p) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void discard(void* p, size_t bytes) override;
  void synchronize() override;              // the compute stream
  size_t allocated_bytes() const override;  // by request size
  size_t peak_bytes() const override;
  Ops& ops() override { return *ops_; }

  int device_index() const { return device_; }  // Backend::device() names the kind
  cudaStream_t compute_stream() const { return compute_; }
  cudaStream_t comm_stream() const { return comm_; }
  size_t cached_bytes() const;    // freed blocks kept for reuse (size-class bytes)
  size_t reserved_bytes() const;  // held from cudaMalloc: live and cached blocks
  void release_cached();          // synchronizes the device, then cudaFree's the cache

 private:
  struct Block {
    size_t class_bytes;
    size_t requested;
  };
  void* take_or_malloc(size_t class_bytes, size_t requested);  // mu_ held
  void release_cached_locked();                                // mu_ held
  void give_back(void* p);                                     // live -> cache, mu_ held

  int device_;
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_ = nullptr;
  mutable std::mutex mu_;
  std::unordered_map<void*, Block> live_;
  std::unordered_map<size_t, std::vector<void*>> free_lists_;  // by size class
  size_t allocated_ = 0, peak_ = 0, cached_ = 0, reserved_ = 0;
  std::unique_ptr<Ops> ops_;  // CudaOps, made last in the constructor, reset first in the destructor
};

// Throws castor::Error if `device` does not exist (naming the device count).
std::unique_ptr<CudaBackend> make_cuda_backend(int device, DType activations = DType::f32);

// The first of OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID that is set (a
// malformed value throws), else 0.
int local_rank_from_env();

// The device of a local rank: local_rank (local_rank_from_env() when negative) modulo the
// device count. Throws castor::Error naming the count when no device is present.
int cuda_device_for_local_rank(int local_rank);

}  // namespace castor
