// Gathers tensor-parallel shards and expert-parallel experts into logical tensors and cuts
// them back out (see logical_state.h). One all-gather per split param and array; params
// replicated over tp are compared across its ranks bit for bit (they must stay in sync).
#include "parallel/logical_state.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace castor::parallel {

namespace {

bool split_by(const Communicator* c) { return c && c->size() > 1; }

// "...experts.<e>...." with the expert index replaced (core/nn/moe.cpp names experts so).
std::string with_expert(const std::string& name, int64_t e, int64_t* old_index = nullptr) {
  static const std::string key = ".experts.";
  const size_t at = name.find(key);
  CASTOR_CHECK(at != std::string::npos, "expert param ", name, " without '", key, "' in its name");
  const size_t digits = at + key.size(), end = name.find('.', digits);
  if (old_index) *old_index = std::stoll(name.substr(digits, end - digits));
  return name.substr(0, digits) + std::to_string(e) + name.substr(end);
}

uint64_t bits_hash(const float* x, int64_t n) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char* b = reinterpret_cast<const unsigned char*>(x);
  for (size_t i = 0; i < size_t(n) * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

// Every rank of tp must hold the same bits of a replicated param.
void check_replicated(Communicator& tp, const Param& p, const float* x, const char* what) {
  const int64_t h = int64_t(bits_hash(x, p.numel()));
  int64_t v[2] = {h, -h};  // max and -min in one reduction
  tp.all_reduce(v, 2, ReduceOp::kMax);
  CASTOR_CHECK(v[0] == h && -v[1] == h, "the ", what, " of ", p.name,
               " differ across tensor-parallel ranks (a replicated parameter went out of sync)");
}

}  // namespace

LogicalState::LogicalState(const ParamStore& local, const SplitGroups& groups, int64_t experts, Backend& backend,
                           bool with_moments) {
  const int ep = split_by(groups.ep) ? groups.ep->size() : 1;
  experts_per_rank = std::max<int64_t>(1, experts / ep);
  const int64_t per_rank = experts_per_rank;
  for (const Param& p : local.params()) {
    if (p.expert && ep > 1) {  // every ep rank's copy of this expert slot
      int64_t e = 0;
      with_expert(p.name, 0, &e);
      for (int r = 0; r < ep; ++r) store.add(with_expert(p.name, e % per_rank + r * per_rank), p.shape, p.init, p.decay);
    } else {
      store.add(p.name, p.shape, p.init, p.decay);
    }
  }
  store.allocate(backend);
  for (size_t i = 0; i < store.params().size(); ++i) index_[store.params()[i].name] = i;
  if (with_moments) {
    exp_avg = Buffer(backend, store.arena_elems() * sizeof(float));
    exp_avg_sq = Buffer(backend, store.arena_elems() * sizeof(float));
  }
}

const Param& LogicalState::at(const std::string& name) const {
  const auto it = index_.find(name);
  CASTOR_CHECK(it != index_.end(), "logical state has no param ", name);
  return store.params()[it->second];
}

void gather_logical(const SplitGroups& groups, const ParamStore& local, const ArenaMoments* local_moments,
                    LogicalState& whole) {
  std::vector<float> parts;
  const bool tp = split_by(groups.tp), ep = split_by(groups.ep);
  const bool moments = local_moments && whole.exp_avg.data();
  for (const Param& p : local.params()) {
    // (source in the local arena, destination array of the whole state)
    auto one = [&](const float* src, float* (*dst)(const LogicalState&, const Param&), const char* what) {
      const size_t n = size_t(p.numel());
      if (p.expert && ep) {  // part r: rank r's expert in the same slot
        parts.resize(n * size_t(groups.ep->size()));
        groups.ep->all_gather(src, parts.data(), n);
        int64_t e = 0;
        with_expert(p.name, 0, &e);
        const int64_t per_rank = whole.experts_per_rank, slot = e % per_rank;
        for (int r = 0; r < groups.ep->size(); ++r)
          std::memcpy(dst(whole, whole.at(with_expert(p.name, r * per_rank + slot))), parts.data() + size_t(r) * n,
                      n * sizeof(float));
        if (tp) check_replicated(*groups.tp, p, src, what);
        return;
      }
      if (p.shard.sharded()) {
        CASTOR_CHECK(tp && p.shard.ranks == groups.tp->size(), p.name, ": sharded over ", p.shard.ranks,
                     " ranks, not over the tp group");
        parts.resize(n * size_t(groups.tp->size()));
        groups.tp->all_gather(src, parts.data(), n);
        float* out = dst(whole, whole.at(p.name));
        for (int r = 0; r < groups.tp->size(); ++r) shard_insert(p, r, parts.data() + size_t(r) * n, out);
        return;
      }
      if (tp) check_replicated(*groups.tp, p, src, what);
      std::memcpy(dst(whole, whole.at(p.name)), src, n * sizeof(float));
    };
    one(p.w, [](const LogicalState&, const Param& q) { return q.w; }, "weights");
    if (moments) {
      one(local_moments->exp_avg + p.offset,
          [](const LogicalState& s, const Param& q) { return s.exp_avg.f32() + q.offset; }, "AdamW first moments");
      one(local_moments->exp_avg_sq + p.offset,
          [](const LogicalState& s, const Param& q) { return s.exp_avg_sq.f32() + q.offset; }, "AdamW second moments");
    }
  }
}

void scatter_logical(const LogicalState& whole, ParamStore& local, const ArenaMoments* local_moments) {
  const bool moments = local_moments && whole.exp_avg.data();
  for (Param& p : local.params()) {
    const Param& w = whole.at(p.name);
    shard_extract(p, w.w, p.w);
    if (moments) {
      shard_extract(p, whole.exp_avg.f32() + w.offset, local_moments->exp_avg + p.offset);
      shard_extract(p, whole.exp_avg_sq.f32() + w.offset, local_moments->exp_avg_sq + p.offset);
    }
  }
}

void copy_state(ParamStore& local, const ArenaMoments* local_moments, Backend& backend, LogicalState& whole,
                CopyTo direction) {
  const bool moments = local_moments && whole.exp_avg.data();
  const ArenaMoments wm = whole.moments();
  for (const Param& p : local.params()) {
    CASTOR_CHECK(!p.shard.sharded(), p.name, ": copy_state takes an unsplit model");
    const Param& w = whole.at(p.name);
    const size_t bytes = size_t(p.numel()) * sizeof(float);
    auto copy = [&](float* local_array, float* whole_array) {
      if (direction == CopyTo::kWhole) backend.copy(whole_array, local_array, bytes);
      else backend.copy(local_array, whole_array, bytes);
    };
    copy(p.w, w.w);
    if (moments) {
      copy(local_moments->exp_avg + p.offset, wm.exp_avg + w.offset);
      copy(local_moments->exp_avg_sq + p.offset, wm.exp_avg_sq + w.offset);
    }
  }
  backend.synchronize();
  if (direction == CopyTo::kLocal) local.refresh_compute_weights();
}

}  // namespace castor::parallel
