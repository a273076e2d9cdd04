// DataParallel: how one step's gradients become the same update on every dp rank, for
// ZeRO stages 0, 1 and 2 (--parallel.zero):
//   0: buckets all-reduced during the last micro-batch's backward; AdamW over the arena.
//   1: buckets reduce-scattered in place during the last micro-batch's backward (each
//      rank's summed slice stays where it lies in the arena); AdamW moments for those
//      slices only; the updated slices are all-gathered.
//   2: as 1, but every micro-batch reduce-scatters, and the rest of each reduced bucket
//      is released to the system at once: between backward passes a rank holds only its
//      slices, and during backward only the buckets not yet reduced.
// Training is fp32, so the weight arena is the master copy: rank r updates its slices.
// Tensor and expert parallelism add arena regions (ParamStore::allocate) reduced, and
// ZeRO-sharded, over other groups, once backward has finished: params whose gradients tp
// ranks form from their blocks of the rows, over tp x dp; the experts, under expert
// parallelism, over the ranks holding the same experts (edp = dp / ep, times tp when tp
// ranks split the tokens). See allocate_for_layout.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/communicator.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "parallel/grad_sync.h"
#include "parallel/process_groups.h"

namespace castor::parallel {

// Bytes this rank holds for training state between steps (not activations; stage 2 also
// holds gradient buckets while backward writes them).
struct StateMemory {
  size_t weights = 0, grads = 0, moments = 0;
  size_t total() const { return weights + grads + moments; }
};

// The model-parallel layout, when there is one: the tp group (params that are not split keep
// a copy on each tp rank), every rank of the model replicas (the grad norm's sum), and the
// group each arena region beyond the first is reduced over.
struct ModelGroups {
  Communicator* tp = nullptr;
  Communicator* world = nullptr;
  std::vector<Communicator*> regions;  // region 1, 2, ... of the store
};

// Allocates `store` (already registered by a model built for this layout) with the arena
// regions DataParallel reduces, each padded to its group's size, and returns the groups to
// give DataParallel: region 0 the dense params, over dp; with tp > 1 or ep > 1 also region 1,
// the params tp ranks compute from their blocks of the rows (Param::token_split: MoE routers,
// shared experts, and the experts unless ep > 1; under SP the norms and row-parallel biases),
// over tp x dp; region 2, under ep the experts, over the ranks holding the same experts (edp,
// times tp with tp > 1).
ModelGroups allocate_for_layout(ParamStore& store, Backend& backend, const ProcessGroups& groups);

class DataParallel {
 public:
  // The store must be allocated with each region padded to its group's size (region 0: dp,
  // arena_pad).
  DataParallel(Communicator& dp, ParamStore& store, Backend& backend, int zero_stage, size_t bucket_elems,
               ModelGroups groups = {});
  static size_t arena_pad(int dp_size) { return size_t(dp_size); }

  // AdamW over the arena (stage 0) or this rank's shard (stages 1, 2).
  AdamW make_optimizer(const OptimConfig& cfg) const;

  // Call at the start of every step, before the first micro-batch.
  void zero_grads();
  // backward of the micro-batch just run forward, with its gradient reduction overlapped.
  void backward(Transformer& model, bool last_micro);
  // Global gradient norm (collective under ZeRO and over tp).
  double grad_norm(const AdamW& optim);
  // After optim.step(): every rank's weights become whole again (all-gather under ZeRO).
  void after_step();

  // Checkpoints store whole moments: gathered from every rank (collective under ZeRO);
  // the pointers stay valid until the next call.
  ArenaMoments gather_moments(const AdamW& optim);
  // Whole moments read from a checkpoint into this rank's part of them.
  void scatter_moments(AdamW& optim, const ArenaMoments& whole) const;

  int stage() const { return stage_; }
  const BucketLayout& layout() const { return domains_.front().layout; }
  StateMemory memory(const AdamW& optim) const;
  std::string describe() const;  // one line for the log

 private:
  // A range of the arena reduced over one group: [0] the dense params over dp, [1] (expert
  // parallelism) the experts' over edp.
  struct Domain {
    Communicator* comm;
    BucketLayout layout;
  };
  void reduce_domain(Domain& d, bool last_micro, Transformer* model);

  Communicator& dp_;
  ModelGroups groups_;
  ParamStore& store_;
  Backend& backend_;
  int stage_;  // effective: 0 on one rank
  std::vector<Domain> domains_;
  Buffer moments_m_, moments_v_;  // gather_moments' whole arrays under ZeRO
};

}  // namespace castor::parallel
