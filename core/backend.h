// Backend: where memory lives, how it is moved, and the Ops that compute on it. The cpu backend is real and fast
// and is the oracle for the cuda backend (kernels/cuda, GPU issue). Buffer owns one
// allocation from a Backend and frees it on destruction (move-only).
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace castor {

class Ops;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual void* allocate(size_t bytes) = 0;  // zero-initialised, 64-byte aligned
  virtual void free(void* p) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // The bytes read as zero afterwards; the backend may give the memory behind them back to
  // the system until it is written again (ZeRO-2 releases reduced gradient buckets).
  virtual void discard(void* p, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Bytes currently allocated and the peak since construction (memory reporting).
  virtual size_t allocated_bytes() const = 0;
  virtual size_t peak_bytes() const = 0;
  // The kernels on this backend's memory (core/ops.h).
  virtual Ops& ops() = 0;
};

// threads: OpenMP/OpenBLAS pool size for this process (<= 0: leave the default).
std::unique_ptr<Backend> make_cpu_backend(int threads);

class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& backend, size_t bytes) : backend_(&backend), bytes_(bytes) {
    data_ = bytes ? backend.allocate(bytes) : nullptr;
  }
  // elems elements of type t (an activation buffer: ref() and rows() carry the type).
  Buffer(Backend& backend, DType t, int64_t elems) : Buffer(backend, size_t(elems) * dtype_size(t)) { dtype_ = t; }
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_;
      data_ = o.data_;
      bytes_ = o.bytes_;
      dtype_ = o.dtype_;
      o.data_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  float* f32() const { return static_cast<float*>(data_); }
  size_t bytes() const { return bytes_; }
  DType dtype() const { return dtype_; }
  Ref ref() const { return {data_, dtype_}; }
  // The first rows x cols elements as a 2-D tensor.
  Tensor rows(int64_t rows, int64_t cols) const {
    return {data_, dtype_, {rows, cols}, backend_ ? backend_->device() : Device::kCpu};
  }

 private:
  void reset() {
    if (data_) backend_->free(data_);
    data_ = nullptr;
  }
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  DType dtype_ = DType::f32;
};

}  // namespace castor
