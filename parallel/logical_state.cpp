// Gathers tensor-parallel shards into logical tensors and cuts them back out (see
// logical_state.h). One all-gather per sharded param and array; replicated params are
// compared across ranks bit for bit (they must have stayed in sync).
#include "parallel/logical_state.h"

#include <cstring>
#include <vector>

#include "core/error.h"

namespace castor::parallel {

LogicalState::LogicalState(const ParamStore& local, Backend& backend, bool with_moments) {
  for (const Param& p : local.params()) store.add(p.name, p.shape, p.init, p.decay);
  store.allocate(backend);
  if (with_moments) {
    exp_avg = Buffer(backend, store.arena_elems() * sizeof(float));
    exp_avg_sq = Buffer(backend, store.arena_elems() * sizeof(float));
  }
}

namespace {

uint64_t bits_hash(const float* x, int64_t n) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char* b = reinterpret_cast<const unsigned char*>(x);
  for (size_t i = 0; i < size_t(n) * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

void gather_one(Communicator& tp, const Param& p, const float* part, float* logical, std::vector<float>& parts,
                const char* what) {
  if (!p.shard.sharded()) {
    std::memcpy(logical, part, size_t(p.numel()) * sizeof(float));
    if (tp.size() > 1) {  // replicated: every tp rank must hold the same bits
      int64_t h = int64_t(bits_hash(part, p.numel())), lo = h, hi = h;
      tp.all_reduce(&lo, 1, ReduceOp::kMax);
      hi = -h;
      tp.all_reduce(&hi, 1, ReduceOp::kMax);
      CASTOR_CHECK(lo == h && -hi == h, "the ", what, " of ", p.name,
                   " differ across tensor-parallel ranks (a replicated parameter went out of sync)");
    }
    return;
  }
  CASTOR_CHECK(p.shard.ranks == tp.size(), p.name, ": sharded over ", p.shard.ranks, " ranks, tp group has ",
               tp.size());
  parts.resize(size_t(p.numel()) * size_t(tp.size()));
  tp.all_gather(part, parts.data(), size_t(p.numel()));
  for (int r = 0; r < tp.size(); ++r) shard_insert(p, r, parts.data() + size_t(r) * size_t(p.numel()), logical);
}

}  // namespace

void gather_logical(Communicator& tp, const ParamStore& local, const ArenaMoments* local_moments, LogicalState& whole) {
  std::vector<float> parts;
  const auto& lp = local.params();
  const auto& wp = whole.store.params();
  CASTOR_CHECK(lp.size() == wp.size(), "gather_logical: stores differ");
  for (size_t i = 0; i < lp.size(); ++i) {
    gather_one(tp, lp[i], lp[i].w, wp[i].w, parts, "weights");
    if (local_moments && whole.exp_avg.data()) {
      gather_one(tp, lp[i], local_moments->exp_avg + lp[i].offset, whole.exp_avg.f32() + wp[i].offset, parts,
                 "AdamW first moments");
      gather_one(tp, lp[i], local_moments->exp_avg_sq + lp[i].offset, whole.exp_avg_sq.f32() + wp[i].offset, parts,
                 "AdamW second moments");
    }
  }
}

void scatter_logical(const LogicalState& whole, ParamStore& local, const ArenaMoments* local_moments) {
  auto& lp = local.params();
  const auto& wp = whole.store.params();
  CASTOR_CHECK(lp.size() == wp.size(), "scatter_logical: stores differ");
  for (size_t i = 0; i < lp.size(); ++i) {
    shard_extract(lp[i], wp[i].w, lp[i].w);
    if (local_moments && whole.exp_avg.data()) {
      shard_extract(lp[i], whole.exp_avg.f32() + wp[i].offset, local_moments->exp_avg + lp[i].offset);
      shard_extract(lp[i], whole.exp_avg_sq.f32() + wp[i].offset, local_moments->exp_avg_sq + lp[i].offset);
    }
  }
}

}  // namespace castor::parallel
