// Layout-free model state for checkpoints: a rank's tensor-parallel shards gathered into
// whole (logical) tensors, and cut back out of them, so that a checkpoint written under one
// layout resumes under any other. Weights and AdamW moments (arena layout) alike.
#pragma once
#include <memory>

#include "core/communicator.h"
#include "core/optimizer.h"
#include "core/param.h"

namespace castor::parallel {

// Arrays laid out like a ParamStore's arena (weights, or one AdamW moment).
struct LogicalState {
  ParamStore store;  // the params of the local store, logical shapes, same order
  Buffer exp_avg, exp_avg_sq;
  ArenaMoments moments() const { return {exp_avg.f32(), exp_avg_sq.f32()}; }

  // Allocated to the whole model's size (moments too when with_moments).
  LogicalState(const ParamStore& local, Backend& backend, bool with_moments);
};

// Collective over tp: every rank of it gets the whole weights (and moments when both
// pointers are given: `local_moments` in the local arena layout). A param that is not
// sharded must be equal on every tp rank; a difference is an error naming it.
void gather_logical(Communicator& tp, const ParamStore& local, const ArenaMoments* local_moments, LogicalState& whole);
// This rank's parts of the whole state: weights into the local store, moments (when given)
// into `local_moments` (local arena layout).
void scatter_logical(const LogicalState& whole, ParamStore& local, const ArenaMoments* local_moments);

}  // namespace castor::parallel
