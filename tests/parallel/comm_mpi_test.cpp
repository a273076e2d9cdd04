// MpiComm under mpirun (2 and 4 ranks; main() in support/mpi_test_main.cpp): every
// collective and point-to-point operation against values each rank computes
// independently, asynchronous operations in flight together, sub-groups from split, and
// timeouts that name operation, group, rank and bytes (the late peer then arrives, so
// the job ends cleanly).
#include "parallel/mpi_comm.h"

#include <gtest/gtest.h>

#include <chrono>
#include <numeric>
#include <thread>
#include <vector>

#include "support/testing.h"

namespace castor::parallel {
namespace {

using castor::testing::error_of;

TEST(MpiComm, AllReduceSumAvgMaxForEveryType) {
  MpiComm w(MPI_COMM_WORLD, "world");
  const int r = w.rank(), n = w.size();
  std::vector<float> f = {float(r), 1.0f, float(r * r)};
  w.all_reduce(f.data(), f.size(), ReduceOp::kSum);
  const float sum_r = float(n * (n - 1) / 2), sum_r2 = float((n - 1) * n * (2 * n - 1) / 6);
  EXPECT_EQ(f, (std::vector<float>{sum_r, float(n), sum_r2}));
  std::vector<double> d = {double(r), 2.0};
  w.all_reduce(d.data(), d.size(), ReduceOp::kAvg);
  EXPECT_DOUBLE_EQ(d[0], double(n - 1) / 2.0);
  EXPECT_DOUBLE_EQ(d[1], 2.0);
  std::vector<int64_t> i = {int64_t(r) << 40, -r};
  w.all_reduce(i.data(), i.size(), ReduceOp::kMax);
  EXPECT_EQ(i, (std::vector<int64_t>{int64_t(n - 1) << 40, 0}));
  int32_t k = r + 1;
  w.all_reduce(&k, 1, ReduceOp::kSum);
  EXPECT_EQ(k, n * (n + 1) / 2);
  EXPECT_CONTAINS(error_of([&] { w.all_reduce(&k, 1, ReduceOp::kAvg); }), "average needs a floating type");
}

TEST(MpiComm, ReduceScatterAllGatherBroadcast) {
  MpiComm w(MPI_COMM_WORLD, "world");
  const int r = w.rank(), n = w.size();
  const size_t block = 3;
  std::vector<float> send(block * size_t(n));
  for (size_t j = 0; j < send.size(); ++j) send[j] = float(r * 100 + int(j));
  std::vector<float> mine(block);
  w.reduce_scatter(send.data(), mine.data(), block, ReduceOp::kSum);
  for (size_t j = 0; j < block; ++j) {
    const int idx = r * int(block) + int(j);
    EXPECT_EQ(mine[j], float(100 * n * (n - 1) / 2 + n * idx)) << j;
  }
  std::vector<float> avg(block);
  w.reduce_scatter(send.data(), avg.data(), block, ReduceOp::kAvg);
  EXPECT_FLOAT_EQ(avg[0], mine[0] / float(n));

  // In place: the input blocks in recv, this rank's sum left in its own block.
  std::vector<float> inplace(send);
  w.reduce_scatter<float>(nullptr, inplace.data(), block, ReduceOp::kSum);
  for (size_t j = 0; j < block; ++j) EXPECT_EQ(inplace[size_t(r) * block + j], mine[j]) << j;
  inplace = send;
  w.reduce_scatter<float>(nullptr, inplace.data(), block, ReduceOp::kAvg);
  EXPECT_FLOAT_EQ(inplace[size_t(r) * block], mine[0] / float(n));

  std::vector<int32_t> gathered(2 * size_t(n));
  const int32_t pair[2] = {r, -r};
  w.all_gather(pair, gathered.data(), 2);
  for (int q = 0; q < n; ++q) {
    EXPECT_EQ(gathered[size_t(2 * q)], q);
    EXPECT_EQ(gathered[size_t(2 * q + 1)], -q);
  }
  // In place: this rank's block already sits in recv; the others' blocks are overwritten.
  std::vector<int32_t> in_place(3 * size_t(n), -1);
  for (int j = 0; j < 3; ++j) in_place[size_t(3 * r + j)] = 10 * r + j;
  w.all_gather<int32_t>(nullptr, in_place.data(), 3);
  for (int q = 0; q < n; ++q)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(in_place[size_t(3 * q + j)], 10 * q + j) << q << " " << j;
  std::vector<uint8_t> bytes(5, uint8_t(r));
  if (r == n - 1) std::iota(bytes.begin(), bytes.end(), uint8_t(7));
  w.broadcast(bytes.data(), bytes.size(), n - 1);
  EXPECT_EQ(bytes, (std::vector<uint8_t>{7, 8, 9, 10, 11}));
}

TEST(MpiComm, AllToAllVWithUnevenCounts) {
  MpiComm w(MPI_COMM_WORLD, "world");
  const int r = w.rank(), n = w.size();
  // Rank r sends (r + q) % 3 values to rank q, each value 1000 r + q.
  std::vector<size_t> send_counts(static_cast<size_t>(n)), recv_counts(static_cast<size_t>(n));
  std::vector<float> send;
  for (int q = 0; q < n; ++q) {
    send_counts[size_t(q)] = size_t((r + q) % 3);
    recv_counts[size_t(q)] = size_t((q + r) % 3);
    send.insert(send.end(), send_counts[size_t(q)], float(1000 * r + q));
  }
  std::vector<float> recv(std::accumulate(recv_counts.begin(), recv_counts.end(), size_t(0)), -1.0f);
  w.all_to_all_v(send.data(), send_counts, recv.data(), recv_counts);
  std::vector<float> want;
  for (int q = 0; q < n; ++q) want.insert(want.end(), recv_counts[size_t(q)], float(1000 * q + r));
  EXPECT_EQ(recv, want);
  std::vector<size_t> short_counts(1, 0);
  EXPECT_CONTAINS(error_of([&] { w.all_to_all_v(send.data(), short_counts, recv.data(), recv_counts); }),
                  "all_to_all_v on group world: 1 send and");
}

TEST(MpiComm, AsynchronousOperationsOverlap) {
  MpiComm w(MPI_COMM_WORLD, "world");
  const int r = w.rank(), n = w.size();
  std::vector<float> a(1000, 1.0f), b(10, float(r));
  int32_t token = 0, mine = r;
  // Two all_reduces and a ring exchange in flight at once, waited in another order.
  CommHandle ha = w.iall_reduce(a.data(), a.size(), CommType::f32, ReduceOp::kSum);
  CommHandle recv = w.irecv(&token, 1, CommType::i32, (r + n - 1) % n, 7);
  CommHandle hb = w.iall_reduce(b.data(), b.size(), CommType::f32, ReduceOp::kMax);
  CommHandle send = w.isend(&mine, 1, CommType::i32, (r + 1) % n, 7);
  hb->wait();
  recv->wait();
  send->wait();
  ha->wait();
  EXPECT_EQ(a[999], float(n));
  EXPECT_EQ(b[0], float(n - 1));
  EXPECT_EQ(token, (r + n - 1) % n);
  w.barrier();
}

TEST(MpiComm, SplitMakesSubGroups) {
  MpiComm w(MPI_COMM_WORLD, "world");
  const int r = w.rank(), n = w.size();
  auto half = w.split(r % 2, r, "parity");
  EXPECT_EQ(half->name(), "parity");
  EXPECT_EQ(half->size(), (n + 1 - r % 2) / 2);
  EXPECT_EQ(half->rank(), r / 2);
  int32_t v = r;
  half->all_reduce(&v, 1, ReduceOp::kSum);
  int32_t want = 0;
  for (int q = r % 2; q < n; q += 2) want += q;
  EXPECT_EQ(v, want);
}

TEST(MpiComm, TimeoutsNameOperationGroupRankAndBytes) {
  MpiComm w(MPI_COMM_WORLD, "world", /*timeout_seconds=*/0.2);
  const int r = w.rank(), n = w.size();
  // The last rank joins the all_reduce 1 s late: every other rank times out first.
  std::vector<float> data(256, 1.0f);
  if (r == n - 1) std::this_thread::sleep_for(std::chrono::seconds(1));
  CommHandle h = w.iall_reduce(data.data(), data.size(), CommType::f32, ReduceOp::kSum);
  if (r != n - 1) {
    EXPECT_EQ(error_of([&] { h->wait(); }),
              "MPI all_reduce timed out after 0.2 s on group world (rank " + std::to_string(r) + " of " +
                  std::to_string(n) +
                  ", 1024 bytes): a peer never arrived (dead, hung, or called another collective)");
  }
  ASSERT_TRUE(h->wait_for(30.0));  // the late rank arrived: the operation completes
  EXPECT_EQ(data[0], float(n));

  // A receive whose sender is late.
  if (r == 0) {
    int64_t x = 0;
    CommHandle rx = w.irecv(&x, 1, CommType::i64, 1, 3);
    EXPECT_CONTAINS(error_of([&] { rx->wait(); }), "MPI recv timed out after 0.2 s on group world (rank 0 of");
    EXPECT_CONTAINS(error_of([&] { rx->wait(); }), ", 8 bytes)");
    ASSERT_TRUE(rx->wait_for(30.0));
    EXPECT_EQ(x, 42);
  } else if (r == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    const int64_t x = 42;
    w.send(&x, 1, 0, 3);
  }
  MpiComm patient(MPI_COMM_WORLD, "world");
  patient.barrier();
}

TEST(MpiComm, BadArgumentsAreErrors) {
  MpiComm w(MPI_COMM_WORLD, "world");
  float x = 0;
  EXPECT_CONTAINS(error_of([&] { w.broadcast(&x, 1, w.size()); }), "broadcast on group world: root");
  EXPECT_CONTAINS(error_of([&] { w.send(&x, 1, -1); }), "send on group world: peer -1 outside");
  EXPECT_CONTAINS(error_of([&] { MpiComm bad(MPI_COMM_WORLD, "w", 0.0); }), "timeout must be positive");
}

}  // namespace
}  // namespace castor::parallel
