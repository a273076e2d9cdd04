// Param and ParamStore: every trainable tensor has a logical (Hugging Face-style) name and
// shape, and views into two contiguous fp32 arenas (weights, grads) laid out in
// registration order. Gradient buckets and optimizer shards are then flat arena ranges.
// Modules register params at construction; the store allocates and initialises them.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/tensor.h"

namespace castor {

struct Init {
  enum class Kind { kNormal, kZeros, kOnes } kind = Kind::kZeros;
  float std = 0.0f;
  static Init normal(float std) { return {Kind::kNormal, std}; }
  static Init zeros() { return {Kind::kZeros, 0.0f}; }
  static Init ones() { return {Kind::kOnes, 0.0f}; }
};

struct Param {
  std::string name;    // e.g. "transformer.h.3.attn.c_attn.weight"
  Shape shape;         // logical shape; Linear weights are (out, in)
  Init init;
  bool decay = false;  // weight decay applies (matrices and embeddings, not norms/biases)
  size_t offset = 0;   // element offset into the arenas
  float* w = nullptr;  // weight view (valid after ParamStore::allocate)
  float* g = nullptr;  // gradient view

  int64_t numel() const { return shape.numel(); }
  Tensor weight() const { return f32_tensor(w, shape); }
  Tensor grad() const { return f32_tensor(g, shape); }
};

class ParamStore {
 public:
  // Registers a parameter; params registered back to back are contiguous in the arena
  // (fused projections rely on this). Returns a pointer that stays valid.
  Param* add(std::string name, Shape shape, Init init, bool decay);
  // The arenas hold numel() elements rounded up to a multiple of pad_to (ZeRO splits
  // every gradient bucket evenly over dp ranks); the padding stays zero.
  void allocate(Backend& backend, size_t pad_to = 1);
  // Deterministic initialisation: each param draws from its own stream seeded by
  // (seed, name), so values do not depend on registration order or layout.
  void initialize(uint64_t seed);
  void zero_grads();

  const std::deque<Param>& params() const { return params_; }
  std::deque<Param>& params() { return params_; }
  Param* find(const std::string& name);
  size_t numel() const { return numel_; }
  size_t arena_elems() const { return arena_elems_; }  // numel() plus padding
  float* weights() const { return weights_.f32(); }
  float* grads() const { return grads_.f32(); }
  bool allocated() const { return weights_.data() != nullptr; }

 private:
  std::deque<Param> params_;
  size_t numel_ = 0;
  size_t arena_elems_ = 0;
  Buffer weights_, grads_;
};

}  // namespace castor
