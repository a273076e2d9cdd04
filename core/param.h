// Param and ParamStore: every trainable tensor has a logical (Hugging Face-style) name and
// shape, and views into two contiguous fp32 arenas (weights, grads) laid out in
// registration order. Gradient buckets and optimizer shards are then flat arena ranges.
// Modules register params at construction; the store allocates and initialises them.
// Under tensor parallelism a rank holds a shard of some params (ParamShard): the param
// keeps its logical name and shape, its arena views hold only this rank's part.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/ops.h"
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
  bool expert = false;       // an MoE expert's: under expert parallelism held by one ep rank
  bool token_split = false;  // tp ranks compute its gradient from their blocks of the rows (MoE layers)
  size_t offset = 0;   // element offset into the arenas
  float* w = nullptr;  // weight view (valid after ParamStore::allocate)
  float* g = nullptr;  // gradient view
  Ref wc;  // 16-bit compute copy of w (bf16 or f16 activations), else empty

  // The weight kernels compute with: the 16-bit copy under mixed precision, else w.
  Ref cw() const { return wc.p ? wc : ref(w); }

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
  // every gradient bucket evenly over dp ranks); the padding stays zero.
  void allocate(Backend& backend, size_t pad_to = 1);
  // Regions whose gradients are reduced over different groups (parallel/data_parallel.h):
  // region(p) < pads.size(); region r's params, in registration order, follow region r-1's,
  // and region r is padded to a multiple of pads[r].
  void allocate(Backend& backend, const std::vector<size_t>& pads,
                const std::function<size_t(const Param&)>& region);
  // Deterministic initialisation: each param draws from its own stream seeded by
  // (seed, name), so values do not depend on registration order or layout (a shard is
  // cut from the logical tensor).
  void initialize(uint64_t seed);
  void zero_grads();
  // Rounds the weights into their 16-bit compute copies (after an update or a load); a
  // no-op unless the backend computes in bf16 or f16. Call whenever the f32 weights changed.
  void refresh_compute_weights();
  // Writes `host` (arena_elems() floats in host memory) into the weight arena, and back.
  void upload_weights(const float* host);
  void download_weights(float* host) const;

  const std::deque<Param>& params() const { return params_; }
  std::deque<Param>& params() { return params_; }
  Param* find(const std::string& name);
  // The params registered since params().size() was `first` (e.g. by one module).
  std::vector<Param*> added_since(size_t first);
  size_t numel() const { return numel_; }
  size_t arena_elems() const { return arena_elems_; }  // numel() plus padding
  // Region r is the arena range [region_begin(r), region_begin(r + 1)); r < regions().
  size_t regions() const { return region_begin_.size() - 1; }
  size_t region_begin(size_t r) const { return region_begin_[r]; }
  float* weights() const { return weights_.f32(); }  // backend memory (device on cuda)
  float* grads() const { return grads_.f32(); }
  bool allocated() const { return weights_.data() != nullptr; }

 private:
  std::deque<Param> params_;
  size_t numel_ = 0;
  size_t arena_elems_ = 0;
  std::vector<size_t> region_begin_{0, 0};
  Backend* backend_ = nullptr;
  Buffer weights_, grads_;
  Buffer weights16_;  // 16-bit compute copies (bf16 or f16 activations only)
};

}  // namespace castor
