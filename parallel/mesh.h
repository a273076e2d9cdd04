// Mesh: the process layout world = pp x dp x tp in Megatron order,
//   rank = tp_rank + tp * (dp_rank + dp * pp_rank),
// with expert parallelism inside data parallelism: ep divides dp, dp_rank = edp_rank * ep
// + ep_rank, experts sharded over ep and replicated over edp = dp / ep.
// Worked example, tp-dp-pp 2-2-2: tp groups [[0,1],[2,3],[4,5],[6,7]], dp groups
// [[0,2],[1,3],[4,6],[5,7]], pp groups [[0,4],[1,5],[2,6],[3,7]].
#pragma once
#include <string>
#include <vector>

namespace castor::parallel {

struct MeshShape {
  int tp = 1, dp = 1, pp = 1, ep = 1;
  int world() const { return tp * dp * pp; }
  int edp() const { return dp / ep; }
  std::string str() const;  // "tp=2 dp=4 pp=1 ep=2"
};

struct RankCoord {
  int tp = 0, dp = 0, pp = 0, ep = 0, edp = 0;
};

// The ranks of each group a rank belongs to, in group-rank order. tp_dp: the tp x dp ranks
// of the rank's pipeline stage; tp_edp: those of them with the rank's ep coordinate (the
// ranks that hold the same experts). Both are where gradients of MoE layers are reduced when
// tp ranks split an MoE layer's tokens.
struct GroupRanks {
  std::vector<int> tp, dp, pp, ep, edp, tp_dp, tp_edp;
};

class Mesh {
 public:
  // dp == 0 derives dp from the world size. Rejects a layout that does not fit with one
  // line printing every degree and the world size.
  Mesh(MeshShape shape, int world_size);

  const MeshShape& shape() const { return shape_; }
  RankCoord coord(int rank) const;
  int rank_of(int tp_rank, int dp_rank, int pp_rank) const;
  GroupRanks groups(int rank) const;
  // Every group of one kind, each listed once, ordered by their first rank.
  std::vector<std::vector<int>> all_tp_groups() const;
  std::vector<std::vector<int>> all_dp_groups() const;
  std::vector<std::vector<int>> all_pp_groups() const;
  std::vector<std::vector<int>> all_ep_groups() const;
  std::vector<std::vector<int>> all_edp_groups() const;
  std::vector<std::vector<int>> all_tp_dp_groups() const;
  std::vector<std::vector<int>> all_tp_edp_groups() const;

 private:
  std::vector<std::vector<int>> all_groups(std::vector<int> GroupRanks::*member) const;
  MeshShape shape_;
};

}  // namespace castor::parallel
