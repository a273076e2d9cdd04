// Layout-free model state for checkpoints: a rank's tensor-parallel shards and the experts
// other expert-parallel ranks hold, gathered into whole (logical) tensors under their
// single-device names, and cut back out of them, so that a checkpoint written under one
// layout resumes under any other. Weights and AdamW moments (arena layout) alike.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>

#include "core/communicator.h"
#include "core/optimizer.h"
#include "core/param.h"

namespace castor::parallel {

// The groups a model is split over (nullptr or size 1: not split that way).
struct SplitGroups {
  Communicator* tp = nullptr;
  Communicator* ep = nullptr;
};

// The whole model's params (logical shapes; under ep every expert) with arrays laid out
// like their arena: weights, and AdamW moments when asked for.
struct LogicalState {
  ParamStore store;
  Buffer exp_avg, exp_avg_sq;
  int64_t experts_per_rank = 1;  // under ep: experts of an MoE layer each ep rank holds
  ArenaMoments moments() const { return {exp_avg.f32(), exp_avg_sq.f32()}; }
  const Param& at(const std::string& name) const;

  // local: this rank's store; experts: --model.moe_experts (the total per MoE layer).
  LogicalState(const ParamStore& local, const SplitGroups& groups, int64_t experts, Backend& backend,
               bool with_moments);

 private:
  std::unordered_map<std::string, size_t> index_;
};

// Collective over tp and ep: every rank gets the whole weights (and moments when both
// `local_moments` (local arena layout) and whole's moment arrays are there). A param that
// is not split must be equal on every rank of the tp group; a difference is an error
// naming it.
void gather_logical(const SplitGroups& groups, const ParamStore& local, const ArenaMoments* local_moments,
                    LogicalState& whole);
// This rank's parts of the whole state: weights into the local store, moments (when given)
// into `local_moments` (local arena layout).
void scatter_logical(const LogicalState& whole, ParamStore& local, const ArenaMoments* local_moments);

// An unsplit model on a device backend: every param's weights (and moments, when both sides
// have them) copied by name between `local` (memory of `backend`, e.g. the GPU) and the host
// state `whole`, in the direction given; then the local compute copies are refreshed.
enum class CopyTo { kWhole, kLocal };
void copy_state(ParamStore& local, const ArenaMoments* local_moments, Backend& backend, LogicalState& whole,
                CopyTo direction);

}  // namespace castor::parallel
