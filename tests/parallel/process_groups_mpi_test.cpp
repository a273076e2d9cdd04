// ProcessGroups under mpirun (2 and 4 ranks): every group communicator has the ranks the
// Mesh lists, in its order, checked by gathering world ranks over each group.
#include "parallel/process_groups.h"

#include <gtest/gtest.h>

#include <vector>

namespace castor::parallel {
namespace {

void expect_members(Communicator& c, const std::vector<int>& want, int world_rank) {
  ASSERT_EQ(c.size(), int(want.size())) << c.name();
  std::vector<int32_t> got(want.size());
  const int32_t me = world_rank;
  c.all_gather(&me, got.data(), 1);
  EXPECT_EQ(std::vector<int>(got.begin(), got.end()), want) << c.name();
}

TEST(ProcessGroups, GroupsMatchTheMeshForEveryShape) {
  MpiComm world(MPI_COMM_WORLD, "world");
  const int n = world.size();
  std::vector<MeshShape> shapes = {{1, n, 1, 1}, {n, 1, 1, 1}, {1, 1, n, 1}, {1, n, 1, n}};
  if (n == 4) shapes.push_back({2, 2, 1, 1}), shapes.push_back({1, 2, 2, 2}), shapes.push_back({2, 1, 2, 1});
  for (const MeshShape& s : shapes) {
    const Mesh mesh(s, n);
    const ProcessGroups g = ProcessGroups::build(mesh, world);
    const GroupRanks want = mesh.groups(world.rank());
    SCOPED_TRACE(s.str());
    expect_members(*g.tp, want.tp, world.rank());
    expect_members(*g.dp, want.dp, world.rank());
    expect_members(*g.pp, want.pp, world.rank());
    expect_members(*g.ep, want.ep, world.rank());
    expect_members(*g.edp, want.edp, world.rank());
    expect_members(*g.tp_dp, want.tp_dp, world.rank());
    expect_members(*g.tp_edp, want.tp_edp, world.rank());
    EXPECT_EQ(g.world->size(), n);
    EXPECT_EQ(g.coord.dp, mesh.coord(world.rank()).dp);
    EXPECT_EQ(g.dp->name(), "dp");
  }
}

}  // namespace
}  // namespace castor::parallel
