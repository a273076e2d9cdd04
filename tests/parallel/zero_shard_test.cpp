// ZeRO's arena sharding without MPI: BucketLayout splits every bucket evenly over the
// ranks and the ranks' shards partition the (padded) arena exactly; AdamW run shard by
// shard, each rank with its own moments, gives bitwise the update of AdamW over the whole
// arena (the element-wise math is the same, only its bookkeeping differs).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "core/optimizer.h"
#include "parallel/grad_sync.h"

namespace castor::parallel {
namespace {

TEST(BucketLayout, ShardsPartitionThePaddedArena) {
  for (int ranks : {1, 2, 3, 4, 7})
    for (size_t bucket : {size_t(1), size_t(5), size_t(64), size_t(1000)}) {
      const size_t n = size_t(ranks) * 143;
      const BucketLayout layout(n, bucket, ranks);
      std::vector<int> owner(n, -1);
      size_t end = n;
      for (const auto& b : layout.buckets) {
        EXPECT_EQ(b.end, end) << "buckets tile the arena from its end";
        EXPECT_EQ((b.end - b.begin) % size_t(ranks), 0u);
        EXPECT_LE(b.end - b.begin, (bucket + size_t(ranks) - 1) / size_t(ranks) * size_t(ranks));
        end = b.begin;
      }
      EXPECT_EQ(end, 0u);
      for (int r = 0; r < ranks; ++r) {
        const ArenaShard s = layout.shard(r);
        EXPECT_EQ(s.elems, n / size_t(ranks));
        std::vector<bool> used(s.elems, false);
        for (const auto& range : s.ranges)
          for (size_t i = range.arena_begin; i < range.arena_end; ++i) {
            EXPECT_EQ(owner[i], -1) << "element " << i << " owned twice";
            owner[i] = r;
            const size_t at = range.shard_offset + i - range.arena_begin;
            ASSERT_LT(at, s.elems);
            EXPECT_FALSE(used[at]);
            used[at] = true;
          }
      }
      EXPECT_EQ(std::count(owner.begin(), owner.end(), -1), 0) << ranks << " ranks, bucket " << bucket;
    }
  EXPECT_THROW(BucketLayout(10, 4, 3), Error);  // an unpadded arena
  EXPECT_THROW(BucketLayout(12, 0, 3), Error);
}

// A store whose size divides by nothing useful (37 + 6 + 1 elements), padded for 3 ranks.
void build(ParamStore& store, Backend& backend, size_t pad) {
  store.add("a.weight", {37}, Init::normal(0.5f), true);
  store.add("b.bias", {6}, Init::normal(0.5f), false);
  store.add("c.weight", {1}, Init::ones(), true);
  store.allocate(backend, pad);
  store.initialize(7);
}

TEST(AdamWShard, ShardsUpdateLikeTheWholeArena) {
  auto backend = make_cpu_backend(1);
  OptimConfig oc;
  oc.weight_decay = 0.1f;
  const int ranks = 3;
  ParamStore whole_store, shard_store;
  build(whole_store, *backend, 1);
  build(shard_store, *backend, size_t(ranks));
  ASSERT_EQ(shard_store.arena_elems(), 45u);  // 44 padded to a multiple of 3
  const BucketLayout layout(shard_store.arena_elems(), 4, ranks);
  AdamW whole(oc, whole_store, *backend);
  std::vector<std::vector<float>> shard_grads;
  std::vector<AdamW> shards;
  shards.reserve(ranks);
  for (int r = 0; r < ranks; ++r) shard_grads.emplace_back(layout.shard_elems);
  for (int r = 0; r < ranks; ++r) shards.emplace_back(oc, shard_store, *backend, layout.shard(r), shard_grads[r].data());
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (int step = 0; step < 5; ++step) {
    for (size_t i = 0; i < whole_store.numel(); ++i) whole_store.grads()[i] = normal(rng);
    for (int r = 0; r < ranks; ++r)
      for (const auto& range : shards[size_t(r)].shard().ranges)
        for (size_t i = range.arena_begin; i < range.arena_end; ++i)
          shard_grads[size_t(r)][range.shard_offset + i - range.arena_begin] =
              i < whole_store.numel() ? whole_store.grads()[i] : 0.0f;
    double ss = 0;
    for (auto& s : shards) ss += s.grad_sum_squares();
    EXPECT_NEAR(ss, whole.grad_sum_squares(), 1e-9 * ss);
    const double norm = whole.grad_norm();  // above grad_clip = 1: the clip scale matters
    whole.step(1e-2f, norm);
    for (auto& s : shards) s.step(1e-2f, norm);
  }
  for (size_t i = 0; i < whole_store.numel(); ++i)
    ASSERT_EQ(shard_store.weights()[i], whole_store.weights()[i]) << "element " << i;
  for (size_t i = whole_store.numel(); i < shard_store.arena_elems(); ++i)
    EXPECT_EQ(shard_store.weights()[i], 0.0f) << "padding stays zero";
}

}  // namespace
}  // namespace castor::parallel
