// ProcessGroups: one communicator per kind of group a rank belongs to (world, tp, dp, ep,
// edp, pp, tp_dp, tp_edp), built once from the Mesh by splitting the world communicator, and passed
// down as a value (copies share the communicators). No globals.
#pragma once
#include <memory>

#include "core/communicator.h"
#include "parallel/mesh.h"
#include "parallel/mpi_comm.h"

namespace castor::parallel {

struct ProcessGroups {
  MeshShape shape;
  RankCoord coord;
  std::shared_ptr<Communicator> world, tp, dp, ep, edp, pp, tp_dp, tp_edp;

  // Collective over `world`: every rank of it must call this with the same mesh.
  static ProcessGroups build(const Mesh& mesh, const MpiComm& world);
};

}  // namespace castor::parallel
