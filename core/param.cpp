// ParamStore: arena layout, per-parameter seeded initialisation, gradient zeroing.
#include "core/param.h"

#include <cmath>
#include <cstring>
#include <random>

namespace castor {
namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Box-Muller over mt19937_64 so the values are the same on every standard library.
void fill_normal(float* out, int64_t n, float std, uint64_t seed) {
  std::mt19937_64 gen(seed);
  constexpr double kTwoPi = 6.283185307179586;
  auto uniform = [&] { return (double(gen() >> 11) + 0.5) * (1.0 / 9007199254740992.0); };
  for (int64_t i = 0; i < n; i += 2) {
    double r = std::sqrt(-2.0 * std::log(uniform()));
    double a = kTwoPi * uniform();
    out[i] = float(r * std::cos(a) * std);
    if (i + 1 < n) out[i + 1] = float(r * std::sin(a) * std);
  }
}

}  // namespace

namespace {

// A shard as runs: for each segment, `outer` blocks (the dims before `dim`) of `inner`
// contiguous floats per slice row. Visits (logical offset, part offset, floats) copies.
template <typename F>
void for_each_run(const Param& p, int rank, F&& copy) {
  const ParamShard& s = p.shard;
  const Shape& shape = p.shape;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < s.dim; ++i) outer *= shape[i];
  for (int i = s.dim + 1; i < shape.rank(); ++i) inner *= shape[i];
  const int64_t extent = shape[s.dim];
  std::vector<int64_t> segments = s.segments.empty() ? std::vector<int64_t>{extent} : s.segments;
  int64_t local_extent = 0;
  for (int64_t seg : segments) local_extent += seg / s.ranks;
  for (int64_t o = 0; o < outer; ++o) {
    int64_t seg_begin = 0, local_begin = 0;
    for (int64_t seg : segments) {
      const int64_t slice = seg / s.ranks;
      copy(((o * extent) + seg_begin + rank * slice) * inner, ((o * local_extent) + local_begin) * inner, slice * inner);
      seg_begin += seg;
      local_begin += slice;
    }
  }
}

}  // namespace

void shard_extract(const Param& p, const float* logical, float* local) {
  if (!p.shard.sharded()) {
    std::memcpy(local, logical, size_t(p.numel()) * sizeof(float));
    return;
  }
  for_each_run(p, p.shard.rank, [&](int64_t lo, int64_t po, int64_t n) {
    std::memcpy(local + po, logical + lo, size_t(n) * sizeof(float));
  });
}

void shard_insert(const Param& p, int rank, const float* part, float* logical) {
  if (!p.shard.sharded()) {
    std::memcpy(logical, part, size_t(p.numel()) * sizeof(float));
    return;
  }
  for_each_run(p, rank, [&](int64_t lo, int64_t po, int64_t n) {
    std::memcpy(logical + lo, part + po, size_t(n) * sizeof(float));
  });
}

void shard_insert(const Param& p, const float* local, float* logical) { shard_insert(p, p.shard.rank, local, logical); }

Param* ParamStore::add(std::string name, Shape shape, Init init, bool decay, ParamShard shard) {
  CASTOR_CHECK(!allocated(), "param ", name, " registered after allocation");
  CASTOR_CHECK(find(name) == nullptr, "duplicate param name ", name);
  Param p;
  p.local = shape;
  if (shard.sharded()) {
    CASTOR_CHECK(shard.dim >= 0 && shard.dim < shape.rank() && shard.rank >= 0 && shard.rank < shard.ranks,
                 "param ", name, ": invalid shard");
    int64_t total = 0, local = 0;
    for (int64_t seg : shard.segments.empty() ? std::vector<int64_t>{shape[shard.dim]} : shard.segments) {
      CASTOR_CHECK(seg % shard.ranks == 0, "param ", name, ": ", seg, " rows/columns do not split over ",
                   shard.ranks, " tensor-parallel ranks");
      total += seg;
      local += seg / shard.ranks;
    }
    CASTOR_CHECK(total == shape[shard.dim], "param ", name, ": shard segments do not add up to ", shape[shard.dim]);
    std::vector<int64_t> dims = shape.dims();
    dims[size_t(shard.dim)] = local;
    p.local = Shape::of(dims);
  } else {
    shard = {};
  }
  p.shard = std::move(shard);
  p.name = std::move(name);
  p.shape = shape;
  p.init = init;
  p.decay = decay;
  p.offset = numel_;
  numel_ += size_t(p.local.numel());
  params_.push_back(std::move(p));
  return &params_.back();
}

void ParamStore::allocate(Backend& backend, size_t pad_to) {
  allocate(backend, {pad_to}, [](const Param&) { return size_t(0); });
}

void ParamStore::allocate(Backend& backend, const std::vector<size_t>& pads,
                          const std::function<size_t(const Param&)>& region) {
  CASTOR_CHECK(!pads.empty(), "ParamStore::allocate: no regions");
  region_begin_.assign(1, 0);
  size_t at = 0;
  for (size_t r = 0; r < pads.size(); ++r) {
    CASTOR_CHECK(pads[r] > 0, "ParamStore::allocate: pad_to must be positive");
    for (Param& p : params_) {
      const size_t pr = region(p);
      CASTOR_CHECK(pr < pads.size(), "param ", p.name, ": region ", pr, " of ", pads.size());
      if (pr != r) continue;
      p.offset = at;
      at += size_t(p.numel());
    }
    const size_t begin = region_begin_.back();
    at = begin + (at - begin + pads[r] - 1) / pads[r] * pads[r];
    region_begin_.push_back(at);
  }
  arena_elems_ = at;
  backend_ = &backend;
  weights_ = Buffer(backend, arena_elems_ * sizeof(float));
  grads_ = Buffer(backend, arena_elems_ * sizeof(float));
  const DType act = backend.ops().act_dtype();
  const bool copies = act != DType::f32;
  if (copies) weights16_ = Buffer(backend, act, int64_t(arena_elems_));
  for (Param& p : params_) {
    p.w = weights_.f32() + p.offset;
    p.g = grads_.f32() + p.offset;
    p.wc = copies ? weights16_.ref().at(int64_t(p.offset)) : Ref{};
  }
}

void ParamStore::refresh_compute_weights() {
  if (weights16_.data())
    backend_->ops().convert(weights16_.ref(), ref(weights_.f32()), int64_t(arena_elems_));
}

void ParamStore::upload_weights(const float* host) {
  backend_->copy(weights_.data(), host, arena_elems_ * sizeof(float));
  refresh_compute_weights();
}

void ParamStore::download_weights(float* host) const {
  backend_->copy(host, weights_.data(), arena_elems_ * sizeof(float));
}

void ParamStore::initialize(uint64_t seed) {
  CASTOR_CHECK(allocated(), "ParamStore::initialize before allocate");
  // Filled in host memory (the arena may be device memory), then copied over.
  std::vector<float> host(arena_elems_, 0.0f), logical;
  for (const Param& param : params_) {
    Param p = param;
    p.w = host.data() + p.offset;
    switch (p.init.kind) {
      case Init::Kind::kNormal:
        if (p.shard.sharded()) {  // the logical tensor's values, then this rank's part
          logical.resize(size_t(p.shape.numel()));
          fill_normal(logical.data(), p.shape.numel(), p.init.std, seed ^ fnv1a(p.name));
          shard_extract(p, logical.data(), p.w);
        } else {
          fill_normal(p.w, p.numel(), p.init.std, seed ^ fnv1a(p.name));
        }
        break;
      case Init::Kind::kZeros: std::fill(p.w, p.w + p.numel(), 0.0f); break;
      case Init::Kind::kOnes: std::fill(p.w, p.w + p.numel(), 1.0f); break;
    }
  }
  upload_weights(host.data());
}

void ParamStore::zero_grads() { backend_->ops().zero(ref(grads_.f32()), int64_t(arena_elems_)); }

std::vector<Param*> ParamStore::added_since(size_t first) {
  std::vector<Param*> out;
  for (size_t i = first; i < params_.size(); ++i) out.push_back(&params_[i]);
  return out;
}

Param* ParamStore::find(const std::string& name) {
  for (Param& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace castor
