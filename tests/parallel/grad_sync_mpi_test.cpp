// GradientBuckets under mpirun (2 and 4 ranks): every bucket is summed over ranks exactly
// once whatever the bucket size and the order backward reports readiness in; buckets
// inside a ready range start before finish() (the overlap with backward). In ZeRO's
// reduce-scatter mode each rank receives the sums of its slice of every bucket, and the
// completion callback runs once per bucket.
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

TEST(GradientBuckets, ReduceScatterGivesEachRankTheSumOfItsSlices) {
  MpiComm w(MPI_COMM_WORLD, "dp");
  const int r = w.rank(), n = w.size();
  const size_t N = 251 * size_t(n);  // padded arena: a multiple of the rank count
  for (size_t bucket : {size_t(1), size_t(10), size_t(97), N, 3 * N}) {
    const BucketLayout layout(N, bucket, n);
    std::vector<float> g(N), shard(layout.shard_elems, -1.0f);
    for (size_t i = 0; i < N; ++i) g[i] = float(r + 1) * float(i % 17);
    std::vector<int> reduced(layout.buckets.size(), 0);
    GradientBuckets b(w, g.data(), layout, shard.data(), [&](size_t k) { ++reduced[k]; });
    for (size_t from : {N - 5, N / 2, size_t(3)}) b.ready_from(from);
    b.finish();
    EXPECT_EQ(reduced, std::vector<int>(layout.buckets.size(), 1)) << "bucket " << bucket;
    const float ranks = float(n * (n + 1) / 2);
    const ArenaShard mine = layout.shard(r);
    size_t covered = 0;
    for (const auto& range : mine.ranges)
      for (size_t i = range.arena_begin; i < range.arena_end; ++i, ++covered)
        ASSERT_EQ(shard[range.shard_offset + i - range.arena_begin], ranks * float(i % 17))
            << "bucket " << bucket << " index " << i;
    EXPECT_EQ(covered, N / size_t(n));

    // In place (ZeRO-1): the same sums, left at the slices' own arena positions.
    for (size_t i = 0; i < N; ++i) g[i] = float(r + 1) * float(i % 17);
    GradientBuckets in_place(w, g.data(), layout, nullptr, nullptr);
    in_place.ready_from(N / 3);
    in_place.finish();
    for (const auto& range : mine.ranges)
      for (size_t i = range.arena_begin; i < range.arena_end; ++i)
        ASSERT_EQ(g[i], ranks * float(i % 17)) << "in place, bucket " << bucket << " index " << i;
  }
}

}  // namespace
}  // namespace castor::parallel
