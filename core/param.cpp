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

Param* ParamStore::add(std::string name, Shape shape, Init init, bool decay) {
  CASTOR_CHECK(!allocated(), "param ", name, " registered after allocation");
  CASTOR_CHECK(find(name) == nullptr, "duplicate param name ", name);
  Param p;
  p.name = std::move(name);
  p.shape = shape;
  p.init = init;
  p.decay = decay;
  p.offset = numel_;
  numel_ += size_t(shape.numel());
  params_.push_back(std::move(p));
  return &params_.back();
}

void ParamStore::allocate(Backend& backend, size_t pad_to) {
  CASTOR_CHECK(pad_to > 0, "ParamStore::allocate: pad_to must be positive");
  arena_elems_ = (numel_ + pad_to - 1) / pad_to * pad_to;
  weights_ = Buffer(backend, arena_elems_ * sizeof(float));
  grads_ = Buffer(backend, arena_elems_ * sizeof(float));
  for (Param& p : params_) {
    p.w = weights_.f32() + p.offset;
    p.g = grads_.f32() + p.offset;
  }
}

void ParamStore::initialize(uint64_t seed) {
  CASTOR_CHECK(allocated(), "ParamStore::initialize before allocate");
  for (Param& p : params_) {
    switch (p.init.kind) {
      case Init::Kind::kNormal: fill_normal(p.w, p.numel(), p.init.std, seed ^ fnv1a(p.name)); break;
      case Init::Kind::kZeros: std::fill(p.w, p.w + p.numel(), 0.0f); break;
      case Init::Kind::kOnes: std::fill(p.w, p.w + p.numel(), 1.0f); break;
    }
  }
}

void ParamStore::zero_grads() { std::memset(grads_.data(), 0, arena_elems_ * sizeof(float)); }

Param* ParamStore::find(const std::string& name) {
  for (Param& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

}  // namespace castor
