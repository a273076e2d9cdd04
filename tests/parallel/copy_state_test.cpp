// copy_state: a model's weights and AdamW moments copied by name into a host LogicalState
// (how a GPU run writes checkpoints) and back, on the cpu backend: every value arrives at
// the param of the same name, whatever the two arenas' layouts.
#include <gtest/gtest.h>

#include <numeric>

#include "core/model.h"
#include "parallel/logical_state.h"

namespace castor::parallel {
namespace {

TEST(CopyState, RoundTripsWeightsAndMomentsByName) {
  ModelConfig c;
  c.family = Family::kLlama;
  c.vocab_size = 41;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.max_seq_len = 8;
  auto backend = make_cpu_backend(1);
  ParamStore store;
  Transformer model(c, store, *backend, 1, 8);
  store.allocate(*backend, 7);  // padded: the arena layout differs from the whole state's
  store.initialize(5);
  Buffer m(*backend, store.arena_elems() * sizeof(float)), v(*backend, store.arena_elems() * sizeof(float));
  std::iota(m.f32(), m.f32() + store.arena_elems(), 1.0f);
  std::iota(v.f32(), v.f32() + store.arena_elems(), -5.0f);
  const ArenaMoments moments{m.f32(), v.f32()};

  LogicalState whole(store, {}, 0, *backend, true);
  copy_state(store, &moments, *backend, whole, CopyTo::kWhole);
  for (const Param& p : store.params()) {
    const Param& w = whole.at(p.name);
    for (int64_t i = 0; i < p.numel(); ++i) {
      ASSERT_EQ(w.w[i], p.w[i]) << p.name;
      ASSERT_EQ(whole.moments().exp_avg[w.offset + size_t(i)], m.f32()[p.offset + size_t(i)]) << p.name;
      ASSERT_EQ(whole.moments().exp_avg_sq[w.offset + size_t(i)], v.f32()[p.offset + size_t(i)]) << p.name;
    }
  }
  // Back: changed whole values land in the local arena at each param's offset.
  for (Param& p : whole.store.params()) p.w[0] = float(p.offset) + 0.5f;
  whole.moments().exp_avg[0] = 42.0f;
  copy_state(store, &moments, *backend, whole, CopyTo::kLocal);
  for (const Param& p : store.params()) EXPECT_EQ(p.w[0], float(whole.at(p.name).offset) + 0.5f) << p.name;
  EXPECT_EQ(m.f32()[store.params().front().offset], 42.0f);
}

}  // namespace
}  // namespace castor::parallel
