// GradientBuckets under mpirun (2 and 4 ranks): every bucket is summed over ranks exactly
// once whatever the bucket size and the order backward reports readiness in; buckets
// inside a ready range start before finish() (the overlap with backward).
#include "parallel/grad_sync.h"

#include <gtest/gtest.h>

#include <vector>

#include "parallel/mpi_comm.h"

namespace castor::parallel {
namespace {

TEST(GradientBuckets, SumsEveryElementOnceForAnyBucketSize) {
  MpiComm w(MPI_COMM_WORLD, "dp");
  const int r = w.rank(), n = w.size();
  const size_t N = 1000;
  for (size_t bucket : {size_t(1), size_t(7), size_t(100), size_t(999), size_t(1000), size_t(5000)}) {
    std::vector<float> g(N);
    for (size_t i = 0; i < N; ++i) g[i] = float(r + 1) * float(i % 13);
    GradientBuckets b(w, g.data(), N, bucket);
    EXPECT_EQ(b.num_buckets(), (N + bucket - 1) / bucket);
    // Backward reports the arena ready from the end, in uneven stages.
    for (size_t from : {size_t(900), size_t(640), size_t(333), size_t(10)}) b.ready_from(from);
    b.finish();
    const float ranks = float(n * (n + 1) / 2);
    for (size_t i = 0; i < N; ++i) ASSERT_EQ(g[i], ranks * float(i % 13)) << "bucket " << bucket << " index " << i;
    // Buckets lying wholly in [10, N) started before finish().
    size_t early = 0;
    for (size_t end = N; end > 0; end = end > bucket ? end - bucket : 0)
      if ((end > bucket ? end - bucket : 0) >= 10) ++early;
    EXPECT_EQ(b.started_before_finish(), early) << bucket;
  }
}

}  // namespace
}  // namespace castor::parallel
