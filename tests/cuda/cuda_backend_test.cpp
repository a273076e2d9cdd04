// The cuda Backend: zeroed allocations (fresh and reused), reuse of a freed block of the same
// size class without a new cudaMalloc (reserved_bytes unchanged), no reuse across classes,
// the out-of-memory error, host -> device -> device -> host round trip, discard, peak
// accounting, events ordering the compute and comm streams, and the device of a local rank.
#include "core/cuda/cuda_backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

// The bytes at p (device) as host bytes, after the compute stream is done.
std::vector<unsigned char> read_back(CudaBackend& be, const void* p, size_t bytes) {
  std::vector<unsigned char> host(bytes, 0xAB);
  be.copy(host.data(), p, bytes);
  be.synchronize();
  return host;
}

bool all_equal(const std::vector<unsigned char>& v, unsigned char x, size_t from = 0, size_t to = SIZE_MAX) {
  for (size_t i = from; i < std::min(to, v.size()); ++i) {
    if (v[i] != x) return false;
  }
  return true;
}

TEST(CudaBackend, AllocationsAreZeroedAndAligned) {
  auto be = make_cuda_backend(0);
  EXPECT_EQ(be->device(), Device::kCuda);
  EXPECT_EQ(be->name(), "cuda:0");
  for (const size_t bytes :
       {size_t(1), size_t(100), size_t(513), size_t(4096), (size_t(1) << 20) + 1, size_t(3) << 20}) {
    SCOPED_TRACE(bytes);
    void* p = be->allocate(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
    EXPECT_TRUE(all_equal(read_back(*be, p, bytes), 0));
    be->free(p);
  }
  void* z = be->allocate(0);  // a zero-byte request still gets its own block
  EXPECT_NE(z, nullptr);
  be->free(z);
  be->free(nullptr);
  expect_device_clean();
}

TEST(CudaBackend, ReusesFreedBlockOfTheSameClass) {
  auto be = make_cuda_backend(0);
  // The backend's Ops already holds memory (its cuBLASLt workspace): count from there.
  const size_t base = be->allocated_bytes(), base_reserved = be->reserved_bytes();
  for (const auto& [first, second] : std::vector<std::pair<size_t, size_t>>{
           {1000, 900},                                  // 1024-byte class
           {(size_t(3) << 20) + 5, size_t(7) << 19}}) {  // 4 MiB class: 3 MiB + 5, 3.5 MiB
    SCOPED_TRACE(first);
    void* a = be->allocate(first);
    const std::vector<unsigned char> ones(first, 0xFF);
    be->copy(a, ones.data(), first);  // dirty it
    be->synchronize();
    const size_t reserved = be->reserved_bytes(), cached = be->cached_bytes();
    be->free(a);
    EXPECT_GE(be->cached_bytes(), cached + first);  // kept, by its size class
    EXPECT_EQ(be->allocated_bytes(), base);
    void* b = be->allocate(second);
    EXPECT_EQ(b, a);                            // the cached block came back
    EXPECT_EQ(be->reserved_bytes(), reserved);  // without a new cudaMalloc
    EXPECT_EQ(be->cached_bytes(), cached);
    EXPECT_EQ(be->allocated_bytes(), base + second);
    EXPECT_TRUE(all_equal(read_back(*be, b, second), 0));  // and zeroed again
    be->free(b);
  }
  // Another class is not served from the cache.
  const size_t reserved = be->reserved_bytes(), cached = be->cached_bytes();
  void* c = be->allocate(5000);
  EXPECT_GT(be->reserved_bytes(), reserved);
  EXPECT_EQ(be->cached_bytes(), cached);
  be->free(c);
  be->release_cached();
  EXPECT_EQ(be->cached_bytes(), 0u);
  EXPECT_EQ(be->reserved_bytes(), base_reserved);  // the live workspace stays
  expect_device_clean();
}

TEST(CudaBackend, OutOfMemoryNamesTheRequest) {
  auto be = make_cuda_backend(0);
  const size_t base = be->allocated_bytes();  // the Ops' cuBLASLt workspace
  void* keep = be->allocate(1000);
  be->free(be->allocate(4096));  // something cached, returned before the retry
  const size_t huge = size_t(1) << 50;
  try {
    be->allocate(huge);
    ADD_FAILURE() << "no error for " << huge << " bytes";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(std::to_string(huge)), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(base + 1000) + " bytes in use"), std::string::npos) << msg;
  }
  EXPECT_EQ(be->cached_bytes(), 0u);
  EXPECT_EQ(be->allocated_bytes(), base + 1000);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // the failed cudaMalloc left no error behind
  be->free(keep);
  expect_device_clean();
}

TEST(CudaBackend, CopyRoundTripAndDiscard) {
  auto be = make_cuda_backend(0);
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const size_t n = 100003;
  const std::vector<float> host = random_floats(n, seed);
  void* d1 = be->allocate(n * sizeof(float));
  void* d2 = be->allocate(n * sizeof(float));
  be->copy(d1, host.data(), n * sizeof(float));  // host -> device
  be->copy(d2, d1, n * sizeof(float));           // device -> device
  std::vector<float> back(n, -1.0f);
  be->copy(back.data(), d2, n * sizeof(float));  // device -> host
  be->synchronize();
  EXPECT_EQ(std::memcmp(back.data(), host.data(), n * sizeof(float)), 0);

  const std::vector<unsigned char> ones(4096, 0xFF);
  be->copy(d1, ones.data(), ones.size());
  be->discard(static_cast<char*>(d1) + 100, 1000);  // unaligned start and length
  const std::vector<unsigned char> got = read_back(*be, d1, ones.size());
  EXPECT_TRUE(all_equal(got, 0xFF, 0, 100));
  EXPECT_TRUE(all_equal(got, 0, 100, 1100));
  EXPECT_TRUE(all_equal(got, 0xFF, 1100));
  be->free(d1);
  be->free(d2);
  expect_device_clean();
}

TEST(CudaBackend, TracksAllocatedAndPeakBytes) {
  auto be = make_cuda_backend(0);
  // A new backend holds only its Ops' memory (the cuBLASLt workspace), live since construction.
  const size_t base = be->allocated_bytes();
  EXPECT_GT(base, 0u);
  EXPECT_EQ(be->peak_bytes(), base);
  void* a = be->allocate(1000);
  void* b = be->allocate(3000);
  EXPECT_EQ(be->allocated_bytes(), base + 4000);  // request sizes, not size classes
  EXPECT_EQ(be->peak_bytes(), base + 4000);
  be->free(a);
  EXPECT_EQ(be->allocated_bytes(), base + 3000);
  void* c = be->allocate(500);
  EXPECT_EQ(be->allocated_bytes(), base + 3500);
  EXPECT_EQ(be->peak_bytes(), base + 4000);
  be->free(b);
  be->free(c);
  EXPECT_EQ(be->allocated_bytes(), base);
  EXPECT_EQ(be->peak_bytes(), base + 4000);
  EXPECT_THROW(be->free(b), Error);  // already freed
  expect_device_clean();
}

// Compute: a host function sleeps 200 ms, then copies x -> y. Comm waits on an event recorded
// after that, observes the sleep's flag and copies y -> z: z must hold x.
TEST(CudaBackend, EventOrdersComputeAndCommStreams) {
  auto be = make_cuda_backend(0);
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const size_t bytes = size_t(1) << 24;
  const std::vector<float> pattern = random_floats(bytes / sizeof(float), seed);
  void* x = be->allocate(bytes);
  void* y = be->allocate(bytes);
  void* z = be->allocate(bytes);
  be->copy(x, pattern.data(), bytes);
  be->synchronize();

  struct Flags {
    std::atomic<int> slept{0};
    int seen_by_comm = -1;
  } flags;
  CUDA_OK(cudaLaunchHostFunc(
      be->compute_stream(),
      [](void* f) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        static_cast<Flags*>(f)->slept.store(1);
      },
      &flags));
  be->copy(y, x, bytes);
  CudaEvent done;
  done.record(be->compute_stream());
  EXPECT_FALSE(done.query());  // compute is still asleep
  done.wait(be->comm_stream());
  CUDA_OK(cudaLaunchHostFunc(
      be->comm_stream(), [](void* f) { static_cast<Flags*>(f)->seen_by_comm = static_cast<Flags*>(f)->slept.load(); },
      &flags));
  CUDA_OK(cudaMemcpyAsync(z, y, bytes, cudaMemcpyDeviceToDevice, be->comm_stream()));
  CUDA_OK(cudaStreamSynchronize(be->comm_stream()));
  EXPECT_EQ(flags.seen_by_comm, 1);
  EXPECT_TRUE(done.query());
  done.synchronize();
  std::vector<float> back(pattern.size());
  be->copy(back.data(), z, bytes);
  be->synchronize();
  EXPECT_EQ(std::memcmp(back.data(), pattern.data(), bytes), 0);

  CudaEvent moved = std::move(done);  // move-only handle
  EXPECT_TRUE(moved.query());
  be->free(x);
  be->free(y);
  be->free(z);
  expect_device_clean();
}

// Sets an environment variable for the scope, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(CudaBackend, DeviceForLocalRank) {
  int count = 0;
  CUDA_OK(cudaGetDeviceCount(&count));
  EXPECT_EQ(cuda_device_for_local_rank(3), 3 % count);
  {
    ScopedEnv env("OMPI_COMM_WORLD_LOCAL_RANK", "5");  // the first variable consulted
    EXPECT_EQ(local_rank_from_env(), 5);
    EXPECT_EQ(cuda_device_for_local_rank(-1), 5 % count);
  }
  {
    ScopedEnv env("OMPI_COMM_WORLD_LOCAL_RANK", "2x");
    EXPECT_THROW(local_rank_from_env(), Error);
  }
  EXPECT_THROW(make_cuda_backend(count), Error);  // one past the last device
  expect_device_clean();
}

}  // namespace
}  // namespace castor::cuda_test
