// Mesh: coordinates and group membership from the Megatron rank order (see mesh.h).
#include "parallel/mesh.h"

#include <algorithm>
#include <set>

#include "core/error.h"

namespace castor::parallel {

std::string MeshShape::str() const {
  return cat("tp=", tp, " dp=", dp, " pp=", pp, " ep=", ep);
}

Mesh::Mesh(MeshShape shape, int world_size) : shape_(shape) {
  auto layout = [&] { return cat("(", shape_.str(), ", world size ", world_size, ")"); };
  CASTOR_CHECK(world_size > 0, "invalid world size ", world_size);
  CASTOR_CHECK(shape_.tp > 0 && shape_.pp > 0 && shape_.ep > 0 && shape_.dp >= 0,
               "parallel degrees must be positive ", layout());
  if (shape_.dp == 0) {
    CASTOR_CHECK(world_size % (shape_.tp * shape_.pp) == 0, "tp * pp does not divide the world size ", layout());
    shape_.dp = world_size / (shape_.tp * shape_.pp);
  }
  CASTOR_CHECK(shape_.world() == world_size, "tp * dp * pp = ", shape_.world(), " differs from the world size ",
               layout());
  CASTOR_CHECK(shape_.dp % shape_.ep == 0, "ep must divide dp ", layout());
}

RankCoord Mesh::coord(int rank) const {
  CASTOR_CHECK(rank >= 0 && rank < shape_.world(), "rank ", rank, " outside the mesh (", shape_.str(), ")");
  RankCoord c;
  c.tp = rank % shape_.tp;
  c.dp = (rank / shape_.tp) % shape_.dp;
  c.pp = rank / (shape_.tp * shape_.dp);
  c.ep = c.dp % shape_.ep;
  c.edp = c.dp / shape_.ep;
  return c;
}

int Mesh::rank_of(int tp_rank, int dp_rank, int pp_rank) const {
  return tp_rank + shape_.tp * (dp_rank + shape_.dp * pp_rank);
}

GroupRanks Mesh::groups(int rank) const {
  const RankCoord c = coord(rank);
  GroupRanks g;
  for (int t = 0; t < shape_.tp; ++t) g.tp.push_back(rank_of(t, c.dp, c.pp));
  for (int d = 0; d < shape_.dp; ++d) g.dp.push_back(rank_of(c.tp, d, c.pp));
  for (int p = 0; p < shape_.pp; ++p) g.pp.push_back(rank_of(c.tp, c.dp, p));
  for (int e = 0; e < shape_.ep; ++e) g.ep.push_back(rank_of(c.tp, c.edp * shape_.ep + e, c.pp));
  for (int k = 0; k < shape_.edp(); ++k) g.edp.push_back(rank_of(c.tp, k * shape_.ep + c.ep, c.pp));
  for (int d = 0; d < shape_.dp; ++d)
    for (int t = 0; t < shape_.tp; ++t) g.tp_dp.push_back(rank_of(t, d, c.pp));
  for (int k = 0; k < shape_.edp(); ++k)
    for (int t = 0; t < shape_.tp; ++t) g.tp_edp.push_back(rank_of(t, k * shape_.ep + c.ep, c.pp));
  return g;
}

std::vector<std::vector<int>> Mesh::all_groups(std::vector<int> GroupRanks::*member) const {
  std::set<std::vector<int>> seen;
  for (int r = 0; r < shape_.world(); ++r) seen.insert(groups(r).*member);
  std::vector<std::vector<int>> out(seen.begin(), seen.end());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.front() < b.front(); });
  return out;
}

std::vector<std::vector<int>> Mesh::all_tp_groups() const { return all_groups(&GroupRanks::tp); }
std::vector<std::vector<int>> Mesh::all_dp_groups() const { return all_groups(&GroupRanks::dp); }
std::vector<std::vector<int>> Mesh::all_pp_groups() const { return all_groups(&GroupRanks::pp); }
std::vector<std::vector<int>> Mesh::all_ep_groups() const { return all_groups(&GroupRanks::ep); }
std::vector<std::vector<int>> Mesh::all_edp_groups() const { return all_groups(&GroupRanks::edp); }
std::vector<std::vector<int>> Mesh::all_tp_dp_groups() const { return all_groups(&GroupRanks::tp_dp); }
std::vector<std::vector<int>> Mesh::all_tp_edp_groups() const { return all_groups(&GroupRanks::tp_edp); }

}  // namespace castor::parallel
