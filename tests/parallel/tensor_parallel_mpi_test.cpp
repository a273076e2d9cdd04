// Tensor-parallel layers under mpirun (tp = 2 and 4 ranks), each against the unsharded
// layer of the single-device builder with the same initial weights: a column-parallel
// linear (fused q|k|v-like segments, biases) and a row-parallel one (bias added after the
// reduction), with and without sequence parallelism; a norm under sequence parallelism;
// the vocabulary-parallel LM head with cross-entropy. Outputs, input gradients (summed
// over ranks where a rank holds a part) and every rank's slice of the weight gradients must
// match to float rounding.
#include "parallel/tensor_parallel.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/nn/layer_builder.h"
#include "parallel/logical_state.h"
#include "parallel/mpi_comm.h"

namespace castor::parallel {
namespace {

constexpr int64_t kC = 8, kRows = 8;

std::vector<float> randn(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = scale * normal(gen);
  return v;
}

void expect_near(const float* got, const float* want, int64_t n, const char* what, float tol = 2e-5f) {
  float worst = 0.0f, scale = 1e-6f;
  for (int64_t i = 0; i < n; ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  EXPECT_LE(worst / scale, tol) << what;
}

// Every param of `split` (a store holding this rank's shards) against the same-named param
// of `whole`: weights equal the slice (same init), gradients equal the slice of the whole
// gradients; those marked token_split once summed over tp, as the gradient reduction does.
void expect_grads_match(Communicator& tp, ParamStore& split, ParamStore& whole, bool any_token_split) {
  bool marked = false;
  for (Param& p : split.params()) {
    if (p.token_split) {
      tp.all_reduce(p.g, size_t(p.numel()), ReduceOp::kSum);
      marked = true;
    }
    const Param* w = whole.find(p.name);
    ASSERT_NE(w, nullptr) << p.name;
    std::vector<float> want(size_t(p.numel()));
    shard_extract(p, w->w, want.data());
    expect_near(p.w, want.data(), p.numel(), ("weights of " + p.name).c_str(), 0.0f);
    shard_extract(p, w->g, want.data());
    expect_near(p.g, want.data(), p.numel(), ("gradient of " + p.name).c_str());
  }
  EXPECT_EQ(marked, any_token_split);
}

class TensorParallelLayers : public ::testing::TestWithParam<bool> {  // sequence parallel?
 protected:
  MpiComm world_{MPI_COMM_WORLD, "tp"};
  std::unique_ptr<Backend> backend_ = make_cpu_backend(1);
};

// Columns [r-th slice of each segment] of a (rows, sum of segments) activation.
std::vector<float> column_slices(const std::vector<float>& whole, int64_t rows, const std::vector<int64_t>& segments,
                                 int rank, int ranks) {
  Param view;  // the activation seen as a param split along dim 1
  int64_t cols = 0;
  for (int64_t s : segments) cols += s;
  view.shape = {rows, cols};
  view.shard = {1, rank, ranks, segments};
  std::vector<float> out(static_cast<size_t>(rows * cols / ranks));
  shard_extract(view, whole.data(), out.data());
  return out;
}

TEST_P(TensorParallelLayers, ColumnAndRowEqualTheWholeLayers) {
  const bool sp = GetParam();
  const int tp = world_.size(), r = world_.rank();
  const int64_t seg = 2 * tp, F = 3 * seg;  // each of the three segments splits over tp
  const std::vector<int64_t> segments = {seg, seg, seg};
  const std::vector<nn::Linear::Piece> up = {{"up.weight", "up.bias", F, segments}};
  const nn::Linear::Piece down{"down.weight", "down.bias", kC};

  ParamStore whole_store, split_store;
  nn::LayerBuilder& single = nn::single_device();
  TensorParallel split(world_, sp);
  auto whole_up = single.column(whole_store, *backend_, kRows, kC, up, 0.5f);
  auto whole_down = single.row(whole_store, *backend_, kRows, F, down, 0.5f);
  auto split_up = split.column(split_store, *backend_, kRows, kC, up, 0.5f);
  auto split_down = split.row(split_store, *backend_, kRows, F, down, 0.5f);
  EXPECT_EQ(split_up->out_features(), F / tp);
  EXPECT_EQ(split_down->in_features(), F / tp);
  for (ParamStore* s : {&whole_store, &split_store}) {
    s->allocate(*backend_);
    s->initialize(7);
    s->zero_grads();
    for (Param& p : s->params()) {  // non-zero biases, so that adding them once is checked
      if (p.shape.rank() != 1) continue;
      std::vector<float> logical(static_cast<size_t>(p.shape.numel()));
      for (size_t i = 0; i < logical.size(); ++i) logical[i] = 0.01f * float(i + 1);
      shard_extract(p, logical.data(), p.w);
    }
  }
  // Under SP this rank holds rows [r * kRows / tp, (r + 1) * kRows / tp) outside the layers.
  const int64_t mine = sp ? kRows / tp : kRows, first = sp ? r * mine : 0;
  auto my_rows = [&](const std::vector<float>& v, int64_t cols) {
    return std::vector<float>(v.begin() + first * cols, v.begin() + (first + mine) * cols);
  };
  nn::Pass pass{1, kRows};

  // Column-parallel: input whole (SP: this rank's rows, gathered), output this rank's slice
  // of each segment for every row; the input gradient summed over ranks.
  const std::vector<float> x = randn(kRows * kC, 1), dh = randn(kRows * F, 2);
  Tensor h_whole = whole_up->forward(pass, nn::rows_view(const_cast<float*>(x.data()), kRows, kC));
  const std::vector<float> h_want = column_slices(std::vector<float>(h_whole.f32(), h_whole.f32() + kRows * F), kRows,
                                                  segments, r, tp);
  Tensor dx_whole = whole_up->backward(pass, nn::rows_view(const_cast<float*>(dh.data()), kRows, F));
  std::vector<float> x_mine = my_rows(x, kC);
  Tensor h = split_up->forward(pass, nn::rows_view(x_mine.data(), mine, kC));
  ASSERT_EQ(h.shape[0], kRows);
  expect_near(h.f32(), h_want.data(), kRows * F / tp, "column-parallel output");
  std::vector<float> dh_mine = column_slices(dh, kRows, segments, r, tp);
  Tensor dx = split_up->backward(pass, nn::rows_view(dh_mine.data(), kRows, F / tp));
  ASSERT_EQ(dx.shape[0], mine);
  expect_near(dx.f32(), dx_whole.f32() + first * kC, mine * kC, "column-parallel input gradient");

  // Row-parallel: input this rank's contiguous slice of the features, output summed over
  // ranks (SP: this rank's rows) plus the bias once.
  const std::vector<float> a = randn(kRows * F, 3), dy = randn(kRows * kC, 4);
  Tensor y_whole = whole_down->forward(pass, nn::rows_view(const_cast<float*>(a.data()), kRows, F));
  Tensor da_whole = whole_down->backward(pass, nn::rows_view(const_cast<float*>(dy.data()), kRows, kC));
  std::vector<float> a_mine = column_slices(a, kRows, {F}, r, tp);
  Tensor y = split_down->forward(pass, nn::rows_view(a_mine.data(), kRows, F / tp));
  ASSERT_EQ(y.shape[0], mine);
  expect_near(y.f32(), y_whole.f32() + first * kC, mine * kC, "row-parallel output");
  std::vector<float> dy_mine = my_rows(dy, kC);
  Tensor da = split_down->backward(pass, nn::rows_view(dy_mine.data(), mine, kC));
  const std::vector<float> da_want =
      column_slices(std::vector<float>(da_whole.f32(), da_whole.f32() + kRows * F), kRows, {F}, r, tp);
  expect_near(da.f32(), da_want.data(), kRows * F / tp, "row-parallel input gradient");
  expect_grads_match(world_, split_store, whole_store, sp);  // under SP the row bias's is a partial sum
}

TEST_P(TensorParallelLayers, NormEqualsTheWholeNorm) {
  const bool sp = GetParam();
  const int tp = world_.size(), r = world_.rank();
  for (Family family : {Family::kGpt2, Family::kLlama}) {
    ParamStore whole_store, split_store;
    TensorParallel split(world_, sp);
    auto whole = nn::single_device().norm(whole_store, *backend_, kRows, kC, family, "n", 1e-5f);
    auto part = split.norm(split_store, *backend_, kRows, kC, family, "n", 1e-5f);
    for (ParamStore* s : {&whole_store, &split_store}) {
      s->allocate(*backend_);
      s->initialize(3);
      s->zero_grads();
      for (Param& p : s->params())
        for (int64_t i = 0; i < p.numel(); ++i) p.w[i] += 0.1f * float(i % 3);
    }
    const std::vector<float> x = randn(kRows * kC, 4), dy = randn(kRows * kC, 5);
    nn::Pass pass{1, kRows};
    Tensor yw = whole->forward(pass, nn::rows_view(const_cast<float*>(x.data()), kRows, kC));
    Tensor dxw = whole->backward(pass, nn::rows_view(const_cast<float*>(dy.data()), kRows, kC));
    const int64_t mine = sp ? kRows / tp : kRows, first = sp ? r * mine : 0;
    std::vector<float> x_mine(x.begin() + first * kC, x.begin() + (first + mine) * kC);
    std::vector<float> dy_mine(dy.begin() + first * kC, dy.begin() + (first + mine) * kC);
    Tensor y = part->forward(pass, nn::rows_view(x_mine.data(), mine, kC));
    expect_near(y.f32(), yw.f32() + first * kC, mine * kC, "norm output");
    Tensor dx = part->backward(pass, nn::rows_view(dy_mine.data(), mine, kC));
    expect_near(dx.f32(), dxw.f32() + first * kC, mine * kC, "norm input gradient");
    expect_grads_match(world_, split_store, whole_store, sp);  // partial sums under SP
  }
}

INSTANTIATE_TEST_SUITE_P(SequenceParallel, TensorParallelLayers, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "on" : "off"; });

TEST(VocabParallelHead, EqualsTheFusedHeadOverTheWholeVocabulary) {
  MpiComm world(MPI_COMM_WORLD, "tp");
  auto backend = make_cpu_backend(1);
  const int tp = world.size(), r = world.rank();
  const int64_t V = 12 * tp, N = 10, C = 6, Vl = V / tp, chunk = 4;  // chunks of 4, 4 and 2 rows
  const std::vector<float> h = randn(N * C, 11), w = randn(V * C, 12, 0.7f), scale = randn(N, 13);
  std::vector<int32_t> targets;
  for (int64_t n = 0; n < N; ++n) targets.push_back(n == 3 ? -1 : int32_t((n * 7 + 5) % V));  // every rank's rows
  auto whole = nn::single_device().vocab_head(*backend, chunk, C, V);
  auto part = TensorParallel(world, false).vocab_head(*backend, chunk, C, V);
  std::vector<float> dh_whole(static_cast<size_t>(N * C)), dw_whole(static_cast<size_t>(V * C), 0.0f);
  std::vector<double> loss_whole(static_cast<size_t>(N));
  const auto rw = whole->xent(ref(h.data()), ref(w.data()), targets.data(), N, ref(dh_whole.data()), dw_whole.data(), scale.data(),
                              loss_whole.data());
  std::vector<float> dh(static_cast<size_t>(N * C)), dw(static_cast<size_t>(Vl * C), 0.0f);
  std::vector<double> loss(static_cast<size_t>(N));
  const auto rp = part->xent(ref(h.data()), ref(w.data() + r * Vl * C), targets.data(), N, ref(dh.data()), dw.data(), scale.data(),
                             loss.data());
  EXPECT_EQ(rp.count, rw.count);
  EXPECT_NEAR(rp.loss_sum, rw.loss_sum, 1e-5 * std::abs(rw.loss_sum));
  for (int64_t n = 0; n < N; ++n) EXPECT_NEAR(loss[size_t(n)], loss_whole[size_t(n)], 1e-5) << "row " << n;
  world.all_reduce(dh.data(), dh.size(), ReduceOp::kSum);  // the kEnter region's backward
  expect_near(dh.data(), dh_whole.data(), N * C, "hidden gradient");
  expect_near(dw.data(), dw_whole.data() + r * Vl * C, Vl * C, "this rank's head gradient");
  // Forward only (evaluation): the same losses, nothing written.
  const auto eval = part->xent(ref(h.data()), ref(w.data() + r * Vl * C), targets.data(), N, {}, nullptr, nullptr, nullptr);
  EXPECT_NEAR(eval.loss_sum, rp.loss_sum, 1e-9 * std::abs(rp.loss_sum) + 1e-9);
}

// Checkpoint state: the shards gathered over tp are the whole tensors (the single-device
// store with the same seed), cut back out they are the shards, and a replicated param that
// differs across ranks is an error naming it.
TEST(LogicalState, GathersShardsAndChecksReplicatedParams) {
  MpiComm world(MPI_COMM_WORLD, "tp");
  auto backend = make_cpu_backend(1);
  const int64_t F = 4 * world.size();
  TensorParallel split(world, true);
  ParamStore whole_store, local;
  for (auto [store, builder] : {std::pair<ParamStore*, nn::LayerBuilder*>{&whole_store, &nn::single_device()},
                                std::pair<ParamStore*, nn::LayerBuilder*>{&local, &split}}) {
    builder->column(*store, *backend, kRows, kC, {{"up.weight", "up.bias", F}}, 0.5f);
    builder->norm(*store, *backend, kRows, kC, Family::kGpt2, "ln", 1e-5f);
    builder->row(*store, *backend, kRows, F, {"down.weight", "down.bias", kC}, 0.5f);
    store->allocate(*backend);
    store->initialize(5);
  }
  std::vector<float> m(local.arena_elems()), v(local.arena_elems());
  for (Param& p : local.params())
    for (int64_t i = 0; i < p.numel(); ++i) {
      m[p.offset + size_t(i)] = 2.0f * p.w[i];  // moments: a function of the weights, so their shards match too
      v[p.offset + size_t(i)] = p.w[i] * p.w[i];
    }
  const ArenaMoments moments{m.data(), v.data()};
  const SplitGroups groups{&world, nullptr};
  LogicalState state(local, groups, 0, *backend, true);
  gather_logical(groups, local, &moments, state);
  for (const Param& w : whole_store.params()) {
    const Param& got = state.at(w.name);
    ASSERT_EQ(got.numel(), w.numel()) << w.name;
    for (int64_t i = 0; i < w.numel(); ++i) {
      ASSERT_EQ(got.w[i], w.w[i]) << w.name << " element " << i;
      ASSERT_EQ(state.exp_avg.f32()[got.offset + size_t(i)], 2.0f * w.w[i]) << w.name;
    }
  }
  ParamStore back;  // the same layout, zeros, filled from the whole state
  split.column(back, *backend, kRows, kC, {{"up.weight", "up.bias", F}}, 0.5f);
  split.norm(back, *backend, kRows, kC, Family::kGpt2, "ln", 1e-5f);
  split.row(back, *backend, kRows, F, {"down.weight", "down.bias", kC}, 0.5f);
  back.allocate(*backend);
  std::vector<float> m2(back.arena_elems()), v2(back.arena_elems());
  const ArenaMoments moments2{m2.data(), v2.data()};
  scatter_logical(state, back, &moments2);
  for (size_t i = 0; i < local.arena_elems(); ++i) {
    ASSERT_EQ(back.weights()[i], local.weights()[i]) << "arena element " << i;
    ASSERT_EQ(m2[i], m[i]);
    ASSERT_EQ(v2[i], v[i]);
  }
  if (world.rank() == 1) local.find("ln.weight")->w[0] += 1e-6f;  // one rank drifts
  try {
    gather_logical(groups, local, nullptr, state);
    ADD_FAILURE() << "a replicated param that differs across ranks was gathered";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ln.weight"), std::string::npos) << e.what();
  }
}

TEST(TensorParallelLayout, RejectsSplitsThatDoNotDivide) {
  ModelConfig cfg;
  cfg.d_model = 32;
  cfg.n_heads = 4;
  cfg.vocab_size = 384;
  cfg.max_seq_len = 32;
  cfg.validate();
  EXPECT_NO_THROW(TensorParallel::check_layout(cfg, 4, 1, true, 2, 16));
  EXPECT_THROW(TensorParallel::check_layout(cfg, 8, 1, false, 2, 16), Error);  // heads
  EXPECT_THROW(TensorParallel::check_layout(cfg, 4, 1, true, 1, 15), Error);   // SP rows
  cfg.vocab_size = 257;
  try {
    TensorParallel::check_layout(cfg, 2, 1, false, 2, 16);
    ADD_FAILURE() << "a vocabulary of 257 rows split over 2 ranks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--model.vocab_size 384"), std::string::npos) << e.what();
  }
  cfg.vocab_size = 384;
  EXPECT_THROW(TensorParallel::check_layout(cfg, 1, 2, false, 2, 16), Error);  // ep without experts
  cfg.moe_experts = 4;
  cfg.moe_top_k = 2;
  EXPECT_NO_THROW(TensorParallel::check_layout(cfg, 1, 4, false, 2, 16));
  EXPECT_THROW(TensorParallel::check_layout(cfg, 1, 3, false, 2, 16), Error);  // ep not dividing experts
}

}  // namespace
}  // namespace castor::parallel
