// Param and ParamStore: every trainable tensor has a logical (Hugging Face-style) name and
// shape, and views into two contiguous fp32 arenas (weights, grads) laid out in
// registration order. Gradient buckets and optimizer shards are then flat arena ranges.
// Modules register params at construction; the store allocates and initialises them.
// Under tensor parallelism a rank holds a shard of some params (ParamShard): the param
// keeps its logical name and shape, its arena views hold only this rank's part.
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

// This rank's part of a tensor-parallel param: along `dim` the logical extent is a run of
// `segments` (e.g. the q, k and v rows of a fused projection; empty: one segment, the whole
// extent); the rank holds slice `rank` of `ranks` equal slices of each, back to back.
struct ParamShard {
  int dim = 0;
  int rank = 0, ranks = 1;
  std::vector<int64_t> segments;
  bool sharded() const { return ranks > 1; }
};

struct Param {
  std::string name;    // e.g. "transformer.h.3.attn.c_attn.weight"
  Shape shape;         // logical shape; Linear weights are (out, in)
  Shape local;         // the part this rank holds (== shape unless sharded)
  ParamShard shard;
  Init init;
  bool decay = false;  // weight decay applies (matrices and embeddings, not norms/biases)
  bool expert = false; // an MoE expert's: under expert parallelism held by one ep rank
  size_t offset = 0;   // element offset into the arenas
  float* w = nullptr;  // weight view (valid after ParamStore::allocate)
  float* g = nullptr;  // gradient view

  int64_t numel() const { return local.numel(); }  // elements this rank holds
  Tensor weight() const { return f32_tensor(w, local); }
  Tensor grad() const { return f32_tensor(g, local); }
};

// Copies between a param's logical tensor and this rank's part of it (ParamShard).
void shard_extract(const Param& p, const float* logical, float* local);
void shard_insert(const Param& p, const float* local, float* logical);
// The same for the part rank `rank` of the shard's group holds.
void shard_insert(const Param& p, int rank, const float* part, float* logical);

class ParamStore {
 public:
  // Registers a parameter; params registered back to back are contiguous in the arena
  // (fused projections rely on this). Returns a pointer that stays valid.
  Param* add(std::string name, Shape shape, Init init, bool decay, ParamShard shard = {});
  // The arenas hold numel() elements rounded up to a multiple of pad_to (ZeRO splits
  // every gradient bucket evenly over dp ranks); the padding stays zero. expert_pad_to > 0
  // (expert parallelism, whose expert gradients are reduced over another group): the expert
  // params follow all the others, from expert_begin(), that region padded to expert_pad_to.
  void allocate(Backend& backend, size_t pad_to = 1, size_t expert_pad_to = 0);
  // Deterministic initialisation: each param draws from its own stream seeded by
  // (seed, name), so values do not depend on registration order or layout (a shard is
  // cut from the logical tensor).
  void initialize(uint64_t seed);
  void zero_grads();

  const std::deque<Param>& params() const { return params_; }
  std::deque<Param>& params() { return params_; }
  Param* find(const std::string& name);
  size_t numel() const { return numel_; }
  size_t arena_elems() const { return arena_elems_; }  // numel() plus padding
  size_t expert_begin() const { return expert_begin_; }  // == arena_elems() unless experts placed apart
  float* weights() const { return weights_.f32(); }
  float* grads() const { return grads_.f32(); }
  bool allocated() const { return weights_.data() != nullptr; }

 private:
  std::deque<Param> params_;
  size_t numel_ = 0;
  size_t arena_elems_ = 0;
  size_t expert_begin_ = 0;
  Buffer weights_, grads_;
};

}  // namespace castor
