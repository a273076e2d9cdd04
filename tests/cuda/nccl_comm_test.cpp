// NcclComm on one rank and one GPU (what a one-GPU machine can run): collectives on device
// buffers ordered after the producer (compute) stream by its event, host buffers staged
// through device memory, and nccl_groups turning every group of a one-rank mesh into NCCL.
// On one rank the results equal the inputs; these tests check the plumbing (staging,
// ordering, in-place forms), the MPI tests check the arithmetic of the Communicator contract.
#include <mpi.h>

#include <numeric>
#include <vector>

#include "parallel/nccl/nccl_comm.h"
#include "tests/cuda/cuda_test_util.h"

namespace castor::cuda_test {
namespace {

class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) MPI_Init(nullptr, nullptr);
  }
  void TearDown() override {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  }
};
[[maybe_unused]] ::testing::Environment* const mpi_env = ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

struct Stream {
  Stream() { EXPECT_EQ(cudaStreamCreate(&s), cudaSuccess); }
  ~Stream() { cudaStreamDestroy(s); }
  cudaStream_t s = nullptr;
};

TEST(NcclComm, DeviceAllReduceWaitsForTheProducerStream) {
  parallel::MpiComm self(MPI_COMM_SELF, "self");
  Stream producer;
  parallel::NcclComm comm(self, 0, 60.0, producer.s);
  const std::vector<float> host = random_floats(1 << 20, fresh_seed());
  DeviceArray<float> d(host.size());
  d.poison();
  // The upload is queued on the producer stream; the collective must come after it.
  ASSERT_EQ(cudaMemcpyAsync(d.get(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, producer.s),
            cudaSuccess);
  comm.all_reduce(d.get(), host.size(), ReduceOp::kSum);
  EXPECT_EQ(d.download(), host);
  expect_device_clean();
}

TEST(NcclComm, HostBuffersAreStaged) {
  parallel::MpiComm self(MPI_COMM_SELF, "self");
  parallel::NcclComm comm(self, 0);
  std::vector<double> sums = {1.5, -2.25, 1e300};
  comm.all_reduce(sums.data(), sums.size(), ReduceOp::kSum);
  EXPECT_EQ(sums, (std::vector<double>{1.5, -2.25, 1e300}));
  std::vector<int64_t> mine = {7, 8, 9}, all(3, -1);
  comm.all_gather(mine.data(), all.data(), mine.size());
  EXPECT_EQ(all, mine);
  std::vector<float> b = {3.0f, 4.0f};
  comm.broadcast(b.data(), b.size(), 0);
  EXPECT_EQ(b, (std::vector<float>{3.0f, 4.0f}));
  comm.barrier();
  expect_device_clean();
}

TEST(NcclComm, InPlaceReduceScatterAndAllGatherOnDevice) {
  parallel::MpiComm self(MPI_COMM_SELF, "self");
  parallel::NcclComm comm(self, 0);
  std::vector<float> host(1000);
  std::iota(host.begin(), host.end(), 0.0f);
  DeviceArray<float> d(host);
  comm.reduce_scatter<float>(nullptr, d.get(), host.size(), ReduceOp::kSum);  // one rank: its slice is all
  comm.all_gather<float>(nullptr, d.get(), host.size());
  EXPECT_EQ(d.download(), host);
  expect_device_clean();
}

TEST(NcclComm, GroupsOfAOneRankMeshAllBecomeNccl) {
  parallel::MpiComm world(MPI_COMM_WORLD, "world");
  if (world.size() != 1) GTEST_SKIP() << "one-rank test";
  const parallel::Mesh mesh({1, 1, 1, 1}, 1);
  const parallel::ProcessGroups groups = parallel::nccl_groups(parallel::ProcessGroups::build(mesh, world), 0, nullptr);
  for (const auto& c : {groups.world, groups.tp, groups.dp, groups.ep, groups.edp, groups.pp, groups.tp_dp,
                        groups.tp_edp}) {
    ASSERT_NE(dynamic_cast<parallel::NcclComm*>(c.get()), nullptr) << c->name();
    EXPECT_EQ(c->size(), 1);
  }
  double norm = 2.0;
  groups.world->all_reduce(&norm, 1, ReduceOp::kSum);
  EXPECT_EQ(norm, 2.0);
}

}  // namespace
}  // namespace castor::cuda_test
