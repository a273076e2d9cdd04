// The cpu Backend: aligned, zeroed host allocations with byte accounting, and the
// process thread pool size (OpenMP + OpenBLAS) set once at construction.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "core/backend.h"
#include "core/cpu_ops.h"
#include "kernels/cpu/gemm.h"

namespace castor {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) {
    if (threads > 0) kernels::cpu::set_num_threads(threads);
  }
  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }
  void* allocate(size_t bytes) override {
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    CASTOR_CHECK(p != nullptr, "cpu backend: out of memory allocating ", bytes, " bytes");
    std::memset(p, 0, rounded);
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = rounded;
    current_ += rounded;
    if (current_ > peak_) peak_ = current_;
    return p;
  }
  void free(void* p) override {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        current_ -= it->second;
        sizes_.erase(it);
      }
    }
    std::free(p);
  }
  void copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void discard(void* p, size_t bytes) override {
    // Whole pages inside the range go back to the kernel (private anonymous memory reads
    // as zeros afterwards and is not resident until touched); the partial pages at the
    // edges are zeroed by hand.
    static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t b = reinterpret_cast<uintptr_t>(p), e = b + bytes;
    const uintptr_t pb = (b + page - 1) / page * page, pe = e / page * page;
    if (pe <= pb || madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_DONTNEED) != 0) {
      std::memset(p, 0, bytes);
      return;
    }
    std::memset(p, 0, pb - b);
    std::memset(reinterpret_cast<void*>(pe), 0, e - pe);
  }
  void synchronize() override {}
  size_t allocated_bytes() const override { return current_; }
  size_t peak_bytes() const override { return peak_; }
  Ops& ops() override { return ops_; }

 private:
  std::mutex mu_;
  std::unordered_map<void*, size_t> sizes_;
  size_t current_ = 0;
  size_t peak_ = 0;
  CpuOps ops_{*this};  // last: its scratch buffer is freed through this backend first
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace castor
