// ProcessGroups::build: each kind of group is an MPI_Comm_split of the world with the
// group's index as color and the rank's place in it as key, so group ranks follow the
// Mesh's order (tests/parallel/process_groups_mpi_test.cpp).
#include "parallel/process_groups.h"

#include <algorithm>

#include "core/error.h"

namespace castor::parallel {
namespace {

std::shared_ptr<Communicator> split_by(const MpiComm& world, const std::vector<std::vector<int>>& groups,
                                       const char* name) {
  const int me = world.rank();
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto it = std::find(groups[g].begin(), groups[g].end(), me);
    if (it != groups[g].end()) return world.split(int(g), int(it - groups[g].begin()), name);
  }
  CASTOR_FAIL("rank ", me, " is in no ", name, " group of the mesh");
}

}  // namespace

ProcessGroups ProcessGroups::build(const Mesh& mesh, const MpiComm& world) {
  CASTOR_CHECK(world.size() == mesh.shape().world(), "mesh ", mesh.shape().str(), " needs ", mesh.shape().world(),
               " ranks, the world has ", world.size());
  ProcessGroups g;
  g.shape = mesh.shape();
  g.coord = mesh.coord(world.rank());
  g.world = world.split(0, world.rank(), "world");
  g.tp = split_by(world, mesh.all_tp_groups(), "tp");
  g.dp = split_by(world, mesh.all_dp_groups(), "dp");
  g.pp = split_by(world, mesh.all_pp_groups(), "pp");
  g.ep = split_by(world, mesh.all_ep_groups(), "ep");
  g.edp = split_by(world, mesh.all_edp_groups(), "edp");
  g.tp_dp = split_by(world, mesh.all_tp_dp_groups(), "tp_dp");
  g.tp_edp = split_by(world, mesh.all_tp_edp_groups(), "tp_edp");
  return g;
}

}  // namespace castor::parallel
