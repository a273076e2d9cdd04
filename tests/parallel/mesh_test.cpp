// Mesh: golden tables of rank groups for several shapes, coordinates round-trip, and
// layouts that do not fit rejected with every degree and the world size in the message.
#include "parallel/mesh.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "support/testing.h"

namespace castor::parallel {
namespace {

using Groups = std::vector<std::vector<int>>;

TEST(Mesh, TpDpPp222) {
  Mesh m({2, 2, 2, 1}, 8);
  EXPECT_EQ(m.all_tp_groups(), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(m.all_dp_groups(), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(m.all_pp_groups(), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(m.all_ep_groups(), (Groups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(m.all_edp_groups(), m.all_dp_groups());
}

TEST(Mesh, Tp2Dp4Ep2) {
  Mesh m({2, 4, 1, 2}, 8);
  EXPECT_EQ(m.all_dp_groups(), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  // ep is the inner part of dp: dp ranks {0,1} and {2,3} of each dp group.
  EXPECT_EQ(m.all_ep_groups(), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(m.all_edp_groups(), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  // MoE gradients under tp: every rank of the stage, and those holding the same experts.
  EXPECT_EQ(m.all_tp_dp_groups(), (Groups{{0, 1, 2, 3, 4, 5, 6, 7}}));
  EXPECT_EQ(m.all_tp_edp_groups(), (Groups{{0, 1, 4, 5}, {2, 3, 6, 7}}));
  const RankCoord c = m.coord(6);
  EXPECT_EQ(c.tp, 0);
  EXPECT_EQ(c.dp, 3);
  EXPECT_EQ(c.ep, 1);
  EXPECT_EQ(c.edp, 1);
}

TEST(Mesh, Dp4Ep4DerivedDp) {
  Mesh m({1, 0, 1, 4}, 4);
  EXPECT_EQ(m.shape().dp, 4);
  EXPECT_EQ(m.all_ep_groups(), (Groups{{0, 1, 2, 3}}));
  EXPECT_EQ(m.all_edp_groups(), (Groups{{0}, {1}, {2}, {3}}));
  EXPECT_EQ(m.all_tp_groups(), (Groups{{0}, {1}, {2}, {3}}));
}

TEST(Mesh, CoordinatesRoundTripForEveryRank) {
  Mesh m({2, 3, 2, 3}, 12);
  for (int r = 0; r < 12; ++r) {
    const RankCoord c = m.coord(r);
    EXPECT_EQ(m.rank_of(c.tp, c.dp, c.pp), r);
    const GroupRanks g = m.groups(r);
    EXPECT_EQ(g.tp[size_t(c.tp)], r);
    EXPECT_EQ(g.dp[size_t(c.dp)], r);
    EXPECT_EQ(g.pp[size_t(c.pp)], r);
    EXPECT_EQ(g.ep[size_t(c.ep)], r);
    EXPECT_EQ(g.edp[size_t(c.edp)], r);
  }
}

TEST(Mesh, RejectsLayoutsThatDoNotFitNamingEveryDegree) {
  EXPECT_CONTAINS(testing::error_of([] { Mesh({2, 2, 1, 1}, 8); }),
                  "tp * dp * pp = 4 differs from the world size (tp=2 dp=2 pp=1 ep=1, world size 8)");
  EXPECT_CONTAINS(testing::error_of([] { Mesh({3, 0, 1, 1}, 8); }),
                  "tp * pp does not divide the world size (tp=3 dp=0 pp=1 ep=1, world size 8)");
  EXPECT_CONTAINS(testing::error_of([] { Mesh({1, 4, 1, 3}, 4); }),
                  "ep must divide dp (tp=1 dp=4 pp=1 ep=3, world size 4)");
  EXPECT_CONTAINS(testing::error_of([] { Mesh({0, 1, 1, 1}, 1); }), "parallel degrees must be positive");
}

}  // namespace
}  // namespace castor::parallel
