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
// Under expert parallelism the experts' params sit after all others in the arena
// (ParamStore::allocate) and form a second domain, reduced (and ZeRO-sharded) over the
// expert-data-parallel group edp = dp / ep instead of dp, once backward has finished.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/communicator.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "parallel/grad_sync.h"

namespace castor::parallel {

// Bytes this rank holds for training state between steps (not activations; stage 2 also
// holds gradient buckets while backward writes them).
struct StateMemory {
  size_t weights = 0, grads = 0, moments = 0;
  size_t total() const { return weights + grads + moments; }
};

// Groups besides dp, each optional: tp, over which the grad norm sums the tensor-parallel
// shards' parts; ep and edp, for expert parallelism.
struct ModelGroups {
  Communicator* tp = nullptr;
  Communicator* ep = nullptr;
  Communicator* edp = nullptr;
};

class DataParallel {
 public:
  // The store must be allocated with pad_to = dp.size() (arena_pad), and under expert
  // parallelism with expert_pad_to = edp.size().
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
